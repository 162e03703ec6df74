package pkcs11_test

import (
	"bytes"
	"errors"
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/hsm/pkcs11"
	"github.com/custos-kms/custos/hsm/pkcs11/pkcs11test"
	"github.com/custos-kms/custos/softhsm"
)

// rewrapSetup is a token with two domain keys, DK1 (current) and DK2
// (new), a KEK blob under DK1, and DK1 wrapped to a transport key of this
// process that the token's SO trusted: a single-node domain-key rotation
// (docs/key-destruction.md) up to ReceiveRewrapKey.
type rewrapSetup struct {
	b               *pkcs11.Backend
	tok             *softhsm.Token
	dk1, dk2        hsm.KeyRef
	kekBlob, kekKCV []byte
	tid, transport  []byte
}

func newRewrapSetup(t *testing.T) rewrapSetup {
	t.Helper()
	ctx := testCtx(t)
	b, tok := open(t)
	r := rewrapSetup{b: b, tok: tok, tid: []byte("custos/transport/rotation/01")}
	for i, ref := range []*hsm.KeyRef{&r.dk1, &r.dk2} {
		id := []byte{'d', 'k', byte('1' + i)}
		kcv, err := b.GenerateKey(ctx, hsm.KeySpec{ID: id, Usage: hsm.UsageWrap})
		if err != nil {
			t.Fatal(err)
		}
		*ref = hsm.KeyRef{ID: id, CheckValue: kcv}
	}
	var err error
	if r.kekBlob, r.kekKCV, err = b.GenerateWrappedKey(ctx, r.dk1); err != nil {
		t.Fatal(err)
	}
	pub, err := b.GenerateTransportKey(ctx, r.tid)
	if err != nil {
		t.Fatal(err)
	}
	trusted := []byte("custos/trusted/rotation/01")
	pkcs11test.Run(t, pkcs11test.Op{Module: tok.Module, Label: tok.Label, SOPIN: tok.SOPIN, Trust: true,
		ID: trusted, Modulus: pub.N.Bytes(), Exponent: pub.E})
	if r.transport, err = b.WrapForTransport(ctx, r.dk1, trusted, pub, hsm.OAEPSHA1); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRewrapKEK re-wraps a KEK blob from DK1 to DK2 through a rewrap key:
// the new blob unwraps under DK2 into the same KEK, and every bad input is
// refused.
func TestRewrapKEK(t *testing.T) {
	ctx := testCtx(t)
	r := newRewrapSetup(t)
	b := r.b
	rid := []byte("custos/rewrap/rotation/01")

	tampered := bytes.Clone(r.transport)
	tampered[len(tampered)/2] ^= 1
	if err := b.ReceiveRewrapKey(ctx, r.tid, tampered, hsm.OAEPSHA1, rid); !errors.Is(err, hsm.ErrDecrypt) {
		t.Fatalf("tampered transport blob: %v, want ErrDecrypt", err)
	}
	if err := b.ReceiveRewrapKey(ctx, r.tid, r.transport, hsm.OAEPSHA1, r.dk2.ID); !errors.Is(err, hsm.ErrKeyExists) {
		t.Fatalf("rewrap key under a taken id: %v, want ErrKeyExists", err)
	}
	if err := b.ReceiveRewrapKey(ctx, r.tid, r.transport, hsm.OAEPSHA1, rid); err != nil {
		t.Fatal(err)
	}
	// A session object: no token key holds the id.
	if ok, err := b.HasKey(ctx, rid); err != nil || ok {
		t.Fatalf("HasKey(rewrap key) = %v, %v: want no token object", ok, err)
	}
	// One key, one transport.
	if err := b.ReceiveRewrapKey(ctx, r.tid, r.transport, hsm.OAEPSHA1, []byte("custos/rewrap/other")); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatalf("second receive with the same transport key: %v, want ErrKeyNotFound", err)
	}

	// The rewrap key's own unwrap template is enforced: the KEK it unwraps
	// is a session key, sensitive, not wrap-with-trusted, of no use but to
	// be wrapped (CKR_TEMPLATE_INCONSISTENT otherwise, 0xD1).
	set := func(typ uint, v any) func([]*p11.Attribute) []*p11.Attribute {
		return func(t []*p11.Attribute) []*p11.Attribute {
			out := []*p11.Attribute{}
			for _, a := range t {
				if a.Type != typ {
					out = append(out, a)
				}
			}
			if v != nil {
				out = append(out, p11.NewAttribute(typ, v))
			}
			return out
		}
	}
	if err := pkcs11.RewrapUnwrapForTest(b, ctx, rid, r.kekBlob, func(t []*p11.Attribute) []*p11.Attribute { return t }); err != nil {
		t.Fatalf("unwrap under the rewrap key with RewrapKey's template: %v", err)
	}
	for _, tc := range []struct {
		name string
		typ  uint
		v    any
	}{
		{"CKA_TOKEN=true", p11.CKA_TOKEN, true}, {"CKA_SENSITIVE=false", p11.CKA_SENSITIVE, false},
		{"CKA_ENCRYPT=true", p11.CKA_ENCRYPT, true}, {"CKA_DECRYPT=true", p11.CKA_DECRYPT, true},
		{"CKA_DERIVE=true", p11.CKA_DERIVE, true}, {"CKA_SIGN=true", p11.CKA_SIGN, true},
		{"CKA_WRAP=true", p11.CKA_WRAP, true}, {"CKA_WRAP_WITH_TRUSTED=true", p11.CKA_WRAP_WITH_TRUSTED, true},
		{"CKA_WRAP_WITH_TRUSTED omitted", p11.CKA_WRAP_WITH_TRUSTED, nil},
		{"CKA_KEY_TYPE=generic", p11.CKA_KEY_TYPE, p11.CKK_GENERIC_SECRET},
	} {
		err := pkcs11.RewrapUnwrapForTest(b, ctx, rid, r.kekBlob, set(tc.typ, tc.v))
		t.Logf("unwrap under the rewrap key with %s: %v", tc.name, err)
		if err == nil {
			t.Errorf("the rewrap key unwrapped a KEK with %s", tc.name)
		}
	}

	newBlob, err := b.RewrapKey(ctx, rid, r.kekBlob, r.dk2, r.kekKCV)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(newBlob, r.kekBlob) {
		t.Fatal("the new blob is the old one")
	}
	oldSpec := hsm.KeySpec{ID: []byte("kek-old"), Usage: hsm.UsageEncrypt, CheckValue: r.kekKCV}
	newSpec := hsm.KeySpec{ID: []byte("kek-new"), Usage: hsm.UsageEncrypt, CheckValue: r.kekKCV}
	if err := b.UnwrapKey(ctx, r.dk1, r.kekBlob, oldSpec); err != nil {
		t.Fatal(err)
	}
	if err := b.UnwrapKey(ctx, r.dk2, newBlob, newSpec); err != nil {
		t.Fatalf("new blob under DK2: %v", err)
	}
	if err := b.UnwrapKey(ctx, r.dk1, newBlob, hsm.KeySpec{ID: []byte("kek-x"), Usage: hsm.UsageEncrypt,
		CheckValue: r.kekKCV}); !errors.Is(err, hsm.ErrDecrypt) {
		t.Fatalf("new blob under DK1: %v, want ErrDecrypt", err)
	}
	iv := bytes.Repeat([]byte{3}, hsm.GCMIVSize)
	ct, err := b.EncryptGCM(ctx, hsm.KeyRef{ID: oldSpec.ID, CheckValue: r.kekKCV}, iv, []byte("data key"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := b.DecryptGCM(ctx, hsm.KeyRef{ID: newSpec.ID, CheckValue: r.kekKCV}, iv, ct, []byte("aad")); err != nil || string(pt) != "data key" {
		t.Fatalf("decrypt under the KEK from the new blob: %q, %v", pt, err)
	}

	bad := bytes.Clone(r.kekBlob)
	bad[len(bad)/2] ^= 1
	if _, err := b.RewrapKey(ctx, rid, bad, r.dk2, r.kekKCV); !errors.Is(err, hsm.ErrDecrypt) {
		t.Fatalf("tampered KEK blob: %v, want ErrDecrypt", err)
	}
	if _, err := b.RewrapKey(ctx, rid, newBlob, r.dk2, r.kekKCV); !errors.Is(err, hsm.ErrDecrypt) {
		t.Fatalf("a blob not under the old domain key: %v, want ErrDecrypt", err)
	}
	wrongKCV := bytes.Repeat([]byte{7}, hsm.CheckValueSize)
	if out, err := b.RewrapKey(ctx, rid, r.kekBlob, r.dk2, wrongKCV); !errors.Is(err, hsm.ErrObjectMismatch) || out != nil {
		t.Fatalf("wrong check value: %x, %v, want nothing and ErrObjectMismatch", out, err)
	}
	if _, err := b.RewrapKey(ctx, rid, r.kekBlob, hsm.KeyRef{ID: r.dk2.ID, CheckValue: r.dk1.CheckValue}, r.kekKCV); !errors.Is(err, hsm.ErrObjectMismatch) {
		t.Fatalf("new domain key with another check value: %v, want ErrObjectMismatch", err)
	}
	for _, from := range [][]byte{[]byte("custos/rewrap/none"), r.dk1.ID, oldSpec.ID} {
		// An unknown id, the token DK1 itself, a KEK (with session copies).
		if _, err := b.RewrapKey(ctx, from, r.kekBlob, r.dk2, r.kekKCV); !errors.Is(err, hsm.ErrKeyNotFound) {
			t.Fatalf("RewrapKey from %q: %v, want ErrKeyNotFound", from, err)
		}
	}
	if again, err := b.RewrapKey(ctx, rid, r.kekBlob, r.dk2, r.kekKCV); err != nil || !bytes.Equal(again, newBlob) {
		t.Fatalf("second re-wrap: %v (KWP is deterministic: same blob %v)", err, bytes.Equal(again, newBlob))
	}

	// DestroyTransportKey destroys the rewrap key, and leaves the KEKs'
	// session copies alone.
	for range 2 {
		if err := b.DestroyTransportKey(ctx, rid); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.RewrapKey(ctx, rid, r.kekBlob, r.dk2, r.kekKCV); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatalf("RewrapKey after DestroyTransportKey: %v, want ErrKeyNotFound", err)
	}
	if err := b.DestroyTransportKey(ctx, oldSpec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := b.DecryptGCM(ctx, hsm.KeyRef{ID: oldSpec.ID, CheckValue: r.kekKCV}, iv, ct, []byte("aad")); err != nil {
		t.Fatalf("KEK after DestroyTransportKey of its id: %v", err)
	}
}

// TestRewrapKeyInvisibleToPINHolder: while the rewrap key exists, a holder
// of the user PIN in another process neither sees it nor gets from DK1 or
// DK2 a KEK that DK2 would wrap.
func TestRewrapKeyInvisibleToPINHolder(t *testing.T) {
	ctx := testCtx(t)
	r := newRewrapSetup(t)
	rid := []byte("custos/rewrap/rotation/02")
	if err := r.b.ReceiveRewrapKey(ctx, r.tid, r.transport, hsm.OAEPSHA1, rid); err != nil {
		t.Fatal(err)
	}
	newBlob, err := r.b.RewrapKey(ctx, rid, r.kekBlob, r.dk2, r.kekKCV)
	if err != nil {
		t.Fatal(err)
	}
	op := func(probe string, id, blob, wrapID []byte) pkcs11test.Op {
		return pkcs11test.Op{Module: r.tok.Module, Label: r.tok.Label, PIN: r.tok.PIN, Probe: probe, ID: id, Blob: blob, WrapID: wrapID}
	}
	for _, tc := range []struct {
		name string
		op   pkcs11test.Op
		want string
	}{
		// The probe finds token objects: DK1 is there.
		{"count DK1", op(pkcs11test.ProbeCount, r.dk1.ID, nil, nil), "count 1"},
		// custosd's session objects are not.
		{"count the rewrap key", op(pkcs11test.ProbeCount, rid, nil, nil), "count 0"},
		// DK1's and DK2's unwrap templates refuse an extractable KEK:
		// CKR_TEMPLATE_INCONSISTENT.
		{"old blob under DK1, extractable", op(pkcs11test.ProbeUnwrapExtractable, r.dk1.ID, r.kekBlob, nil), "0xD1"},
		{"new blob under DK2, extractable", op(pkcs11test.ProbeUnwrapExtractable, r.dk2.ID, newBlob, nil), "0xD1"},
		// What they may unwrap is non-extractable: DK2 does not wrap it
		// (CKR_KEY_UNEXTRACTABLE), so a copy of a KEK they made under DK1
		// never gets under DK2.
		{"old blob under DK1, then under DK2", op(pkcs11test.ProbeUnwrapThenWrap, r.dk1.ID, r.kekBlob, r.dk2.ID), "wrap 0x6A"},
		{"new blob under DK2, then under DK2", op(pkcs11test.ProbeUnwrapThenWrap, r.dk2.ID, newBlob, r.dk2.ID), "wrap 0x6A"},
	} {
		got := pkcs11test.RunProbe(t, tc.op)
		t.Logf("PIN holder, %s: %s", tc.name, got)
		if got != tc.want {
			t.Errorf("PIN holder, %s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

// TestRewrapOldBlobDiesWithOldDomainKey: once DK1 is destroyed, the old
// blob unwraps nowhere on the token; the new one still does under DK2.
func TestRewrapOldBlobDiesWithOldDomainKey(t *testing.T) {
	ctx := testCtx(t)
	r := newRewrapSetup(t)
	b := r.b
	rid := []byte("custos/rewrap/rotation/03")
	if err := b.ReceiveRewrapKey(ctx, r.tid, r.transport, hsm.OAEPSHA1, rid); err != nil {
		t.Fatal(err)
	}
	newBlob, err := b.RewrapKey(ctx, rid, r.kekBlob, r.dk2, r.kekKCV)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.DestroyTransportKey(ctx, rid); err != nil {
		t.Fatal(err)
	}
	if err := b.DestroyKey(ctx, r.dk1.ID); err != nil {
		t.Fatal(err)
	}
	spec := hsm.KeySpec{ID: []byte("kek-old"), Usage: hsm.UsageEncrypt, CheckValue: r.kekKCV}
	if err := b.UnwrapKey(ctx, r.dk1, r.kekBlob, spec); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatalf("old blob under the destroyed DK1: %v, want ErrKeyNotFound", err)
	}
	if got := pkcs11test.RunProbe(t, pkcs11test.Op{Module: r.tok.Module, Label: r.tok.Label, PIN: r.tok.PIN,
		Probe: pkcs11test.ProbeCount, ID: r.dk1.ID}); got != "count 0" {
		t.Fatalf("PIN holder finds objects under DK1's id after DestroyKey: %s", got)
	}
	if _, err := b.RewrapKey(ctx, rid, r.kekBlob, r.dk2, r.kekKCV); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatalf("RewrapKey after the rotation: %v, want ErrKeyNotFound", err)
	}
	if err := b.UnwrapKey(ctx, r.dk2, newBlob, spec); err != nil {
		t.Fatalf("new blob under DK2 after DK1 is gone: %v", err)
	}
}
