package hsmtest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/custos-kms/custos/hsm"
)

func (s *suite) testWrapUnwrap(t *testing.T) {
	c := ctx(t)
	wk := s.newKey(t, "wrap", hsm.UsageWrap)
	otherWK := s.newKey(t, "wrap2", hsm.UsageWrap)
	wrapped, err := s.b.GenerateWrappedKey(c, wk)
	if err != nil {
		t.Fatalf("GenerateWrappedKey: %v", err)
	}
	if len(wrapped) < hsm.AESKeySize {
		t.Fatalf("wrapped key is %d bytes", len(wrapped))
	}
	again, err := s.b.GenerateWrappedKey(c, wk)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(wrapped, again) {
		t.Fatal("two GenerateWrappedKey calls returned the same bytes")
	}

	// Two unwraps of one wrapped key are the same key.
	a, b := s.id("kek-a"), s.id("kek-b")
	s.cleanup(t, a)
	s.cleanup(t, b)
	for _, id := range [][]byte{a, b} {
		if err := s.b.UnwrapKey(c, wk, wrapped, hsm.KeySpec{ID: id, Label: "unwrapped", Usage: hsm.UsageEncrypt}); err != nil {
			t.Fatalf("UnwrapKey: %v", err)
		}
	}
	iv := make([]byte, hsm.GCMIVSize)
	ct, err := s.b.EncryptGCM(c, a, iv, []byte("data key"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := s.b.DecryptGCM(c, b, iv, ct, []byte("aad")); err != nil || string(pt) != "data key" {
		t.Fatalf("decrypt under a second unwrap of the same key: %q, %v", pt, err)
	}
	// A different wrapped key is a different key.
	d := s.id("kek-d")
	s.cleanup(t, d)
	if err := s.b.UnwrapKey(c, wk, again, hsm.KeySpec{ID: d, Usage: hsm.UsageEncrypt}); err != nil {
		t.Fatal(err)
	}
	_, err = s.b.DecryptGCM(c, d, iv, ct, []byte("aad"))
	wantErr(t, "DecryptGCM under a different unwrapped key", err, hsm.ErrDecrypt)

	// Wrong wrapping key, tampered bytes: ErrDecrypt, and nothing created.
	bad := map[string][]byte{
		"wrong wrapping key": wrapped,
		"first byte":         flipByte(wrapped, 0),
		"last byte":          flipByte(wrapped, len(wrapped)-1),
		"truncated by 8":     wrapped[:len(wrapped)-8],
	}
	for name, w := range bad {
		under := wk
		if name == "wrong wrapping key" {
			under = otherWK
		}
		id := s.id("bad")
		err := s.b.UnwrapKey(c, under, w, hsm.KeySpec{ID: id, Usage: hsm.UsageEncrypt})
		wantErr(t, "UnwrapKey("+name+")", err, hsm.ErrDecrypt)
		if ok, _ := s.b.HasKey(c, id); ok {
			t.Errorf("UnwrapKey(%s) left a key behind", name)
			_ = s.b.DestroyKey(c, id)
		}
	}

	// Only encryption keys are unwrapped: a wrapping key (the domain key)
	// is generated in the HSM and never comes out of a blob.
	w2 := s.id("wrap-unwrapped")
	s.cleanup(t, w2)
	err = s.b.UnwrapKey(c, wk, wrapped, hsm.KeySpec{ID: w2, Usage: hsm.UsageWrap})
	wantErr(t, "UnwrapKey(UsageWrap)", err, hsm.ErrInvalidInput)
}

func flipByte(b []byte, i int) []byte {
	b = bytes.Clone(b)
	b[i] ^= 0x80
	return b
}

func (s *suite) testAttributes(t *testing.T) {
	c := ctx(t)
	kek := s.newKey(t, "kek", hsm.UsageEncrypt)
	a, err := s.b.KeyAttributes(c, kek)
	if err != nil {
		t.Fatal(err)
	}
	want := hsm.Attributes{Token: true, Sensitive: true, AlwaysSensitive: true, NeverExtractable: true, Label: "kek"}
	if a != want {
		t.Errorf("generated KEK attributes = %+v, want %+v", a, want)
	}

	wk := s.newKey(t, "wrap", hsm.UsageWrap)
	a, err = s.b.KeyAttributes(c, wk)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Token || !a.Sensitive || !a.AlwaysSensitive || !a.Extractable || !a.WrapWithTrusted || a.NeverExtractable {
		t.Errorf("wrapping key attributes = %+v, want token, sensitive, extractable only with trusted", a)
	}

	wrapped, err := s.b.GenerateWrappedKey(c, wk)
	if err != nil {
		t.Fatal(err)
	}
	u := s.id("unwrapped")
	s.cleanup(t, u)
	if err := s.b.UnwrapKey(c, wk, wrapped, hsm.KeySpec{ID: u, Label: "u", Usage: hsm.UsageEncrypt}); err != nil {
		t.Fatal(err)
	}
	a, err = s.b.KeyAttributes(c, u)
	if err != nil {
		t.Fatal(err)
	}
	// An unwrapped key was extractable once (as the wrapped copy), so
	// PKCS#11 says it is neither always sensitive nor never extractable.
	if !a.Token || !a.Sensitive || a.Extractable || a.Label != "u" {
		t.Errorf("unwrapped KEK attributes = %+v, want token, sensitive, non-extractable", a)
	}
	if a.NeverExtractable {
		t.Errorf("unwrapped KEK claims CKA_NEVER_EXTRACTABLE: %+v", a)
	}

	ec := s.id("ec")
	if _, err := s.b.GenerateECKey(c, ec, "signer"); err != nil {
		t.Fatal(err)
	}
	s.cleanup(t, ec)
	a, err = s.b.KeyAttributes(c, ec)
	if err != nil {
		t.Fatal(err)
	}
	want = hsm.Attributes{Token: true, Sensitive: true, AlwaysSensitive: true, NeverExtractable: true, Label: "signer"}
	if a != want {
		t.Errorf("EC private key attributes = %+v, want %+v", a, want)
	}
}

func (s *suite) testECDSA(t *testing.T) {
	c := ctx(t)
	id := s.id("ec")
	pub, err := s.b.GenerateECKey(c, id, "ledger signer")
	if err != nil {
		t.Fatalf("GenerateECKey: %v", err)
	}
	s.cleanup(t, id)
	if pub.Curve.Params().Name != "P-256" {
		t.Fatalf("curve = %s", pub.Curve.Params().Name)
	}
	got, err := s.b.PublicKey(c, id)
	if err != nil {
		t.Fatalf("PublicKey: %v", err)
	}
	if !got.Equal(pub) {
		t.Fatal("PublicKey differs from the key GenerateECKey returned")
	}
	for i := range 5 {
		digest := sha256.Sum256(fmt.Appendf(nil, "chain head %d", i))
		sig, err := s.b.SignECDSA(c, id, digest[:])
		if err != nil {
			t.Fatalf("SignECDSA: %v", err)
		}
		if !ecdsa.VerifyASN1(pub, digest[:], sig) {
			t.Fatalf("signature %x does not verify", sig)
		}
		other := sha256.Sum256([]byte("other"))
		if ecdsa.VerifyASN1(pub, other[:], sig) {
			t.Fatal("signature verifies over another digest")
		}
	}
	for _, n := range []int{0, 1, 20, 31, 33, 48, 64} {
		_, err := s.b.SignECDSA(c, id, make([]byte, n))
		wantErr(t, fmt.Sprintf("SignECDSA(%d-byte digest)", n), err, hsm.ErrInvalidInput)
	}
	_, err = s.b.SignECDSA(c, id, nil)
	wantErr(t, "SignECDSA(nil digest)", err, hsm.ErrInvalidInput)
	if ok, err := s.b.HasKey(c, id); !ok || err != nil {
		t.Fatalf("HasKey(EC key) = %v, %v", ok, err)
	}
	// An EC key cannot do AES-GCM.
	if _, err := s.b.EncryptGCM(c, id, make([]byte, hsm.GCMIVSize), []byte("x"), nil); err == nil {
		t.Fatal("EncryptGCM under an EC key id succeeded")
	}
}

func (s *suite) testDestroy(t *testing.T) {
	c := ctx(t)
	kek := s.id("kek")
	if err := s.b.GenerateKey(c, hsm.KeySpec{ID: kek, Usage: hsm.UsageEncrypt}); err != nil {
		t.Fatal(err)
	}
	iv := make([]byte, hsm.GCMIVSize)
	ct, err := s.b.EncryptGCM(c, kek, iv, []byte("shred me"), nil) // caches the handle
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := s.b.HasKey(c, kek); !ok || err != nil {
		t.Fatalf("HasKey before destroy = %v, %v", ok, err)
	}
	if err := s.b.DestroyKey(c, kek); err != nil {
		t.Fatalf("DestroyKey: %v", err)
	}
	if ok, err := s.b.HasKey(c, kek); ok || err != nil {
		t.Fatalf("HasKey after destroy = %v, %v", ok, err)
	}
	_, err = s.b.DecryptGCM(c, kek, iv, ct, nil)
	wantErr(t, "DecryptGCM after destroy", err, hsm.ErrKeyNotFound)
	_, err = s.b.KeyAttributes(c, kek)
	wantErr(t, "KeyAttributes after destroy", err, hsm.ErrKeyNotFound)
	if err := s.b.DestroyKey(c, kek); err != nil {
		t.Fatalf("second DestroyKey: %v", err)
	}
	// The id can be reused; the new key is a new key.
	if err := s.b.GenerateKey(c, hsm.KeySpec{ID: kek, Usage: hsm.UsageEncrypt}); err != nil {
		t.Fatalf("GenerateKey after destroy: %v", err)
	}
	_, err = s.b.DecryptGCM(c, kek, iv, ct, nil)
	wantErr(t, "DecryptGCM under the re-created key", err, hsm.ErrDecrypt)
	if err := s.b.DestroyKey(c, kek); err != nil {
		t.Fatal(err)
	}

	// Both halves of an EC pair go.
	ec := s.id("ec")
	if _, err := s.b.GenerateECKey(c, ec, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.b.DestroyKey(c, ec); err != nil {
		t.Fatal(err)
	}
	_, err = s.b.PublicKey(c, ec)
	wantErr(t, "PublicKey after destroy", err, hsm.ErrKeyNotFound)
	_, err = s.b.SignECDSA(c, ec, make([]byte, 32))
	wantErr(t, "SignECDSA after destroy", err, hsm.ErrKeyNotFound)
	if _, err := s.b.GenerateECKey(c, ec, ""); err != nil {
		t.Fatalf("GenerateECKey after destroy: %v", err)
	}
	_ = s.b.DestroyKey(c, ec)
}

func (s *suite) testHealth(t *testing.T) {
	if err := s.b.Health(ctx(t)); err != nil {
		t.Fatalf("Health: %v", err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	// A cancelled context may or may not win the race with a free session,
	// but must never hang or panic.
	_ = s.b.Health(cancelled)
}

// testConcurrent hammers the backend from 16 goroutines.
func (s *suite) testConcurrent(t *testing.T) {
	c := ctx(t)
	kek := s.newKey(t, "kek", hsm.UsageEncrypt)
	wk := s.newKey(t, "wrap", hsm.UsageWrap)
	ec := s.id("ec")
	pub, err := s.b.GenerateECKey(c, ec, "")
	if err != nil {
		t.Fatal(err)
	}
	s.cleanup(t, ec)
	const workers, rounds = 16, 20
	ids := make([][]byte, workers)
	for w := range workers {
		ids[w] = s.id(fmt.Sprintf("worker%d", w))
		s.cleanup(t, ids[w])
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			fail := func(format string, args ...any) {
				errs <- fmt.Errorf("worker %d: "+format, append([]any{w}, args...)...)
			}
			for r := range rounds {
				iv, err := s.b.Random(c, hsm.GCMIVSize)
				if err != nil {
					fail("Random: %v", err)
					return
				}
				pt := fmt.Appendf(nil, "worker %d round %d", w, r)
				ct, err := s.b.EncryptGCM(c, kek, iv, pt, pt)
				if err != nil {
					fail("EncryptGCM: %v", err)
					return
				}
				got, err := s.b.DecryptGCM(c, kek, iv, ct, pt)
				if err != nil || !bytes.Equal(got, pt) {
					fail("DecryptGCM: %v", err)
					return
				}
				if _, err := s.b.DecryptGCM(c, kek, iv, ct, nil); !errors.Is(err, hsm.ErrDecrypt) {
					fail("DecryptGCM with wrong AAD: %v", err)
					return
				}
				digest := sha256.Sum256(pt)
				sig, err := s.b.SignECDSA(c, ec, digest[:])
				if err != nil || !ecdsa.VerifyASN1(pub, digest[:], sig) {
					fail("SignECDSA: %v", err)
					return
				}
				if r%5 == 0 {
					wrapped, err := s.b.GenerateWrappedKey(c, wk)
					if err != nil {
						fail("GenerateWrappedKey: %v", err)
						return
					}
					if err := s.b.UnwrapKey(c, wk, wrapped, hsm.KeySpec{ID: ids[w], Usage: hsm.UsageEncrypt}); err != nil {
						fail("UnwrapKey: %v", err)
						return
					}
					if _, err := s.b.EncryptGCM(c, ids[w], iv, pt, nil); err != nil {
						fail("EncryptGCM under unwrapped key: %v", err)
						return
					}
					if err := s.b.DestroyKey(c, ids[w]); err != nil {
						fail("DestroyKey: %v", err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
