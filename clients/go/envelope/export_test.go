package envelope

import (
	"crypto/sha256"
	"io"
)

// Test hooks, visible to the external envelope_test package only.

// Salt and Commitment return the header's unexported fields.
func (h *Header) Salt() []byte       { return h.salt[:] }
func (h *Header) Commitment() []byte { return h.commitment[:] }

// EncodeHeader returns the full encoding of a parsed header.
func EncodeHeader(h *Header) ([]byte, error) {
	b, err := h.encodePrefix()
	if err != nil {
		return nil, err
	}
	return append(b, h.commitment[:]...), nil
}

// Derived returns what the key derivation gives for a parsed header and a
// data key, and the header digest used as AAD. It does not check the
// commitment.
func Derived(h *Header, dataKey []byte) (segKey, commitment, noncePrefix, aad []byte, err error) {
	b, err := h.encodePrefix()
	if err != nil {
		return nil, nil, nil, nil, err
	}
	k, c, n := kdf(dataKey, b)
	a := sha256.Sum256(append(b, h.commitment[:]...))
	return k[:], c[:], n[:], a[:], nil
}

// SetWriterCounter and SetReaderCounter move the segment counter, to test
// its limits without writing 2^32 segments.
func SetWriterCounter(w io.WriteCloser, n uint64) { w.(*writer).counter = n }
func SetReaderCounter(r io.Reader, n uint64)      { r.(*reader).counter = n }
