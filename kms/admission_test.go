package kms_test

import (
	"context"
	"errors"
	"testing"

	"github.com/custos-kms/custos/hsm/pkcs11"
	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"github.com/custos-kms/custos/softhsm"
)

// TestNotAdmittedFailsClosedOnEveryFrontDoor: a service whose HSM lacks
// the cluster's domain key (a joined node, officers not yet asked) over
// the same replicated state refuses every use of a key with ErrNotAdmitted —
// the gRPC paths and the XKS ones alike — and a decrypt still records its
// decision first. It serves as soon as its HSM holds the key.
func TestNotAdmittedFailsClosedOnEveryFrontDoor(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	dk := dataKey(t, e, "k", nil)
	xc, err := e.svc.XKSEncrypt(bg, app, "k", []byte("0123456789abcdef0123456789abcdef"), nil, false)
	if err != nil {
		t.Fatal(err)
	}

	tok := softhsm.TestToken(t) // a second node's token: no domain key, no KEK
	b, err := pkcs11.Open(context.Background(), pkcs11.Config{Module: tok.Module, TokenLabel: tok.Label, PIN: tok.PIN, Sessions: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	joined, err := kms.NewService(kms.Config{NodeID: "node-2", HSM: b, Log: e.node, State: e.state, Logger: quiet,
		RequireAdmission: true})
	if err != nil {
		t.Fatal(err)
	}
	if joined.Admitted(bg) {
		t.Fatal("Admitted without the domain key")
	}
	j := &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Text: "t"}
	headBefore, _ := e.state.LedgerHead()
	for name, call := range map[string]func() error{
		"CreateKey": func() error { _, err := joined.CreateKey(bg, app, &custosv1.CreateKeyRequest{Name: "k2"}); return err },
		"RotateKey": func() error { _, err := joined.RotateKey(bg, app, &custosv1.RotateKeyRequest{Name: "k"}); return err },
		"GenerateDataKey": func() error {
			_, err := joined.GenerateDataKey(bg, app, &custosv1.GenerateDataKeyRequest{Key: "k"})
			return err
		},
		"Encrypt": func() error {
			_, err := joined.Encrypt(bg, app, &custosv1.EncryptRequest{Key: "k", Plaintext: []byte("x")})
			return err
		},
		"Decrypt": func() error {
			_, err := joined.Decrypt(bg, app, &custosv1.DecryptRequest{Ciphertext: dk.GetWrappedDataKey(), Justification: j})
			return err
		},
		"XKSEncrypt": func() error { _, err := joined.XKSEncrypt(bg, app, "k", []byte("x"), nil, false); return err },
		"XKSDecrypt": func() error {
			_, _, err := joined.XKSDecrypt(bg, app, "k", xc.KeyVersion, xc.IV, xc.Ciphertext, xc.Tag, nil, j)
			return err
		},
	} {
		if err := call(); !errors.Is(err, kms.ErrNotAdmitted) || !errors.Is(err, kms.ErrFailedPrecondition) {
			t.Errorf("%s on a node not admitted: %v, want ErrNotAdmitted", name, err)
		}
	}
	// The two decrypts were decided and recorded before failing closed, and
	// each ALLOW is followed by a RELEASE_BLOCKED record saying why nothing
	// was released.
	if head, _ := e.state.LedgerHead(); head != headBefore+4 {
		t.Errorf("ledger head %d → %d, want the two decrypt decisions and their RELEASE_BLOCKED records", headBefore, head)
	}
	for seq := headBefore + 1; seq <= headBefore+4; seq += 2 {
		allow, err := e.state.DecisionRecord(seq)
		if err != nil {
			t.Fatal(err)
		}
		blocked, err := e.state.DecisionRecord(seq + 1)
		if err != nil {
			t.Fatal(err)
		}
		if allow.Outcome != custosv1.Outcome_OUTCOME_ALLOW || blocked.Operation != custosv1.Operation_OPERATION_RELEASE_BLOCKED ||
			blocked.RequestId != allow.RequestId || blocked.MatchedRule != kms.BlockReleaseRule(kms.BlockCauseNotAdmitted, allow.Seq) {
			t.Errorf("records %d, %d: %v / %v, want an ALLOW and its RELEASE_BLOCKED (not-admitted)", seq, seq+1, allow, blocked)
		}
	}
	if _, err := e.state.Key("k2"); err == nil {
		t.Error("CreateKey on a node not admitted created the key")
	}
}
