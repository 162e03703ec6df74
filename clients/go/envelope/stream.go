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
	"runtime"
	"sync"
	"sync/atomic"
)

// KDF labels, see the package documentation.
const (
	labelSegmentKey  = "custos envelope v1 segment key"
	labelCommitment  = "custos envelope v1 key commitment"
	labelNoncePrefix = "custos envelope v1 nonce prefix"
)

// Batching. A writer gathers up to a batch of segments before it seals them
// and writes them to its destination with one Write; a reader reads a batch
// of segments with one ReadFull and opens them together. The segments of a
// batch are sealed or opened on up to maxWorkers goroutines (bounded by
// GOMAXPROCS), each with its own AES-GCM instance; the calling goroutine
// waits for them, so no goroutine outlives a Write, ReadFrom, Close, Read or
// WriteTo call. The wire format does not depend on any of this.
const (
	// batchBytes is the plaintext of a full batch.
	batchBytes = 1 << 20
	// maxBatchBytes bounds a batch of two segments when segments are large;
	// past it a batch is one segment.
	maxBatchBytes = 8 << 20
	// maxWorkers bounds the goroutines sealing or opening one batch.
	maxWorkers = 8
	// minParallelBytes is the smallest batch split between goroutines.
	minParallelBytes = 128 << 10
)

var (
	errDataKeySize = errors.New("envelope: data key must be 32 bytes")
	errClosed      = errors.New("envelope: write on closed writer")
	errTooLong     = errors.New("envelope: plaintext too long: segment counter would overflow")
)

// batchSegments is the number of segments in a full batch.
func batchSegments(seg int) int {
	n := batchBytes / seg
	if n < 2 {
		n = min(2, maxBatchBytes/seg)
	}
	return max(n, 1)
}

// firstBatch is the number of segments in a reader's first batch: 64 KiB of
// plaintext or one segment. A writer's first batch is one segment, so that
// it writes its first segment as soon as the second one starts, as before
// batching. Batches then double up to batchSegments, so a short message
// holds about as much memory as before batching.
func firstBatch(seg int) int {
	return max(1, min(DefaultSegmentSize/seg, batchSegments(seg)))
}

// Batch buffers are pooled by length, for up to maxBatchPools distinct
// lengths (segment sizes come from headers, so their number is bounded
// here). A buffer that may hold plaintext is cleared before it goes back to
// its pool, so pooled buffers hold zeros or ciphertext, never plaintext or
// key material.
const maxBatchPools = 64

var (
	batchPools     sync.Map // int (buffer length) -> *sync.Pool
	batchPoolCount atomic.Int32
)

func batchPool(n int) *sync.Pool {
	if p, ok := batchPools.Load(n); ok {
		return p.(*sync.Pool)
	}
	if batchPoolCount.Load() >= maxBatchPools {
		return nil
	}
	p, loaded := batchPools.LoadOrStore(n, new(sync.Pool))
	if !loaded {
		batchPoolCount.Add(1)
	}
	return p.(*sync.Pool)
}

// getBatch returns a buffer for segs segments of seg plaintext bytes. Its
// contents are zeros or ciphertext.
func getBatch(seg, segs int) []byte {
	n := segs * (seg + tagSize)
	if p := batchPool(n); p != nil {
		if b, ok := p.Get().(*[]byte); ok {
			return *b
		}
	}
	return make([]byte, n)
}

// putBatch pools b, which getBatch returned, after clearing b[:dirty], the
// part that may hold plaintext. The rest must hold only zeros or
// ciphertext: a writer's batch once sealed, a reader's batch not yet
// opened.
func putBatch(b []byte, dirty int) {
	clear(b[:dirty])
	if p := batchPool(len(b)); p != nil {
		p.Put(&b)
	}
}

// streamKeys holds what is derived from the data key and the header.
type streamKeys struct {
	aeads  []cipher.AEAD        // one AES-GCM instance per worker goroutine
	nonces [maxWorkers][12]byte // one nonce buffer per worker goroutine
	prefix [noncePrefix]byte
	aad    [32]byte // SHA-256 of the full header
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
// key is zeroed once the ciphers are set up; the data key is not retained.
func derive(dataKey, prefix []byte) (*streamKeys, [commitSize]byte, error) {
	if len(dataKey) != DataKeySize {
		return nil, [commitSize]byte{}, errDataKeySize
	}
	segKey, commitment, nonce := kdf(dataKey, prefix)
	defer clear(segKey[:])
	k := &streamKeys{prefix: nonce}
	k.aeads = make([]cipher.AEAD, min(runtime.GOMAXPROCS(0), maxWorkers))
	for i := range k.aeads {
		block, err := aes.NewCipher(segKey[:])
		if err != nil {
			return nil, commitment, err
		}
		if k.aeads[i], err = cipher.NewGCM(block); err != nil {
			return nil, commitment, err
		}
	}
	return k, commitment, nil
}

// nonce sets worker i's nonce buffer to noncePrefix || counter || last flag
// and returns it.
func (k *streamKeys) nonce(i int, counter uint64, last bool) []byte {
	n := &k.nonces[i]
	copy(n[:], k.prefix[:])
	binary.BigEndian.PutUint32(n[noncePrefix:], uint32(counter))
	n[11] = 0
	if last {
		n[11] = 1
	}
	return n[:]
}

// run calls f(i, aead_i, lo, hi) for contiguous ranges [lo, hi) covering
// [0, segs) in order, one range per worker i, and returns once every call
// has returned. Without also, the first range runs on the calling goroutine
// and up to len(aeads)-1 others take the rest; with also, the calling
// goroutine runs also while up to len(aeads) others take all the ranges.
// size is the batch's size in bytes: a small batch is not split.
func (k *streamKeys) run(segs, size int, f func(i int, aead cipher.AEAD, lo, hi int), also func()) {
	w := min(len(k.aeads), segs)
	if size < minParallelBytes {
		w = min(w, 1)
	}
	if also == nil && w <= 1 {
		f(0, k.aeads[0], 0, segs)
		return
	}
	if w == 0 {
		also()
		return
	}
	var wg sync.WaitGroup
	first := 0
	if also == nil {
		first = 1
	}
	for i := first; i < w; i++ {
		wg.Go(func() { f(i, k.aeads[i], i*segs/w, (i+1)*segs/w) })
	}
	if also == nil {
		f(0, k.aeads[0], 0, segs/w)
	} else {
		also()
	}
	wg.Wait()
}

// NewWriter writes the header for h to dst at once and returns a writer that
// encrypts everything written to it under dataKey (DataKeySize bytes, as
// returned by custos GenerateDataKey together with h.WrappedKey). Close is
// mandatory: it writes the final segment, without which the ciphertext does
// not decrypt. Close does not close dst.
//
// The salt is read from rand, or from crypto/rand if rand is nil. h.Suite and
// h.SegmentSize default when 0. The writer does not retain dataKey.
//
// The writer gathers segments into batches of up to 1 MiB of plaintext
// (one segment, then two, four, … so that a short message holds one
// segment; with segments over 512 KiB, two segments or, over 4 MiB, one).
// Once a batch is full and more plaintext arrives, it seals the batch's
// segments on up to GOMAXPROCS goroutines (at most 8), each with its own
// AES-GCM instance, and writes the batch to dst with one Write; Close seals
// and writes the last batch. Ciphertext therefore reaches dst a batch at a
// time, not a segment at a time, and an error from dst surfaces on the Write
// or ReadFrom that flushed the batch, or on Close. A Write larger than the
// batch is sealed straight out of its argument, without a copy; the writer
// implements io.ReaderFrom, so io.Copy reads the plaintext straight into the
// batch. The writer holds one batch of memory (about 1 MiB, or two
// segments), which it clears if it may hold plaintext and returns to a pool
// on Close.
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
		dst:     dst,
		keys:    keys,
		seg:     h.SegmentSize,
		stride:  h.SegmentSize + tagSize,
		maxSegs: batchSegments(h.SegmentSize),
	}, nil
}

type writer struct {
	dst     io.Writer
	keys    *streamKeys
	seg     int // plaintext bytes per segment
	stride  int // seg + tagSize: segment j of the batch starts at j*stride
	maxSegs int // segments in a full batch
	// buf is the batch: the plaintext of its segment j is buf[j*stride:][:seg],
	// with tagSize bytes after it so that it is sealed in place and the
	// sealed batch is contiguous. nil until the first Write.
	buf     []byte
	n       int    // plaintext bytes in the batch
	dirty   bool   // buf may hold plaintext outside the batch (short reads)
	counter uint64 // counter of the batch's first segment
	closed  bool
	err     error // sticky
}

func (w *writer) check() error {
	if w.closed {
		return errClosed
	}
	return w.err
}

// space returns the free part of the batch's current segment. A full batch
// is first sealed and written as non-final: the caller has more plaintext.
func (w *writer) space() ([]byte, error) {
	if w.buf == nil {
		w.buf = getBatch(w.seg, 1)
	}
	if w.n == len(w.buf)/w.stride*w.seg {
		if err := w.flush(false); err != nil {
			return nil, err
		}
	}
	j, o := w.n/w.seg, w.n%w.seg
	return w.buf[j*w.stride+o : j*w.stride+w.seg], nil
}

// added records k plaintext bytes put into the slice space returned. When
// they start a new segment, the previous one is known to be non-final, and
// non-final segments use counters 0..2^32-2 so that the final one still has
// a counter.
func (w *writer) added(k int) error {
	if k > 0 && w.n > 0 && w.n%w.seg == 0 && w.counter+uint64(w.n/w.seg) >= maxSegments {
		w.err = errTooLong
		return w.err
	}
	w.n += k
	return nil
}

func (w *writer) Write(p []byte) (int, error) {
	if err := w.check(); err != nil {
		return 0, err
	}
	n := 0
	for len(p) > 0 {
		if w.buf == nil {
			w.buf = getBatch(w.seg, 1)
		}
		if c := len(w.buf) / w.stride * w.seg; w.n == 0 && len(p) > c {
			// p fills the empty batch and more follows: seal its
			// segments, all non-final, straight out of p.
			if err := w.seal(false, p[:c]); err != nil {
				return n, err
			}
			p = p[c:]
			n += c
			continue
		}
		b, err := w.space()
		if err != nil {
			return n, err
		}
		c := copy(b, p)
		if err := w.added(c); err != nil {
			return n, err
		}
		p = p[c:]
		n += c
	}
	return n, nil
}

// ReadFrom encrypts everything src holds until io.EOF, reading it straight
// into the batch. Like Write, it does not write the final segment: Close
// does.
func (w *writer) ReadFrom(src io.Reader) (int64, error) {
	if err := w.check(); err != nil {
		return 0, err
	}
	var total int64
	for {
		if w.buf != nil && w.n == len(w.buf)/w.stride*w.seg {
			// A full batch is flushed only once more plaintext arrives,
			// so that Close can mark its last segment final.
			var b [1]byte
			k, err := io.ReadFull(src, b[:])
			if k == 1 {
				if ferr := w.flush(false); ferr != nil {
					return total, ferr
				}
				w.buf[0] = b[0]
				w.n = 1
				total++
				continue
			}
			if err == io.EOF {
				return total, nil
			}
			return total, err
		}
		b, err := w.space()
		if err != nil {
			return total, err
		}
		k, rerr := src.Read(b)
		if k < len(b) {
			// src may have used all of b as scratch space.
			w.dirty = true
		}
		if err := w.added(k); err != nil {
			return total, err
		}
		total += int64(k)
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// flush seals the batch, the last segment as final if last, writes it to
// dst and starts an empty batch.
func (w *writer) flush(last bool) error { return w.seal(last, nil) }

// seal seals the batch's plaintext, or src instead when not nil (then the
// batch is empty and src as long as the batch), the last segment as final
// if last, writes it to dst and starts an empty batch.
func (w *writer) seal(last bool, src []byte) error {
	n := w.n
	if src != nil {
		n = len(src)
	}
	segs := max(1, (n+w.seg-1)/w.seg)
	if !last && w.counter+uint64(segs) >= maxSegments {
		w.err = errTooLong
		return w.err
	}
	lastLen := n - (segs-1)*w.seg
	w.keys.run(segs, n, func(i int, aead cipher.AEAD, lo, hi int) {
		for j := lo; j < hi; j++ {
			l, final := w.seg, false
			if j == segs-1 {
				l, final = lastLen, last
			}
			out := w.buf[j*w.stride:][:l]
			in := out
			if src != nil {
				in = src[j*w.seg:][:l]
			}
			aead.Seal(out[:0], w.keys.nonce(i, w.counter+uint64(j), final), in, w.keys.aad[:])
		}
	}, nil)
	out := w.buf[:(segs-1)*w.stride+lastLen+tagSize]
	w.counter += uint64(segs)
	w.n = 0
	if k, err := w.dst.Write(out); err != nil {
		w.err = err
	} else if k < len(out) {
		w.err = io.ErrShortWrite
	}
	if w.err != nil {
		return w.err
	}
	if !last && len(w.buf) < w.maxSegs*w.stride {
		next := min(2*(len(w.buf)/w.stride), w.maxSegs)
		putBatch(w.buf, w.dirtyLen())
		w.buf, w.dirty = getBatch(w.seg, next), false
	}
	return nil
}

// dirtyLen is how much of buf may hold plaintext: none once everything in
// it was sealed, unless a source may have used it as scratch space.
func (w *writer) dirtyLen() int {
	if w.dirty || w.n > 0 || w.err != nil {
		return len(w.buf)
	}
	return 0
}

// Close writes the final segment and drops the segment key. It is safe to
// call more than once.
func (w *writer) Close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	if w.err == nil {
		if w.buf == nil {
			w.buf = getBatch(w.seg, 1)
		}
		w.flush(true)
	}
	if w.buf != nil {
		putBatch(w.buf, w.dirtyLen())
		w.buf = nil
	}
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
// only once its whole segment is authenticated, in order, returns io.EOF only
// after the final segment, and returns ErrDecryption for a truncated,
// extended, reordered or modified body. The reader does not retain dataKey.
//
// The reader reads segments in batches of up to 1 MiB of plaintext (64 KiB
// or one segment, then twice as much each time) and opens a batch on up to
// GOMAXPROCS goroutines (at most 8) while it reads what the source has next
// (at least one byte, which tells whether the batch's last segment is the
// final one) into a second buffer. It releases the segments of a batch in
// order up to the first one that fails, never that one or any after it, so
// what a failing stream released is still an authentic prefix of the
// plaintext. It implements io.WriterTo, so io.Copy writes the plaintext
// straight from the batch. The reader holds two batches of memory (about
// 2 MiB, or four segments); it clears the plaintext in them and returns them
// to a pool at the end of the stream or at its first error.
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
		src:     src,
		keys:    keys,
		seg:     h.SegmentSize,
		stride:  h.SegmentSize + tagSize,
		maxSegs: batchSegments(h.SegmentSize),
	}, nil
}

type reader struct {
	src     io.Reader
	keys    *streamKeys
	seg     int
	stride  int
	maxSegs int
	buf     []byte   // one batch of ciphertext segments, opened in place
	segs    [][]byte // backing array of ready
	ready   [][]byte // authenticated plaintext not yet returned, within buf, in order
	fails   [maxWorkers]int
	// end is what follows ready: nil (read on), io.EOF once the final
	// segment is authenticated, or an error.
	end     error
	counter uint64 // index of the next segment
	used    int    // bytes of buf that may hold plaintext
	ahead   []byte // the next batch, of which aheadN bytes are read
	aheadN  int
	// aheadDirty is how much of ahead may still hold plaintext of an
	// earlier batch.
	aheadDirty int
	peek       [1]byte // ahead when a batch is one segment
	err        error   // sticky, reported once ready is exhausted
}

func (r *reader) Read(p []byte) (int, error) {
	if len(p) == 0 && r.err == nil {
		return 0, nil
	}
	if err := r.advance(); err != nil {
		return 0, err
	}
	n := copy(p, r.ready[0])
	r.consumed(n)
	return n, nil
}

// WriteTo writes the plaintext to dst, one authenticated segment per Write,
// until the end of the stream or an error.
func (r *reader) WriteTo(dst io.Writer) (int64, error) {
	var total int64
	for {
		if err := r.advance(); err == io.EOF {
			return total, nil
		} else if err != nil {
			return total, err
		}
		p := r.ready[0]
		n, err := dst.Write(p)
		total += int64(n)
		r.consumed(n)
		if err != nil {
			return total, err
		}
		if n < len(p) {
			return total, io.ErrShortWrite
		}
	}
}

// advance makes ready non-empty, reading and opening a batch if needed, or
// returns io.EOF or the stream's error.
func (r *reader) advance() error {
	for len(r.ready) == 0 {
		if r.err != nil {
			return r.err
		}
		if r.end != nil {
			r.finish()
			return r.err
		}
		r.fill()
	}
	return nil
}

// consumed drops n returned bytes from ready. Once the last authenticated
// byte is returned and the stream has ended, the buffer is wiped at once.
func (r *reader) consumed(n int) {
	r.ready[0] = r.ready[0][n:]
	if len(r.ready[0]) == 0 {
		r.ready = r.ready[1:]
	}
	if len(r.ready) == 0 && r.end != nil {
		r.finish()
	}
}

// finish makes end sticky and wipes the buffer.
func (r *reader) finish() {
	r.err = r.end
	r.wipe()
}

// fill reads the next batch, opens it and sets ready to the plaintext of
// its segments up to the first that fails, and end to what comes after.
//
// A full batch's last segment is final only if the input ends right after
// it, so fill reads ahead: while other goroutines open the batch's other
// segments, the calling goroutine reads whatever the source has next (at
// least one byte) into a second buffer, which the next fill completes. A
// batch's segments are thus released once the whole batch and at least one
// more byte have been read, or the input has ended.
func (r *reader) fill() {
	// The batch to open is the one read ahead, if any; the buffer of the
	// previous batch, whose plaintext has all been returned, is spare.
	// Plaintext left in a buffer is cleared only when the buffer goes
	// back to its pool: otherwise the next batch read into it overwrites
	// it.
	b, n, dirty := r.ahead, r.aheadN, r.aheadDirty
	r.ahead, r.aheadN, r.aheadDirty = nil, 0, 0
	spare, spareDirty := r.buf, r.used
	if b != nil && len(b) < r.stride {
		// One byte read ahead (segments over 4 MiB, see below).
		c := b[0]
		b, dirty = getBatch(r.seg, 1), 0
		b[0] = c
	}
	if b == nil {
		b = getBatch(r.seg, firstBatch(r.seg))
	}
	r.buf = b
	m, err := io.ReadFull(r.src, b[n:])
	n += m
	r.used = max(n, dirty)
	segs, lastLen := len(b)/r.stride, r.stride
	last := false
	var ioErr error
	switch err {
	case nil:
		// Full: its segments but the last are non-final. Open them while
		// reading ahead.
		next := min(2*segs, r.maxSegs)
		if r.maxSegs == 1 {
			// A batch is one segment of over 4 MiB: read one byte
			// ahead rather than hold a second segment.
			if spare != nil {
				r.drop(spare, spareDirty)
			}
			spare, spareDirty = r.peek[:], 0
		}
		if spare != nil && len(spare) != next*r.stride && r.maxSegs > 1 {
			r.drop(spare, spareDirty)
			spare, spareDirty = nil, 0
		}
		if spare == nil {
			spare = getBatch(r.seg, next)
		}
		var k int
		var rerr error
		ok := r.open(0, segs-1, r.stride, false, func() { k, rerr = io.ReadAtLeast(r.src, spare, 1) })
		switch {
		case ok < segs-1:
			r.drop(spare, spareDirty)
			r.release(ok, segs, lastLen, ErrDecryption)
			return
		case k > 0:
			r.ahead, r.aheadN, r.aheadDirty = spare, k, spareDirty
		case rerr == io.EOF:
			last = true
			r.drop(spare, spareDirty)
		default:
			// Whether the last segment is final is unknown.
			r.drop(spare, spareDirty)
			r.release(segs-1, segs, lastLen, fmt.Errorf("envelope: reading ciphertext: %w", rerr))
			return
		}
		ok = r.open(segs-1, segs, r.stride, last, nil)
		var end error
		switch {
		case ok < segs:
			end = ErrDecryption
		case last:
			end = io.EOF
		}
		r.release(ok, segs, lastLen, end)
		return
	case io.EOF, io.ErrUnexpectedEOF:
		last = true
		segs = n / r.stride
		if n%r.stride != 0 || n == 0 {
			segs++
			lastLen = n % r.stride
		}
	default:
		ioErr = fmt.Errorf("envelope: reading ciphertext: %w", err)
		// Only a segment followed by more input is known to be non-final.
		segs = 0
		if n > 0 {
			segs = (n - 1) / r.stride
		}
	}
	if spare != nil {
		r.drop(spare, spareDirty)
	}
	ok := r.open(0, segs, lastLen, last && ioErr == nil, nil)
	end := ioErr
	switch {
	case ok < segs:
		end = ErrDecryption
	case ioErr == nil && last:
		end = io.EOF
	}
	r.release(ok, segs, lastLen, end)
}

// drop returns a batch buffer to its pool (not the one-byte read-ahead).
func (r *reader) drop(b []byte, dirty int) {
	if len(b) >= r.stride {
		putBatch(b, dirty)
	}
}

// release sets ready to the plaintext of the batch's first ok segments (of
// segs, the last lastLen bytes long) and end to what follows them.
func (r *reader) release(ok, segs, lastLen int, end error) {
	r.segs = r.segs[:0]
	for j := range ok {
		l := r.stride - tagSize
		if j == segs-1 {
			l = lastLen - tagSize
		}
		if l > 0 {
			r.segs = append(r.segs, r.buf[j*r.stride:][:l])
		}
	}
	r.ready = r.segs
	r.counter += uint64(ok)
	r.end = end
}

// open authenticates and decrypts segments from..segs-1 of the batch in
// place, segment segs-1 being lastLen bytes long and final if last, while
// also (if not nil) runs on the calling goroutine. It returns the index of
// the first segment that fails, or segs.
func (r *reader) open(from, segs, lastLen int, last bool, also func()) int {
	for i := range r.fails {
		r.fails[i] = segs
	}
	r.keys.run(segs-from, (segs-from)*r.stride, func(i int, aead cipher.AEAD, lo, hi int) {
		for j := from + lo; j < from+hi; j++ {
			l, final := r.stride, false
			if j == segs-1 {
				l, final = lastLen, last
			}
			c := r.counter + uint64(j)
			if l < tagSize || c >= maxSegments {
				r.fails[i] = j
				return
			}
			p := r.buf[j*r.stride:][:l]
			if _, err := aead.Open(p[:0], r.keys.nonce(i, c, final), p, r.keys.aad[:]); err != nil {
				r.fails[i] = j
				return
			}
		}
	}, also)
	ok := segs
	for _, f := range r.fails {
		ok = min(ok, f)
	}
	return ok
}

// wipe clears the buffer and drops the segment key once the stream is done.
func (r *reader) wipe() {
	if r.buf != nil {
		putBatch(r.buf, r.used)
		r.buf = nil
	}
	if len(r.ahead) >= r.stride {
		putBatch(r.ahead, r.aheadDirty)
		r.ahead = nil
	}
	r.segs, r.ready = nil, nil
	r.keys = nil
}
