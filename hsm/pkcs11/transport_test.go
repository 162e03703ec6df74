package pkcs11_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"testing"

	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/hsm/pkcs11/pkcs11test"
)

// Key transport (hsm/transport.go) between two SoftHSM tokens: the holder
// wraps its domain key to the receiver's transport key only once the
// holder's security officer has marked that key trusted, and the receiver
// ends up with a domain key that has the full template and the recorded
// check value. SoftHSM 2.6.1 does OAEP over SHA-1 only (the development
// profile); SHA-256 is refused there with a clear error.
func TestDomainKeyTransport(t *testing.T) {
	ctx := testCtx(t)
	holder, htok := open(t)
	recv, _ := open(t)

	dk := hsm.KeySpec{ID: []byte("custos/domain/transport-test/01"), Usage: hsm.UsageWrap}
	kcv, err := holder.GenerateKey(ctx, dk)
	if err != nil {
		t.Fatal(err)
	}
	dkRef := hsm.KeyRef{ID: dk.ID, CheckValue: kcv}
	tid := []byte("custos/transport/node-2/01")
	pub, err := recv.GenerateTransportKey(ctx, tid)
	if err != nil {
		t.Fatal(err)
	}
	if err := hsm.CheckTransportKey(pub); err != nil {
		t.Fatal(err)
	}
	if _, err := recv.GenerateTransportKey(ctx, tid); !errors.Is(err, hsm.ErrKeyExists) {
		t.Fatalf("second transport key under the same id: %v, want ErrKeyExists", err)
	}
	trusted := []byte("custos/trusted/node-2/01")

	// Not trusted yet: nothing on the holder's token.
	if _, err := holder.WrapForTransport(ctx, dkRef, trusted, pub, hsm.OAEPSHA1); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatalf("wrap before the SO's step: %v, want ErrKeyNotFound", err)
	}
	// A holder of the user PIN puts their own key under the id, and then
	// the approved one, without CKA_TRUSTED: both refused.
	attacker, err := rsa.GenerateKey(rand.Reader, hsm.TransportKeyBits)
	if err != nil {
		t.Fatal(err)
	}
	// ... and cannot mark it trusted: that is the SO's alone.
	if err := pkcs11test.RunErr(pkcs11test.Op{Module: htok.Module, Label: htok.Label, PIN: htok.PIN, PlantRSAPublic: true,
		ClaimTrusted: true, ID: trusted, Modulus: attacker.N.Bytes(), Exponent: attacker.E}); err == nil {
		t.Fatal("the token let a user create a CKA_TRUSTED public key")
	}
	for _, k := range []*rsa.PublicKey{&attacker.PublicKey, pub} {
		pkcs11test.Run(t, pkcs11test.Op{Module: htok.Module, Label: htok.Label, PIN: htok.PIN, PlantRSAPublic: true,
			ID: trusted, Modulus: k.N.Bytes(), Exponent: k.E})
		for _, approved := range []*rsa.PublicKey{&attacker.PublicKey, pub} {
			if _, err := holder.WrapForTransport(ctx, dkRef, trusted, approved, hsm.OAEPSHA1); !errors.Is(err, hsm.ErrObjectMismatch) {
				t.Fatalf("wrap to a public key the user created: %v, want ErrObjectMismatch", err)
			}
		}
		pkcs11test.Run(t, pkcs11test.Op{Module: htok.Module, Label: htok.Label, PIN: htok.PIN, Destroy: true, ID: trusted})
	}

	// The SO's step, from its own process.
	pkcs11test.Run(t, pkcs11test.Op{Module: htok.Module, Label: htok.Label, SOPIN: htok.SOPIN, Trust: true,
		ID: trusted, Modulus: pub.N.Bytes(), Exponent: pub.E})
	if err := pkcs11test.RunErr(pkcs11test.Op{Module: htok.Module, Label: htok.Label, SOPIN: "wrong-pin", Trust: true,
		ID: []byte("custos/trusted/x"), Modulus: pub.N.Bytes(), Exponent: pub.E}); err == nil {
		t.Fatal("TrustPublicKey with a wrong SO PIN succeeded")
	}
	// Approved key and trusted object must be the same key.
	if _, err := holder.WrapForTransport(ctx, dkRef, trusted, &attacker.PublicKey, hsm.OAEPSHA1); !errors.Is(err, hsm.ErrObjectMismatch) {
		t.Fatalf("wrap naming another approved key: %v, want ErrObjectMismatch", err)
	}
	if _, err := holder.WrapForTransport(ctx, dkRef, trusted, pub, hsm.OAEPSHA256); !errors.Is(err, hsm.ErrInvalidInput) {
		t.Fatalf("OAEP-SHA256 on SoftHSM: %v, want ErrInvalidInput (the module does not wrap with it)", err)
	}
	blob, err := holder.WrapForTransport(ctx, dkRef, trusted, pub, hsm.OAEPSHA1)
	if err != nil {
		t.Fatal(err)
	}

	// Bad input on the receiver: nothing is created.
	spec := hsm.KeySpec{ID: []byte("custos/domain/transport-test/02"), Usage: hsm.UsageWrap, CheckValue: kcv}
	tampered := bytes.Clone(blob)
	tampered[len(tampered)/2] ^= 1
	wrongKCV := spec
	wrongKCV.CheckValue = bytes.Repeat([]byte{7}, hsm.CheckValueSize)
	kek := hsm.KeySpec{ID: spec.ID, Usage: hsm.UsageEncrypt, CheckValue: kcv}
	for _, tc := range []struct {
		name    string
		blob    []byte
		hash    hsm.OAEPHash
		spec    hsm.KeySpec
		want    error
		transID []byte
	}{
		{"tampered blob", tampered, hsm.OAEPSHA1, spec, hsm.ErrDecrypt, tid},
		{"wrong hash", blob, hsm.OAEPSHA256, spec, hsm.ErrInvalidInput, tid},
		{"unknown hash", blob, 9, spec, hsm.ErrInvalidInput, tid},
		{"short blob", blob[:100], hsm.OAEPSHA1, spec, hsm.ErrInvalidInput, tid},
		{"check value of another key", blob, hsm.OAEPSHA1, wrongKCV, hsm.ErrObjectMismatch, tid},
		{"as an encryption key", blob, hsm.OAEPSHA1, kek, hsm.ErrInvalidInput, tid},
		{"no such transport key", blob, hsm.OAEPSHA1, spec, hsm.ErrKeyNotFound, []byte("custos/transport/none")},
	} {
		err := recv.ReceiveWrappingKey(ctx, tc.transID, tc.blob, tc.hash, tc.spec)
		if !errors.Is(err, tc.want) {
			t.Fatalf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if ok, err := recv.HasKey(ctx, spec.ID); err != nil || ok {
			t.Fatalf("%s: an object is left under the id (%v, %v)", tc.name, ok, err)
		}
	}

	if err := recv.ReceiveWrappingKey(ctx, tid, blob, hsm.OAEPSHA1, spec); err != nil {
		t.Fatal(err)
	}
	got := hsm.KeyRef{ID: spec.ID, CheckValue: kcv}
	// VerifyKey checks the full domain-key template, CKA_MODIFIABLE=false
	// included: nobody can give it CKA_DECRYPT.
	if err := recv.VerifyKey(ctx, got, hsm.UsageWrap); err != nil {
		t.Fatalf("received domain key: %v", err)
	}
	if a, err := recv.KeyAttributes(ctx, spec.ID); err != nil || !a.Token || !a.Sensitive || !a.WrapWithTrusted || a.Sign {
		t.Fatalf("received domain key attributes %+v, %v", a, err)
	}
	if a, err := holder.KeyAttributes(ctx, dk.ID); err != nil || a.Sign {
		t.Fatalf("generated domain key attributes %+v, %v (no CKA_SIGN: no CMAC oracle)", a, err)
	}
	// One transport per transport key.
	if err := recv.ReceiveWrappingKey(ctx, tid, blob, hsm.OAEPSHA1, hsm.KeySpec{ID: []byte("custos/domain/transport-test/03"),
		Usage: hsm.UsageWrap, CheckValue: kcv}); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatalf("second receive with the same transport key: %v, want ErrKeyNotFound", err)
	}

	// The same key: a KEK wrapped on the holder unwraps on the receiver to
	// the same check value, and data sealed on one opens on the other.
	wrapped, kekKCV, err := holder.GenerateWrappedKey(ctx, dkRef)
	if err != nil {
		t.Fatal(err)
	}
	kekSpec := hsm.KeySpec{ID: []byte("custos/kek/t/1/01"), Usage: hsm.UsageEncrypt, CheckValue: kekKCV}
	if err := holder.UnwrapKey(ctx, dkRef, wrapped, kekSpec); err != nil {
		t.Fatal(err)
	}
	if err := recv.UnwrapKey(ctx, got, wrapped, kekSpec); err != nil {
		t.Fatalf("KEK under the received domain key: %v", err)
	}
	if a, err := recv.KeyAttributes(ctx, kekSpec.ID); err != nil || a.Sign {
		t.Fatalf("KEK attributes %+v, %v", a, err)
	}
	iv := make([]byte, hsm.GCMIVSize)
	ct, err := holder.EncryptGCM(ctx, hsm.KeyRef{ID: kekSpec.ID, CheckValue: kekKCV}, iv, []byte("data key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := recv.DecryptGCM(ctx, hsm.KeyRef{ID: kekSpec.ID, CheckValue: kekKCV}, iv, ct, nil); err != nil || string(pt) != "data key" {
		t.Fatalf("decrypt on the receiver: %q, %v", pt, err)
	}

	// DestroyTransportKey: idempotent; a destroyed key receives nothing.
	tid2 := []byte("custos/transport/node-2/02")
	if _, err := recv.GenerateTransportKey(ctx, tid2); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := recv.DestroyTransportKey(ctx, tid2); err != nil {
			t.Fatal(err)
		}
	}
}
