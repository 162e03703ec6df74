package kms

import (
	"encoding/binary"
	"fmt"

	"github.com/custos-kms/custos/hsm"
)

// Wrapped ciphertext format, version 1 (docs/wrapped-data-key.md).
//
//	offset  size  field
//	0       1     format version, 0x01
//	1       1     kind: 0x01 data key (GenerateDataKey), 0x02 payload (Encrypt)
//	2       1     n = length of the key name, 1..64
//	3       n     key name (ASCII, see ValidateKeyName)
//	3+n     4     key version, big-endian, >= 1
//	7+n     12    AES-GCM IV
//	19+n    ..    AES-256-GCM ciphertext || 16-byte tag
//
// The AES-GCM additional data is
//
//	"custos-wdk-v1" || bytes[0 : 7+n] || ContextDigest(encryption context)
//
// so the format version, kind, key name, key version and encryption context
// are all authenticated: changing any of them makes decryption fail.
const (
	wrappedVersion1 = 0x01
	wrappedAADLabel = "custos-wdk-v1"

	// maxWrappedLen bounds a ciphertext accepted by Decrypt: the largest
	// Encrypt payload plus overhead.
	maxWrappedLen = MaxPayload + 3 + MaxKeyNameLen + 4 + hsm.GCMIVSize + hsm.GCMTagSize
)

// Kind says what a wrapped ciphertext holds.
type Kind byte

// Kinds of wrapped ciphertext.
const (
	KindDataKey Kind = 0x01
	KindPayload Kind = 0x02
)

// Wrapped is a parsed wrapped ciphertext.
type Wrapped struct {
	Kind       Kind
	Key        string
	KeyVersion uint32
	IV         []byte
	Ciphertext []byte // ciphertext || tag
}

// header returns the authenticated header bytes (everything before the IV).
func (w *Wrapped) header() []byte {
	b := make([]byte, 0, 3+len(w.Key)+4)
	b = append(b, wrappedVersion1, byte(w.Kind), byte(len(w.Key)))
	b = append(b, w.Key...)
	return binary.BigEndian.AppendUint32(b, w.KeyVersion)
}

// AAD returns the additional data that binds the header and the encryption
// context digest into the AES-GCM tag.
func (w *Wrapped) AAD(contextDigest [32]byte) []byte {
	h := w.header()
	aad := make([]byte, 0, len(wrappedAADLabel)+len(h)+len(contextDigest))
	aad = append(aad, wrappedAADLabel...)
	aad = append(aad, h...)
	return append(aad, contextDigest[:]...)
}

// Marshal encodes w in format version 1.
func (w *Wrapped) Marshal() []byte {
	h := w.header()
	b := make([]byte, 0, len(h)+len(w.IV)+len(w.Ciphertext))
	b = append(b, h...)
	b = append(b, w.IV...)
	return append(b, w.Ciphertext...)
}

// ParseWrapped decodes a wrapped ciphertext. Every error wraps
// ErrInvalidArgument and names what is wrong, never the bytes.
func ParseWrapped(b []byte) (*Wrapped, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: ciphertext: "+format, append([]any{ErrInvalidArgument}, args...)...)
	}
	if len(b) > maxWrappedLen {
		return nil, bad("longer than %d bytes", maxWrappedLen)
	}
	if len(b) < 3 {
		return nil, bad("too short")
	}
	if b[0] != wrappedVersion1 {
		return nil, bad("unsupported format version %d", b[0])
	}
	kind := Kind(b[1])
	if kind != KindDataKey && kind != KindPayload {
		return nil, bad("unknown kind %d", b[1])
	}
	n := int(b[2])
	if n == 0 || n > MaxKeyNameLen {
		return nil, bad("key name length %d out of range", n)
	}
	if len(b) < 3+n+4+hsm.GCMIVSize+hsm.GCMTagSize {
		return nil, bad("too short")
	}
	name := string(b[3 : 3+n])
	if err := ValidateKeyName(name); err != nil {
		return nil, bad("bad key name")
	}
	ver := binary.BigEndian.Uint32(b[3+n:])
	if ver == 0 {
		return nil, bad("key version 0")
	}
	rest := b[7+n:]
	ct := rest[hsm.GCMIVSize:]
	if kind == KindDataKey && len(ct) != DataKeySize+hsm.GCMTagSize {
		return nil, bad("data key ciphertext has %d bytes, want %d", len(ct), DataKeySize+hsm.GCMTagSize)
	}
	return &Wrapped{
		Kind:       kind,
		Key:        name,
		KeyVersion: ver,
		IV:         append([]byte(nil), rest[:hsm.GCMIVSize]...),
		Ciphertext: append([]byte(nil), ct...),
	}, nil
}
