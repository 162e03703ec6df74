// Package pkcs11test plays the attacker with write access to a token, for
// tests of HSM object authentication (invariant 9 of docs/architecture.md):
// it plants secret keys of known value under ids custos uses and destroys
// custos's objects, from a separate process, as an operator with a shell
// would — with the user PIN, or with no login at all (SoftHSM lets a
// read/write public session create public token objects).
//
// A separate process matters: PKCS#11 login state is per process, so a
// session opened in the test process would be logged in already. A test
// package that uses Run calls MaybeChild first thing in its TestMain.
package pkcs11test

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"strings"
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/custos-kms/custos/hsm/pkcs11"
)

// Kind says which attributes a planted key gets: those custos gives a KEK,
// or those of the domain key. Either way its value is the planter's.
type Kind string

// Kinds of planted keys.
const (
	KindKEK  Kind = "kek"
	KindWrap Kind = "wrap"
)

// Op is one attacker action on a token.
type Op struct {
	Module string
	Label  string
	// PIN is the user PIN; "" plants through a public session, no login
	// (the object is then public: CKA_PRIVATE=false).
	PIN string
	// Plant creates an AES-256 token key with ID, Value and Kind's
	// attributes; Destroy destroys every object with ID.
	Plant   bool
	Destroy bool
	ID      []byte
	Value   []byte
	Kind    Kind
	// PlantRSAPublic creates a token RSA public key with ID, Modulus and
	// Exponent that may wrap, as a user (or public session) can: not
	// CKA_TRUSTED, unless ClaimTrusted asks for it (which the token must
	// refuse to anyone but its security officer).
	PlantRSAPublic bool
	ClaimTrusted   bool
	// Trust plays the token's security officer (SOPIN) marking the RSA
	// public key Modulus/Exponent trusted under ID (pkcs11.TrustPublicKey).
	Trust    bool
	SOPIN    string
	Modulus  []byte
	Exponent int
	// Probe, Blob and WrapID: see RunProbe.
	Probe  string
	Blob   []byte
	WrapID []byte
}

const childEnv = "CUSTOS_PKCS11TEST_OP"

// MaybeChild runs the Op in the environment and exits, when this process
// was started by Run; otherwise it returns at once.
func MaybeChild() {
	raw := os.Getenv(childEnv)
	if raw == "" {
		return
	}
	var op Op
	if err := json.Unmarshal([]byte(raw), &op); err != nil {
		fmt.Fprintln(os.Stderr, "pkcs11test:", err)
		os.Exit(2)
	}
	if err := Do(op); err != nil {
		fmt.Fprintln(os.Stderr, "pkcs11test:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Run performs op in a child process (the test binary again, whose TestMain
// calls MaybeChild) and fails the test if it fails.
func Run(tb testing.TB, op Op) {
	tb.Helper()
	if err := RunErr(op); err != nil {
		tb.Fatal(err)
	}
}

// RunErr is Run returning the error.
func RunErr(op Op) error {
	_, err := runChild(op)
	return err
}

// runChild performs op in a child process and returns its output.
func runChild(op Op) (string, error) {
	raw, err := json.Marshal(op)
	if err != nil {
		return "", err
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(raw))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("pkcs11test child: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Do performs op in this process. Use it only in a process that has no
// other session on the module (MaybeChild does).
func Do(op Op) (err error) {
	if op.Trust {
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(op.Modulus), E: op.Exponent}
		return pkcs11.TrustPublicKey(context.Background(), pkcs11.SOConfig{Module: op.Module, TokenLabel: op.Label, SOPIN: op.SOPIN},
			op.ID, "trusted by the test SO", pub)
	}
	ctx := p11.New(op.Module)
	if ctx == nil {
		return fmt.Errorf("cannot load %s", op.Module)
	}
	if err := ctx.Initialize(); err != nil {
		return fmt.Errorf("C_Initialize: %w", err)
	}
	defer func() { _ = ctx.Finalize(); ctx.Destroy() }()
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return err
	}
	slot, found := uint(0), false
	for _, sl := range slots {
		ti, err := ctx.GetTokenInfo(sl)
		if err == nil && strings.TrimRight(ti.Label, " \x00") == op.Label {
			slot, found = sl, true
			break
		}
	}
	if !found {
		return fmt.Errorf("no token %q", op.Label)
	}
	s, err := ctx.OpenSession(slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("C_OpenSession: %w", err)
	}
	defer func() { _ = ctx.CloseSession(s) }()
	if op.PIN != "" {
		if err := ctx.Login(s, p11.CKU_USER, op.PIN); err != nil {
			return fmt.Errorf("C_Login: %w", err)
		}
		defer func() { _ = ctx.Logout(s) }()
	}
	switch {
	case op.Probe != "":
		fmt.Println(probePrefix + probe(ctx, s, op))
		return nil
	case op.Destroy:
		if err := ctx.FindObjectsInit(s, []*p11.Attribute{p11.NewAttribute(p11.CKA_ID, op.ID)}); err != nil {
			return err
		}
		hs, _, err := ctx.FindObjects(s, 64)
		_ = ctx.FindObjectsFinal(s)
		if err != nil {
			return err
		}
		for _, h := range hs {
			if err := ctx.DestroyObject(s, h); err != nil {
				return fmt.Errorf("C_DestroyObject: %w", err)
			}
		}
		return nil
	case op.PlantRSAPublic:
		a := p11.NewAttribute
		t := []*p11.Attribute{
			a(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY), a(p11.CKA_KEY_TYPE, p11.CKK_RSA),
			a(p11.CKA_TOKEN, true), a(p11.CKA_PRIVATE, false), a(p11.CKA_ID, op.ID),
			a(p11.CKA_MODULUS, op.Modulus), a(p11.CKA_PUBLIC_EXPONENT, big.NewInt(int64(op.Exponent)).Bytes()),
			a(p11.CKA_WRAP, true), a(p11.CKA_ENCRYPT, true), a(p11.CKA_LABEL, "planted"),
		}
		if op.ClaimTrusted {
			t = append(t, a(p11.CKA_TRUSTED, true))
		}
		_, err := ctx.CreateObject(s, t)
		if err != nil {
			return fmt.Errorf("C_CreateObject: %w", err)
		}
		return nil
	case op.Plant:
		_, err := ctx.CreateObject(s, template(op))
		if err != nil {
			return fmt.Errorf("C_CreateObject: %w", err)
		}
		return nil
	}
	return errors.New("op says none of Plant, PlantRSAPublic, Trust, Destroy, Probe")
}

// template is the planted key: custos's attributes for Kind, the planter's
// value, private and sensitive when planted with the PIN.
func template(op Op) []*p11.Attribute {
	a := p11.NewAttribute
	private := op.PIN != ""
	t := []*p11.Attribute{
		a(p11.CKA_CLASS, p11.CKO_SECRET_KEY), a(p11.CKA_KEY_TYPE, p11.CKK_AES),
		a(p11.CKA_TOKEN, true), a(p11.CKA_PRIVATE, private), a(p11.CKA_ID, op.ID),
		a(p11.CKA_VALUE, op.Value), a(p11.CKA_LABEL, "planted"),
	}
	if op.Kind == KindWrap {
		t = append(t, a(p11.CKA_WRAP, true), a(p11.CKA_UNWRAP, true),
			a(p11.CKA_ENCRYPT, false), a(p11.CKA_DECRYPT, false))
		if private {
			// Every attribute of a real domain key; SoftHSM refuses any
			// attribute after CKA_MODIFIABLE=false, so it comes last.
			t = append(t, a(p11.CKA_SENSITIVE, true), a(p11.CKA_EXTRACTABLE, true),
				a(p11.CKA_WRAP_WITH_TRUSTED, true), a(p11.CKA_MODIFIABLE, false))
		}
		return t
	}
	t = append(t, a(p11.CKA_ENCRYPT, true), a(p11.CKA_DECRYPT, true),
		a(p11.CKA_WRAP, false), a(p11.CKA_UNWRAP, false))
	if private {
		t = append(t, a(p11.CKA_SENSITIVE, true), a(p11.CKA_EXTRACTABLE, false))
	}
	return t
}
