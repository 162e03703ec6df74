package pkcs11_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/hsm/pkcs11"
)

// The key check value format, version 1 (hsm/pkcs11/checkvalue.go,
// docs/hsm-objects.md), computed here in Go from a key's value, so that the
// HSM's computation is checked against an independent one.
var kcvLabel = []byte("custos/kcv/1")

// kekCheckValue is SHA-256(label || AES-256-GCM(key, IV=label, 16 zero
// bytes))[:16].
func kekCheckValue(t testing.TB, key []byte) []byte {
	t.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(append(bytes.Clone(kcvLabel), aead.Seal(nil, kcvLabel, make([]byte, 16), nil)...))
	return sum[:hsm.CheckValueSize]
}

// wrapCheckValue is SHA-256(label || AES-KWP(key, SHA-256("custos/kcv/1
// wrap")))[:16].
func wrapCheckValue(t testing.TB, key []byte) []byte {
	t.Helper()
	v := sha256.Sum256([]byte("custos/kcv/1 wrap"))
	sum := sha256.Sum256(append(bytes.Clone(kcvLabel), kwp(t, key, v[:])...))
	return sum[:hsm.CheckValueSize]
}

// kwp is AES key wrap with padding (RFC 5649, SP 800-38F KWP).
func kwp(t testing.TB, kek, p []byte) []byte {
	t.Helper()
	block, err := aes.NewCipher(kek)
	if err != nil {
		t.Fatal(err)
	}
	var a [8]byte
	binary.BigEndian.PutUint32(a[:4], 0xA65959A6)
	binary.BigEndian.PutUint32(a[4:], uint32(len(p)))
	padded := append(bytes.Clone(p), make([]byte, (8-len(p)%8)%8)...)
	if len(padded) == 8 {
		out := make([]byte, 16)
		block.Encrypt(out, append(a[:], padded...))
		return out
	}
	n := len(padded) / 8
	r := padded
	var buf [16]byte
	for j := range 6 {
		for i := 1; i <= n; i++ {
			copy(buf[:8], a[:])
			copy(buf[8:], r[(i-1)*8:i*8])
			block.Encrypt(buf[:], buf[:])
			tt := uint64(n*j + i)
			binary.BigEndian.PutUint64(a[:], binary.BigEndian.Uint64(buf[:8])^tt)
			copy(r[(i-1)*8:i*8], buf[8:])
		}
	}
	return append(a[:], r...)
}

// TestKWPVectors checks kwp against the examples of RFC 5649 section 6.
func TestKWPVectors(t *testing.T) {
	kek := unhex(t, "5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8")
	for _, v := range []struct{ key, wrapped string }{
		{"c37b7e6492584340bed12207808941155068f738", "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a"},
		{"466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"},
	} {
		if got := kwp(t, kek, unhex(t, v.key)); !bytes.Equal(got, unhex(t, v.wrapped)) {
			t.Errorf("KWP(%s) = %x, want %s", v.key, got, v.wrapped)
		}
	}
}

// TestCheckValueFormat checks that the check values the HSM computes are
// the documented ones, for both kinds of secret key, from keys of known
// value.
func TestCheckValueFormat(t *testing.T) {
	b, _ := open(t)
	c := testCtx(t)
	for i, value := range [][]byte{make([]byte, 32), bytes.Repeat([]byte{0xff}, 32), randomKey(t)} {
		id := []byte{'k', byte(i)}
		ref, err := pkcs11.ImportAESKeyForTest(b, c, id, value)
		if err != nil {
			t.Fatal(err)
		}
		if want := kekCheckValue(t, value); !bytes.Equal(ref.CheckValue, want) {
			t.Errorf("KEK %d: check value %x, want %x", i, ref.CheckValue, want)
		}
		if err := b.VerifyKey(c, ref, hsm.UsageEncrypt); err != nil {
			t.Errorf("KEK %d: VerifyKey: %v", i, err)
		}

		wid := []byte{'w', byte(i)}
		if _, err := pkcs11.CreateObjectForTest(b, c, wrapKeyTemplate(wid, value, nil)); err != nil {
			t.Fatal(err)
		}
		got, err := pkcs11.RawCheckValueForTest(b, c, wid, hsm.UsageWrap)
		if err != nil {
			t.Fatal(err)
		}
		want := wrapCheckValue(t, value)
		if !bytes.Equal(got, want) {
			t.Errorf("wrapping key %d: check value %x, want %x", i, got, want)
		}
		if err := b.VerifyKey(c, hsm.KeyRef{ID: wid, CheckValue: want}, hsm.UsageWrap); err != nil {
			t.Errorf("wrapping key %d: VerifyKey: %v", i, err)
		}
	}
	// A generated key's check value is a 16-byte value the HSM recomputes
	// identically.
	for _, u := range []hsm.KeyUsage{hsm.UsageEncrypt, hsm.UsageWrap} {
		id := []byte{'g', byte(u)}
		kcv, err := b.GenerateKey(c, hsm.KeySpec{ID: id, Usage: u})
		if err != nil {
			t.Fatal(err)
		}
		if len(kcv) != hsm.CheckValueSize {
			t.Fatalf("GenerateKey(usage %d) returned a %d-byte check value", u, len(kcv))
		}
		again, err := pkcs11.RawCheckValueForTest(b, c, id, u)
		if err != nil || !bytes.Equal(again, kcv) {
			t.Fatalf("usage %d: check value recomputed = %x, %v; GenerateKey returned %x", u, again, err, kcv)
		}
	}
}

// wrapKeyTemplate is the template of a wrapping key with a known value and
// every attribute custos gives the domain key (extra attributes override
// them).
func wrapKeyTemplate(id, value []byte, extra []*p11.Attribute) []*p11.Attribute {
	t := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, true),
		p11.NewAttribute(p11.CKA_WRAP_WITH_TRUSTED, true),
		p11.NewAttribute(p11.CKA_WRAP, true),
		p11.NewAttribute(p11.CKA_UNWRAP, true),
		p11.NewAttribute(p11.CKA_ENCRYPT, false),
		p11.NewAttribute(p11.CKA_DECRYPT, false),
		p11.NewAttribute(p11.CKA_ID, id),
		p11.NewAttribute(p11.CKA_VALUE, value),
	}
	mod := p11.NewAttribute(p11.CKA_MODIFIABLE, false)
	for _, e := range extra {
		replaced := false
		for i, a := range t {
			if a.Type == e.Type {
				t[i], replaced = e, true
			}
		}
		if e.Type == p11.CKA_MODIFIABLE {
			mod, replaced = e, true
		}
		if !replaced {
			t = append(t, e)
		}
	}
	// CKA_MODIFIABLE last: SoftHSM applies the template in order and
	// refuses to set attributes on an unmodifiable object.
	return append(t, mod)
}

// kekTemplate is the template of a KEK with a known value and every
// attribute custos gives a KEK (extra attributes override them).
func kekTemplate(id, value []byte, extra []*p11.Attribute) []*p11.Attribute {
	t := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_ENCRYPT, true),
		p11.NewAttribute(p11.CKA_DECRYPT, true),
		p11.NewAttribute(p11.CKA_WRAP, false),
		p11.NewAttribute(p11.CKA_UNWRAP, false),
		p11.NewAttribute(p11.CKA_ID, id),
		p11.NewAttribute(p11.CKA_VALUE, value),
	}
	for _, e := range extra {
		replaced := false
		for i, a := range t {
			if a.Type == e.Type {
				t[i], replaced = e, true
			}
		}
		if !replaced {
			t = append(t, e)
		}
	}
	return t
}

func randomKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, hsm.AESKeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}
