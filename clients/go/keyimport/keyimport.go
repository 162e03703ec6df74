// Package keyimport prepares key material for import into custos (bring
// your own key), in the formats of AWS KMS's ImportKeyMaterial so the same
// tools work: the material is wrapped under the import public key custos
// hands out, and only the HSM of a custos node ever unwraps it.
//
//   - RSAES_OAEP_SHA_256: RSA-OAEP (SHA-256, MGF1-SHA-256) of the key.
//   - RSA_AES_KEY_WRAP_SHA_256: RSA-OAEP (SHA-256) of a fresh AES-256 key,
//     followed by AES key wrap with padding (RFC 5649) of the key under it.
//   - the _SHA_1 variants: the same with SHA-1, accepted only by a cluster
//     whose genesis names the development profile (not CRYPTREC-compliant;
//     SoftHSM 2.6.1 does OAEP with SHA-1 only).
//
// custos imports AES-256 keys (32 bytes) only.
package keyimport

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	_ "crypto/sha1" // the development profile's OAEP hash
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Algorithm is a wrapping algorithm, named as AWS KMS names it.
type Algorithm string

// The wrapping algorithms.
const (
	RSAESOAEPSHA256     Algorithm = "RSAES_OAEP_SHA_256"
	RSAAESKeyWrapSHA256 Algorithm = "RSA_AES_KEY_WRAP_SHA_256"
	RSAESOAEPSHA1       Algorithm = "RSAES_OAEP_SHA_1"
	RSAAESKeyWrapSHA1   Algorithm = "RSA_AES_KEY_WRAP_SHA_1"
	keySize                       = 32
	importKeyBits                 = 3072
	ephemeralKeySize              = 32
	kwpOverhead                   = 8
	errPrefix                     = "keyimport: "
)

// ErrInvalid is returned for a key, public key or algorithm custos would
// refuse.
var ErrInvalid = errors.New(errPrefix + "invalid input")

// Hash returns the OAEP hash of a, and whether a wraps an ephemeral AES key
// (RSA_AES_KEY_WRAP).
func (a Algorithm) Hash() (h crypto.Hash, aesWrap bool, err error) {
	switch a {
	case RSAESOAEPSHA256:
		return crypto.SHA256, false, nil
	case RSAAESKeyWrapSHA256:
		return crypto.SHA256, true, nil
	case RSAESOAEPSHA1:
		return crypto.SHA1, false, nil
	case RSAAESKeyWrapSHA1:
		return crypto.SHA1, true, nil
	}
	return 0, false, fmt.Errorf("%w: wrapping algorithm %q (want %s or %s; %s and %s in the development profile only)",
		ErrInvalid, a, RSAESOAEPSHA256, RSAAESKeyWrapSHA256, RSAESOAEPSHA1, RSAAESKeyWrapSHA1)
}

// Wrap wraps key (32 bytes) under the import public key pub with a.
func Wrap(pub *rsa.PublicKey, a Algorithm, key []byte) ([]byte, error) {
	h, aesWrap, err := a.Hash()
	if err != nil {
		return nil, err
	}
	if len(key) != keySize {
		return nil, fmt.Errorf("%w: key of %d bytes (custos imports AES-256 keys, 32 bytes)", ErrInvalid, len(key))
	}
	if pub == nil || pub.N == nil || pub.N.BitLen() != importKeyBits {
		return nil, fmt.Errorf("%w: the import public key must be RSA-%d", ErrInvalid, importKeyBits)
	}
	if !aesWrap {
		return rsa.EncryptOAEP(h.New(), rand.Reader, pub, key, nil)
	}
	eph := make([]byte, ephemeralKeySize)
	if _, err := rand.Read(eph); err != nil {
		return nil, err
	}
	defer clear(eph)
	head, err := rsa.EncryptOAEP(h.New(), rand.Reader, pub, eph, nil)
	if err != nil {
		return nil, err
	}
	tail, err := WrapPad(eph, key)
	if err != nil {
		return nil, err
	}
	return append(head, tail...), nil
}

// WrapPad wraps key under kek with AES key wrap with padding (RFC 5649,
// NIST SP 800-38F KWP).
func WrapPad(kek, key []byte) ([]byte, error) {
	if len(key) == 0 {
		return nil, fmt.Errorf("%w: empty key", ErrInvalid)
	}
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	// Alternative initial value: A65959A6 then the key length, 32 bits.
	var a [8]byte
	copy(a[:4], []byte{0xA6, 0x59, 0x59, 0xA6})
	binary.BigEndian.PutUint32(a[4:], uint32(len(key)))
	padded := make([]byte, (len(key)+7)/8*8)
	copy(padded, key)
	var buf [16]byte
	defer clear(buf[:])
	if len(padded) == 8 {
		copy(buf[:8], a[:])
		copy(buf[8:], padded)
		out := make([]byte, 16)
		b.Encrypt(out, buf[:])
		clear(padded)
		return out, nil
	}
	// RFC 3394 wrapping with that initial value.
	n := len(padded) / 8
	r := padded
	for j := 0; j < 6; j++ {
		for i := 0; i < n; i++ {
			copy(buf[:8], a[:])
			copy(buf[8:], r[i*8:i*8+8])
			b.Encrypt(buf[:], buf[:])
			t := uint64(n*j + i + 1)
			binary.BigEndian.PutUint64(a[:], binary.BigEndian.Uint64(buf[:8])^t)
			copy(r[i*8:], buf[8:])
		}
	}
	return append(a[:], r...), nil
}

// WrappedSize is the size of Wrap's output for a.
func WrappedSize(a Algorithm) int {
	if _, aesWrap, err := a.Hash(); err == nil && aesWrap {
		return importKeyBits/8 + keySize + kwpOverhead
	}
	return importKeyBits / 8
}

// CheckValueSize is the size of a key check value.
const CheckValueSize = 16

// kcvLabel is the check value's domain separator and GCM nonce
// (docs/hsm-objects.md, key check value version 1).
var kcvLabel = []byte("custos/kcv/1")

// CheckValue computes the key check value custos records for an imported
// key (version 1, docs/hsm-objects.md): SHA-256("custos/kcv/1" ||
// AES-256-GCM(key, nonce "custos/kcv/1", 16 zero bytes))[:16]. Compare it
// with the key version's key_check_value to confirm custos holds your key.
func CheckValue(key []byte) ([]byte, error) {
	if len(key) != keySize {
		return nil, fmt.Errorf("%w: key of %d bytes (custos imports AES-256 keys, 32 bytes)", ErrInvalid, len(key))
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		return nil, err
	}
	ct := g.Seal(nil, kcvLabel, make([]byte, 16), nil)
	h := sha256.New()
	h.Write(kcvLabel)
	h.Write(ct)
	return h.Sum(nil)[:CheckValueSize], nil
}
