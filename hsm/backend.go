// Package hsm defines the one boundary between custos and a hardware security
// module: the Backend interface. Package hsm/pkcs11 implements it over
// PKCS#11 (SoftHSM2 in development and tests, any PKCS#11 HSM in production).
//
// Keys are addressed by their CKA_ID. Every method takes a context: a call
// waiting for a session gives up when the context ends. Key material never
// crosses this interface in the clear except data keys and payloads that the
// caller asked to encrypt or decrypt.
package hsm

import (
	"context"
	"crypto/ecdsa"
	"errors"
)

// Sizes used by the AES-256-GCM operations. The backend refuses any other IV
// or tag size itself, whatever the module would accept.
const (
	AESKeySize = 32
	GCMIVSize  = 12
	GCMTagSize = 16
)

// Errors returned by a Backend, matched with errors.Is.
var (
	// ErrKeyNotFound: no object with that CKA_ID (and class) on the token.
	ErrKeyNotFound = errors.New("hsm: key not found")
	// ErrKeyExists: an object with that CKA_ID already exists.
	ErrKeyExists = errors.New("hsm: key already exists")
	// ErrDecrypt: authentication failed (wrong key, AAD, IV or a tampered
	// ciphertext). It says nothing more, on purpose.
	ErrDecrypt = errors.New("hsm: decryption failed")
	// ErrInvalidInput: a size or argument the backend refuses (IV or tag
	// size, empty id, ...).
	ErrInvalidInput = errors.New("hsm: invalid input")
	// ErrUnavailable: the module, slot or token cannot be reached (token
	// removed, device error, login lost). Callers fail closed.
	ErrUnavailable = errors.New("hsm: unavailable")
	// ErrClosed: the backend was closed.
	ErrClosed = errors.New("hsm: closed")
)

// KeySpec describes a persistent AES-256 key to create or to unwrap into
// the token.
type KeySpec struct {
	// ID is the CKA_ID; it must be unique on the token.
	ID []byte
	// Label is the CKA_LABEL, for humans and pkcs11-tool.
	Label string
	// Usage says what the key may do.
	Usage KeyUsage
}

// KeyUsage is the set of operations a key allows.
type KeyUsage int

const (
	// UsageEncrypt: CKA_ENCRYPT and CKA_DECRYPT (a KEK: AES-GCM on data keys).
	UsageEncrypt KeyUsage = iota + 1
	// UsageWrap: CKA_WRAP and CKA_UNWRAP (the domain key: AES-KWP on KEKs).
	// Such a key is created with CKA_EXTRACTABLE=true and
	// CKA_WRAP_WITH_TRUSTED=true so that it can later be wrapped to another
	// node's HSM by a trusted key only (cluster admission), never in the
	// clear; with a CKA_UNWRAP_TEMPLATE so that what it unwraps is sensitive
	// and non-extractable; unmodifiable and uncopyable.
	UsageWrap
)

// Attributes are the security-relevant attributes read back from a key
// object, so tests and health checks can prove non-extractability.
type Attributes struct {
	Token            bool // CKA_TOKEN
	Sensitive        bool // CKA_SENSITIVE
	Extractable      bool // CKA_EXTRACTABLE
	AlwaysSensitive  bool // CKA_ALWAYS_SENSITIVE
	NeverExtractable bool // CKA_NEVER_EXTRACTABLE
	WrapWithTrusted  bool // CKA_WRAP_WITH_TRUSTED
	Label            string
}

// Backend is an HSM. Implementations are safe for concurrent use.
type Backend interface {
	// Random returns n bytes from the HSM's random number generator.
	Random(ctx context.Context, n int) ([]byte, error)

	// GenerateKey creates a persistent AES-256 key with CKA_SENSITIVE=true.
	// UsageEncrypt keys are CKA_EXTRACTABLE=false. ErrKeyExists if the id is
	// taken.
	GenerateKey(ctx context.Context, spec KeySpec) error

	// GenerateWrappedKey creates a fresh AES-256 key as a temporary,
	// extractable session object, wraps it under the wrapping key wrapID with
	// AES key wrap with padding (CKM_AES_KEY_WRAP_PAD, SP 800-38F KWP),
	// destroys the session object and returns the wrapped bytes. The clear key
	// never leaves the HSM.
	GenerateWrappedKey(ctx context.Context, wrapID []byte) ([]byte, error)

	// UnwrapKey unwraps a GenerateWrappedKey result under wrapID into a
	// persistent UsageEncrypt key as spec says, with CKA_SENSITIVE=true and
	// CKA_EXTRACTABLE=false (the wrapping key's CKA_UNWRAP_TEMPLATE allows
	// nothing else, whoever calls C_UnwrapKey). ErrKeyExists if spec.ID is
	// taken; ErrDecrypt if the wrapped bytes do not unwrap under wrapID;
	// ErrInvalidInput for any other usage.
	UnwrapKey(ctx context.Context, wrapID, wrapped []byte, spec KeySpec) error

	// EncryptGCM encrypts plaintext with AES-256-GCM under key id with the
	// given 12-byte IV and additional data; it returns ciphertext||tag.
	EncryptGCM(ctx context.Context, id, iv, plaintext, aad []byte) ([]byte, error)

	// DecryptGCM reverses EncryptGCM. ErrDecrypt on any authentication failure.
	DecryptGCM(ctx context.Context, id, iv, ciphertext, aad []byte) ([]byte, error)

	// GenerateECKey creates a persistent ECDSA P-256 key pair (private key
	// sensitive and non-extractable) and returns the public key.
	GenerateECKey(ctx context.Context, id []byte, label string) (*ecdsa.PublicKey, error)

	// PublicKey returns the public key of the ECDSA P-256 pair with that id.
	PublicKey(ctx context.Context, id []byte) (*ecdsa.PublicKey, error)

	// SignECDSA signs a SHA-256 digest with the P-256 private key id and
	// returns an ASN.1 DER signature.
	SignECDSA(ctx context.Context, id, digest []byte) ([]byte, error)

	// KeyAttributes reads back the attributes of the secret or private key
	// with that id.
	KeyAttributes(ctx context.Context, id []byte) (Attributes, error)

	// HasKey reports whether a key (secret or private) with that id exists.
	HasKey(ctx context.Context, id []byte) (bool, error)

	// DestroyKey destroys every object with that id (crypto-shredding).
	// Destroying a missing key is not an error.
	DestroyKey(ctx context.Context, id []byte) error

	// Health checks that the token answers (a cheap call on a pooled
	// session); it returns ErrUnavailable when it does not.
	Health(ctx context.Context) error

	// Close releases every session and finalizes the module.
	Close() error
}
