package pkcs11_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/hsm/pkcs11"
	"github.com/custos-kms/custos/hsm/pkcs11/pkcs11test"
	"github.com/custos-kms/custos/softhsm"
)

// Planting (invariant 9 of docs/architecture.md): objects put on the token
// under an id custos uses, by someone without the user PIN (a read/write
// public session, in another process) or with it, must never be used as the
// recorded key.

// publicHelperEnv makes the test binary a public-session helper (see
// TestMain): a separate process that loads the module, opens a read/write
// session on the token and does NOT log in, as anyone with access to the
// token's files and the module could.
const publicHelperEnv = "CUSTOS_TEST_PUBLIC_SESSION_HELPER"

func TestMain(m *testing.M) {
	pkcs11test.MaybeChild()
	if op := os.Getenv(publicHelperEnv); op != "" {
		fmt.Printf("result: %s\n", publicSessionHelper(op))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// publicSessionHelper runs op in a public session and reports "ok ..." or
// "err ...".
func publicSessionHelper(op string) string {
	module, label := os.Getenv("CUSTOS_HELPER_MODULE"), os.Getenv("CUSTOS_HELPER_LABEL")
	id, _ := hex.DecodeString(os.Getenv("CUSTOS_HELPER_ID"))
	arg, _ := hex.DecodeString(os.Getenv("CUSTOS_HELPER_ARG"))
	ctx := p11.New(module)
	if ctx == nil {
		return "err cannot load " + module
	}
	defer ctx.Destroy()
	if err := ctx.Initialize(); err != nil {
		return fmt.Sprintf("err C_Initialize: %v", err)
	}
	defer func() { _ = ctx.Finalize() }()
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return fmt.Sprintf("err C_GetSlotList: %v", err)
	}
	slot, found := uint(0), false
	for _, sl := range slots {
		if ti, err := ctx.GetTokenInfo(sl); err == nil && strings.TrimRight(ti.Label, " \x00") == label {
			slot, found = sl, true
		}
	}
	if !found {
		return "err no token " + label
	}
	s, err := ctx.OpenSession(slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Sprintf("err C_OpenSession: %v", err)
	}
	defer func() { _ = ctx.CloseSession(s) }()
	if info, err := ctx.GetSessionInfo(s); err != nil || info.State != p11.CKS_RW_PUBLIC_SESSION {
		return fmt.Sprintf("err session state %+v, %v: want a R/W public session", info, err)
	}
	switch op {
	case "plant-public-kek", "plant-private-kek":
		// A secret key with a value the planter chose and every KEK
		// attribute that a public session may set.
		tmpl := kekTemplate(id, arg, []*p11.Attribute{p11.NewAttribute(p11.CKA_PRIVATE, op == "plant-private-kek")})
		h, err := ctx.CreateObject(s, tmpl)
		if err != nil {
			return fmt.Sprintf("err C_CreateObject: %v", err)
		}
		return fmt.Sprintf("ok handle %d", h)
	case "swap-ec-public":
		// Replace the public half of an EC pair with another point.
		if err := ctx.FindObjectsInit(s, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_ID, id), p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
		}); err != nil {
			return fmt.Sprintf("err C_FindObjectsInit: %v", err)
		}
		hs, _, err := ctx.FindObjects(s, 4)
		_ = ctx.FindObjectsFinal(s)
		if err != nil || len(hs) != 1 {
			return fmt.Sprintf("err found %d public keys: %v", len(hs), err)
		}
		if err := ctx.DestroyObject(s, hs[0]); err != nil {
			return fmt.Sprintf("err C_DestroyObject: %v", err)
		}
		h, err := ctx.CreateObject(s, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC),
			p11.NewAttribute(p11.CKA_TOKEN, true),
			p11.NewAttribute(p11.CKA_PRIVATE, false),
			p11.NewAttribute(p11.CKA_VERIFY, true),
			p11.NewAttribute(p11.CKA_EC_PARAMS, []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}),
			p11.NewAttribute(p11.CKA_EC_POINT, arg),
			p11.NewAttribute(p11.CKA_ID, id),
		})
		if err != nil {
			return fmt.Sprintf("err C_CreateObject: %v", err)
		}
		return fmt.Sprintf("ok destroyed %d, created %d", hs[0], h)
	}
	return "err unknown op " + op
}

// inPublicSession runs op in a helper process holding a public session on
// tok, and returns the helper's result ("ok ..." or "err ...").
func inPublicSession(t *testing.T, tok *softhsm.Token, op string, id, arg []byte) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), publicHelperEnv+"="+op,
		"CUSTOS_HELPER_MODULE="+tok.Module, "CUSTOS_HELPER_LABEL="+tok.Label,
		"CUSTOS_HELPER_ID="+hex.EncodeToString(id), "CUSTOS_HELPER_ARG="+hex.EncodeToString(arg))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("public session helper: %v\n%s", err, out)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if r, ok := strings.CutPrefix(sc.Text(), "result: "); ok {
			t.Logf("public session (no login, another process): %s: %s", op, r)
			return r
		}
	}
	t.Fatalf("public session helper printed no result:\n%s", out)
	return ""
}

// mustPlant is inPublicSession for an op that must succeed.
func mustPlant(t *testing.T, tok *softhsm.Token, op string, id, arg []byte) {
	t.Helper()
	if r := inPublicSession(t, tok, op, id, arg); !strings.HasPrefix(r, "ok") {
		t.Fatalf("%s in a public session: %s", op, r)
	}
}

// openAgain opens a second Backend on tok: a node after a restart, with no
// cached handle.
func openAgain(t *testing.T, tok *softhsm.Token) *pkcs11.Backend {
	t.Helper()
	b, err := pkcs11.Open(context.Background(), pkcs11.Config{Module: tok.Module, TokenLabel: tok.Label, PIN: tok.PIN})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// openedUnder reports whether ct opens under the AES-256 key value.
func openedUnder(t *testing.T, value, iv, ct []byte) bool {
	t.Helper()
	block, err := aes.NewCipher(value)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	_, err = aead.Open(nil, iv, ct, nil)
	return err == nil
}

// sealUnder encrypts pt under the AES-256 key value, as the planter can.
func sealUnder(t *testing.T, value, iv, pt []byte) []byte {
	t.Helper()
	block, err := aes.NewCipher(value)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return aead.Seal(nil, iv, pt, nil)
}

// newDomain generates a wrapping key and a wrapped KEK under it.
func newDomain(t *testing.T, b *pkcs11.Backend, id string) (domain hsm.KeyRef, wrapped, kcv []byte) {
	t.Helper()
	c := testCtx(t)
	dkcv, err := b.GenerateKey(c, hsm.KeySpec{ID: []byte(id), Usage: hsm.UsageWrap})
	if err != nil {
		t.Fatal(err)
	}
	domain = hsm.KeyRef{ID: []byte(id), CheckValue: dkcv}
	if wrapped, kcv, err = b.GenerateWrappedKey(c, domain); err != nil {
		t.Fatal(err)
	}
	return domain, wrapped, kcv
}

// refusedKEK checks that every use of key fails with ErrObjectMismatch and
// that nothing is encrypted under the planted value.
func refusedKEK(t *testing.T, b *pkcs11.Backend, what string, key hsm.KeyRef, planted []byte) {
	t.Helper()
	c := testCtx(t)
	if err := b.VerifyKey(c, key, hsm.UsageEncrypt); !errors.Is(err, hsm.ErrObjectMismatch) {
		t.Errorf("%s: VerifyKey: err = %v, want ErrObjectMismatch", what, err)
	}
	iv := make([]byte, hsm.GCMIVSize)
	for range 6 {
		ct, err := b.EncryptGCM(c, key, iv, []byte("data key"), nil)
		if !errors.Is(err, hsm.ErrObjectMismatch) {
			t.Errorf("%s: EncryptGCM: err = %v, want ErrObjectMismatch", what, err)
		}
		if err == nil && planted != nil && openedUnder(t, planted, iv, ct) {
			t.Fatalf("%s: EncryptGCM encrypted under the planted key value", what)
		}
	}
	if planted != nil {
		ct := sealUnder(t, planted, iv, []byte("planted"))
		if pt, err := b.DecryptGCM(c, key, iv, ct, nil); !errors.Is(err, hsm.ErrObjectMismatch) {
			t.Errorf("%s: DecryptGCM of a ciphertext under the planted value = %q, %v; want ErrObjectMismatch", what, pt, err)
		}
	}
}

// TestPlantPublicSession: without the user PIN, a R/W public session in
// another process creates a public token secret key with a value it chose
// under the id a KEK will get, or beside a KEK. It is never used.
func TestPlantPublicSession(t *testing.T) {
	b, tok := open(t)
	c := testCtx(t)
	domain, wrapped, kcv := newDomain(t, b, "domain")
	value := randomKey(t)

	// A public session cannot make a private object...
	kekID := []byte("kek-1")
	if r := inPublicSession(t, tok, "plant-private-kek", kekID, value); !strings.HasPrefix(r, "err") {
		t.Fatalf("a public session created a private object: %s", r)
	}
	// ... but can make a public one: the threat is real.
	mustPlant(t, tok, "plant-public-kek", kekID, value)
	if ok, err := b.HasKey(c, kekID); !ok || err != nil {
		t.Fatalf("the planted object is not visible to the backend (HasKey = %v, %v)", ok, err)
	}

	// The KEK cannot be unwrapped into the taken id, and the planted
	// object is refused, with the recorded check value or with its own.
	err := b.UnwrapKey(c, domain, wrapped, hsm.KeySpec{ID: kekID, Usage: hsm.UsageEncrypt, CheckValue: kcv})
	if !errors.Is(err, hsm.ErrKeyExists) {
		t.Fatalf("UnwrapKey into the planted id: err = %v, want ErrKeyExists", err)
	}
	refusedKEK(t, b, "public plant, recorded check value", hsm.KeyRef{ID: kekID, CheckValue: kcv}, value)
	refusedKEK(t, b, "public plant, its own check value", hsm.KeyRef{ID: kekID, CheckValue: kekCheckValue(t, value)}, value)

	// Beside a KEK in use: the backend that has verified the KEK goes on
	// with it (never with the planted value); a fresh lookup refuses both.
	kek2 := []byte("kek-2")
	if err := b.UnwrapKey(c, domain, wrapped, hsm.KeySpec{ID: kek2, Usage: hsm.UsageEncrypt, CheckValue: kcv}); err != nil {
		t.Fatal(err)
	}
	ref := hsm.KeyRef{ID: kek2, CheckValue: kcv}
	iv := make([]byte, hsm.GCMIVSize)
	ct, err := b.EncryptGCM(c, ref, iv, []byte("before"), nil)
	if err != nil {
		t.Fatal(err)
	}
	mustPlant(t, tok, "plant-public-kek", kek2, value)
	if err := b.VerifyKey(c, ref, hsm.UsageEncrypt); !errors.Is(err, hsm.ErrObjectMismatch) {
		t.Errorf("VerifyKey with a public object beside the KEK: err = %v, want ErrObjectMismatch", err)
	}
	for range 6 {
		out, err := b.EncryptGCM(c, ref, iv, []byte("data key"), nil)
		if err == nil && openedUnder(t, value, iv, out) {
			t.Fatal("EncryptGCM encrypted under the planted value")
		}
		if err != nil && !errors.Is(err, hsm.ErrObjectMismatch) {
			t.Errorf("EncryptGCM with a public object beside the KEK (warm cache): err = %v", err)
		}
	}
	b2 := openAgain(t, tok)
	if _, err := b2.DecryptGCM(c, ref, iv, ct, nil); !errors.Is(err, hsm.ErrObjectMismatch) {
		t.Errorf("DecryptGCM after a restart with a public object beside the KEK: err = %v, want ErrObjectMismatch", err)
	}
	refusedKEK(t, b2, "public object beside the KEK, after a restart", ref, value)
}

// TestPlantWithPIN: a holder of the user PIN creates a private, sensitive,
// non-extractable AES key with a value they know and every KEK attribute,
// under a KEK's id. Only the check value tells it from the KEK, and it does.
func TestPlantWithPIN(t *testing.T) {
	b, tok := open(t)
	c := testCtx(t)
	domain, wrapped, kcv := newDomain(t, b, "domain")
	kekID := []byte("kek")
	value := randomKey(t)
	planted, err := pkcs11.ImportAESKeyForTest(b, c, kekID, value)
	if err != nil {
		t.Fatal(err)
	}
	// It has everything a KEK has: with its own check value, it passes.
	if err := b.VerifyKey(c, planted, hsm.UsageEncrypt); err != nil {
		t.Fatalf("the planted key does not pass as a KEK with its own check value (%v): this test plants the wrong thing", err)
	}
	if !bytes.Equal(planted.CheckValue, kekCheckValue(t, value)) {
		t.Fatal("planted key's check value is not the documented one")
	}
	err = b.UnwrapKey(c, domain, wrapped, hsm.KeySpec{ID: kekID, Usage: hsm.UsageEncrypt, CheckValue: kcv})
	if !errors.Is(err, hsm.ErrKeyExists) {
		t.Fatalf("UnwrapKey into the planted id: err = %v, want ErrKeyExists", err)
	}
	refusedKEK(t, b, "PIN plant", hsm.KeyRef{ID: kekID, CheckValue: kcv}, value)
	refusedKEK(t, openAgain(t, tok), "PIN plant, after a restart", hsm.KeyRef{ID: kekID, CheckValue: kcv}, value)

	// A key missing any one KEK attribute is refused even with its own
	// (correct) check value.
	own := kekCheckValue(t, value)
	for i, bad := range []struct {
		name string
		attr *p11.Attribute
	}{
		{"not sensitive", p11.NewAttribute(p11.CKA_SENSITIVE, false)},
		{"extractable", p11.NewAttribute(p11.CKA_EXTRACTABLE, true)},
		{"public", p11.NewAttribute(p11.CKA_PRIVATE, false)},
		{"can wrap", p11.NewAttribute(p11.CKA_WRAP, true)},
		{"can unwrap", p11.NewAttribute(p11.CKA_UNWRAP, true)},
		{"cannot decrypt", p11.NewAttribute(p11.CKA_DECRYPT, false)},
	} {
		id := fmt.Appendf(nil, "bad-kek-%d", i)
		if _, err := pkcs11.CreateObjectForTest(b, c, kekTemplate(id, value, []*p11.Attribute{bad.attr})); err != nil {
			t.Fatalf("%s: C_CreateObject: %v", bad.name, err)
		}
		if got, err := pkcs11.RawCheckValueForTest(b, c, id, hsm.UsageEncrypt); err == nil && !bytes.Equal(got, own) {
			t.Fatalf("%s: check value %x, want %x", bad.name, got, own)
		}
		refusedKEK(t, b, "KEK "+bad.name, hsm.KeyRef{ID: id, CheckValue: own}, value)
	}
}

// TestPlantSecondObject: a second object under a key's id, with the PIN and
// every attribute, beside the real key.
func TestPlantSecondObject(t *testing.T) {
	b, tok := open(t)
	c := testCtx(t)
	kcv, err := b.GenerateKey(c, hsm.KeySpec{ID: []byte("kek"), Usage: hsm.UsageEncrypt})
	if err != nil {
		t.Fatal(err)
	}
	ref := hsm.KeyRef{ID: []byte("kek"), CheckValue: kcv}
	iv := make([]byte, hsm.GCMIVSize)
	ct, err := b.EncryptGCM(c, ref, iv, []byte("before"), nil)
	if err != nil {
		t.Fatal(err)
	}
	value := randomKey(t)
	if _, err := pkcs11.ImportAESKeyForTest(b, c, ref.ID, value); err != nil {
		t.Fatal(err)
	}
	if err := b.VerifyKey(c, ref, hsm.UsageEncrypt); !errors.Is(err, hsm.ErrObjectMismatch) {
		t.Errorf("VerifyKey with a second KEK object: err = %v, want ErrObjectMismatch", err)
	}
	if _, err := b.KeyAttributes(c, ref.ID); !errors.Is(err, hsm.ErrObjectMismatch) {
		t.Errorf("KeyAttributes with a second KEK object: err = %v, want ErrObjectMismatch", err)
	}
	// The warm backend never encrypts under the planted value.
	for range 6 {
		out, err := b.EncryptGCM(c, ref, iv, []byte("data key"), nil)
		if err == nil && openedUnder(t, value, iv, out) {
			t.Fatal("EncryptGCM encrypted under the planted value")
		}
		if err != nil && !errors.Is(err, hsm.ErrObjectMismatch) {
			t.Errorf("EncryptGCM with a second KEK object (warm cache): err = %v", err)
		}
	}
	b2 := openAgain(t, tok)
	if _, err := b2.DecryptGCM(c, ref, iv, ct, nil); !errors.Is(err, hsm.ErrObjectMismatch) {
		t.Errorf("DecryptGCM after a restart with a second KEK object: err = %v, want ErrObjectMismatch", err)
	}
	refusedKEK(t, b2, "second KEK object, after a restart", ref, value)

	// The same for the domain key.
	domain, wrapped, wkcv := newDomain(t, b, "domain")
	wvalue := randomKey(t)
	if _, err := pkcs11.CreateObjectForTest(b, c, wrapKeyTemplate(domain.ID, wvalue, nil)); err != nil {
		t.Fatal(err)
	}
	if err := b.VerifyKey(c, domain, hsm.UsageWrap); !errors.Is(err, hsm.ErrObjectMismatch) {
		t.Errorf("VerifyKey with a second wrapping key object: err = %v, want ErrObjectMismatch", err)
	}
	if _, _, err := b2.GenerateWrappedKey(c, domain); !errors.Is(err, hsm.ErrObjectMismatch) {
		t.Errorf("GenerateWrappedKey after a restart with a second wrapping key object: err = %v, want ErrObjectMismatch", err)
	}
	err = b2.UnwrapKey(c, domain, wrapped, hsm.KeySpec{ID: []byte("kek-2"), Usage: hsm.UsageEncrypt, CheckValue: wkcv})
	if !errors.Is(err, hsm.ErrObjectMismatch) {
		t.Errorf("UnwrapKey after a restart with a second wrapping key object: err = %v, want ErrObjectMismatch", err)
	}
	if ok, _ := b2.HasKey(c, []byte("kek-2")); ok {
		t.Error("UnwrapKey under a doubled wrapping key created a key")
	}
}

// TestPlantDomainKey: the domain key replaced, with the PIN, by a wrapping
// key whose value the planter knows: with every attribute (refused by the
// check value) or without one of them (refused by the attributes, even
// with its own check value).
func TestPlantDomainKey(t *testing.T) {
	b, tok := open(t)
	c := testCtx(t)
	domain, wrapped, kcv := newDomain(t, b, "domain") // caches the domain key's handle
	if _, err := pkcs11.DestroyTokenObjectsForTest(b, c, domain.ID, p11.CKO_SECRET_KEY); err != nil {
		t.Fatalf("destroy the domain key: %v", err)
	}
	value := randomKey(t)
	own := wrapCheckValue(t, value)
	h, err := pkcs11.CreateObjectForTest(b, c, wrapKeyTemplate(domain.ID, value, nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("domain key handles cached before: %v; planted object handle: %d", pkcs11.CachedHandlesForTest(b, domain.ID), h)
	if err := b.VerifyKey(c, hsm.KeyRef{ID: domain.ID, CheckValue: own}, hsm.UsageWrap); err != nil {
		t.Fatalf("the planted wrapping key does not pass with its own check value (%v): this test plants the wrong thing", err)
	}
	// The warm backend first (its cached handle of the destroyed domain key
	// is stale: VerifyKey would evict it), then a cold one; UnwrapKey
	// first, then GenerateWrappedKey, then again in the other order.
	for _, be := range []*pkcs11.Backend{b, openAgain(t, tok)} {
		for round := range 2 {
			for _, unwrapFirst := range []bool{round == 0, round != 0} {
				if unwrapFirst {
					err := be.UnwrapKey(c, domain, wrapped, hsm.KeySpec{ID: []byte("kek"), Usage: hsm.UsageEncrypt, CheckValue: kcv})
					if !errors.Is(err, hsm.ErrObjectMismatch) {
						t.Errorf("UnwrapKey under the planted domain key: err = %v, want ErrObjectMismatch", err)
					}
					if ok, _ := be.HasKey(c, []byte("kek")); ok {
						t.Fatal("UnwrapKey under a planted domain key created a key")
					}
				} else if _, _, err := be.GenerateWrappedKey(c, domain); !errors.Is(err, hsm.ErrObjectMismatch) {
					t.Errorf("GenerateWrappedKey under the planted domain key: err = %v, want ErrObjectMismatch", err)
				}
			}
		}
		if err := be.VerifyKey(c, domain, hsm.UsageWrap); !errors.Is(err, hsm.ErrObjectMismatch) {
			t.Errorf("VerifyKey(planted domain key): err = %v, want ErrObjectMismatch", err)
		}
	}

	// A wrapping key lacking one attribute of the domain key is refused,
	// even with its own check value.
	for i, bad := range []struct {
		name string
		attr *p11.Attribute
	}{
		{"modifiable", p11.NewAttribute(p11.CKA_MODIFIABLE, true)},
		{"wrappable by any key", p11.NewAttribute(p11.CKA_WRAP_WITH_TRUSTED, false)},
		{"can decrypt", p11.NewAttribute(p11.CKA_DECRYPT, true)},
		{"can encrypt", p11.NewAttribute(p11.CKA_ENCRYPT, true)},
		{"not sensitive", p11.NewAttribute(p11.CKA_SENSITIVE, false)},
		{"public", p11.NewAttribute(p11.CKA_PRIVATE, false)},
	} {
		id := fmt.Appendf(nil, "bad-domain-%d", i)
		if _, err := pkcs11.CreateObjectForTest(b, c, wrapKeyTemplate(id, value, []*p11.Attribute{bad.attr})); err != nil {
			t.Fatalf("%s: C_CreateObject: %v", bad.name, err)
		}
		if got, err := pkcs11.RawCheckValueForTest(b, c, id, hsm.UsageWrap); err != nil || !bytes.Equal(got, own) {
			t.Fatalf("%s: check value %x, %v; want %x", bad.name, got, err, own)
		}
		ref := hsm.KeyRef{ID: id, CheckValue: own}
		if err := b.VerifyKey(c, ref, hsm.UsageWrap); !errors.Is(err, hsm.ErrObjectMismatch) {
			t.Errorf("wrapping key %s: VerifyKey: err = %v, want ErrObjectMismatch", bad.name, err)
		}
		if _, _, err := b.GenerateWrappedKey(c, ref); !errors.Is(err, hsm.ErrObjectMismatch) {
			t.Errorf("wrapping key %s: GenerateWrappedKey: err = %v, want ErrObjectMismatch", bad.name, err)
		}
	}
}

// TestStaleHandle: the KEK is destroyed behind the backend's back and a key
// with every KEK attribute and a known value is created under its id. The
// backend's cached handle of the old object goes stale; the next lookup
// finds the new object and refuses it. Nothing is ever encrypted under the
// planted value. With two sessions, one holds a session copy of the old
// key and one does not, so both paths are taken.
func TestStaleHandle(t *testing.T) {
	tok := softhsm.TestToken(t)
	b, err := pkcs11.Open(context.Background(), pkcs11.Config{Module: tok.Module, TokenLabel: tok.Label, PIN: tok.PIN, Sessions: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	c := testCtx(t)
	real := randomKey(t)
	ref, err := pkcs11.ImportAESKeyForTest(b, c, []byte("kek"), real)
	if err != nil {
		t.Fatal(err)
	}
	iv := make([]byte, hsm.GCMIVSize)
	if _, err := b.EncryptGCM(c, ref, iv, []byte("x"), nil); err != nil { // caches the handle, copies the key into one session
		t.Fatal(err)
	}
	cached := pkcs11.CachedHandlesForTest(b, ref.ID)
	destroyed, err := pkcs11.DestroyTokenObjectsForTest(b, c, ref.ID, p11.CKO_SECRET_KEY)
	if err != nil {
		t.Fatal(err)
	}
	planted := randomKey(t)
	h, err := pkcs11.CreateObjectForTest(b, c, kekTemplate(ref.ID, planted, nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cached handles %v, destroyed %v, planted object's handle %d", cached, destroyed, h)
	for _, ch := range cached {
		if ch == h {
			t.Errorf("SoftHSM gave the planted object the destroyed key's handle %d: a cached handle now names the planted object", h)
		}
	}
	mismatches := 0
	for i := range 6 {
		ct, err := b.EncryptGCM(c, ref, iv, []byte("data key"), nil)
		switch {
		case errors.Is(err, hsm.ErrObjectMismatch):
			mismatches++
		case err != nil:
			t.Errorf("EncryptGCM %d after the swap: err = %v", i, err)
		case openedUnder(t, planted, iv, ct):
			t.Fatalf("EncryptGCM %d after the swap encrypted under the planted value", i)
		case openedUnder(t, real, iv, ct):
			// A session copy of the real key, made before the swap.
		default:
			t.Fatalf("EncryptGCM %d after the swap encrypted under an unknown key", i)
		}
		if pt, err := b.DecryptGCM(c, ref, iv, sealUnder(t, planted, iv, []byte("p")), nil); err == nil {
			t.Fatalf("DecryptGCM %d after the swap opened a ciphertext under the planted value: %q", i, pt)
		}
	}
	t.Logf("%d of 6 EncryptGCM calls after the swap refused (the others used a session copy of the real key)", mismatches)
	if mismatches == 0 {
		t.Error("no EncryptGCM call met the stale handle")
	}
	if err := b.VerifyKey(c, ref, hsm.UsageEncrypt); !errors.Is(err, hsm.ErrObjectMismatch) {
		t.Errorf("VerifyKey after the swap: err = %v, want ErrObjectMismatch", err)
	}
}

// TestPlantECPublicKey: without the PIN, a public session in another
// process replaces the public half of a signing key pair with another
// point. PublicKey refuses it (the private key's signature does not verify
// under it), on a warm (stale handle) and on a cold cache.
func TestPlantECPublicKey(t *testing.T) {
	b, tok := open(t)
	c := testCtx(t)
	id := []byte("signer")
	pub, err := b.GenerateECKey(c, id, "signer")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.PublicKey(c, id); err != nil || !got.Equal(pub) { // caches the public key's handle
		t.Fatalf("PublicKey = %v, %v", got, err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecdhPub, err := other.PublicKey.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	point, err := asn1.Marshal(ecdhPub.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	mustPlant(t, tok, "swap-ec-public", id, point)
	for name, be := range map[string]*pkcs11.Backend{"warm": b, "cold": openAgain(t, tok)} {
		got, err := be.PublicKey(c, id)
		if !errors.Is(err, hsm.ErrObjectMismatch) {
			t.Errorf("%s cache: PublicKey after the swap = %v, %v; want ErrObjectMismatch", name, got, err)
		}
		if got != nil && got.Equal(&other.PublicKey) {
			t.Errorf("%s cache: PublicKey returned the planted point", name)
		}
		// The private key is untouched and still signs for the real pair.
		digest := sha256.Sum256([]byte("chain head"))
		sig, err := be.SignECDSA(c, id, digest[:])
		if err != nil || !ecdsa.VerifyASN1(pub, digest[:], sig) {
			t.Errorf("%s cache: SignECDSA after the swap: %v", name, err)
		}
	}
}

// TestPlantAcrossProcesses: another process swaps the keys of a running
// node. Without the PIN it cannot even see, let alone destroy, the private
// keys; with the PIN it destroys the domain key and a KEK in use and plants
// keys of known value with their attributes under their ids. The running
// backend (stale handles, session copies) and a restarted one refuse them.
func TestPlantAcrossProcesses(t *testing.T) {
	b, tok := open(t)
	c := testCtx(t)
	domain, wrapped, kcv := newDomain(t, b, "domain")
	ref := hsm.KeyRef{ID: []byte("kek"), CheckValue: kcv}
	if err := b.UnwrapKey(c, domain, wrapped, hsm.KeySpec{ID: ref.ID, Usage: hsm.UsageEncrypt, CheckValue: kcv}); err != nil {
		t.Fatal(err)
	}
	iv := make([]byte, hsm.GCMIVSize)
	for range 4 { // every session gets a copy
		if _, err := b.EncryptGCM(c, ref, iv, []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}

	// No PIN: the private keys are out of reach.
	for _, id := range [][]byte{domain.ID, ref.ID} {
		pkcs11test.Run(t, pkcs11test.Op{Module: tok.Module, Label: tok.Label, Destroy: true, ID: id})
	}
	if err := b.VerifyKey(c, domain, hsm.UsageWrap); err != nil {
		t.Fatalf("VerifyKey(domain key) after a public session's destroy: %v", err)
	}
	if err := b.VerifyKey(c, ref, hsm.UsageEncrypt); err != nil {
		t.Fatalf("VerifyKey(KEK) after a public session's destroy: %v", err)
	}

	// With the PIN: destroyed and replaced.
	kekValue, wrapValue := randomKey(t), randomKey(t)
	for _, op := range []pkcs11test.Op{
		{Destroy: true, ID: domain.ID},
		{Destroy: true, ID: ref.ID},
		{Plant: true, ID: domain.ID, Value: wrapValue, Kind: pkcs11test.KindWrap},
		{Plant: true, ID: ref.ID, Value: kekValue, Kind: pkcs11test.KindKEK},
	} {
		op.Module, op.Label, op.PIN = tok.Module, tok.Label, tok.PIN
		pkcs11test.Run(t, op)
	}
	// The planted keys have every attribute: only the check values differ.
	if err := b.VerifyKey(c, hsm.KeyRef{ID: domain.ID, CheckValue: wrapCheckValue(t, wrapValue)}, hsm.UsageWrap); err != nil {
		t.Fatalf("the planted domain key does not pass with its own check value (%v): this test plants the wrong thing", err)
	}
	if err := b.VerifyKey(c, hsm.KeyRef{ID: ref.ID, CheckValue: kekCheckValue(t, kekValue)}, hsm.UsageEncrypt); err != nil {
		t.Fatalf("the planted KEK does not pass with its own check value (%v): this test plants the wrong thing", err)
	}

	for name, be := range map[string]*pkcs11.Backend{"running": b, "restarted": openAgain(t, tok)} {
		copies := 0
		for i := range 6 {
			ct, err := be.EncryptGCM(c, ref, iv, []byte("data key"), nil)
			switch {
			case err == nil && openedUnder(t, kekValue, iv, ct):
				t.Fatalf("%s backend: EncryptGCM %d encrypted under the planted value", name, i)
			case err == nil && name == "running":
				// A session copy of the real KEK, made before the swap:
				// it outlives the token object (only DestroyKey, a lost
				// session or a stale handle drops it).
				copies++
			case !errors.Is(err, hsm.ErrObjectMismatch):
				t.Errorf("%s backend: EncryptGCM %d after the swap: err = %v, want ErrObjectMismatch", name, i, err)
			}
		}
		if copies > 0 {
			t.Logf("%s backend: %d of 6 EncryptGCM calls after the KEK's token object was replaced still ran on a session copy of the real KEK", name, copies)
		}
		if _, _, err := be.GenerateWrappedKey(c, domain); !errors.Is(err, hsm.ErrObjectMismatch) {
			t.Errorf("%s backend: GenerateWrappedKey under the planted domain key: err = %v, want ErrObjectMismatch", name, err)
		}
		id := []byte("kek-" + name)
		err := be.UnwrapKey(c, domain, wrapped, hsm.KeySpec{ID: id, Usage: hsm.UsageEncrypt, CheckValue: kcv})
		if !errors.Is(err, hsm.ErrObjectMismatch) {
			t.Errorf("%s backend: UnwrapKey under the planted domain key: err = %v, want ErrObjectMismatch", name, err)
		}
		if err := be.VerifyKey(c, domain, hsm.UsageWrap); !errors.Is(err, hsm.ErrObjectMismatch) {
			t.Errorf("%s backend: VerifyKey(domain key): err = %v, want ErrObjectMismatch", name, err)
		}
		if err := be.VerifyKey(c, ref, hsm.UsageEncrypt); !errors.Is(err, hsm.ErrObjectMismatch) {
			t.Errorf("%s backend: VerifyKey(KEK): err = %v, want ErrObjectMismatch", name, err)
		}
	}
}
