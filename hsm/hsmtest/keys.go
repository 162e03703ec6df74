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
	wrapped, kcv := s.wrappedKey(t, wk)
	if len(wrapped) < hsm.AESKeySize {
		t.Fatalf("wrapped key is %d bytes", len(wrapped))
	}
	again, againKCV := s.wrappedKey(t, wk)
	if bytes.Equal(wrapped, again) {
		t.Fatal("two GenerateWrappedKey calls returned the same bytes")
	}
	if bytes.Equal(kcv, againKCV) {
		t.Fatal("two GenerateWrappedKey calls returned the same check value")
	}

	// Two unwraps of one wrapped key are the same key, with the check value
	// GenerateWrappedKey returned.
	a := hsm.KeyRef{ID: s.id("kek-a"), CheckValue: kcv}
	b := hsm.KeyRef{ID: s.id("kek-b"), CheckValue: kcv}
	s.cleanup(t, a.ID)
	s.cleanup(t, b.ID)
	for _, ref := range []hsm.KeyRef{a, b} {
		if err := s.b.UnwrapKey(c, wk, wrapped, hsm.KeySpec{ID: ref.ID, Label: "unwrapped", Usage: hsm.UsageEncrypt, CheckValue: kcv}); err != nil {
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
	d := hsm.KeyRef{ID: s.id("kek-d"), CheckValue: againKCV}
	s.cleanup(t, d.ID)
	if err := s.b.UnwrapKey(c, wk, again, kekSpec(d.ID, againKCV)); err != nil {
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
		err := s.b.UnwrapKey(c, under, w, kekSpec(id, kcv))
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
	err = s.b.UnwrapKey(c, wk, wrapped, hsm.KeySpec{ID: w2, Usage: hsm.UsageWrap, CheckValue: kcv})
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
	a, err := s.b.KeyAttributes(c, kek.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := hsm.Attributes{Token: true, Sensitive: true, AlwaysSensitive: true, NeverExtractable: true, Local: true, Label: "kek"}
	if a != want {
		t.Errorf("generated KEK attributes = %+v, want %+v", a, want)
	}

	wk := s.newKey(t, "wrap", hsm.UsageWrap)
	a, err = s.b.KeyAttributes(c, wk.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Token || !a.Sensitive || !a.AlwaysSensitive || !a.Extractable || !a.WrapWithTrusted || a.NeverExtractable || a.Sign || !a.Local {
		t.Errorf("wrapping key attributes = %+v, want token, sensitive, extractable only with trusted, no CKA_SIGN, generated here (CKA_LOCAL)", a)
	}

	wrapped, kcv := s.wrappedKey(t, wk)
	u := s.id("unwrapped")
	s.cleanup(t, u)
	if err := s.b.UnwrapKey(c, wk, wrapped, hsm.KeySpec{ID: u, Label: "u", Usage: hsm.UsageEncrypt, CheckValue: kcv}); err != nil {
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
	// Nor was it generated in this token: a domain-key rotation's
	// generator relies on CKA_LOCAL telling them apart (kms/rotationwork.go).
	if a.Local {
		t.Errorf("unwrapped KEK claims CKA_LOCAL: %+v", a)
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
	want = hsm.Attributes{Token: true, Sensitive: true, AlwaysSensitive: true, NeverExtractable: true, Sign: true, Local: true, Label: "signer"}
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
	if _, err := s.b.EncryptGCM(c, hsm.KeyRef{ID: id, CheckValue: someCheckValue(t)}, make([]byte, hsm.GCMIVSize), []byte("x"), nil); err == nil {
		t.Fatal("EncryptGCM under an EC key id succeeded")
	}
}

func (s *suite) testDestroy(t *testing.T) {
	c := ctx(t)
	id := s.id("kek")
	kcv, err := s.b.GenerateKey(c, hsm.KeySpec{ID: id, Usage: hsm.UsageEncrypt})
	if err != nil {
		t.Fatal(err)
	}
	kek := hsm.KeyRef{ID: id, CheckValue: kcv}
	iv := make([]byte, hsm.GCMIVSize)
	ct, err := s.b.EncryptGCM(c, kek, iv, []byte("shred me"), nil) // caches the handle
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := s.b.HasKey(c, id); !ok || err != nil {
		t.Fatalf("HasKey before destroy = %v, %v", ok, err)
	}
	if err := s.b.DestroyKey(c, id); err != nil {
		t.Fatalf("DestroyKey: %v", err)
	}
	if ok, err := s.b.HasKey(c, id); ok || err != nil {
		t.Fatalf("HasKey after destroy = %v, %v", ok, err)
	}
	_, err = s.b.DecryptGCM(c, kek, iv, ct, nil)
	wantErr(t, "DecryptGCM after destroy", err, hsm.ErrKeyNotFound)
	_, err = s.b.KeyAttributes(c, id)
	wantErr(t, "KeyAttributes after destroy", err, hsm.ErrKeyNotFound)
	wantErr(t, "VerifyKey after destroy", s.b.VerifyKey(c, kek, hsm.UsageEncrypt), hsm.ErrKeyNotFound)
	if err := s.b.DestroyKey(c, id); err != nil {
		t.Fatalf("second DestroyKey: %v", err)
	}
	// The id can be reused; the new key is a new key, with a new check
	// value: under the old reference it is not the recorded key.
	kcv2, err := s.b.GenerateKey(c, hsm.KeySpec{ID: id, Usage: hsm.UsageEncrypt})
	if err != nil {
		t.Fatalf("GenerateKey after destroy: %v", err)
	}
	if bytes.Equal(kcv, kcv2) {
		t.Fatal("the re-created key has the destroyed key's check value")
	}
	_, err = s.b.DecryptGCM(c, kek, iv, ct, nil)
	wantErr(t, "DecryptGCM under the re-created key with the old check value", err, hsm.ErrObjectMismatch)
	_, err = s.b.DecryptGCM(c, hsm.KeyRef{ID: id, CheckValue: kcv2}, iv, ct, nil)
	wantErr(t, "DecryptGCM under the re-created key", err, hsm.ErrDecrypt)
	if err := s.b.DestroyKey(c, id); err != nil {
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
	ids := make([][]byte, workers) // ids of the keys each worker unwraps
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
					wrapped, kcv, err := s.b.GenerateWrappedKey(c, wk)
					if err != nil {
						fail("GenerateWrappedKey: %v", err)
						return
					}
					if err := s.b.UnwrapKey(c, wk, wrapped, kekSpec(ids[w], kcv)); err != nil {
						fail("UnwrapKey: %v", err)
						return
					}
					if _, err := s.b.EncryptGCM(c, hsm.KeyRef{ID: ids[w], CheckValue: kcv}, iv, pt, nil); err != nil {
						fail("EncryptGCM under unwrapped key: %v", err)
						return
					}
					if err := s.b.VerifyKey(c, hsm.KeyRef{ID: ids[w], CheckValue: kcv}, hsm.UsageEncrypt); err != nil {
						fail("VerifyKey of the unwrapped key: %v", err)
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

// testCheckValue checks the key check values the backend returns: 16 bytes,
// one per key, and the one that key verifies against, before and after use.
func (s *suite) testCheckValue(t *testing.T) {
	c := ctx(t)
	kek := s.newKey(t, "kek", hsm.UsageEncrypt)
	kek2 := s.newKey(t, "kek2", hsm.UsageEncrypt)
	wk := s.newKey(t, "wrap", hsm.UsageWrap)
	wk2 := s.newKey(t, "wrap2", hsm.UsageWrap)
	wrapped, kcv := s.wrappedKey(t, wk)
	wrapped2, kcv2 := s.wrappedKey(t, wk2)
	seen := map[string]string{}
	for name, v := range map[string][]byte{"kek": kek.CheckValue, "kek2": kek2.CheckValue, "wrap": wk.CheckValue,
		"wrap2": wk2.CheckValue, "wrapped": kcv, "wrapped2": kcv2} {
		if other, ok := seen[string(v)]; ok {
			t.Errorf("%s and %s have the same check value %x", name, other, v)
		}
		seen[string(v)] = name
	}

	// GenerateWrappedKey's check value is the unwrapped key's, whichever
	// wrapping key and however many times it is unwrapped.
	var refs []hsm.KeyRef
	for i, w := range []struct {
		wk      hsm.KeyRef
		wrapped []byte
		kcv     []byte
	}{{wk, wrapped, kcv}, {wk, wrapped, kcv}, {wk2, wrapped2, kcv2}} {
		ref := hsm.KeyRef{ID: s.id(fmt.Sprintf("unwrapped%d", i)), CheckValue: w.kcv}
		s.cleanup(t, ref.ID)
		if err := s.b.UnwrapKey(c, w.wk, w.wrapped, kekSpec(ref.ID, w.kcv)); err != nil {
			t.Fatalf("UnwrapKey %d with GenerateWrappedKey's check value: %v", i, err)
		}
		refs = append(refs, ref)
	}

	// Each check value keeps naming its key, after any amount of use.
	all := []struct {
		ref   hsm.KeyRef
		usage hsm.KeyUsage
	}{{kek, hsm.UsageEncrypt}, {kek2, hsm.UsageEncrypt}, {wk, hsm.UsageWrap}, {wk2, hsm.UsageWrap},
		{refs[0], hsm.UsageEncrypt}, {refs[1], hsm.UsageEncrypt}, {refs[2], hsm.UsageEncrypt}}
	for round := range 3 {
		for _, k := range all {
			if err := s.b.VerifyKey(c, k.ref, k.usage); err != nil {
				t.Fatalf("round %d: VerifyKey(%s): %v", round, k.ref.ID, err)
			}
		}
		// Use every key on every session the backend may hold.
		for range 24 {
			iv := randomBytes(t, hsm.GCMIVSize)
			for _, k := range all {
				if k.usage == hsm.UsageEncrypt {
					ct, err := s.b.EncryptGCM(c, k.ref, iv, []byte("x"), nil)
					if err != nil {
						t.Fatalf("round %d: EncryptGCM(%s): %v", round, k.ref.ID, err)
					}
					if _, err := s.b.DecryptGCM(c, k.ref, iv, ct, nil); err != nil {
						t.Fatalf("round %d: DecryptGCM(%s): %v", round, k.ref.ID, err)
					}
				}
			}
		}
		if _, _, err := s.b.GenerateWrappedKey(c, wk); err != nil {
			t.Fatalf("round %d: GenerateWrappedKey: %v", round, err)
		}
	}
	// The two unwraps of one wrapped key are one key.
	iv := randomBytes(t, hsm.GCMIVSize)
	ct, err := s.b.EncryptGCM(c, refs[0], iv, []byte("data key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := s.b.DecryptGCM(c, refs[1], iv, ct, nil); err != nil || string(pt) != "data key" {
		t.Fatalf("DecryptGCM under the second unwrap: %q, %v", pt, err)
	}
}

// testVerifyKey checks VerifyKey's three answers, and that every method
// refuses a key whose check value is not the recorded one.
func (s *suite) testVerifyKey(t *testing.T) {
	c := ctx(t)
	kek := s.newKey(t, "kek", hsm.UsageEncrypt)
	other := s.newKey(t, "other", hsm.UsageEncrypt)
	wk := s.newKey(t, "wrap", hsm.UsageWrap)
	wk2 := s.newKey(t, "wrap2", hsm.UsageWrap)
	for _, k := range []struct {
		ref   hsm.KeyRef
		usage hsm.KeyUsage
	}{{kek, hsm.UsageEncrypt}, {other, hsm.UsageEncrypt}, {wk, hsm.UsageWrap}, {wk2, hsm.UsageWrap}} {
		if err := s.b.VerifyKey(c, k.ref, k.usage); err != nil {
			t.Errorf("VerifyKey(%s): %v", k.ref.ID, err)
		}
	}

	missing := hsm.KeyRef{ID: s.id("missing"), CheckValue: kek.CheckValue}
	wantErr(t, "VerifyKey(missing KEK)", s.b.VerifyKey(c, missing, hsm.UsageEncrypt), hsm.ErrKeyNotFound)
	missing.CheckValue = wk.CheckValue
	wantErr(t, "VerifyKey(missing wrapping key)", s.b.VerifyKey(c, missing, hsm.UsageWrap), hsm.ErrKeyNotFound)

	// A wrong check value: random, or another key's.
	iv := make([]byte, hsm.GCMIVSize)
	good, err := s.b.EncryptGCM(c, kek, iv, []byte("data key"), nil) // caches kek
	if err != nil {
		t.Fatal(err)
	}
	wrapped, kcv := s.wrappedKey(t, wk) // caches wk
	for _, wrong := range [][]byte{someCheckValue(t), other.CheckValue, wk.CheckValue} {
		bad := hsm.KeyRef{ID: kek.ID, CheckValue: wrong}
		wantErr(t, "VerifyKey(KEK, wrong check value)", s.b.VerifyKey(c, bad, hsm.UsageEncrypt), hsm.ErrObjectMismatch)
		_, err := s.b.EncryptGCM(c, bad, iv, []byte("x"), nil)
		wantErr(t, "EncryptGCM(wrong check value)", err, hsm.ErrObjectMismatch)
		_, err = s.b.DecryptGCM(c, bad, iv, good, nil)
		wantErr(t, "DecryptGCM(wrong check value)", err, hsm.ErrObjectMismatch)
	}
	for _, wrong := range [][]byte{someCheckValue(t), wk2.CheckValue, kek.CheckValue} {
		bad := hsm.KeyRef{ID: wk.ID, CheckValue: wrong}
		wantErr(t, "VerifyKey(wrapping key, wrong check value)", s.b.VerifyKey(c, bad, hsm.UsageWrap), hsm.ErrObjectMismatch)
		_, _, err := s.b.GenerateWrappedKey(c, bad)
		wantErr(t, "GenerateWrappedKey(wrong check value)", err, hsm.ErrObjectMismatch)
		u := s.id("u")
		wantErr(t, "UnwrapKey(wrapping key with a wrong check value)", s.b.UnwrapKey(c, bad, wrapped, kekSpec(u, kcv)), hsm.ErrObjectMismatch)
		if ok, _ := s.b.HasKey(c, u); ok {
			t.Error("UnwrapKey under a wrapping key with a wrong check value created a key")
			_ = s.b.DestroyKey(c, u)
		}
	}
	// The keys still verify and work after the refusals.
	if pt, err := s.b.DecryptGCM(c, kek, iv, good, nil); err != nil || string(pt) != "data key" {
		t.Fatalf("DecryptGCM after refusals: %q, %v", pt, err)
	}
	if err := s.b.VerifyKey(c, wk, hsm.UsageWrap); err != nil {
		t.Fatalf("VerifyKey(wrapping key) after refusals: %v", err)
	}
}

// testUnwrapCheckValue checks that UnwrapKey keeps a key only if it has the
// check value the caller recorded.
func (s *suite) testUnwrapCheckValue(t *testing.T) {
	c := ctx(t)
	wk := s.newKey(t, "wrap", hsm.UsageWrap)
	wrapped, kcv := s.wrappedKey(t, wk)
	_, otherKCV := s.wrappedKey(t, wk)
	id := s.id("kek")
	s.cleanup(t, id)
	for name, wrong := range map[string][]byte{
		"random":                 someCheckValue(t),
		"another wrapped key's":  otherKCV,
		"the wrapping key's":     wk.CheckValue,
		"one bit off":            flipByte(kcv, hsm.CheckValueSize-1),
		"the right one reversed": reversed(kcv),
	} {
		err := s.b.UnwrapKey(c, wk, wrapped, kekSpec(id, wrong))
		wantErr(t, "UnwrapKey("+name+" check value)", err, hsm.ErrObjectMismatch)
		if ok, err := s.b.HasKey(c, id); ok || err != nil {
			t.Fatalf("UnwrapKey with %s check value left a key behind (HasKey = %v, %v)", name, ok, err)
		}
		wantErr(t, "VerifyKey after a refused unwrap", s.b.VerifyKey(c, hsm.KeyRef{ID: id, CheckValue: kcv}, hsm.UsageEncrypt), hsm.ErrKeyNotFound)
	}
	// The id is free again, and the right check value unwraps into it.
	if err := s.b.UnwrapKey(c, wk, wrapped, kekSpec(id, kcv)); err != nil {
		t.Fatalf("UnwrapKey with the right check value after refusals: %v", err)
	}
	ref := hsm.KeyRef{ID: id, CheckValue: kcv}
	if err := s.b.VerifyKey(c, ref, hsm.UsageEncrypt); err != nil {
		t.Fatal(err)
	}
	iv := make([]byte, hsm.GCMIVSize)
	ct, err := s.b.EncryptGCM(c, ref, iv, []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.b.DecryptGCM(c, ref, iv, ct, nil); err != nil {
		t.Fatal(err)
	}
	// Unwrapping again into the taken id: ErrKeyExists, whatever the check
	// value, and the key is untouched.
	for _, v := range [][]byte{kcv, otherKCV} {
		wantErr(t, "UnwrapKey(into a taken id)", s.b.UnwrapKey(c, wk, wrapped, kekSpec(id, v)), hsm.ErrKeyExists)
	}
	if err := s.b.VerifyKey(c, ref, hsm.UsageEncrypt); err != nil {
		t.Fatalf("VerifyKey after refused unwraps into its id: %v", err)
	}
}

func reversed(b []byte) []byte {
	out := make([]byte, len(b))
	for i, v := range b {
		out[len(b)-1-i] = v
	}
	return out
}
