package envelope

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	cryptorand "crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// KDF labels, see the package documentation.
const (
	labelSegmentKey  = "custos envelope v1 segment key"
	labelCommitment  = "custos envelope v1 key commitment"
	labelNoncePrefix = "custos envelope v1 nonce prefix"
)

var (
	errDataKeySize = errors.New("envelope: data key must be 32 bytes")
	errClosed      = errors.New("envelope: write on closed writer")
	errTooLong     = errors.New("envelope: plaintext too long: segment counter would overflow")
)

// streamKeys holds what is derived from the data key and the header.
type streamKeys struct {
	aead  cipher.AEAD
	nonce [12]byte // noncePrefix || counter || last flag
	aad   [32]byte // SHA-256 of the full header
}

// kdf computes the key derivation over prefix, the header bytes before the
// commitment: the segment key, the commitment and the nonce prefix.
func kdf(dataKey, prefix []byte) (segKey, commitment [32]byte, nonce [noncePrefix]byte) {
	h0 := sha256.Sum256(prefix)
	mac := hmac.New(sha256.New, dataKey)
	block := func(label string, bits uint32) [32]byte {
		mac.Reset()
		var buf [4]byte
		binary.BigEndian.PutUint32(buf[:], 1) // counter i = 1
		mac.Write(buf[:])
		mac.Write([]byte(label))
		mac.Write([]byte{0})
		mac.Write(h0[:])
		binary.BigEndian.PutUint32(buf[:], bits)
		mac.Write(buf[:])
		var sum [32]byte
		mac.Sum(sum[:0])
		return sum
	}
	segKey = block(labelSegmentKey, 256)
	commitment = block(labelCommitment, 256)
	np := block(labelNoncePrefix, 8*noncePrefix)
	copy(nonce[:], np[:])
	clear(np[:])
	mac.Reset()
	return segKey, commitment, nonce
}

// derive sets up the stream keys for the header whose bytes before the
// commitment are prefix, and returns them with the commitment. The segment
// key is zeroed once the cipher is set up; the data key is not retained.
func derive(dataKey, prefix []byte) (*streamKeys, [commitSize]byte, error) {
	if len(dataKey) != DataKeySize {
		return nil, [commitSize]byte{}, errDataKeySize
	}
	segKey, commitment, nonce := kdf(dataKey, prefix)
	k := &streamKeys{}
	copy(k.nonce[:], nonce[:])
	block, err := aes.NewCipher(segKey[:])
	clear(segKey[:])
	if err != nil {
		return nil, commitment, err
	}
	if k.aead, err = cipher.NewGCM(block); err != nil {
		return nil, commitment, err
	}
	return k, commitment, nil
}

// setNonce fills in the counter and last-segment flag of the nonce.
func (k *streamKeys) setNonce(counter uint64, last bool) []byte {
	binary.BigEndian.PutUint32(k.nonce[noncePrefix:], uint32(counter))
	k.nonce[11] = 0
	if last {
		k.nonce[11] = 1
	}
	return k.nonce[:]
}

// NewWriter writes the header for h to dst at once and returns a writer that
// encrypts everything written to it under dataKey (DataKeySize bytes, as
// returned by custos GenerateDataKey together with h.WrappedKey). Close is
// mandatory: it writes the final segment, without which the ciphertext does
// not decrypt. Close does not close dst.
//
// The salt is read from rand, or from crypto/rand if rand is nil. h.Suite and
// h.SegmentSize default when 0. The writer holds one segment of buffer and
// does not retain dataKey.
func NewWriter(dst io.Writer, h Header, dataKey []byte, rand io.Reader) (io.WriteCloser, error) {
	if len(dataKey) != DataKeySize {
		return nil, errDataKeySize
	}
	if h.Suite == 0 {
		h.Suite = SuiteAES256GCMHMACSHA256
	}
	if h.SegmentSize == 0 {
		h.SegmentSize = DefaultSegmentSize
	}
	if rand == nil {
		rand = cryptorand.Reader
	}
	if _, err := io.ReadFull(rand, h.salt[:]); err != nil {
		return nil, fmt.Errorf("envelope: reading random salt: %w", err)
	}
	header, err := h.encodePrefix()
	if err != nil {
		return nil, err
	}
	keys, commitment, err := derive(dataKey, header)
	if err != nil {
		return nil, err
	}
	header = append(header, commitment[:]...)
	keys.aad = sha256.Sum256(header)
	if _, err := dst.Write(header); err != nil {
		return nil, err
	}
	return &writer{
		dst:  dst,
		keys: keys,
		seg:  h.SegmentSize,
		buf:  make([]byte, 0, h.SegmentSize+tagSize),
	}, nil
}

type writer struct {
	dst     io.Writer
	keys    *streamKeys
	seg     int
	buf     []byte // pending plaintext, capacity seg+tagSize for in-place sealing
	counter uint64 // index of the next segment
	closed  bool
	err     error // sticky
}

func (w *writer) Write(p []byte) (int, error) {
	if w.closed {
		return 0, errClosed
	}
	if w.err != nil {
		return 0, w.err
	}
	n := 0
	for len(p) > 0 {
		// A full buffer is flushed as non-final only once more data
		// arrives, so that Close can mark it final.
		if len(w.buf) == w.seg {
			if err := w.flush(false); err != nil {
				return n, err
			}
		}
		c := copy(w.buf[len(w.buf):w.seg], p)
		w.buf = w.buf[:len(w.buf)+c]
		p = p[c:]
		n += c
	}
	return n, nil
}

func (w *writer) flush(last bool) error {
	// Non-final segments use counters 0..2^32-2, so that the final one
	// still has a counter.
	if !last && w.counter >= maxSegments-1 {
		w.err = errTooLong
		return w.err
	}
	ct := w.keys.aead.Seal(w.buf[:0], w.keys.setNonce(w.counter, last), w.buf, w.keys.aad[:])
	w.counter++
	w.buf = w.buf[:0]
	if _, err := w.dst.Write(ct); err != nil {
		w.err = err
	}
	return w.err
}

// Close writes the final segment and drops the segment key. It is safe to
// call more than once.
func (w *writer) Close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	if w.err == nil {
		w.flush(true)
	}
	clear(w.buf[:cap(w.buf)])
	w.keys = nil
	return w.err
}

// NewReader returns a reader of the plaintext of the body in src, which must
// be positioned just after the header h, as left by ReadHeader. dataKey is
// the data key custos unwrapped from h.WrappedKey with h.Context.
//
// NewReader authenticates the header first, by checking its key commitment
// in constant time; a wrong data key or a modified header gives
// ErrDecryption before any body byte is read. Read then returns plaintext
// only once its whole segment is authenticated, returns io.EOF only after
// the final segment, and returns ErrDecryption for a truncated, extended,
// reordered or modified body. The reader holds one segment of buffer and
// does not retain dataKey.
func NewReader(src io.Reader, h *Header, dataKey []byte) (io.Reader, error) {
	if h == nil {
		return nil, malformed("nil header")
	}
	if len(dataKey) != DataKeySize {
		return nil, errDataKeySize
	}
	header, err := h.encodePrefix()
	if err != nil {
		return nil, err
	}
	keys, commitment, err := derive(dataKey, header)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(commitment[:], h.commitment[:]) != 1 {
		return nil, ErrDecryption
	}
	header = append(header, commitment[:]...)
	keys.aad = sha256.Sum256(header)
	return &reader{
		src:  src,
		keys: keys,
		buf:  make([]byte, h.SegmentSize+tagSize),
	}, nil
}

type reader struct {
	src     io.Reader
	keys    *streamKeys
	buf     []byte // one ciphertext segment; decrypted in place
	plain   []byte // authenticated plaintext not yet returned, within buf
	counter uint64 // index of the next segment
	peek    byte   // first byte of the next segment, read to find the end
	hasPeek bool
	done    bool  // the final segment has been authenticated
	err     error // sticky
}

func (r *reader) Read(p []byte) (int, error) {
	if len(p) == 0 && r.err == nil {
		return 0, nil
	}
	for len(r.plain) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.done {
			return 0, io.EOF
		}
		if err := r.next(); err != nil {
			r.err = err
			r.wipe()
			return 0, err
		}
	}
	n := copy(p, r.plain)
	r.plain = r.plain[n:]
	if len(r.plain) == 0 && r.done {
		r.wipe()
	}
	return n, nil
}

// next reads and authenticates one segment.
func (r *reader) next() error {
	if r.counter >= maxSegments {
		return ErrDecryption
	}
	n := 0
	if r.hasPeek {
		r.buf[0] = r.peek
		r.hasPeek = false
		n = 1
	}
	m, err := io.ReadFull(r.src, r.buf[n:])
	n += m
	last := false
	switch err {
	case nil:
		// A full segment is the final one only if the input ends here.
		var b [1]byte
		switch k, err := io.ReadFull(r.src, b[:]); {
		case k == 1:
			r.peek, r.hasPeek = b[0], true
		case err == io.EOF:
			last = true
		default:
			return fmt.Errorf("envelope: reading ciphertext: %w", err)
		}
	case io.EOF, io.ErrUnexpectedEOF:
		last = true
	default:
		return fmt.Errorf("envelope: reading ciphertext: %w", err)
	}
	if n < tagSize {
		return ErrDecryption
	}
	pt, err := r.keys.aead.Open(r.buf[:0], r.keys.setNonce(r.counter, last), r.buf[:n], r.keys.aad[:])
	if err != nil {
		return ErrDecryption
	}
	r.counter++
	r.plain = pt
	r.done = last
	return nil
}

// wipe clears the buffer and drops the segment key once the stream is done.
func (r *reader) wipe() {
	clear(r.buf)
	r.plain = nil
	r.keys = nil
}
