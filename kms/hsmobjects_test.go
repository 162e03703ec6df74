package kms_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"testing"

	"github.com/custos-kms/custos/hsm/pkcs11/pkcs11test"
	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Invariant 9 of docs/architecture.md: HSM objects are authenticated. An
// attacker with write access to the token — with the user PIN, or with none
// at all — plants AES keys of values it knows under the ids custos uses. No
// data may ever be protected by a planted value, and the node must say why
// it refuses (an error, and a HSM_OBJECT_REJECTED record in the ledger).

// plant creates an AES key of known value under id on e's token from another
// process; pin "" plants through a public session with no login.
func plant(t *testing.T, e *env, pin string, id, value []byte, kind pkcs11test.Kind) {
	t.Helper()
	pkcs11test.Run(t, pkcs11test.Op{Module: e.tok.Module, Label: e.tok.Label, PIN: pin,
		Plant: true, ID: id, Value: value, Kind: kind})
}

// destroy destroys every object with id on e's token from another process.
func destroy(t *testing.T, e *env, id []byte) {
	t.Helper()
	pkcs11test.Run(t, pkcs11test.Op{Module: e.tok.Module, Label: e.tok.Label, PIN: e.tok.PIN, Destroy: true, ID: id})
}

// openedUnder reports whether the wrapped data key or payload w opens under
// the AES-256 key value (as an attacker holding that value would try).
func openedUnder(t *testing.T, value, wrapped []byte, encCtx map[string]string) bool {
	t.Helper()
	w, err := kms.ParseWrapped(wrapped)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := aes.NewCipher(value)
	if err != nil {
		t.Fatal(err)
	}
	g, err := cipher.NewGCM(blk)
	if err != nil {
		t.Fatal(err)
	}
	_, err = g.Open(nil, w.IV, w.Ciphertext, w.AAD(kms.ContextDigest(encCtx)))
	return err == nil
}

func value(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

// rejections returns the HSM_OBJECT_REJECTED records in the ledger.
func rejections(t *testing.T, e *env) []*custosv1.DecisionRecord {
	t.Helper()
	var out []*custosv1.DecisionRecord
	head, _ := e.state.LedgerHead()
	for seq := uint64(1); seq <= head; seq++ {
		rec, err := e.state.DecisionRecord(seq)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Operation == custosv1.Operation_OPERATION_HSM_OBJECT_REJECTED {
			out = append(out, rec)
		}
	}
	return out
}

func kekID(t *testing.T, e *env, key string, version uint32) []byte {
	t.Helper()
	k, err := e.state.Key(key)
	if err != nil {
		t.Fatal(err)
	}
	return k.Versions[version-1].KekId
}

// Keys planted ahead of time under the ids custos would once have used for
// the next version and for a new key (custos/kek/<key>/<version>) protect
// nothing: a KEK's id is random, chosen when it is made.
func TestPlantedKEKsAheadOfTimeProtectNothing(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	plant(t, e, "", []byte("custos/kek/k/2"), value(1), pkcs11test.KindKEK)          // public, no login
	plant(t, e, e.tok.PIN, []byte("custos/kek/k/3"), value(2), pkcs11test.KindKEK)   // private, with the PIN
	plant(t, e, e.tok.PIN, []byte("custos/kek/new/1"), value(3), pkcs11test.KindKEK) // a key not yet created
	for range 2 {
		if _, err := e.svc.RotateKey(bg, app, &custosv1.RotateKeyRequest{Name: "k"}); err != nil {
			t.Fatal(err)
		}
	}
	createKey(t, e, "new")
	for _, tc := range []struct {
		key   string
		value []byte
	}{{"k", value(1)}, {"k", value(2)}, {"new", value(3)}} {
		ctx := map[string]string{"file": "a"}
		dk := dataKey(t, e, tc.key, ctx)
		if openedUnder(t, tc.value, dk.WrappedDataKey, ctx) {
			t.Fatalf("key %q: a data key opens under the planted value", tc.key)
		}
		got, err := decrypt(e, dk.WrappedDataKey, ctx)
		if err != nil || !bytes.Equal(got.Plaintext, dk.Plaintext) {
			t.Fatalf("key %q: decrypt = %v: want the data key back", tc.key, err)
		}
	}
}

// The attacker reads a KEK's id from the log, destroys the real object with
// the PIN and plants one of known value with every attribute custos sets.
// After a restart the node refuses it: encrypt fails, a decrypt is decided
// but nothing is released, and the ledger says why.
func TestReplacedKEKIsRefused(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	ctx := map[string]string{"file": "a"}
	old := dataKey(t, e, "k", ctx)
	id := kekID(t, e, "k", 1)
	destroy(t, e, id)
	plant(t, e, e.tok.PIN, id, value(7), pkcs11test.KindKEK)
	e.restart()

	_, err := e.svc.GenerateDataKey(bg, app, &custosv1.GenerateDataKeyRequest{Key: "k", EncryptionContext: ctx})
	if !errors.Is(err, kms.ErrHSMObjectRejected) || !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("GenerateDataKey with a planted KEK: %v, want ErrHSMObjectRejected (Unavailable)", err)
	}
	before := e.hsm.decrypts.Load()
	if _, err := decrypt(e, old.WrappedDataKey, ctx); !errors.Is(err, kms.ErrHSMObjectRejected) {
		t.Fatalf("Decrypt with a planted KEK: %v, want ErrHSMObjectRejected", err)
	}
	if n := e.hsm.decrypts.Load() - before; n != 0 {
		t.Fatalf("%d HSM decrypts under the planted key, want 0", n)
	}
	recs := rejections(t, e)
	if len(recs) == 0 {
		t.Fatal("no HSM_OBJECT_REJECTED record in the ledger")
	}
	r := recs[0]
	if r.Key != "k" || r.KeyVersion != 1 || r.Outcome != custosv1.Outcome_OUTCOME_DENY || !r.Notify ||
		!bytes.Contains([]byte(r.Detail), id) {
		t.Fatalf("rejection record = %v", r)
	}
}

// The KEK is replaced while the node runs, after the node verified it and
// before any session holds a copy of it: the next use finds the planted
// object, and the node forgets the KEK, fails the request with
// ErrHSMObjectRejected and records why; a retry does not fall through to
// the planted object either.
func TestKEKReplacedWhileRunningIsForgotten(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	id := kekID(t, e, "k", 1)
	destroy(t, e, id)
	plant(t, e, e.tok.PIN, id, value(6), pkcs11test.KindKEK)
	ctx := map[string]string{"file": "a"}
	for i := 0; i < 2; i++ {
		dk, err := e.svc.GenerateDataKey(bg, app, &custosv1.GenerateDataKeyRequest{Key: "k", EncryptionContext: ctx})
		if !errors.Is(err, kms.ErrHSMObjectRejected) {
			if err == nil && openedUnder(t, value(6), dk.WrappedDataKey, ctx) {
				t.Fatalf("attempt %d: a data key was protected by the planted value", i)
			}
			t.Fatalf("attempt %d: GenerateDataKey after the KEK was replaced: %v, want ErrHSMObjectRejected", i, err)
		}
	}
	recs := rejections(t, e)
	if len(recs) == 0 || recs[0].Key != "k" || recs[0].KeyVersion != 1 || !bytes.Contains([]byte(recs[0].Detail), id) {
		t.Fatalf("rejection records = %v", recs)
	}
}

// An object planted beside the real KEK — public, with no login — makes two
// objects under the id: a node that loads the key refuses both.
func TestSecondObjectBesideKEKIsRefused(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	ctx := map[string]string{"file": "a"}
	dk := dataKey(t, e, "k", ctx)
	plant(t, e, "", kekID(t, e, "k", 1), value(8), pkcs11test.KindKEK)
	e.restart()
	if _, err := decrypt(e, dk.WrappedDataKey, ctx); !errors.Is(err, kms.ErrHSMObjectRejected) {
		t.Fatalf("Decrypt with a second object under the KEK's id: %v, want ErrHSMObjectRejected", err)
	}
	if len(rejections(t, e)) == 0 {
		t.Fatal("no HSM_OBJECT_REJECTED record in the ledger")
	}
}

// A KEK id taken before the node first unwraps the version (as on a node
// that loads KEKs lazily from the log) by an object custos did not make: the
// node refuses to use the id rather than take the planted object.
func TestKEKIdTakenBeforeUnwrapIsRefused(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	id := kekID(t, e, "k", 1)
	destroy(t, e, id) // as if this node had never unwrapped it
	plant(t, e, "", id, value(9), pkcs11test.KindKEK)
	e.restart()
	_, err := e.svc.GenerateDataKey(bg, app, &custosv1.GenerateDataKeyRequest{Key: "k"})
	if !errors.Is(err, kms.ErrHSMObjectRejected) {
		t.Fatalf("GenerateDataKey: %v, want ErrHSMObjectRejected", err)
	}
}

// The domain key across a restart: replaced by one of known value with every
// attribute (with the PIN), or doubled by a public object (no login), the
// node refuses to start serving and records why.
func TestPlantedDomainKeyIsRefusedAtStart(t *testing.T) {
	for _, tc := range []struct {
		name    string
		replace bool
		pin     bool
	}{{"replaced with the PIN", true, true}, {"second public object", false, false}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			createKey(t, e, "k")
			id := e.state.DomainKeyID()
			if tc.replace {
				destroy(t, e, id)
			}
			pin := ""
			if tc.pin {
				pin = e.tok.PIN
			}
			plant(t, e, pin, id, value(5), pkcs11test.KindWrap)
			e.close()
			e.open()
			err := e.svc.InitCluster(bg, nil, 0)
			if !errors.Is(err, kms.ErrHSMObjectRejected) {
				t.Fatalf("InitCluster with a planted domain key: %v, want ErrHSMObjectRejected", err)
			}
			recs := rejections(t, e)
			if len(recs) != 1 || recs[0].Key != "" {
				t.Fatalf("rejection records = %v, want one for the domain key", recs)
			}
			if _, err := e.svc.RotateKey(bg, app, &custosv1.RotateKeyRequest{Name: "k"}); !errors.Is(err, kms.ErrHSMObjectRejected) {
				t.Fatalf("RotateKey under a planted domain key: %v, want ErrHSMObjectRejected", err)
			}
		})
	}
}
