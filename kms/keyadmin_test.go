package kms_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"google.golang.org/protobuf/proto"
)

// Every change to a key's state is a ledger record at its log position
// (docs/architecture.md, invariant 5): creation, rotation, a key user's
// disable and minimum-version changes, ALLOW; a refusal because the caller
// may not do it, DENY. The command's result is still the key.
func TestKeyAdministrationIsRecorded(t *testing.T) {
	e := newEnv(t)
	stranger := kms.Principal{Name: "stranger"}
	type want struct {
		op      custosv1.Operation
		outcome custosv1.Outcome
		who     string
		version uint32
		rule    string
		notify  bool
	}
	expect := func(what string, w want) {
		t.Helper()
		rec := lastRecord(t, e)
		if rec.Operation != w.op || rec.Outcome != w.outcome || rec.Principal != w.who || rec.Key != "k" ||
			rec.KeyVersion != w.version || rec.MatchedRule != w.rule || rec.Notify != w.notify ||
			rec.Node != "node-1" || rec.TimeUnixNano == 0 || rec.RaftIndex == 0 || rec.Reason != custosv1.Reason_REASON_UNSPECIFIED {
			t.Fatalf("%s: record %v\nwant %+v", what, rec, w)
		}
	}
	// noRecord runs f and checks that the ledger did not grow.
	noRecord := func(what string, f func() error, wantErr error) {
		t.Helper()
		before, _ := e.state.LedgerHead()
		if err := f(); !errors.Is(err, wantErr) {
			t.Fatalf("%s: %v, want %v", what, err, wantErr)
		}
		if after, _ := e.state.LedgerHead(); after != before {
			t.Fatalf("%s: the ledger grew from %d to %d", what, before, after)
		}
	}
	allow, deny := custosv1.Outcome_OUTCOME_ALLOW, custosv1.Outcome_OUTCOME_DENY

	k := createKey(t, e, "k")
	if k.Name != "k" || k.PrimaryVersion != 1 {
		t.Fatalf("CreateKey returned %v", k)
	}
	expect("create", want{custosv1.Operation_OPERATION_CREATE_KEY, allow, app.Name, 1, "key-admin:create", false})

	k, err := e.svc.RotateKey(bg, app, &custosv1.RotateKeyRequest{Name: "k"})
	if err != nil || k.PrimaryVersion != 2 {
		t.Fatalf("RotateKey = %v, %v", k, err)
	}
	expect("rotate", want{custosv1.Operation_OPERATION_ROTATE_KEY, allow, app.Name, 2, "key-admin:rotate", false})

	k, err = e.svc.SetMinDecryptionVersion(bg, app, &custosv1.SetMinDecryptionVersionRequest{Name: "k", MinDecryptionVersion: 2})
	if err != nil || k.MinDecryptionVersion != 2 {
		t.Fatalf("SetMinDecryptionVersion = %v, %v", k, err)
	}
	expect("min version", want{custosv1.Operation_OPERATION_SET_MIN_DECRYPTION_VERSION, allow, app.Name, 2, "key-admin:set-min-decryption-version", false})

	// Refused because the caller may not: DENY records, selected by the
	// default notify rules (every DENY); the error names the record.
	_, err = e.svc.RotateKey(bg, stranger, &custosv1.RotateKeyRequest{Name: "k"})
	if !errors.Is(err, kms.ErrPermissionDenied) || !strings.Contains(err.Error(), "ledger record") {
		t.Fatalf("rotate by a stranger: %v, want ErrPermissionDenied naming the ledger record", err)
	}
	expect("rotate by a stranger", want{custosv1.Operation_OPERATION_ROTATE_KEY, deny, stranger.Name, 3, "key-admin:rotate:denied", true})
	if _, err := e.svc.SetKeyState(bg, stranger, &custosv1.SetKeyStateRequest{Name: "k", State: custosv1.KeyState_KEY_STATE_DISABLED}); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("disable by a stranger: %v", err)
	}
	expect("disable by a stranger", want{custosv1.Operation_OPERATION_DISABLE_KEY, deny, stranger.Name, 0, "key-admin:disable:denied", true})
	if _, err := e.svc.SetMinDecryptionVersion(bg, app, &custosv1.SetMinDecryptionVersionRequest{Name: "k", MinDecryptionVersion: 1}); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("lowering the minimum version: %v", err)
	}
	expect("lowering the minimum version", want{custosv1.Operation_OPERATION_SET_MIN_DECRYPTION_VERSION, deny, app.Name, 1, "key-admin:set-min-decryption-version:denied", true})

	// Refusals that concern nobody else's key are not recorded.
	noRecord("create an existing key", func() error {
		_, err := e.svc.CreateKey(bg, app, &custosv1.CreateKeyRequest{Name: "k"})
		return err
	}, kms.ErrAlreadyExists)
	noRecord("rotate a missing key", func() error {
		_, err := e.svc.RotateKey(bg, app, &custosv1.RotateKeyRequest{Name: "missing"})
		return err
	}, kms.ErrNotFound)
	noRecord("minimum above the primary", func() error {
		_, err := e.svc.SetMinDecryptionVersion(bg, app, &custosv1.SetMinDecryptionVersionRequest{Name: "k", MinDecryptionVersion: 9})
		return err
	}, kms.ErrInvalidArgument)
	// Enabling is an officers' statement, never a key user's command.
	noRecord("enable by a key user", func() error {
		_, err := e.svc.SetKeyState(bg, app, &custosv1.SetKeyStateRequest{Name: "k", State: custosv1.KeyState_KEY_STATE_ENABLED})
		return err
	}, kms.ErrPermissionDenied)

	if _, err := e.svc.SetKeyState(bg, app, &custosv1.SetKeyStateRequest{Name: "k", State: custosv1.KeyState_KEY_STATE_DISABLED}); err != nil {
		t.Fatalf("disable: %v", err)
	}
	expect("disable", want{custosv1.Operation_OPERATION_DISABLE_KEY, allow, app.Name, 0, "key-admin:disable", false})

	// The records are part of the chain, and a restart (which replays the
	// log into a fresh state) rebuilds them byte for byte.
	n := verifyChain(t, e.state, e.led)
	before := make([]*custosv1.DecisionRecord, 0, n)
	for i := uint64(1); i <= n; i++ {
		rec, err := e.state.DecisionRecord(i)
		if err != nil {
			t.Fatal(err)
		}
		before = append(before, rec)
	}
	e.restart()
	if got := verifyChain(t, e.state, e.led); got != n {
		t.Fatalf("after restart the ledger has %d records, want %d", got, n)
	}
	for i, rec := range before {
		again, err := e.state.DecisionRecord(uint64(i + 1))
		if err != nil || !proto.Equal(again, rec) {
			t.Fatalf("record %d after restart = %v, %v; want %v", i+1, again, err, rec)
		}
	}
}
