package pkcs11test

import (
	"bufio"
	"errors"
	"fmt"
	"strings"
	"testing"

	p11 "github.com/miekg/pkcs11"
)

// Probes: a holder of the user PIN, in a process of their own, tries what
// a domain-key rotation must not let them do (hsm/pkcs11/rewrap_test.go).

// Probes of RunProbe.
const (
	// ProbeCount counts the objects with ID, of any class: "count N".
	ProbeCount = "count"
	// ProbeUnwrapExtractable unwraps Blob (AES-KWP) under the token key
	// with ID as an extractable, sensitive session key: "ok" or the code.
	ProbeUnwrapExtractable = "unwrap-extractable"
	// ProbeUnwrapThenWrap unwraps Blob under the token key with ID as the
	// sensitive, non-extractable session key a domain key's unwrap
	// template allows, then wraps it (AES-KWP) under the token key WrapID:
	// "ok", or "unwrap <code>" or "wrap <code>".
	ProbeUnwrapThenWrap = "unwrap-then-wrap"
)

const probePrefix = "pkcs11test probe: "

// RunProbe performs op (op.Probe, with op.PIN) in a child process and
// returns its report. Return values are reported as "0x" and the hex code
// (e.g. 0xD1 for CKR_TEMPLATE_INCONSISTENT).
func RunProbe(tb testing.TB, op Op) string {
	tb.Helper()
	out, err := runChild(op)
	if err != nil {
		tb.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if r, ok := strings.CutPrefix(sc.Text(), probePrefix); ok {
			return r
		}
	}
	tb.Fatalf("pkcs11test probe %q printed no report: %s", op.Probe, out)
	return ""
}

// ckr renders a module error as its return value.
func ckr(err error) string {
	var e p11.Error
	if errors.As(err, &e) {
		return fmt.Sprintf("0x%X", uint(e))
	}
	return err.Error()
}

// probe runs op.Probe on session s.
func probe(ctx *p11.Ctx, s p11.SessionHandle, op Op) string {
	a := p11.NewAttribute
	find := func(id []byte) ([]p11.ObjectHandle, error) {
		if err := ctx.FindObjectsInit(s, []*p11.Attribute{a(p11.CKA_ID, id)}); err != nil {
			return nil, err
		}
		hs, _, err := ctx.FindObjects(s, 64)
		_ = ctx.FindObjectsFinal(s)
		return hs, err
	}
	one := func(id []byte) (p11.ObjectHandle, string) {
		hs, err := find(id)
		if err != nil {
			return 0, "find " + ckr(err)
		}
		if len(hs) != 1 {
			return 0, fmt.Sprintf("find: %d objects with id %q", len(hs), id)
		}
		return hs[0], ""
	}
	kwp := []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_WRAP_PAD, nil)}
	session := func(extractable bool) []*p11.Attribute {
		return []*p11.Attribute{
			a(p11.CKA_CLASS, p11.CKO_SECRET_KEY), a(p11.CKA_KEY_TYPE, p11.CKK_AES), a(p11.CKA_TOKEN, false),
			a(p11.CKA_PRIVATE, true), a(p11.CKA_SENSITIVE, true), a(p11.CKA_EXTRACTABLE, extractable),
			a(p11.CKA_ENCRYPT, true),
		}
	}
	switch op.Probe {
	case ProbeCount:
		hs, err := find(op.ID)
		if err != nil {
			return "find " + ckr(err)
		}
		return fmt.Sprintf("count %d", len(hs))
	case ProbeUnwrapExtractable:
		h, msg := one(op.ID)
		if msg != "" {
			return msg
		}
		if _, err := ctx.UnwrapKey(s, kwp, h, op.Blob, session(true)); err != nil {
			return ckr(err)
		}
		return "ok"
	case ProbeUnwrapThenWrap:
		h, msg := one(op.ID)
		if msg != "" {
			return msg
		}
		w, msg := one(op.WrapID)
		if msg != "" {
			return msg
		}
		k, err := ctx.UnwrapKey(s, kwp, h, op.Blob, session(false))
		if err != nil {
			return "unwrap " + ckr(err)
		}
		if _, err := ctx.WrapKey(s, kwp, w, k); err != nil {
			return "wrap " + ckr(err)
		}
		return "ok"
	}
	return "unknown probe " + op.Probe
}
