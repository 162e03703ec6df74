package kms_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// The XKS formats are pinned: ciphertexts held by AWS KMS depend on them.
func TestXKSFormats(t *testing.T) {
	if got := hex.EncodeToString(kms.XKSMetadata(1)); got != "0100000001" {
		t.Fatalf("XKSMetadata(1) = %s", got)
	}
	if got := hex.EncodeToString(kms.XKSMetadata(258)); got != "0100000102" {
		t.Fatalf("XKSMetadata(258) = %s", got)
	}
	if got := hex.EncodeToString(kms.XKSAAD([]byte("ab"), kms.XKSMetadata(1))); got != "000261620501"+"00000001" {
		t.Fatalf("XKSAAD = %s", got)
	}
	if got := hex.EncodeToString(kms.XKSAAD(nil, nil)); got != "000000" {
		t.Fatalf("XKSAAD(nil, nil) = %s", got)
	}
	// Moving the metadata into the AAD changes the HSM's additional data.
	if bytes.Equal(kms.XKSAAD(nil, kms.XKSMetadata(1)), kms.XKSAAD(kms.XKSMetadata(1), nil)) {
		t.Fatal("AAD and metadata are not separated")
	}
	if v, err := kms.ParseXKSMetadata([]byte{1, 0, 0, 0, 7}); err != nil || v != 7 {
		t.Fatalf("ParseXKSMetadata = %d, %v", v, err)
	}
	for _, b := range [][]byte{nil, {1, 0, 0, 1}, {2, 0, 0, 0, 1}, {1, 0, 0, 0, 0}, {1, 0, 0, 0, 1, 0}} {
		if _, err := kms.ParseXKSMetadata(b); !errors.Is(err, kms.ErrDecryptionFailed) {
			t.Errorf("ParseXKSMetadata(%x) = %v", b, err)
		}
	}
}

func TestXKSService(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "x")
	j := &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Text: "xks", Ticket: "kms-req-1"}
	pt, aad := []byte("data key 0123456789abcdef012345"), []byte("aad")
	c, err := e.svc.XKSEncrypt(bg, app, "x", pt, aad, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.KeyVersion != 1 || len(c.IV) != 12 || len(c.Tag) != 16 || len(c.Ciphertext) != len(pt) || len(c.CDIV) != 32 {
		t.Fatalf("XKSEncrypt = %+v", c)
	}
	got, rec, err := e.svc.XKSDecrypt(bg, app, "x", 1, c.IV, c.Ciphertext, c.Tag, aad, j)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("XKSDecrypt = %q, %v", got, err)
	}
	digest := kms.XKSContextDigest(aad)
	if rec.Outcome != custosv1.Outcome_OUTCOME_ALLOW || rec.Ticket != "kms-req-1" || rec.Principal != app.Name ||
		!bytes.Equal(rec.ContextDigest, digest[:]) || rec.Operation != custosv1.Operation_OPERATION_DECRYPT {
		t.Fatalf("record = %v", rec)
	}
	if stored, err := e.state.DecisionRecord(rec.Seq); err != nil || stored.RequestId != rec.RequestId {
		t.Fatalf("stored record = %v, %v", stored, err)
	}

	// Rotation: new encryptions use version 2, version 1 still decrypts.
	if _, err := e.svc.RotateKey(bg, app, &custosv1.RotateKeyRequest{Name: "x"}); err != nil {
		t.Fatal(err)
	}
	c2, err := e.svc.XKSEncrypt(bg, app, "x", pt, nil, false)
	if err != nil || c2.KeyVersion != 2 || c2.CDIV != nil {
		t.Fatalf("after rotation: %+v, %v", c2, err)
	}
	if _, _, err := e.svc.XKSDecrypt(bg, app, "x", 1, c.IV, c.Ciphertext, c.Tag, aad, j); err != nil {
		t.Fatalf("version 1 after rotation: %v", err)
	}
	// The wrong version, AAD or principal.
	if _, _, err := e.svc.XKSDecrypt(bg, app, "x", 2, c.IV, c.Ciphertext, c.Tag, aad, j); !errors.Is(err, kms.ErrDecryptionFailed) {
		t.Fatalf("wrong version: %v", err)
	}
	if _, _, err := e.svc.XKSDecrypt(bg, app, "x", 9, c.IV, c.Ciphertext, c.Tag, aad, j); !errors.Is(err, kms.ErrDecryptionFailed) {
		t.Fatalf("missing version: %v", err)
	}
	if _, _, err := e.svc.XKSDecrypt(bg, app, "x", 1, c.IV, c.Ciphertext, c.Tag, []byte("other"), j); !errors.Is(err, kms.ErrDecryptionFailed) {
		t.Fatalf("wrong AAD: %v", err)
	}
	_, rec, err = e.svc.XKSDecrypt(bg, kms.Principal{Name: "intruder"}, "x", 1, c.IV, c.Ciphertext, c.Tag, aad, j)
	if !errors.Is(err, kms.ErrPermissionDenied) || rec == nil || rec.Outcome != custosv1.Outcome_OUTCOME_DENY {
		t.Fatalf("intruder: %v, %v", rec, err)
	}
	if _, err := e.svc.XKSEncrypt(bg, kms.Principal{Name: "intruder"}, "x", pt, nil, false); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("intruder encrypt: %v", err)
	}
	if _, err := e.svc.XKSEncrypt(bg, app, "x", make([]byte, kms.XKSMaxPlaintext+1), nil, false); !errors.Is(err, kms.ErrXKSTooLarge) || !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("too large: %v", err)
	}
	if _, err := e.svc.XKSEncrypt(bg, app, "x", pt, make([]byte, kms.XKSMaxAAD+1), false); !errors.Is(err, kms.ErrXKSTooLarge) {
		t.Fatalf("AAD too large: %v", err)
	}
	if info, err := e.svc.XKSKeyMetadata(bg, app, "x"); err != nil || !info.Enabled || !info.Encrypt || !info.Decrypt {
		t.Fatalf("XKSKeyMetadata = %+v, %v", info, err)
	}
	if _, err := e.svc.XKSKeyMetadata(bg, app, "nope"); !errors.Is(err, kms.ErrNotFound) {
		t.Fatalf("unknown key metadata: %v", err)
	}
}

// Fail closed: when the decision cannot be committed the HSM decrypts
// nothing.
func TestXKSDecryptFailsClosed(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "x")
	c, err := e.svc.XKSEncrypt(bg, app, "x", []byte("secret"), nil, false)
	if err != nil {
		t.Fatal(err)
	}
	before := e.hsm.decrypts.Load()
	svc := e.newService(failingLog{err: errors.New("no quorum")})
	_, _, err = svc.XKSDecrypt(bg, app, "x", 1, c.IV, c.Ciphertext, c.Tag, nil,
		&custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED})
	if !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if n := e.hsm.decrypts.Load(); n != before {
		t.Fatalf("HSM decrypted %d times without a committed decision", n-before)
	}
}
