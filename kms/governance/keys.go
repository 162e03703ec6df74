package governance

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"

	"github.com/custos-kms/custos/internal/atomicfile"
)

// Officer key file formats (docs/governance-statements.md).
const (
	// PEMTypePrivateKey is an unencrypted PKCS#8 key.
	PEMTypePrivateKey = "PRIVATE KEY"
	// PEMTypeECPrivateKey is an unencrypted SEC 1 key (openssl ecparam);
	// LoadKeyFile reads it, WriteKeyFile never writes it.
	PEMTypeECPrivateKey = "EC PRIVATE KEY"
	// PEMTypeEncryptedKey is custos' passphrase-encrypted PKCS#8 key.
	PEMTypeEncryptedKey = "CUSTOS ENCRYPTED PRIVATE KEY"
	// PEMTypePublicKey is a PKIX public key.
	PEMTypePublicKey = "PUBLIC KEY"

	// KeyFileIterations is the PBKDF2-HMAC-SHA256 iteration count
	// WriteKeyFile uses; LoadKeyFile accepts MinKeyFileIterations up to
	// MaxKeyFileIterations.
	KeyFileIterations    = 600_000
	MinKeyFileIterations = 600_000
	MaxKeyFileIterations = 20_000_000

	keyFileVersion = "1"
	keyFileKDF     = "PBKDF2-HMAC-SHA256"
	keyFileCipher  = "AES-256-GCM"
	saltSize       = 16
	maxKeyFileSize = 64 << 10

	hdrVersion = "Custos-Key-Version"
	hdrKDF     = "KDF"
	hdrIter    = "KDF-Iterations"
	hdrSalt    = "KDF-Salt"
	hdrCipher  = "Cipher"
	hdrNonce   = "Cipher-Nonce"
)

// GenerateKey makes a new officer key: ECDSA P-256 from crypto/rand.
func GenerateKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// MarshalPublicKey returns the PKIX (SubjectPublicKeyInfo) DER of pub, the
// form Officer.public_key holds. It returns nil for a key that is not P-256.
func MarshalPublicKey(pub *ecdsa.PublicKey) []byte {
	if pub == nil || pub.Curve != elliptic.P256() {
		return nil
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil
	}
	return der
}

// ParsePublicKey parses PKIX DER and accepts only an ECDSA P-256 key (on the
// curve, not the point at infinity) with no trailing data.
func ParsePublicKey(der []byte) (*ecdsa.PublicKey, error) {
	if len(der) == 0 {
		return nil, fmt.Errorf("%w: empty public key", ErrBadKey)
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("%w: public key does not parse as PKIX", ErrBadKey)
	}
	pub, ok := k.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: public key is not ECDSA P-256", ErrBadKey)
	}
	return pub, nil
}

// PublicKeyPEM returns pub as a PEM "PUBLIC KEY" block (PKIX).
func PublicKeyPEM(pub *ecdsa.PublicKey) []byte {
	der := MarshalPublicKey(pub)
	if der == nil {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: PEMTypePublicKey, Bytes: der})
}

// ParsePublicKeyPEM parses the first PEM "PUBLIC KEY" block in b (a P-256
// PKIX key).
func ParsePublicKeyPEM(b []byte) (*ecdsa.PublicKey, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("%w: no PEM %q block", ErrBadKey, PEMTypePublicKey)
		}
		if blk.Type == PEMTypePublicKey {
			return ParsePublicKey(blk.Bytes)
		}
	}
}

// Fingerprint returns, for humans comparing keys, the hex of the first 16
// bytes of SHA-256 over the key's PKIX DER (32 hex digits, no colons).
func Fingerprint(pub *ecdsa.PublicKey) string {
	der := MarshalPublicKey(pub)
	if der == nil {
		return ""
	}
	h := sha256.Sum256(der)
	return hex.EncodeToString(h[:16])
}

// keyFileAAD binds the format name, version and KDF parameters into the
// AES-256-GCM tag.
func keyFileAAD(iter int, salt []byte) []byte {
	aad := []byte(PEMTypeEncryptedKey + "\x00" + keyFileVersion + "\x00" + keyFileKDF + "\x00" + keyFileCipher + "\x00")
	aad = binary.BigEndian.AppendUint32(aad, uint32(iter))
	return append(aad, salt...)
}

func deriveKey(passphrase, salt []byte, iter int) ([]byte, error) {
	return pbkdf2.Key(sha256.New, string(passphrase), salt, iter, 32)
}

// EncodeKey returns key as PEM: "PRIVATE KEY" (PKCS#8) if passphrase is
// empty, otherwise "CUSTOS ENCRYPTED PRIVATE KEY" (PKCS#8 under AES-256-GCM
// with a key from PBKDF2-HMAC-SHA256, parameters in the PEM headers).
func EncodeKey(key *ecdsa.PrivateKey, passphrase []byte) ([]byte, error) {
	if key == nil || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: not an ECDSA P-256 private key", ErrBadKey)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	defer clear(der)
	if len(passphrase) == 0 {
		return pem.EncodeToMemory(&pem.Block{Type: PEMTypePrivateKey, Bytes: der}), nil
	}
	salt := make([]byte, saltSize)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	k, err := deriveKey(passphrase, salt, KeyFileIterations)
	if err != nil {
		return nil, err
	}
	defer clear(k)
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, gcm.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	ct := gcm.Seal(nil, nonce, der, keyFileAAD(KeyFileIterations, salt))
	return pem.EncodeToMemory(&pem.Block{
		Type: PEMTypeEncryptedKey,
		Headers: map[string]string{
			hdrVersion: keyFileVersion,
			hdrKDF:     keyFileKDF,
			hdrIter:    strconv.Itoa(KeyFileIterations),
			hdrSalt:    hex.EncodeToString(salt),
			hdrCipher:  keyFileCipher,
			hdrNonce:   hex.EncodeToString(nonce),
		},
		Bytes: ct,
	}), nil
}

// WriteKeyFile writes key to path with mode 0600, encrypted if passphrase is
// not empty (see EncodeKey). It writes a temporary file in the same
// directory, syncs it and links it into place, so path is either absent or
// complete; it refuses to overwrite an existing path.
func WriteKeyFile(path string, key *ecdsa.PrivateKey, passphrase []byte) error {
	data, err := EncodeKey(key, passphrase)
	if err != nil {
		return err
	}
	defer clear(data)
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("governance: %s exists; not overwriting a key file: %w", path, fs.ErrExist)
	}
	return writeAtomic(path, data, 0o600, false)
}

// writeAtomic writes a file all at once (atomicfile.Write), never
// replacing path unless overwrite.
func writeAtomic(path string, data []byte, mode fs.FileMode, overwrite bool) error {
	err := atomicfile.Write(path, data, mode, overwrite)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("governance: %s exists; not overwriting: %w", path, fs.ErrExist)
	}
	if err != nil {
		return fmt.Errorf("governance: %w", err)
	}
	return nil
}

// LoadKeyFile reads an officer key file written by WriteKeyFile (or an
// unencrypted PKCS#8 or SEC 1 P-256 key from openssl) and returns its key as
// a crypto.Signer. passphrase is called only for an encrypted file; a wrong
// passphrase (or an altered file) gives ErrWrongPassphrase.
func LoadKeyFile(path string, passphrase func() ([]byte, error)) (crypto.Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("governance: reading key file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("governance: reading key file %s: %w", path, err)
	}
	defer clear(data)
	if len(data) > maxKeyFileSize {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrBadKey, path, maxKeyFileSize)
	}
	key, err := DecodeKey(data, passphrase)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}

// DecodeKey is LoadKeyFile on the file's contents.
func DecodeKey(data []byte, passphrase func() ([]byte, error)) (*ecdsa.PrivateKey, error) {
	var blk *pem.Block
	rest := data
	for {
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return nil, fmt.Errorf("%w: no PEM private key block", ErrBadKey)
		}
		if blk.Type != "EC PARAMETERS" { // openssl ecparam -genkey writes one first
			break
		}
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: data after the key block", ErrBadKey)
	}
	switch blk.Type {
	case PEMTypePrivateKey:
		if len(blk.Headers) != 0 {
			return nil, fmt.Errorf("%w: unexpected PEM headers", ErrBadKey)
		}
		return parsePKCS8(blk.Bytes)
	case PEMTypeECPrivateKey:
		if len(blk.Headers) != 0 {
			return nil, fmt.Errorf("%w: encrypted legacy PEM is not supported; use custos officer keygen", ErrBadKey)
		}
		k, err := x509.ParseECPrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: EC private key does not parse", ErrBadKey)
		}
		return checkPrivate(k)
	case PEMTypeEncryptedKey:
		return decryptKey(blk, passphrase)
	default:
		return nil, fmt.Errorf("%w: PEM block %q is not a private key", ErrBadKey, blk.Type)
	}
}

func parsePKCS8(der []byte) (*ecdsa.PrivateKey, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("%w: PKCS#8 private key does not parse", ErrBadKey)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: private key is not ECDSA P-256", ErrBadKey)
	}
	return checkPrivate(ek)
}

func checkPrivate(k *ecdsa.PrivateKey) (*ecdsa.PrivateKey, error) {
	if k.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: private key is not ECDSA P-256", ErrBadKey)
	}
	return k, nil
}

func decryptKey(blk *pem.Block, passphrase func() ([]byte, error)) (*ecdsa.PrivateKey, error) {
	h := blk.Headers
	if len(h) != 6 || h[hdrVersion] != keyFileVersion || h[hdrKDF] != keyFileKDF || h[hdrCipher] != keyFileCipher {
		return nil, fmt.Errorf("%w: encrypted key file: unsupported version or algorithms (want %s=%s, %s=%s, %s=%s)",
			ErrBadKey, hdrVersion, keyFileVersion, hdrKDF, keyFileKDF, hdrCipher, keyFileCipher)
	}
	iter, err := strconv.Atoi(h[hdrIter])
	if err != nil || iter < MinKeyFileIterations || iter > MaxKeyFileIterations {
		return nil, fmt.Errorf("%w: encrypted key file: %s must be %d..%d", ErrBadKey, hdrIter, MinKeyFileIterations, MaxKeyFileIterations)
	}
	salt, err := hex.DecodeString(h[hdrSalt])
	if err != nil || len(salt) != saltSize {
		return nil, fmt.Errorf("%w: encrypted key file: %s must be %d hex bytes", ErrBadKey, hdrSalt, saltSize)
	}
	nonce, err := hex.DecodeString(h[hdrNonce])
	if err != nil || len(nonce) != 12 {
		return nil, fmt.Errorf("%w: encrypted key file: %s must be 12 hex bytes", ErrBadKey, hdrNonce)
	}
	if passphrase == nil {
		return nil, fmt.Errorf("%w: the key file is encrypted and no passphrase was given", ErrWrongPassphrase)
	}
	pass, err := passphrase()
	if err != nil {
		return nil, fmt.Errorf("governance: reading the passphrase: %w", err)
	}
	defer clear(pass)
	k, err := deriveKey(pass, salt, iter)
	if err != nil {
		return nil, err
	}
	defer clear(k)
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	der, err := gcm.Open(nil, nonce, blk.Bytes, keyFileAAD(iter, salt))
	if err != nil {
		return nil, ErrWrongPassphrase
	}
	defer clear(der)
	return parsePKCS8(der)
}
