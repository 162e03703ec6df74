package hsm

import (
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
)

// Key transport between HSMs: how the cluster's domain key reaches an
// admitted node's HSM without ever being in the clear outside an HSM
// (docs/key-transport.md). The receiving HSM generates an RSA-3072 transport
// key whose private half is a session object of the receiving custosd (no
// other process sees it, even with the user PIN); the holder HSM's security
// officer marks the approved public half CKA_TRUSTED on the holder's token;
// the holder wraps the domain key (CKA_WRAP_WITH_TRUSTED) to it with
// RSA-OAEP; the receiver unwraps it into a token key with the full
// domain-key template and checks its key check value.

// TransportKeyBits is the modulus size of a transport key.
const TransportKeyBits = 3072

// OAEPHash names the hash (and MGF1 hash) of RSA-OAEP key transport.
type OAEPHash uint8

const (
	// OAEPSHA256 is RSA-OAEP with SHA-256 and MGF1-SHA-256: the CRYPTREC
	// algorithm (invariant 7 of docs/architecture.md).
	OAEPSHA256 OAEPHash = iota + 1
	// OAEPSHA1 is RSA-OAEP with SHA-1 and MGF1-SHA-1. Not CRYPTREC-listed
	// for new systems: only a cluster whose officer-signed genesis names
	// the development profile may use it (invariant 7 (b)), because
	// SoftHSM 2.6.1 wraps and unwraps with OAEP over SHA-1 only.
	OAEPSHA1
)

// String returns the name of the OAEP variant.
func (h OAEPHash) String() string {
	switch h {
	case OAEPSHA256:
		return "RSA-OAEP-SHA256"
	case OAEPSHA1:
		return "RSA-OAEP-SHA1"
	}
	return fmt.Sprintf("OAEPHash(%d)", uint8(h))
}

// Valid reports whether h is a known variant.
func (h OAEPHash) Valid() bool { return h == OAEPSHA256 || h == OAEPSHA1 }

// TransportFingerprint is the fingerprint officers approve for a transport
// key: the hex SHA-256 of its PKIX (SubjectPublicKeyInfo) DER encoding.
func TransportFingerprint(pub *rsa.PublicKey) (string, error) {
	if err := CheckTransportKey(pub); err != nil {
		return "", err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidInput, err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// CheckTransportKey refuses anything but an RSA-3072 public key with
// exponent 65537.
func CheckTransportKey(pub *rsa.PublicKey) error {
	switch {
	case pub == nil || pub.N == nil:
		return fmt.Errorf("%w: no transport public key", ErrInvalidInput)
	case pub.N.Sign() <= 0 || pub.N.Bit(0) == 0:
		return fmt.Errorf("%w: transport key modulus is not a positive odd number", ErrInvalidInput)
	case pub.N.BitLen() != TransportKeyBits:
		return fmt.Errorf("%w: transport key of %d bits (want %d)", ErrInvalidInput, pub.N.BitLen(), TransportKeyBits)
	case pub.E != 65537:
		return fmt.Errorf("%w: transport key exponent %d (want 65537)", ErrInvalidInput, pub.E)
	}
	return nil
}

// ImportFormat says how imported key material is wrapped under an import
// key (a key made by GenerateTransportKey), as AWS KMS's ImportKeyMaterial
// names it (clients/go/keyimport builds both).
type ImportFormat uint8

const (
	// ImportRSAOAEP: RSA-OAEP of the 32-byte key (RSAES_OAEP_SHA_*).
	ImportRSAOAEP ImportFormat = iota + 1
	// ImportRSAAESKeyWrap: RSA-OAEP of an ephemeral AES-256 key, then
	// AES key wrap with padding of the key under it
	// (RSA_AES_KEY_WRAP_SHA_*): 384 + 40 bytes.
	ImportRSAAESKeyWrap
)

// String names the format.
func (f ImportFormat) String() string {
	switch f {
	case ImportRSAOAEP:
		return "RSAES_OAEP"
	case ImportRSAAESKeyWrap:
		return "RSA_AES_KEY_WRAP"
	}
	return fmt.Sprintf("ImportFormat(%d)", uint8(f))
}

// ImportSize is the size of imported material in format f, or 0 for an
// unknown format.
func ImportSize(f ImportFormat) int {
	switch f {
	case ImportRSAOAEP:
		return TransportKeyBits / 8
	case ImportRSAAESKeyWrap:
		return TransportKeyBits/8 + AESKeySize + 8
	}
	return 0
}
