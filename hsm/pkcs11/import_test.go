package pkcs11_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"errors"
	"testing"

	"github.com/custos-kms/custos/clients/go/keyimport"
	"github.com/custos-kms/custos/hsm"
)

// TestImportWrappedKey: a customer's AES-256 key, wrapped with the AWS KMS
// formats under an import key, becomes a KEK blob under the domain key;
// unwrapped as a KEK it encrypts exactly as the customer's own key does.
// SoftHSM 2.6.1 does OAEP with SHA-1 only: the SHA-1 variants run here
// (development profile), SHA-256 is refused clearly.
func TestImportWrappedKey(t *testing.T) {
	ctx := testCtx(t)
	b, _ := open(t)
	dk := hsm.KeySpec{ID: []byte("custos/domain/import-test"), Usage: hsm.UsageWrap}
	dkKCV, err := b.GenerateKey(ctx, dk)
	if err != nil {
		t.Fatal(err)
	}
	dkRef := hsm.KeyRef{ID: dk.ID, CheckValue: dkKCV}

	for i, tc := range []struct {
		alg    keyimport.Algorithm
		format hsm.ImportFormat
	}{
		{keyimport.RSAESOAEPSHA1, hsm.ImportRSAOAEP},
		{keyimport.RSAAESKeyWrapSHA1, hsm.ImportRSAAESKeyWrap},
	} {
		t.Run(string(tc.alg), func(t *testing.T) {
			ik := []byte{'i', 'k', byte('0' + i)}
			pub, err := b.GenerateTransportKey(ctx, ik)
			if err != nil {
				t.Fatal(err)
			}
			key := make([]byte, 32)
			if _, err := rand.Read(key); err != nil {
				t.Fatal(err)
			}
			material, err := keyimport.Wrap(pub, tc.alg, key)
			if err != nil {
				t.Fatal(err)
			}
			if len(material) != keyimport.WrappedSize(tc.alg) || len(material) != hsm.ImportSize(tc.format) {
				t.Fatalf("material of %d bytes", len(material))
			}

			// Bad input first: nothing is imported, the import key stays.
			tampered := bytes.Clone(material)
			tampered[len(tampered)-3] ^= 1
			short, err := keyimport.Wrap(pub, tc.alg, key)
			if err != nil {
				t.Fatal(err)
			}
			for _, bad := range []struct {
				name     string
				material []byte
				format   hsm.ImportFormat
				hash     hsm.OAEPHash
				ik       []byte
				want     error
			}{
				{"tampered", tampered, tc.format, hsm.OAEPSHA1, ik, hsm.ErrDecrypt},
				{"truncated", short[:len(short)-8], tc.format, hsm.OAEPSHA1, ik, hsm.ErrInvalidInput},
				{"OAEP-SHA256 on SoftHSM", material, tc.format, hsm.OAEPSHA256, ik, hsm.ErrInvalidInput},
				{"unknown format", material, 9, hsm.OAEPSHA1, ik, hsm.ErrInvalidInput},
				{"unknown import key", material, tc.format, hsm.OAEPSHA1, []byte("no-such-import-key"), hsm.ErrKeyNotFound},
			} {
				if _, _, err := b.ImportWrappedKey(ctx, bad.ik, bad.material, bad.format, bad.hash, dkRef); !errors.Is(err, bad.want) {
					t.Fatalf("%s: %v, want %v", bad.name, err, bad.want)
				}
			}

			wrapped, kcv, err := b.ImportWrappedKey(ctx, ik, material, tc.format, hsm.OAEPSHA1, dkRef)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := b.ImportWrappedKey(ctx, ik, material, tc.format, hsm.OAEPSHA1, dkRef); !errors.Is(err, hsm.ErrKeyNotFound) {
				t.Fatalf("second import with one import key: %v, want ErrKeyNotFound", err)
			}
			kek := hsm.KeySpec{ID: append([]byte("custos/kek/imported/1/"), ik...), Usage: hsm.UsageEncrypt, CheckValue: kcv}
			if err := b.UnwrapKey(ctx, dkRef, wrapped, kek); err != nil {
				t.Fatal(err)
			}
			iv := make([]byte, hsm.GCMIVSize)
			ct, err := b.EncryptGCM(ctx, hsm.KeyRef{ID: kek.ID, CheckValue: kcv}, iv, []byte("customer data key"), []byte("aad"))
			if err != nil {
				t.Fatal(err)
			}
			blk, _ := aes.NewCipher(key)
			gcm, _ := cipher.NewGCM(blk)
			if pt, err := gcm.Open(nil, iv, ct, []byte("aad")); err != nil || string(pt) != "customer data key" {
				t.Fatalf("the imported KEK is not the customer's key: %q, %v", pt, err)
			}
		})
	}

	// A key of another length is refused by the HSM path too (the client
	// library refuses it first).
	ik := []byte("ik-len")
	pub, err := b.GenerateTransportKey(ctx, ik)
	if err != nil {
		t.Fatal(err)
	}
	short16, err := keyimport.WrapPad(make([]byte, 32), make([]byte, 16))
	if err != nil {
		t.Fatal(err)
	}
	eph := make([]byte, 32)
	head, err := keyimport.Wrap(pub, keyimport.RSAESOAEPSHA1, eph) // OAEP of a 32-byte ephemeral key
	if err != nil {
		t.Fatal(err)
	}
	material := append(head, short16...) // 384 + 24: the wrong size
	if _, _, err := b.ImportWrappedKey(ctx, ik, material, hsm.ImportRSAAESKeyWrap, hsm.OAEPSHA1, dkRef); !errors.Is(err, hsm.ErrInvalidInput) {
		t.Fatalf("a 16-byte key: %v, want ErrInvalidInput", err)
	}
	// An AES-128 key by RSA-OAEP: the size of the material says nothing.
	oaep16, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, make([]byte, 16), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.ImportWrappedKey(ctx, ik, oaep16, hsm.ImportRSAOAEP, hsm.OAEPSHA1, dkRef); !errors.Is(err, hsm.ErrInvalidInput) {
		t.Fatalf("a 16-byte key by RSA-OAEP: %v, want ErrInvalidInput", err)
	}
	if _, err := keyimport.Wrap(pub, keyimport.RSAESOAEPSHA1, make([]byte, 16)); !errors.Is(err, keyimport.ErrInvalid) {
		t.Fatalf("keyimport.Wrap of a 16-byte key: %v", err)
	}
}
