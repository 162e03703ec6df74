// Package hsm defines the one boundary between custos and a hardware security
// module: the Backend interface. Package hsm/pkcs11 implements it over
// PKCS#11 (SoftHSM2 in development and tests, any PKCS#11 HSM in production).
//
// Secret keys are addressed by a KeyRef: their CKA_ID and the key check value
// recorded when they were made (docs/hsm-objects.md). A backend uses an object
// only if it is the one such object with the attributes custos gives that kind
// of key, and its check value, computed in the HSM, is the recorded one: an
// object planted under a known id (invariant 9 of docs/architecture.md) is
// never used. Every method takes a context: a call waiting for a session gives
// up when the context ends. Key material never crosses this interface in the
// clear except data keys and payloads that the caller asked to encrypt or
// decrypt.
package hsm

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"errors"
)

// Sizes used by the AES-256-GCM operations. The backend refuses any other IV
// or tag size itself, whatever the module would accept.
const (
	AESKeySize = 32
	GCMIVSize  = 12
	GCMTagSize = 16
	// CheckValueSize is the size of a key check value.
	CheckValueSize = 16
)

// KeyRef names a secret key object custos relies on: its CKA_ID and its key
// check value, a fingerprint computed inside the HSM from the key's value
// (docs/hsm-objects.md). Both come from the replicated log.
type KeyRef struct {
	ID         []byte
	CheckValue []byte
}

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
	// ErrObjectMismatch: an object with the id is on the token but is not
	// the recorded key: its check value differs, it lacks the attributes
	// custos sets, more than one object matches, or an object custos did not
	// make holds the id. The object was not used.
	ErrObjectMismatch = errors.New("hsm: object is not the recorded key")
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
	// CheckValue is the key check value the key must have: required by
	// UnwrapKey, which destroys what it unwrapped and fails with
	// ErrObjectMismatch if the value differs; ignored by GenerateKey.
	CheckValue []byte
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
	Sign             bool // CKA_SIGN (a MAC under the key); custos sets it only on signing keys
	// Local is CKA_LOCAL: the key was generated in this token (not created
	// from a value, not unwrapped).
	Local bool
	Label string
}

// Backend is an HSM. Implementations are safe for concurrent use.
type Backend interface {
	// Random returns n bytes from the HSM's random number generator.
	Random(ctx context.Context, n int) ([]byte, error)

	// GenerateKey creates a persistent AES-256 key with CKA_SENSITIVE=true
	// and returns its key check value. UsageEncrypt keys are
	// CKA_EXTRACTABLE=false. The key must read back CKA_ALWAYS_SENSITIVE (and,
	// if not extractable, CKA_NEVER_EXTRACTABLE), or it is destroyed and the
	// call fails. ErrKeyExists if the id is taken.
	GenerateKey(ctx context.Context, spec KeySpec) ([]byte, error)

	// GenerateWrappedKey creates a fresh AES-256 key as a temporary,
	// extractable session object, computes its key check value, wraps it
	// under the wrapping key wrap with AES key wrap with padding
	// (CKM_AES_KEY_WRAP_PAD, SP 800-38F KWP), destroys the session object and
	// returns the wrapped bytes and the check value. The clear key never
	// leaves the HSM.
	GenerateWrappedKey(ctx context.Context, wrap KeyRef) (wrapped, checkValue []byte, err error)

	// UnwrapKey unwraps a GenerateWrappedKey result under wrap into a
	// persistent UsageEncrypt key as spec says, with CKA_SENSITIVE=true and
	// CKA_EXTRACTABLE=false (the wrapping key's CKA_UNWRAP_TEMPLATE allows
	// nothing else, whoever calls C_UnwrapKey), and checks its key check
	// value against spec.CheckValue. ErrKeyExists if an object already holds
	// spec.ID; ErrDecrypt if the wrapped bytes do not unwrap under wrap;
	// ErrObjectMismatch if the check value differs (the new object is
	// destroyed); ErrInvalidInput for any other usage.
	UnwrapKey(ctx context.Context, wrap KeyRef, wrapped []byte, spec KeySpec) error

	// EncryptGCM encrypts plaintext with AES-256-GCM under key with the
	// given 12-byte IV and additional data; it returns ciphertext||tag.
	EncryptGCM(ctx context.Context, key KeyRef, iv, plaintext, aad []byte) ([]byte, error)

	// DecryptGCM reverses EncryptGCM. ErrDecrypt on any authentication failure.
	DecryptGCM(ctx context.Context, key KeyRef, iv, ciphertext, aad []byte) ([]byte, error)

	// VerifyKey checks that key is on the token as recorded: exactly one
	// object with its id and the attributes of usage, whose check value is
	// key.CheckValue. ErrKeyNotFound if no object of the key's class holds
	// the id; ErrObjectMismatch otherwise. When it fails, no copy of the key
	// the backend made for its sessions stays usable.
	VerifyKey(ctx context.Context, key KeyRef, usage KeyUsage) error

	// GenerateECKey creates a persistent ECDSA P-256 key pair (private key
	// sensitive and non-extractable, read back CKA_ALWAYS_SENSITIVE and
	// CKA_NEVER_EXTRACTABLE) and returns the public key.
	GenerateECKey(ctx context.Context, id []byte, label string) (*ecdsa.PublicKey, error)

	// PublicKey returns the public key of the ECDSA P-256 pair with that id
	// (exactly one public key object with that id; ErrObjectMismatch if more).
	PublicKey(ctx context.Context, id []byte) (*ecdsa.PublicKey, error)

	// SignECDSA signs a SHA-256 digest with the P-256 private key id and
	// returns an ASN.1 DER signature. The key must be the one private,
	// sensitive, non-extractable signing key with that id.
	SignECDSA(ctx context.Context, id, digest []byte) ([]byte, error)

	// GenerateTransportKey creates an RSA-3072 key pair to receive a
	// wrapping key (transport.go) and returns its public half. The private
	// half, named id, is a session object of this process: unwrap only,
	// sensitive, non-extractable, invisible to any other process (even one
	// with the user PIN), gone when the backend closes.
	GenerateTransportKey(ctx context.Context, id []byte) (*rsa.PublicKey, error)

	// WrapForTransport wraps the wrapping key key (the domain key, verified
	// as by VerifyKey) with RSA-OAEP (hash) under the token public key with
	// id trusted. That object must be the only one with the id, an RSA
	// public key marked CKA_TRUSTED (which only the HSM's security officer
	// can set) and allowed to wrap, and equal pub, the key the officers
	// approved; otherwise ErrObjectMismatch, or ErrKeyNotFound if there is
	// none.
	WrapForTransport(ctx context.Context, key KeyRef, trusted []byte, pub *rsa.PublicKey, hash OAEPHash) ([]byte, error)

	// ReceiveWrappingKey unwraps a WrapForTransport result with the
	// transport key named transport into a persistent wrapping key with
	// spec's id and the full template of a UsageWrap key, and checks that
	// its check value is spec.CheckValue; if not, what was unwrapped is
	// destroyed and the error is ErrObjectMismatch. A wrong or tampered
	// blob is ErrDecrypt. On success the transport key is destroyed.
	ReceiveWrappingKey(ctx context.Context, transport, wrapped []byte, hash OAEPHash, spec KeySpec) error

	// ImportWrappedKey unwraps customer key material (an AES-256 key)
	// wrapped in format under the import key named importKey (made by
	// GenerateTransportKey) into a temporary session key, computes its key
	// check value and wraps it under the wrapping key wrap, like
	// GenerateWrappedKey does for a generated key; the temporary key is
	// destroyed, and so is the import key once it succeeded (one import per
	// import key). The key is never in the clear outside the HSM. Material
	// that does not unwrap is ErrDecrypt; a key of another length, a wrong
	// size or an unknown format or hash is ErrInvalidInput.
	ImportWrappedKey(ctx context.Context, importKey, material []byte, format ImportFormat, hash OAEPHash, wrap KeyRef) (wrapped, checkValue []byte, err error)

	// ReceiveRewrapKey unwraps a WrapForTransport result — the cluster's
	// current domain key, wrapped to this process's transport key named
	// transport — into a session object of this process named id: unwrap
	// only, sensitive, non-extractable, unmodifiable, whose own
	// CKA_UNWRAP_TEMPLATE makes whatever it unwraps a session AES key that is
	// sensitive and extractable without CKA_WRAP_WITH_TRUSTED and allows no
	// operation. It exists only for RewrapKey during a domain-key rotation
	// (docs/key-destruction.md); no other process sees it, and it is gone
	// with DestroyTransportKey(id) or when the backend closes. On success the
	// transport key is destroyed. A wrong or tampered blob is ErrDecrypt.
	ReceiveRewrapKey(ctx context.Context, transport, wrapped []byte, hash OAEPHash, id []byte) error

	// RewrapKey re-wraps a KEK blob (a GenerateWrappedKey or ImportWrappedKey
	// result, wrapped under the old domain key) under the wrapping key to (the
	// new domain key, verified as by VerifyKey): it unwraps wrapped with the
	// session key from (made by ReceiveRewrapKey) into a temporary session
	// key, wraps that with AES-KWP under to, destroys it, and checks that the
	// new blob unwraps under to into a key whose check value is checkValue
	// (the KEK's recorded one) before returning the new blob. The KEK is never
	// in the clear outside the HSM. ErrDecrypt if wrapped does not unwrap
	// under from; ErrObjectMismatch if the check value differs; ErrKeyNotFound
	// if from is not a session key of this process.
	RewrapKey(ctx context.Context, from, wrapped []byte, to KeyRef, checkValue []byte) ([]byte, error)

	// DestroyTransportKey destroys the transport key id, or the rewrap key
	// id (ReceiveRewrapKey), of this process; a missing one is not an error.
	DestroyTransportKey(ctx context.Context, id []byte) error

	// KeyAttributes reads back the attributes of the secret or private key
	// with that id (ErrObjectMismatch if more than one has it).
	KeyAttributes(ctx context.Context, id []byte) (Attributes, error)

	// HasKey reports whether a key (secret or private) with that id exists,
	// whatever its attributes. It says nothing about whether the object is
	// one custos may use: VerifyKey does.
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
