package pkcs11_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/hsm/pkcs11"
	"github.com/custos-kms/custos/softhsm"
)

func TestOpenWrongPIN(t *testing.T) {
	tok := softhsm.TestToken(t)
	for _, pin := range []string{"9999", "wrong-pin-value", "x"} {
		b, err := pkcs11.Open(testCtx(t), pkcs11.Config{Module: tok.Module, TokenLabel: tok.Label, PIN: pin})
		if err == nil {
			b.Close()
			t.Fatalf("Open with PIN %q succeeded", pin)
		}
		if !errors.Is(err, pkcs11.ErrPIN) {
			t.Fatalf("Open with a wrong PIN: err = %v, want ErrPIN", err)
		}
		if len(pin) >= 4 && strings.Contains(err.Error(), pin) {
			t.Fatalf("error %q contains the PIN", err)
		}
		t.Logf("PIN of %d chars: %v", len(pin), err)
	}
	_, err := pkcs11.Open(testCtx(t), pkcs11.Config{Module: tok.Module, TokenLabel: tok.Label})
	if !errors.Is(err, pkcs11.ErrPIN) {
		t.Fatalf("Open with no PIN: err = %v, want ErrPIN", err)
	}
	// The right PIN still works afterwards (no lockout on SoftHSM).
	b, err := pkcs11.Open(testCtx(t), pkcs11.Config{Module: tok.Module, TokenLabel: tok.Label, PIN: tok.PIN})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
}

func TestOpenMissingToken(t *testing.T) {
	tok := softhsm.TestToken(t)
	_, err := pkcs11.Open(testCtx(t), pkcs11.Config{Module: tok.Module, TokenLabel: "no-such-token", PIN: tok.PIN})
	if !errors.Is(err, pkcs11.ErrTokenNotFound) {
		t.Fatalf("err = %v, want ErrTokenNotFound", err)
	}
	for _, want := range []string{"no-such-token", tok.Label} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	_, err = pkcs11.Open(testCtx(t), pkcs11.Config{Module: tok.Module, PIN: tok.PIN})
	if !errors.Is(err, pkcs11.ErrTokenNotFound) {
		t.Fatalf("empty label: err = %v, want ErrTokenNotFound", err)
	}
}

func TestOpenMissingModule(t *testing.T) {
	for _, path := range []string{"/nonexistent/libnothing.so", "/etc/hostname", ""} {
		_, err := pkcs11.Open(testCtx(t), pkcs11.Config{Module: path, TokenLabel: "x", PIN: "1234"})
		if !errors.Is(err, pkcs11.ErrModule) {
			t.Fatalf("Open(%q): err = %v, want ErrModule", path, err)
		}
		if !strings.Contains(err.Error(), path) {
			t.Errorf("error %q does not name %q", err, path)
		}
		if pkcs11.ModuleRefsForTest(path) != 0 {
			t.Errorf("a failed Open left module %q referenced", path)
		}
	}
}

func TestTwoBackendsTwoTokens(t *testing.T) {
	b1, tok1 := open(t)
	// Created while the module is initialised in this process.
	b2, tok2 := open(t)
	if got := pkcs11.ModuleRefsForTest(tok1.Module); got < 2 {
		t.Fatalf("module references = %d, want >= 2", got)
	}
	c := testCtx(t)
	id := []byte("same-id")
	var keys []hsm.KeyRef
	for _, b := range []*pkcs11.Backend{b1, b2} {
		kcv, err := b.GenerateKey(c, hsm.KeySpec{ID: id, Usage: hsm.UsageEncrypt})
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, hsm.KeyRef{ID: id, CheckValue: kcv})
	}
	ref1, ref2 := keys[0], keys[1]
	if bytes.Equal(ref1.CheckValue, ref2.CheckValue) {
		t.Fatal("two generated keys have the same check value")
	}
	iv := make([]byte, hsm.GCMIVSize)
	ct, err := b1.EncryptGCM(c, ref1, iv, []byte("token one"), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Same id, different token, different key: the other token's object is
	// not the recorded key, and its own key does not open the ciphertext.
	if _, err := b2.DecryptGCM(c, ref1, iv, ct, nil); !errors.Is(err, hsm.ErrObjectMismatch) {
		t.Fatalf("decrypt on the other token with the first key's check value: err = %v, want ErrObjectMismatch", err)
	}
	if _, err := b2.DecryptGCM(c, ref2, iv, ct, nil); !errors.Is(err, hsm.ErrDecrypt) {
		t.Fatalf("decrypt on the other token: err = %v, want ErrDecrypt", err)
	}
	// Closing one leaves the other working.
	refs := pkcs11.ModuleRefsForTest(tok1.Module)
	if err := b1.Close(); err != nil {
		t.Fatal(err)
	}
	if got := pkcs11.ModuleRefsForTest(tok1.Module); got != refs-1 {
		t.Fatalf("module references after Close = %d, want %d", got, refs-1)
	}
	if _, err := b2.EncryptGCM(c, ref2, iv, []byte("still fine"), nil); err != nil {
		t.Fatalf("second backend after the first closed: %v", err)
	}
	if err := b2.Health(c); err != nil {
		t.Fatal(err)
	}
	_ = tok2
	if err := b2.Close(); err != nil {
		t.Fatal(err)
	}
	if got := pkcs11.ModuleRefsForTest(tok1.Module); got != refs-2 {
		t.Fatalf("module references after both closed = %d, want %d", got, refs-2)
	}
	// The module can be initialised again afterwards.
	b3, _ := open(t)
	if err := b3.Health(c); err != nil {
		t.Fatal(err)
	}
}

func TestSessionLossRecovery(t *testing.T) {
	tok := softhsm.TestToken(t)
	b, err := pkcs11.Open(testCtx(t), pkcs11.Config{Module: tok.Module, TokenLabel: tok.Label, PIN: tok.PIN, Sessions: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c := testCtx(t)
	kcv, err := b.GenerateKey(c, hsm.KeySpec{ID: []byte("kek"), Usage: hsm.UsageEncrypt})
	if err != nil {
		t.Fatal(err)
	}
	id := hsm.KeyRef{ID: []byte("kek"), CheckValue: kcv}
	iv := make([]byte, hsm.GCMIVSize)
	ct, err := b.EncryptGCM(c, id, iv, []byte("before"), nil) // caches the handle
	if err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		// Every pooled session dies and the token is logged out.
		if err := pkcs11.CloseAllSessionsForTest(b); err != nil {
			t.Fatal(err)
		}
		// More calls than sessions, so every stale session is met once.
		for i := range 5 {
			pt, err := b.DecryptGCM(c, id, iv, ct, nil)
			if err != nil || string(pt) != "before" {
				t.Fatalf("round %d call %d after C_CloseAllSessions: %q, %v", round, i, pt, err)
			}
		}
		if err := pkcs11.CloseAllSessionsForTest(b); err != nil {
			t.Fatal(err)
		}
		if err := b.Health(c); err != nil {
			t.Fatalf("Health after C_CloseAllSessions: %v", err)
		}
	}
	// Concurrent callers after a loss all recover.
	if err := pkcs11.CloseAllSessionsForTest(b); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			if _, err := b.DecryptGCM(c, id, iv, ct, nil); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent call after C_CloseAllSessions: %v", err)
	}
}

func TestClose(t *testing.T) {
	b, _ := open(t)
	c := testCtx(t)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	id := []byte("k")
	ref := hsm.KeyRef{ID: id, CheckValue: make([]byte, hsm.CheckValueSize)}
	checks := map[string]error{
		"Health":     b.Health(c),
		"DestroyKey": b.DestroyKey(c, id),
		"VerifyKey":  b.VerifyKey(c, ref, hsm.UsageEncrypt),
		"UnwrapKey": b.UnwrapKey(c, ref, make([]byte, 40), hsm.KeySpec{ID: []byte("u"), Usage: hsm.UsageEncrypt,
			CheckValue: make([]byte, hsm.CheckValueSize)}),
	}
	_, checks["GenerateKey"] = b.GenerateKey(c, hsm.KeySpec{ID: id, Usage: hsm.UsageEncrypt})
	_, _, checks["GenerateWrappedKey"] = b.GenerateWrappedKey(c, ref)
	_, checks["Random"] = b.Random(c, 8)
	_, checks["EncryptGCM"] = b.EncryptGCM(c, ref, make([]byte, 12), nil, nil)
	_, checks["DecryptGCM"] = b.DecryptGCM(c, ref, make([]byte, 12), make([]byte, 16), nil)
	_, checks["HasKey"] = b.HasKey(c, id)
	_, checks["SignECDSA"] = b.SignECDSA(c, id, make([]byte, 32))
	for name, err := range checks {
		if !errors.Is(err, hsm.ErrClosed) {
			t.Errorf("%s after Close: err = %v, want ErrClosed", name, err)
		}
	}
}

func TestContextCancelled(t *testing.T) {
	b, _ := open(t)
	c, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Random(c, 8); !errors.Is(err, context.Canceled) {
		t.Fatalf("Random with a cancelled context: err = %v", err)
	}
	if _, err := pkcs11.Open(c, pkcs11.Config{Module: "/x", TokenLabel: "x", PIN: "1234"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Open with a cancelled context: err = %v", err)
	}
}

// TestSoftHSMBehaviour pins (and logs) what SoftHSM does below our checks,
// so a module upgrade that changes it is noticed.
func TestSoftHSMBehaviour(t *testing.T) {
	b, _ := open(t)
	c := testCtx(t)
	if !pkcs11.SerializedForTest(b) {
		t.Fatal("calls on a SoftHSM token are not serialised (its SecureDataManager is not thread-safe)")
	}
	refs := map[string]hsm.KeyRef{}
	for id, u := range map[string]hsm.KeyUsage{"kek": hsm.UsageEncrypt, "wrap-a": hsm.UsageWrap, "wrap-b": hsm.UsageWrap} {
		kcv, err := b.GenerateKey(c, hsm.KeySpec{ID: []byte(id), Usage: u})
		if err != nil {
			t.Fatal(err)
		}
		refs[id] = hsm.KeyRef{ID: []byte(id), CheckValue: kcv}
	}
	kek, wrapA, wrapB := refs["kek"], refs["wrap-a"], refs["wrap-b"]
	iv := make([]byte, hsm.GCMIVSize)
	ct, err := b.EncryptGCM(c, kek, iv, []byte("payload"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(ct)
	bad[len(bad)-1] ^= 1
	_, err = pkcs11.RawDecryptGCMForTest(b, c, kek.ID, iv, bad, []byte("aad"), 128)
	t.Logf("GCM tag failure: %v", err)
	if err == nil {
		t.Fatal("SoftHSM accepted a bad tag")
	}
	// Sizes SoftHSM accepts although we refuse them (hence our own checks).
	_, err = pkcs11.RawDecryptGCMForTest(b, c, kek.ID, make([]byte, 8), ct, []byte("aad"), 128)
	t.Logf("GCM decrypt with an 8-byte IV: %v", err)
	_, err = pkcs11.RawDecryptGCMForTest(b, c, kek.ID, iv, ct[:len(ct)-8], []byte("aad"), 64)
	t.Logf("GCM decrypt with a 64-bit tag (truncated from a 128-bit one): %v", err)

	wrapped, _, err := b.GenerateWrappedKey(c, wrapA)
	if err != nil {
		t.Fatal(err)
	}
	err = pkcs11.RawUnwrapForTest(b, c, wrapB.ID, wrapped)
	t.Logf("KWP unwrap under the wrong key: %v", err)
	if err == nil {
		t.Fatal("unwrap under the wrong key succeeded")
	}

	// A wrapping key is CKA_WRAP_WITH_TRUSTED: an untrusted key cannot
	// wrap it (only an SO can mark a key CKA_TRUSTED).
	_, err = pkcs11.WrapTokenKeyForTest(b, c, wrapB.ID, wrapA.ID)
	t.Logf("wrap a CKA_WRAP_WITH_TRUSTED key under an untrusted key: %v", err)
	if err == nil {
		t.Fatal("CKA_WRAP_WITH_TRUSTED is not enforced: a wrapping key left the HSM under an untrusted key")
	}
	var code p11.Error
	if errors.As(err, &code) {
		t.Logf("  (CKR code 0x%x)", uint(code))
	}
	// A KEK is non-extractable: nothing can wrap it.
	if _, err := b.GenerateKey(c, hsm.KeySpec{ID: []byte("kek2"), Usage: hsm.UsageEncrypt}); err != nil {
		t.Fatal(err)
	}
	_, err = pkcs11.WrapTokenKeyForTest(b, c, wrapB.ID, []byte("kek2"))
	t.Logf("wrap a non-extractable KEK: %v", err)
	if err == nil {
		t.Fatal("a non-extractable KEK was wrapped")
	}

	// Our mapping of the same situations: a key named for the other usage
	// lacks that usage's attributes, so the backend refuses it before the
	// module is asked.
	if _, _, err := b.GenerateWrappedKey(c, kek); !errors.Is(err, hsm.ErrObjectMismatch) {
		t.Errorf("GenerateWrappedKey under an encryption key: err = %v, want ErrObjectMismatch", err)
	}
	if _, err := b.EncryptGCM(c, wrapA, iv, []byte("x"), nil); !errors.Is(err, hsm.ErrObjectMismatch) {
		t.Errorf("EncryptGCM under a wrapping key: err = %v, want ErrObjectMismatch", err)
	}
}

// Invariant 1 (docs/architecture.md) against the operator: someone holding the user PIN, with the
// Raft log's wrapped KEK blobs in hand, cannot read a KEK. The domain
// (wrapping) key only unwraps into sensitive, non-extractable keys
// (CKA_UNWRAP_TEMPLATE), cannot be changed or copied, and KEKs (and their
// session copies) cannot be made extractable or readable.
func TestKeyMaterialResistsPINHolder(t *testing.T) {
	b, _ := open(t)
	c := testCtx(t)
	domain, kek := []byte("domain"), []byte("kek")
	dkcv, err := b.GenerateKey(c, hsm.KeySpec{ID: domain, Usage: hsm.UsageWrap})
	if err != nil {
		t.Fatal(err)
	}
	blob, kcv, err := b.GenerateWrappedKey(c, hsm.KeyRef{ID: domain, CheckValue: dkcv})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := pkcs11.UnwrapReadableForTest(b, c, domain, blob); err == nil {
		t.Fatalf("a KEK blob was unwrapped as a readable key (%d bytes read)", len(v))
	} else {
		t.Logf("unwrap as a readable key: %v", err)
	}
	// The legitimate unwrap still works.
	if err := b.UnwrapKey(c, hsm.KeyRef{ID: domain, CheckValue: dkcv}, blob, hsm.KeySpec{ID: kek, Usage: hsm.UsageEncrypt, CheckValue: kcv}); err != nil {
		t.Fatalf("UnwrapKey: %v", err)
	}
	for _, attr := range []uint{p11.CKA_DECRYPT, p11.CKA_ENCRYPT} {
		if err := pkcs11.SetAttrForTest(b, c, domain, attr, true); err == nil {
			t.Fatalf("attribute 0x%x could be switched on for the domain key", attr)
		}
		if err := pkcs11.CopyWithForTest(b, c, domain, attr, true); err == nil {
			t.Fatalf("the domain key could be copied with attribute 0x%x", attr)
		}
	}
	if err := pkcs11.SetAttrForTest(b, c, kek, p11.CKA_EXTRACTABLE, true); err == nil {
		t.Fatalf("a KEK could be made extractable")
	}
	if err := pkcs11.SetAttrForTest(b, c, kek, p11.CKA_SENSITIVE, false); err == nil {
		t.Fatalf("a KEK could be made not sensitive")
	}
	if err := pkcs11.CopyWithForTest(b, c, kek, p11.CKA_EXTRACTABLE, true); err == nil {
		t.Fatalf("a KEK could be copied as extractable")
	}
	if err := pkcs11.CopyWithForTest(b, c, kek, p11.CKA_SENSITIVE, false); err == nil {
		t.Fatalf("a KEK could be copied as not sensitive")
	}
}

// GCM runs on per-session copies of the key, which are destroyed with it.
func TestSessionCopies(t *testing.T) {
	b, _ := open(t)
	c := testCtx(t)
	id := []byte("kek-copies")
	kcv, err := b.GenerateKey(c, hsm.KeySpec{ID: id, Usage: hsm.UsageEncrypt})
	if err != nil {
		t.Fatal(err)
	}
	ref := hsm.KeyRef{ID: id, CheckValue: kcv}
	iv := make([]byte, hsm.GCMIVSize)
	ct, err := b.EncryptGCM(c, ref, iv, []byte("data key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, refused := pkcs11.CopiesForTest(b, id); n == 0 || refused {
		t.Fatalf("no session copy made (copies %d, refused %v)", n, refused)
	}
	if a, err := b.KeyAttributes(c, id); err != nil || !a.Token || !a.Sensitive || a.Extractable {
		t.Fatalf("token key attributes = %+v, %v", a, err)
	}
	if err := b.DestroyKey(c, id); err != nil {
		t.Fatal(err)
	}
	if n, _ := pkcs11.CopiesForTest(b, id); n != 0 {
		t.Fatalf("%d session copies survived DestroyKey", n)
	}
	if _, err := b.DecryptGCM(c, ref, iv, ct, nil); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatalf("decrypt with a destroyed key: got %v, want ErrKeyNotFound", err)
	}
	// Losing every session (and so every copy) is survived too.
	if ref.CheckValue, err = b.GenerateKey(c, hsm.KeySpec{ID: id, Usage: hsm.UsageEncrypt}); err != nil {
		t.Fatal(err)
	}
	ct, _ = b.EncryptGCM(c, ref, iv, []byte("x"), nil)
	if err := pkcs11.CloseAllSessionsForTest(b); err != nil {
		t.Fatal(err)
	}
	if pt, err := b.DecryptGCM(c, ref, iv, ct, nil); err != nil || string(pt) != "x" {
		t.Fatalf("decrypt after losing all sessions: %q, %v", pt, err)
	}
}
