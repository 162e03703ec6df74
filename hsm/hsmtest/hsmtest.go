// Package hsmtest is a conformance suite for hsm.Backend implementations.
// Every backend's tests call Run against a real device (SoftHSM2 for
// hsm/pkcs11); the suite checks the interface contract, not a particular
// module.
package hsmtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/custos-kms/custos/hsm"
)

// Run runs the whole conformance suite against b. It creates keys with
// random ids (so it can run more than once on one token), destroys what it
// can, and does not close b.
func Run(t *testing.T, b hsm.Backend) {
	s := &suite{b: b, prefix: randomHex(t, 4)}
	t.Run("Random", s.testRandom)
	t.Run("InvalidInput", s.testInvalidInput)
	t.Run("GCMRoundTrip", s.testGCMRoundTrip)
	t.Run("GCMTamper", s.testGCMTamper)
	t.Run("GCMSizes", s.testGCMSizes)
	t.Run("KeyExists", s.testKeyExists)
	t.Run("KeyNotFound", s.testKeyNotFound)
	t.Run("WrongUsage", s.testWrongUsage)
	t.Run("WrapUnwrap", s.testWrapUnwrap)
	t.Run("CheckValue", s.testCheckValue)
	t.Run("VerifyKey", s.testVerifyKey)
	t.Run("UnwrapCheckValue", s.testUnwrapCheckValue)
	t.Run("Attributes", s.testAttributes)
	t.Run("ECDSA", s.testECDSA)
	t.Run("Destroy", s.testDestroy)
	t.Run("Health", s.testHealth)
	t.Run("Concurrent", s.testConcurrent)
}

type suite struct {
	b      hsm.Backend
	prefix string
	n      int
}

// ctx returns a context bounded so that a hung backend fails the test
// instead of hanging it.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// id returns a fresh key id, unique within this run.
func (s *suite) id(name string) []byte {
	s.n++
	return fmt.Appendf(nil, "hsmtest-%s-%s-%d", s.prefix, name, s.n)
}

// newKey creates a key of that usage, registers its destruction and
// returns its reference (id and the check value GenerateKey returned).
func (s *suite) newKey(t *testing.T, name string, usage hsm.KeyUsage) hsm.KeyRef {
	t.Helper()
	id := s.id(name)
	kcv, err := s.b.GenerateKey(ctx(t), hsm.KeySpec{ID: id, Label: name, Usage: usage})
	if err != nil {
		t.Fatalf("GenerateKey(%s): %v", id, err)
	}
	if len(kcv) != hsm.CheckValueSize {
		t.Fatalf("GenerateKey(%s) returned a %d-byte check value, want %d", id, len(kcv), hsm.CheckValueSize)
	}
	s.cleanup(t, id)
	return hsm.KeyRef{ID: id, CheckValue: kcv}
}

// wrappedKey returns a fresh wrapped key under wk and its check value.
func (s *suite) wrappedKey(t *testing.T, wk hsm.KeyRef) (wrapped, kcv []byte) {
	t.Helper()
	wrapped, kcv, err := s.b.GenerateWrappedKey(ctx(t), wk)
	if err != nil {
		t.Fatalf("GenerateWrappedKey: %v", err)
	}
	if len(kcv) != hsm.CheckValueSize {
		t.Fatalf("GenerateWrappedKey returned a %d-byte check value, want %d", len(kcv), hsm.CheckValueSize)
	}
	return wrapped, kcv
}

// kekSpec is the spec of a KEK unwrapped into id with check value kcv.
func kekSpec(id, kcv []byte) hsm.KeySpec {
	return hsm.KeySpec{ID: id, Usage: hsm.UsageEncrypt, CheckValue: kcv}
}

// someCheckValue is a well-formed check value no key has.
func someCheckValue(t *testing.T) []byte { return randomBytes(t, hsm.CheckValueSize) }

func (s *suite) cleanup(t *testing.T, id []byte) {
	t.Cleanup(func() { _ = s.b.DestroyKey(context.Background(), id) })
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: err = %v, want %v", what, err, target)
	}
}

func (s *suite) testRandom(t *testing.T) {
	for _, n := range []int{1, 12, 32, 1000} {
		r, err := s.b.Random(ctx(t), n)
		if err != nil || len(r) != n {
			t.Fatalf("Random(%d) = %d bytes, %v", n, len(r), err)
		}
	}
	a, _ := s.b.Random(ctx(t), 32)
	c, _ := s.b.Random(ctx(t), 32)
	if bytes.Equal(a, c) {
		t.Fatal("two Random(32) calls returned the same bytes")
	}
	for _, n := range []int{0, -1} {
		_, err := s.b.Random(ctx(t), n)
		wantErr(t, fmt.Sprintf("Random(%d)", n), err, hsm.ErrInvalidInput)
	}
}

func (s *suite) testInvalidInput(t *testing.T) {
	c := ctx(t)
	iv := make([]byte, hsm.GCMIVSize)
	ct := make([]byte, 32)
	digest := make([]byte, 32)
	kek := s.newKey(t, "kek", hsm.UsageEncrypt)
	wk := s.newKey(t, "wrap", hsm.UsageWrap)
	wrapped, kcv := s.wrappedKey(t, wk)
	for _, id := range [][]byte{nil, {}} {
		ref := hsm.KeyRef{ID: id, CheckValue: kek.CheckValue}
		_, err := s.b.GenerateKey(c, hsm.KeySpec{ID: id, Usage: hsm.UsageEncrypt})
		wantErr(t, "GenerateKey(empty id)", err, hsm.ErrInvalidInput)
		_, _, err = s.b.GenerateWrappedKey(c, hsm.KeyRef{ID: id, CheckValue: wk.CheckValue})
		wantErr(t, "GenerateWrappedKey(empty id)", err, hsm.ErrInvalidInput)
		wantErr(t, "UnwrapKey(empty wrap id)", s.b.UnwrapKey(c, hsm.KeyRef{ID: id, CheckValue: wk.CheckValue}, wrapped, kekSpec(s.id("x"), kcv)), hsm.ErrInvalidInput)
		wantErr(t, "UnwrapKey(empty spec id)", s.b.UnwrapKey(c, wk, wrapped, kekSpec(id, kcv)), hsm.ErrInvalidInput)
		_, err = s.b.EncryptGCM(c, ref, iv, []byte("x"), nil)
		wantErr(t, "EncryptGCM(empty id)", err, hsm.ErrInvalidInput)
		_, err = s.b.DecryptGCM(c, ref, iv, ct, nil)
		wantErr(t, "DecryptGCM(empty id)", err, hsm.ErrInvalidInput)
		wantErr(t, "VerifyKey(empty id)", s.b.VerifyKey(c, ref, hsm.UsageEncrypt), hsm.ErrInvalidInput)
		_, err = s.b.GenerateECKey(c, id, "x")
		wantErr(t, "GenerateECKey(empty id)", err, hsm.ErrInvalidInput)
		_, err = s.b.PublicKey(c, id)
		wantErr(t, "PublicKey(empty id)", err, hsm.ErrInvalidInput)
		_, err = s.b.SignECDSA(c, id, digest)
		wantErr(t, "SignECDSA(empty id)", err, hsm.ErrInvalidInput)
		_, err = s.b.KeyAttributes(c, id)
		wantErr(t, "KeyAttributes(empty id)", err, hsm.ErrInvalidInput)
		_, err = s.b.HasKey(c, id)
		wantErr(t, "HasKey(empty id)", err, hsm.ErrInvalidInput)
		wantErr(t, "DestroyKey(empty id)", s.b.DestroyKey(c, id), hsm.ErrInvalidInput)
	}
	for _, u := range []hsm.KeyUsage{0, 3, -1} {
		id := s.id("usage")
		_, err := s.b.GenerateKey(c, hsm.KeySpec{ID: id, Usage: u})
		wantErr(t, fmt.Sprintf("GenerateKey(usage %d)", u), err, hsm.ErrInvalidInput)
		wantErr(t, fmt.Sprintf("UnwrapKey(usage %d)", u), s.b.UnwrapKey(c, wk, wrapped, hsm.KeySpec{ID: id, Usage: u, CheckValue: kcv}), hsm.ErrInvalidInput)
		wantErr(t, fmt.Sprintf("VerifyKey(usage %d)", u), s.b.VerifyKey(c, kek, u), hsm.ErrInvalidInput)
		if ok, _ := s.b.HasKey(c, id); ok {
			t.Errorf("a key with usage %d was created", u)
		}
	}
	for _, w := range [][]byte{nil, {}, wrapped[:7], wrapped[:len(wrapped)-1]} {
		err := s.b.UnwrapKey(c, wk, w, kekSpec(s.id("u"), kcv))
		if !errors.Is(err, hsm.ErrInvalidInput) && !errors.Is(err, hsm.ErrDecrypt) {
			t.Errorf("UnwrapKey(%d wrapped bytes): err = %v, want ErrInvalidInput or ErrDecrypt", len(w), err)
		}
	}
	// UnwrapKey requires the check value of the key it unwraps.
	for _, bad := range [][]byte{nil, {}, kcv[:8], append(bytes.Clone(kcv), 0)} {
		id := s.id("no-kcv")
		wantErr(t, fmt.Sprintf("UnwrapKey(%d-byte check value)", len(bad)), s.b.UnwrapKey(c, wk, wrapped, kekSpec(id, bad)), hsm.ErrInvalidInput)
		if ok, _ := s.b.HasKey(c, id); ok {
			t.Errorf("UnwrapKey with a %d-byte check value created a key", len(bad))
			_ = s.b.DestroyKey(c, id)
		}
	}
	// A reference without a well-formed check value names no key: it is
	// refused, never used.
	for _, bad := range [][]byte{nil, {}, kek.CheckValue[:8]} {
		ref := hsm.KeyRef{ID: kek.ID, CheckValue: bad}
		_, err := s.b.EncryptGCM(c, ref, iv, []byte("x"), nil)
		wantRefused(t, fmt.Sprintf("EncryptGCM(%d-byte check value)", len(bad)), err)
		_, err = s.b.DecryptGCM(c, ref, iv, ct, nil)
		wantRefused(t, fmt.Sprintf("DecryptGCM(%d-byte check value)", len(bad)), err)
		wantRefused(t, fmt.Sprintf("VerifyKey(%d-byte check value)", len(bad)), s.b.VerifyKey(c, ref, hsm.UsageEncrypt))
		_, _, err = s.b.GenerateWrappedKey(c, hsm.KeyRef{ID: wk.ID, CheckValue: bad})
		wantRefused(t, fmt.Sprintf("GenerateWrappedKey(%d-byte check value)", len(bad)), err)
	}
}

// wantRefused checks that a call with a malformed key reference failed with
// ErrInvalidInput or ErrObjectMismatch.
func wantRefused(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, hsm.ErrInvalidInput) && !errors.Is(err, hsm.ErrObjectMismatch) {
		t.Errorf("%s: err = %v, want ErrInvalidInput or ErrObjectMismatch", what, err)
	}
}

func (s *suite) testGCMRoundTrip(t *testing.T) {
	c := ctx(t)
	kek := s.newKey(t, "kek", hsm.UsageEncrypt)
	for _, size := range []int{0, 1, 15, 16, 17, 32, 1000, 64 << 10} {
		for _, aad := range [][]byte{nil, []byte("key-1/v3"), randomBytes(t, 300)} {
			pt := randomBytes(t, size)
			iv := randomBytes(t, hsm.GCMIVSize)
			ct, err := s.b.EncryptGCM(c, kek, iv, pt, aad)
			if err != nil {
				t.Fatalf("EncryptGCM(%d bytes, %d aad): %v", size, len(aad), err)
			}
			if len(ct) != size+hsm.GCMTagSize {
				t.Fatalf("EncryptGCM(%d bytes) returned %d bytes", size, len(ct))
			}
			got, err := s.b.DecryptGCM(c, kek, iv, ct, aad)
			if err != nil {
				t.Fatalf("DecryptGCM(%d bytes, %d aad): %v", size, len(aad), err)
			}
			if !bytes.Equal(got, pt) {
				t.Fatalf("DecryptGCM(%d bytes) did not return the plaintext", size)
			}
		}
	}
	// Same key, IV, AAD and plaintext: deterministic.
	iv := randomBytes(t, hsm.GCMIVSize)
	a, _ := s.b.EncryptGCM(c, kek, iv, []byte("data key"), nil)
	b, _ := s.b.EncryptGCM(c, kek, iv, []byte("data key"), nil)
	if !bytes.Equal(a, b) {
		t.Fatal("EncryptGCM is not deterministic for a fixed IV")
	}
	// Nil and empty AAD are the same thing.
	if _, err := s.b.DecryptGCM(c, kek, iv, a, []byte{}); err != nil {
		t.Fatalf("DecryptGCM with empty (not nil) AAD: %v", err)
	}
}

func (s *suite) testGCMTamper(t *testing.T) {
	c := ctx(t)
	kek := s.newKey(t, "kek", hsm.UsageEncrypt)
	other := s.newKey(t, "other", hsm.UsageEncrypt)
	pt := randomBytes(t, 32)
	iv := randomBytes(t, hsm.GCMIVSize)
	aad := []byte("context")
	ct, err := s.b.EncryptGCM(c, kek, iv, pt, aad)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(b []byte, i int) []byte {
		b = bytes.Clone(b)
		b[i] ^= 0x01
		return b
	}
	cases := []struct {
		name   string
		key    hsm.KeyRef
		iv, ct []byte
		aad    []byte
	}{
		{"ciphertext bit", kek, iv, flip(ct, 0), aad},
		{"last ciphertext byte", kek, iv, flip(ct, len(pt)-1), aad},
		{"tag bit", kek, iv, flip(ct, len(ct)-1), aad},
		{"first tag byte", kek, iv, flip(ct, len(pt)), aad},
		{"iv", kek, flip(iv, 11), ct, aad},
		{"aad", kek, iv, ct, []byte("contexT")},
		{"aad missing", kek, iv, ct, nil},
		{"aad extra", kek, iv, ct, append(bytes.Clone(aad), 0)},
		{"truncated", kek, iv, ct[:len(ct)-1], aad},
		{"tag only", kek, iv, ct[len(pt):], aad},
		{"extended", kek, iv, append(bytes.Clone(ct), 0), aad},
		{"wrong key", other, iv, ct, aad},
		{"zero tag", kek, iv, append(bytes.Clone(ct[:len(pt)]), make([]byte, 16)...), aad},
	}
	for _, tc := range cases {
		got, err := s.b.DecryptGCM(c, tc.key, tc.iv, tc.ct, tc.aad)
		if !errors.Is(err, hsm.ErrDecrypt) {
			t.Errorf("%s: DecryptGCM err = %v, want ErrDecrypt", tc.name, err)
		}
		if got != nil {
			t.Errorf("%s: DecryptGCM returned %d bytes with an error", tc.name, len(got))
		}
	}
	// The key still works after failures (no session left in a bad state).
	if got, err := s.b.DecryptGCM(c, kek, iv, ct, aad); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("DecryptGCM after failures: %v", err)
	}
}

func (s *suite) testGCMSizes(t *testing.T) {
	c := ctx(t)
	kek := s.newKey(t, "kek", hsm.UsageEncrypt)
	for _, n := range []int{0, 1, 8, 11, 13, 16, 32} {
		iv := make([]byte, n)
		_, err := s.b.EncryptGCM(c, kek, iv, []byte("x"), nil)
		wantErr(t, fmt.Sprintf("EncryptGCM(iv %d)", n), err, hsm.ErrInvalidInput)
		_, err = s.b.DecryptGCM(c, kek, iv, make([]byte, 32), nil)
		wantErr(t, fmt.Sprintf("DecryptGCM(iv %d)", n), err, hsm.ErrInvalidInput)
	}
	_, err := s.b.EncryptGCM(c, kek, nil, []byte("x"), nil)
	wantErr(t, "EncryptGCM(nil iv)", err, hsm.ErrInvalidInput)
	iv := make([]byte, hsm.GCMIVSize)
	for _, n := range []int{0, 1, 12, 15} {
		_, err := s.b.DecryptGCM(c, kek, iv, make([]byte, n), nil)
		wantErr(t, fmt.Sprintf("DecryptGCM(%d-byte ciphertext)", n), err, hsm.ErrInvalidInput)
	}
	_, err = s.b.DecryptGCM(c, kek, iv, nil, nil)
	wantErr(t, "DecryptGCM(nil ciphertext)", err, hsm.ErrInvalidInput)
	// nil plaintext is the empty message.
	ct, err := s.b.EncryptGCM(c, kek, iv, nil, nil)
	if err != nil || len(ct) != hsm.GCMTagSize {
		t.Fatalf("EncryptGCM(nil plaintext) = %d bytes, %v", len(ct), err)
	}
	if pt, err := s.b.DecryptGCM(c, kek, iv, ct, nil); err != nil || len(pt) != 0 {
		t.Fatalf("DecryptGCM(tag only) = %d bytes, %v", len(pt), err)
	}
}

func (s *suite) testKeyExists(t *testing.T) {
	c := ctx(t)
	kek := s.newKey(t, "kek", hsm.UsageEncrypt)
	wk := s.newKey(t, "wrap", hsm.UsageWrap)
	ec := s.id("ec")
	if _, err := s.b.GenerateECKey(c, ec, "ec"); err != nil {
		t.Fatal(err)
	}
	s.cleanup(t, ec)
	wrapped, kcv := s.wrappedKey(t, wk)
	for _, id := range [][]byte{kek.ID, wk.ID, ec} {
		for _, u := range []hsm.KeyUsage{hsm.UsageEncrypt, hsm.UsageWrap} {
			_, err := s.b.GenerateKey(c, hsm.KeySpec{ID: id, Usage: u})
			wantErr(t, fmt.Sprintf("GenerateKey(%s, usage %d)", id, u), err, hsm.ErrKeyExists)
		}
		_, err := s.b.GenerateECKey(c, id, "again")
		wantErr(t, fmt.Sprintf("GenerateECKey(%s)", id), err, hsm.ErrKeyExists)
		wantErr(t, fmt.Sprintf("UnwrapKey(into %s)", id), s.b.UnwrapKey(c, wk, wrapped, kekSpec(id, kcv)), hsm.ErrKeyExists)
	}
	// ... and still the recorded keys.
	for _, k := range []struct {
		ref   hsm.KeyRef
		usage hsm.KeyUsage
	}{{kek, hsm.UsageEncrypt}, {wk, hsm.UsageWrap}} {
		if err := s.b.VerifyKey(c, k.ref, k.usage); err != nil {
			t.Errorf("VerifyKey(%s) after the refused creations: %v", k.ref.ID, err)
		}
	}
	// The original key is untouched.
	iv := make([]byte, hsm.GCMIVSize)
	ct, err := s.b.EncryptGCM(c, kek, iv, []byte("still here"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.b.DecryptGCM(c, kek, iv, ct, nil); err != nil {
		t.Fatal(err)
	}
}

func (s *suite) testKeyNotFound(t *testing.T) {
	c := ctx(t)
	missing := s.id("missing")
	missingRef := hsm.KeyRef{ID: missing, CheckValue: someCheckValue(t)}
	wk := s.newKey(t, "wrap", hsm.UsageWrap)
	wrapped, kcv := s.wrappedKey(t, wk)
	iv := make([]byte, hsm.GCMIVSize)
	_, err := s.b.EncryptGCM(c, missingRef, iv, []byte("x"), nil)
	wantErr(t, "EncryptGCM", err, hsm.ErrKeyNotFound)
	_, err = s.b.DecryptGCM(c, missingRef, iv, make([]byte, 32), nil)
	wantErr(t, "DecryptGCM", err, hsm.ErrKeyNotFound)
	_, _, err = s.b.GenerateWrappedKey(c, missingRef)
	wantErr(t, "GenerateWrappedKey", err, hsm.ErrKeyNotFound)
	u := s.id("u")
	wantErr(t, "UnwrapKey", s.b.UnwrapKey(c, missingRef, wrapped, kekSpec(u, kcv)), hsm.ErrKeyNotFound)
	if ok, _ := s.b.HasKey(c, u); ok {
		t.Error("UnwrapKey under a missing wrapping key created a key")
	}
	for _, usage := range []hsm.KeyUsage{hsm.UsageEncrypt, hsm.UsageWrap} {
		wantErr(t, fmt.Sprintf("VerifyKey(usage %d)", usage), s.b.VerifyKey(c, missingRef, usage), hsm.ErrKeyNotFound)
	}
	_, err = s.b.PublicKey(c, missing)
	wantErr(t, "PublicKey", err, hsm.ErrKeyNotFound)
	_, err = s.b.SignECDSA(c, missing, make([]byte, 32))
	wantErr(t, "SignECDSA", err, hsm.ErrKeyNotFound)
	_, err = s.b.KeyAttributes(c, missing)
	wantErr(t, "KeyAttributes", err, hsm.ErrKeyNotFound)
	if ok, err := s.b.HasKey(c, missing); ok || err != nil {
		t.Errorf("HasKey(missing) = %v, %v", ok, err)
	}
	if err := s.b.DestroyKey(c, missing); err != nil {
		t.Errorf("DestroyKey(missing) = %v", err)
	}
}

// testWrongUsage checks that a key does only what its usage allows.
func (s *suite) testWrongUsage(t *testing.T) {
	c := ctx(t)
	kek := s.newKey(t, "kek", hsm.UsageEncrypt)
	wk := s.newKey(t, "wrap", hsm.UsageWrap)
	iv := make([]byte, hsm.GCMIVSize)
	if _, err := s.b.EncryptGCM(c, wk, iv, []byte("x"), nil); err == nil {
		t.Error("EncryptGCM under a wrapping key succeeded")
	}
	if _, err := s.b.DecryptGCM(c, wk, iv, make([]byte, 32), nil); err == nil || errors.Is(err, hsm.ErrDecrypt) {
		t.Errorf("DecryptGCM under a wrapping key: err = %v, want a refusal before decryption", err)
	}
	if _, _, err := s.b.GenerateWrappedKey(c, kek); err == nil {
		t.Error("GenerateWrappedKey under an encryption key succeeded")
	}
	wrapped, kcv := s.wrappedKey(t, wk)
	u := s.id("u")
	s.cleanup(t, u)
	if err := s.b.UnwrapKey(c, kek, wrapped, kekSpec(u, kcv)); err == nil {
		t.Error("UnwrapKey under an encryption key succeeded")
	}
	// A key is not the recorded key of the other usage, whatever its
	// check value.
	wantErr(t, "VerifyKey(KEK as a wrapping key)", s.b.VerifyKey(c, kek, hsm.UsageWrap), hsm.ErrObjectMismatch)
	wantErr(t, "VerifyKey(wrapping key as a KEK)", s.b.VerifyKey(c, wk, hsm.UsageEncrypt), hsm.ErrObjectMismatch)
	// An AES key has no private key: signing with it finds nothing.
	_, err := s.b.SignECDSA(c, kek.ID, make([]byte, 32))
	wantErr(t, "SignECDSA(AES key id)", err, hsm.ErrKeyNotFound)
}
