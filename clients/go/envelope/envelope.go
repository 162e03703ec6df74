// Package envelope implements the custos envelope ciphertext format: a
// self-describing header followed by a stream of AES-256-GCM segments in the
// STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár, "Online
// Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", 2015), so
// that data of any size is encrypted and decrypted in constant memory and any
// truncation, reordering, duplication, extension or bit flip is detected.
//
// The package is pure: it never talks to the network. To encrypt, an
// application obtains a 32-byte data key and its wrapped form from custos
// (GenerateDataKey) and calls NewWriter. To decrypt, it calls ReadHeader,
// presents Header.WrappedKey and Header.Context to custos (Decrypt) to get the
// data key back, then calls NewReader.
//
// Only CRYPTREC-listed primitives are used (docs/architecture.md, invariant 7):
// AES-256-GCM, HMAC-SHA-256 and SHA-256.
//
// # Wire format, version 1
//
// All integers are unsigned big-endian. The header is:
//
//	offset  size  field
//	0       4     magic "CSTE" (0x43 0x53 0x54 0x45)
//	4       1     format version = 0x01
//	5       1     algorithm suite = 0x01 (AES-256-GCM STREAM, HMAC-SHA-256 KDF and key commitment)
//	6       2     key name length n, 1..256
//	8       n     key name, UTF-8
//	        4     key version
//	        2     wrapped data key length w, 1..1024
//	        w     wrapped data key, opaque
//	        2     encryption context pair count p, 0..64
//	        ...   CanonicalContext(context): p pairs sorted by key, strictly increasing
//	        4     segment size S, 4096..16777216 (plaintext bytes per segment)
//	        32    salt, random
//	        32    key commitment
//
// Key derivation (NIST SP 800-108r1 counter mode, PRF = HMAC-SHA-256, one
// block each, so the counter is always 1):
//
//	H0          = SHA-256(header bytes before the key commitment)
//	KDF(l, L)   = HMAC-SHA-256(dataKey, 0x00000001 || l || 0x00 || H0 || uint32(L))
//	segmentKey  = KDF("custos envelope v1 segment key", 256)
//	commitment  = KDF("custos envelope v1 key commitment", 256)
//	noncePrefix = KDF("custos envelope v1 nonce prefix", 56)[0:7]
//
// NewReader recomputes the commitment and compares it in constant time with
// the header's before any segment is decrypted, so a ciphertext decrypts
// under one data key only.
//
// The body follows the header directly and is a sequence of segments. Segment
// i (counting from 0) is
//
//	AES-256-GCM-Seal(segmentKey, nonce_i, plaintext_i, AAD = SHA-256(full header))
//	nonce_i = noncePrefix (7) || uint32(i) (4) || last (1: 0x01 on the final segment, else 0x00)
//
// so it is len(plaintext_i)+16 bytes long. Every segment but the final one
// holds exactly S plaintext bytes; the final one holds 0..S bytes and is
// empty only when the whole plaintext is empty (readers accept an empty final
// segment anywhere, since it cannot be forged). The stream ends with the final
// segment: there is no length field, and the reader recognises the final
// segment by reaching the end of its input. At most 2^32 segments are allowed.
//
// Read releases a segment's plaintext once that segment is authenticated
// (segments are read and authenticated in batches of up to 1 MiB, on
// several goroutines, and released in order), so when a later segment fails
// the caller has already seen an authentic prefix of the plaintext; callers
// that must not act on partial data buffer it until io.EOF.
//
// The writer and the reader batch segments (up to 1 MiB of plaintext) and
// seal or open the segments of a batch on up to GOMAXPROCS goroutines (at
// most 8); see NewWriter and NewReader. This changes neither the format nor
// what is released (authenticated segments only, in order), only the
// granularity: ciphertext is written and plaintext released a batch at a
// time. Memory stays constant: about 1 MiB for a writer and 2 MiB for a
// reader with the default segment size.
//
// docs/envelope-format.md describes the format in more detail, and
// testdata/vectors.json pins it with golden vectors.
package envelope

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"unicode/utf8"
)

// Format constants.
const (
	// Version is the format version written after the magic.
	Version = 1
	// SuiteAES256GCMHMACSHA256 is algorithm suite 1: AES-256-GCM STREAM
	// segments, HMAC-SHA-256 key derivation and key commitment.
	SuiteAES256GCMHMACSHA256 = 1

	// DataKeySize is the size of a data key in bytes.
	DataKeySize = 32

	// DefaultSegmentSize is used when Header.SegmentSize is 0.
	DefaultSegmentSize = 64 << 10
	// MinSegmentSize and MaxSegmentSize bound Header.SegmentSize.
	MinSegmentSize = 4 << 10
	MaxSegmentSize = 16 << 20

	// MaxKeyNameLen bounds the key name, in bytes.
	MaxKeyNameLen = 256
	// MaxWrappedKeyLen bounds the wrapped data key, in bytes.
	MaxWrappedKeyLen = 1024
	// MaxContextPairs bounds the number of encryption context pairs.
	MaxContextPairs = 64
	// MaxContextBytes bounds the sum of the lengths of all context keys and
	// values, in bytes (length prefixes not counted).
	MaxContextBytes = 8 << 10
)

const (
	magic       = "CSTE"
	saltSize    = 32
	commitSize  = 32
	noncePrefix = 7
	tagSize     = 16
	// maxSegments is the number of distinct segment counters.
	maxSegments = 1 << 32
)

// Errors. Match them with errors.Is. No error of this package contains key
// material.
var (
	// ErrMalformed reports a header that does not follow the format or
	// exceeds its limits, when parsing and when writing.
	ErrMalformed = errors.New("envelope: malformed header")
	// ErrUnsupportedVersion reports a format version other than 1.
	ErrUnsupportedVersion = errors.New("envelope: unsupported format version")
	// ErrUnsupportedSuite reports an algorithm suite other than 1.
	ErrUnsupportedSuite = errors.New("envelope: unsupported algorithm suite")
	// ErrDecryption reports any authentication failure: wrong data key,
	// modified header or body, truncated or extended stream.
	ErrDecryption = errors.New("envelope: decryption failed")
)

// Header is the cleartext header of an envelope ciphertext.
type Header struct {
	// Suite is the algorithm suite; 0 means SuiteAES256GCMHMACSHA256 when
	// writing. ReadHeader always sets it.
	Suite byte
	// Key is the name of the custos key that wrapped the data key.
	Key string
	// KeyVersion is the version of Key that wrapped the data key.
	KeyVersion uint32
	// WrappedKey is the wrapped data key, opaque to this package.
	WrappedKey []byte
	// Context is the encryption context the data key was wrapped with.
	Context map[string]string
	// SegmentSize is the number of plaintext bytes per segment; 0 means
	// DefaultSegmentSize when writing. ReadHeader always sets it.
	SegmentSize int

	salt       [saltSize]byte
	commitment [commitSize]byte
}

// CanonicalContext returns the canonical encoding of an encryption context,
// the one used in the envelope header and by the custos server: for each
// pair in increasing byte order of keys, uint32 len(key) || key ||
// uint32 len(value) || value. The empty context encodes to zero bytes.
func CanonicalContext(ctx map[string]string) []byte {
	keys := sortedKeys(ctx)
	n := 0
	for _, k := range keys {
		n += 8 + len(k) + len(ctx[k])
	}
	b := make([]byte, 0, n)
	for _, k := range keys {
		b = binary.BigEndian.AppendUint32(b, uint32(len(k)))
		b = append(b, k...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(ctx[k])))
		b = append(b, ctx[k]...)
	}
	return b
}

// ContextDigest returns SHA-256(CanonicalContext(ctx)).
func ContextDigest(ctx map[string]string) [32]byte {
	return sha256.Sum256(CanonicalContext(ctx))
}

func sortedKeys(ctx map[string]string) []string {
	keys := make([]string, 0, len(ctx))
	for k := range ctx {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// checkContext validates an encryption context against the format limits.
func checkContext(ctx map[string]string) error {
	if len(ctx) > MaxContextPairs {
		return malformed("more than %d context pairs", MaxContextPairs)
	}
	total := 0
	for k, v := range ctx {
		if k == "" {
			return malformed("empty context key")
		}
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return malformed("context is not valid UTF-8")
		}
		total += len(k) + len(v)
	}
	if total > MaxContextBytes {
		return malformed("context longer than %d bytes", MaxContextBytes)
	}
	return nil
}

// encodePrefix validates h and returns its encoding up to, and not including, the
// key commitment.
func (h *Header) encodePrefix() ([]byte, error) {
	if h.Suite != SuiteAES256GCMHMACSHA256 {
		return nil, fmt.Errorf("%w: %d", ErrUnsupportedSuite, h.Suite)
	}
	if len(h.Key) == 0 || len(h.Key) > MaxKeyNameLen {
		return nil, malformed("key name must be 1..%d bytes", MaxKeyNameLen)
	}
	if !utf8.ValidString(h.Key) {
		return nil, malformed("key name is not valid UTF-8")
	}
	if len(h.WrappedKey) == 0 || len(h.WrappedKey) > MaxWrappedKeyLen {
		return nil, malformed("wrapped key must be 1..%d bytes", MaxWrappedKeyLen)
	}
	if err := checkContext(h.Context); err != nil {
		return nil, err
	}
	if h.SegmentSize < MinSegmentSize || h.SegmentSize > MaxSegmentSize {
		return nil, malformed("segment size must be %d..%d", MinSegmentSize, MaxSegmentSize)
	}
	canon := CanonicalContext(h.Context)
	b := make([]byte, 0, 24+len(h.Key)+len(h.WrappedKey)+len(canon)+saltSize+commitSize)
	b = append(b, magic...)
	b = append(b, Version, h.Suite)
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.Key)))
	b = append(b, h.Key...)
	b = binary.BigEndian.AppendUint32(b, h.KeyVersion)
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.WrappedKey)))
	b = append(b, h.WrappedKey...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.Context)))
	b = append(b, canon...)
	b = binary.BigEndian.AppendUint32(b, uint32(h.SegmentSize))
	b = append(b, h.salt[:]...)
	return b, nil
}

// headerReader reads header fields from src, copying nothing it has not
// bounded first.
type headerReader struct {
	src io.Reader
	err error
}

func (r *headerReader) read(n int) []byte {
	if r.err != nil {
		return nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r.src, b); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			r.err = malformed("truncated header")
		} else {
			r.err = fmt.Errorf("envelope: reading header: %w", err)
		}
		return nil
	}
	return b
}

func (r *headerReader) u8() byte {
	b := r.read(1)
	if b == nil {
		return 0
	}
	return b[0]
}

func (r *headerReader) u16() int {
	b := r.read(2)
	if b == nil {
		return 0
	}
	return int(binary.BigEndian.Uint16(b))
}

func (r *headerReader) u32() uint32 {
	b := r.read(4)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

func (r *headerReader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

// ReadHeader reads and validates an envelope header from src. It consumes
// exactly the header, leaving src at the first segment, and allocates no more
// than the format's limits allow whatever src holds. It does not
// authenticate the header: NewReader does, once the data key is known.
func ReadHeader(src io.Reader) (*Header, error) {
	r := &headerReader{src: src}
	if m := r.read(len(magic)); r.err != nil {
		return nil, r.err
	} else if string(m) != magic {
		return nil, malformed("not a custos envelope")
	}
	if v := r.u8(); r.err != nil {
		return nil, r.err
	} else if v != Version {
		return nil, fmt.Errorf("%w: %d", ErrUnsupportedVersion, v)
	}
	h := &Header{Suite: r.u8()}
	if r.err != nil {
		return nil, r.err
	}
	if h.Suite != SuiteAES256GCMHMACSHA256 {
		return nil, fmt.Errorf("%w: %d", ErrUnsupportedSuite, h.Suite)
	}

	if n := r.u16(); r.err == nil && (n == 0 || n > MaxKeyNameLen) {
		r.fail(malformed("key name must be 1..%d bytes", MaxKeyNameLen))
	} else if name := r.read(n); r.err == nil {
		if !utf8.Valid(name) {
			r.fail(malformed("key name is not valid UTF-8"))
		}
		h.Key = string(name)
	}
	h.KeyVersion = r.u32()
	if n := r.u16(); r.err == nil && (n == 0 || n > MaxWrappedKeyLen) {
		r.fail(malformed("wrapped key must be 1..%d bytes", MaxWrappedKeyLen))
	} else {
		h.WrappedKey = r.read(n)
	}

	pairs := r.u16()
	if r.err == nil && pairs > MaxContextPairs {
		r.fail(malformed("more than %d context pairs", MaxContextPairs))
	}
	if r.err == nil {
		h.Context = make(map[string]string, pairs)
	}
	budget := MaxContextBytes
	prev := ""
	for i := 0; i < pairs && r.err == nil; i++ {
		k := r.contextString(&budget)
		v := r.contextString(&budget)
		if r.err != nil {
			break
		}
		switch {
		case k == "":
			r.fail(malformed("empty context key"))
		case i > 0 && k <= prev:
			r.fail(malformed("context keys not in strictly increasing order"))
		case !utf8.ValidString(k) || !utf8.ValidString(v):
			r.fail(malformed("context is not valid UTF-8"))
		}
		h.Context[k] = v
		prev = k
	}

	seg := r.u32()
	if r.err == nil && (seg < MinSegmentSize || seg > MaxSegmentSize) {
		r.fail(malformed("segment size must be %d..%d", MinSegmentSize, MaxSegmentSize))
	}
	h.SegmentSize = int(seg)
	copy(h.salt[:], r.read(saltSize))
	copy(h.commitment[:], r.read(commitSize))
	if r.err != nil {
		return nil, r.err
	}
	return h, nil
}

// contextString reads a uint32-length-prefixed string, refusing lengths over
// the remaining budget before allocating.
func (r *headerReader) contextString(budget *int) string {
	n := r.u32()
	if r.err != nil {
		return ""
	}
	if n > uint32(*budget) {
		r.fail(malformed("context longer than %d bytes", MaxContextBytes))
		return ""
	}
	*budget -= int(n)
	return string(r.read(int(n)))
}
