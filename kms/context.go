package kms

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sort"
	"unicode/utf8"
)

// Limits on request fields.
const (
	// MaxKeyNameLen is the longest key name.
	MaxKeyNameLen = 64
	// MaxDescriptionLen bounds a key description.
	MaxDescriptionLen = 256
	// MaxPayload is the largest Encrypt plaintext.
	MaxPayload = 64 << 10
	// DataKeySize is the size of a data key: AES-256.
	DataKeySize = 32
	// MaxContextPairs and MaxContextBytes bound an encryption context.
	MaxContextPairs = 64
	MaxContextBytes = 8 << 10
	// MaxJustificationText and MaxTicket bound a justification.
	MaxJustificationText = 1024
	MaxTicket            = 256
)

// CanonicalContext encodes an encryption context canonically: pairs sorted
// by key, each as uint32 len(k) || k || uint32 len(v) || v (big-endian). The
// empty and nil contexts encode to no bytes.
func CanonicalContext(ctx map[string]string) []byte {
	keys := make([]string, 0, len(ctx))
	size := 0
	for k, v := range ctx {
		keys = append(keys, k)
		size += 8 + len(k) + len(v)
	}
	sort.Strings(keys)
	b := make([]byte, 0, size)
	for _, k := range keys {
		b = binary.BigEndian.AppendUint32(b, uint32(len(k)))
		b = append(b, k...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(ctx[k])))
		b = append(b, ctx[k]...)
	}
	return b
}

// ContextDigest is SHA-256 of CanonicalContext(ctx). It is bound into every
// wrapped ciphertext and written in decision records.
func ContextDigest(ctx map[string]string) [32]byte {
	return sha256.Sum256(CanonicalContext(ctx))
}

// ValidateContext checks an encryption context against the limits.
func ValidateContext(ctx map[string]string) error {
	if len(ctx) > MaxContextPairs {
		return fmt.Errorf("%w: encryption_context has %d entries, at most %d", ErrInvalidArgument, len(ctx), MaxContextPairs)
	}
	total := 0
	for k, v := range ctx {
		if k == "" {
			return fmt.Errorf("%w: encryption_context has an empty key", ErrInvalidArgument)
		}
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return fmt.Errorf("%w: encryption_context is not valid UTF-8", ErrInvalidArgument)
		}
		total += len(k) + len(v)
	}
	if total > MaxContextBytes {
		return fmt.Errorf("%w: encryption_context has %d bytes, at most %d", ErrInvalidArgument, total, MaxContextBytes)
	}
	return nil
}

// ValidateKeyName checks a key name: 1-64 characters of [A-Za-z0-9_.-],
// starting with a letter or digit.
func ValidateKeyName(name string) error { return validateName("name", name) }

// validateName checks a key name held in the request field `field`; the
// error names the field.
func validateName(field, name string) error {
	if name == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalidArgument, field)
	}
	if len(name) > MaxKeyNameLen {
		return fmt.Errorf("%w: %s is longer than %d characters", ErrInvalidArgument, field, MaxKeyNameLen)
	}
	for i, c := range []byte(name) {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '.' && c != '-') {
			return fmt.Errorf("%w: %s %q: use letters, digits, '_', '.', '-', starting with a letter or digit", ErrInvalidArgument, field, name)
		}
	}
	return nil
}
