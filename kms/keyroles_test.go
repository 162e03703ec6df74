package kms_test

import (
	"errors"
	"testing"

	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// TestKeyAdministrationRoles: using a key does not make one its
// administrator. A principal the policy allows only to decrypt (with
// approval) can neither rotate the key, nor raise its minimum decryption
// version, nor disable it — each attempt a DENY record — so it cannot lock
// the owner out of its own data; the key's creator, its administrator,
// can. Lowering the minimum version again is the officers' act (quorum).
func TestKeyAdministrationRoles(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	const provider = "provider-support"
	p := kms.DefaultPolicy(app.Name)
	if len(p.AdminPrincipals) != 1 || p.AdminPrincipals[0] != app.Name {
		t.Fatalf("a new key's administrators: %v, want its creator", p.AdminPrincipals)
	}
	p.DecryptPrincipals = append(p.DecryptPrincipals, provider)
	if _, err := e.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "k", Policy: p}}
	}, 0, 1); err != nil {
		t.Fatal(err)
	}
	prov := kms.Principal{Name: provider}
	for what, call := range map[string]func() error{
		"rotate": func() error {
			_, err := e.svc.RotateKey(bg, prov, &custosv1.RotateKeyRequest{Name: "k"})
			return err
		},
		"raise the minimum version": func() error {
			_, err := e.svc.SetMinDecryptionVersion(bg, prov, &custosv1.SetMinDecryptionVersionRequest{Name: "k", MinDecryptionVersion: 1})
			return err
		},
		"disable": func() error {
			_, err := e.svc.SetKeyState(bg, prov, &custosv1.SetKeyStateRequest{Name: "k", State: custosv1.KeyState_KEY_STATE_DISABLED})
			return err
		},
	} {
		if err := call(); !errors.Is(err, kms.ErrPermissionDenied) {
			t.Fatalf("a decrypt-only principal tries to %s: %v, want PermissionDenied", what, err)
		}
		if rec := lastRecord(t, e); rec.Outcome != custosv1.Outcome_OUTCOME_DENY || rec.Principal != provider {
			t.Fatalf("%s by the decrypt-only principal: record %v, want a DENY", what, rec)
		}
	}
	// The owner administers its key: rotate, raise the minimum.
	if _, err := e.svc.RotateKey(bg, app, &custosv1.RotateKeyRequest{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.SetMinDecryptionVersion(bg, app, &custosv1.SetMinDecryptionVersionRequest{Name: "k", MinDecryptionVersion: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.SetMinDecryptionVersion(bg, app, &custosv1.SetMinDecryptionVersionRequest{Name: "k", MinDecryptionVersion: 1}); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("the owner lowers the minimum version: %v, want PermissionDenied", err)
	}
	// The officers lower it: one is not enough, the quorum is.
	lower := func(v uint32) func(*custosv1.Statement) {
		return func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_SetKeyMinVersion{SetKeyMinVersion: &custosv1.SetKeyMinVersion{Key: "k", MinDecryptionVersion: v}}
		}
	}
	if _, err := e.govern(lower(1), 0); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("one officer lowers the minimum version: %v", err)
	}
	if _, err := e.govern(lower(3), 0, 1); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("a minimum above the primary version: %v", err)
	}
	if _, err := e.govern(lower(1), 0, 1); err != nil {
		t.Fatal(err)
	}
	if rec := lastRecord(t, e); rec.MatchedRule != "governance:set_key_min_version" || rec.Key != "k" {
		t.Fatalf("record %v", rec)
	}
	k, err := e.svc.GetKey(bg, app, &custosv1.GetKeyRequest{Name: "k"})
	if err != nil || k.MinDecryptionVersion != 1 {
		t.Fatalf("after the officers lowered it: %v, %v", k, err)
	}
}
