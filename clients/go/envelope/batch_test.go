package envelope_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"testing"
	"testing/iotest"

	"github.com/custos-kms/custos/clients/go/envelope"
)

// Streams of several batches: the writer and the reader gather segments
// into batches of up to 1 MiB (1, 2, 4, … segments), seal and open them on
// several goroutines and read ahead. These tests check that none of it
// shows: the ciphertext is the format's, whatever the write pattern and the
// number of goroutines, and a reader releases exactly the segments before
// the first bad one.

// referenceSeal encrypts pt segment by segment as docs/envelope-format.md
// describes, independently of the writer, under the header and salt of the
// ciphertext ct (whose header it copies).
func referenceSeal(t *testing.T, ct, key, pt []byte) []byte {
	t.Helper()
	src := bytes.NewReader(ct)
	h, err := envelope.ReadHeader(src)
	if err != nil {
		t.Fatal(err)
	}
	segKey, _, prefix, aad, err := envelope.Derived(h, key)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := aes.NewCipher(segKey)
	aead, _ := cipher.NewGCM(block)
	out := bytes.Clone(ct[:len(ct)-src.Len()])
	s := h.SegmentSize
	for i := 0; ; i++ {
		n := min(s, len(pt))
		last := n == len(pt)
		nonce := append(bytes.Clone(prefix), 0, 0, 0, 0, 0)
		binary.BigEndian.PutUint32(nonce[7:], uint32(i))
		if last {
			nonce[11] = 1
		}
		out = aead.Seal(out, nonce, pt[:n], aad)
		pt = pt[n:]
		if last {
			return out
		}
	}
}

// withProcs runs f with GOMAXPROCS set to n (the writer and reader take
// their number of goroutines from it).
func withProcs(t *testing.T, n int, f func()) {
	t.Helper()
	old := runtime.GOMAXPROCS(n)
	defer runtime.GOMAXPROCS(old)
	f()
}

func TestBatchesMatchFormat(t *testing.T) {
	if testing.Short() {
		t.Skip("several MiB")
	}
	for _, procs := range []int{1, 2, 5} {
		for _, segSize := range []int{envelope.MinSegmentSize, envelope.DefaultSegmentSize, 3 << 20, 5 << 20} {
			for _, n := range []int{0, segSize, 2*segSize + 7, 7*segSize + 3, 40 * segSize, 40*segSize + 1} {
				if n > 24<<20 {
					continue
				}
				t.Run(fmt.Sprintf("procs=%d/seg=%d/n=%d", procs, segSize, n), func(t *testing.T) {
					withProcs(t, procs, func() { checkBatches(t, segSize, n) })
				})
			}
		}
	}
}

func checkBatches(t *testing.T, segSize, n int) {
	pt := detBytes(fmt.Sprint("batches", n), n)
	h := testHeader(segSize, testContext)
	salt := detBytes("salt", 32)
	// One Write, small uneven Writes, and ReadFrom (io.Copy) from a
	// source that returns short reads: the same ciphertext.
	var one, small, from bytes.Buffer
	w, err := envelope.NewWriter(&one, h, testDataKey, bytes.NewReader(salt))
	if err != nil {
		t.Fatal(err)
	}
	if k, err := w.Write(pt); k != n || err != nil {
		t.Fatalf("Write: got %d, %v", k, err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w, _ = envelope.NewWriter(&small, h, testDataKey, bytes.NewReader(salt))
	for p := pt; len(p) > 0; {
		k := min(len(p), 1+len(p)%(3*segSize/2))
		w.Write(p[:k])
		p = p[k:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w, _ = envelope.NewWriter(&from, h, testDataKey, bytes.NewReader(salt))
	if k, err := io.Copy(w, iotest.HalfReader(bytes.NewReader(pt))); k != int64(n) || err != nil {
		t.Fatalf("io.Copy into the writer: got %d, %v", k, err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	ct := one.Bytes()
	if want := referenceSeal(t, ct, testDataKey, pt); !bytes.Equal(ct, want) {
		t.Fatalf("one Write: ciphertext differs from the reference encryption")
	}
	if !bytes.Equal(small.Bytes(), ct) {
		t.Fatalf("small Writes: ciphertext differs from one Write's")
	}
	if !bytes.Equal(from.Bytes(), ct) {
		t.Fatalf("ReadFrom: ciphertext differs from one Write's")
	}
	// io.Copy out of the reader (WriteTo), small Reads, and a source
	// returning one byte at a time.
	for name, read := range map[string]func(r io.Reader) ([]byte, error){
		"WriteTo": func(r io.Reader) ([]byte, error) {
			var out bytes.Buffer
			_, err := io.Copy(&out, r)
			return out.Bytes(), err
		},
		"small reads": func(r io.Reader) ([]byte, error) {
			if n > 1<<20 {
				return io.ReadAll(iotest.HalfReader(r))
			}
			return io.ReadAll(iotest.OneByteReader(r))
		},
	} {
		for srcName, wrap := range map[string]func(io.Reader) io.Reader{
			"bytes":    func(r io.Reader) io.Reader { return r },
			"one byte": iotest.OneByteReader,
		} {
			if srcName == "one byte" && n > 1<<20 {
				continue
			}
			src := bytes.NewReader(ct)
			hdr, err := envelope.ReadHeader(src)
			if err != nil {
				t.Fatal(err)
			}
			r, err := envelope.NewReader(wrap(src), hdr, testDataKey)
			if err != nil {
				t.Fatal(err)
			}
			got, err := read(r)
			if err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("%s from %s source: got %d bytes, %v; want %d bytes", name, srcName, len(got), err, n)
			}
		}
	}
}

// decryptWriteTo decrypts with io.Copy (the reader's WriteTo) and returns
// what it released and the error.
func decryptWriteTo(ct, key []byte) ([]byte, error) {
	src := bytes.NewReader(ct)
	h, err := envelope.ReadHeader(src)
	if err != nil {
		return nil, err
	}
	r, err := envelope.NewReader(src, h, key)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	_, err = io.Copy(&out, r)
	return out.Bytes(), err
}

// A bad segment anywhere in a batch (first, inside, last of a batch, first
// of the next, the final one) releases exactly the segments before it.
func TestBatchReleasesPrefix(t *testing.T) {
	if testing.Short() {
		t.Skip("several MiB")
	}
	const segSize = envelope.MinSegmentSize
	const segs = 700 // batches of 1, 2, 4, …, 256, 256, then the rest
	pt := detBytes("prefix", segs*segSize-100)
	ct := encrypt(t, testHeader(segSize, nil), testDataKey, pt)
	hl := headerLen(t, ct)
	stride := segSize + 16
	for _, procs := range []int{1, 2, 4} {
		for _, bad := range []int{0, 1, 2, 3, 7, 15, 100, 200, 254, 255, 256, 300, 510, 511, 512, 600, segs - 2, segs - 1} {
			for _, how := range []string{"flip", "truncate", "drop", "swap"} {
				c := bytes.Clone(ct)
				off := hl + bad*stride
				switch how {
				case "flip":
					c[off+min(stride, len(c)-off)-1] ^= 1
				case "truncate":
					// cut at the segment's start: the one before
					// it becomes a wrong final segment
					if bad == 0 {
						continue
					}
					c = c[:off]
				case "drop":
					if bad == segs-1 {
						continue
					}
					c = append(c[:off:off], c[off+stride:]...)
				case "swap":
					if bad >= segs-2 {
						continue
					}
					c = append(append(append(c[:off:off], ct[off+stride:off+2*stride]...), ct[off:off+stride]...), ct[off+2*stride:]...)
				}
				want := bad
				if how == "truncate" {
					want = bad - 1
				}
				withProcs(t, procs, func() {
					for name, dec := range map[string]func(ct, key []byte) ([]byte, error){"Read": decrypt, "WriteTo": decryptWriteTo} {
						got, err := dec(c, testDataKey)
						if !errors.Is(err, envelope.ErrDecryption) {
							t.Fatalf("procs=%d %s segment %d, %s: got error %v, want ErrDecryption", procs, how, bad, name, err)
						}
						if !bytes.Equal(got, pt[:want*segSize]) {
							t.Fatalf("procs=%d %s segment %d, %s: released %d bytes, want the %d bytes of the segments before it",
								procs, how, bad, name, len(got), want*segSize)
						}
					}
				})
			}
		}
	}
}

// Segments over 4 MiB make one-segment batches, read ahead by one byte.
func TestBatchLargeSegments(t *testing.T) {
	if testing.Short() {
		t.Skip("several MiB")
	}
	const segSize = 5 << 20
	pt := detBytes("large segments", 2*segSize+7)
	ct := encrypt(t, testHeader(segSize, nil), testDataKey, pt)
	hl := headerLen(t, ct)
	stride := segSize + 16
	for _, bad := range []int{0, 1, 2} {
		c := bytes.Clone(ct)
		c[hl+bad*stride+3] ^= 1
		for name, dec := range map[string]func(ct, key []byte) ([]byte, error){"Read": decrypt, "WriteTo": decryptWriteTo} {
			got, err := dec(c, testDataKey)
			if !errors.Is(err, envelope.ErrDecryption) || !bytes.Equal(got, pt[:bad*segSize]) {
				t.Fatalf("segment %d modified, %s: got %d bytes, %v; want %d bytes, ErrDecryption", bad, name, len(got), err, bad*segSize)
			}
		}
	}
	for _, cut := range []int{hl + stride, hl + 2*stride, len(ct) - 1} {
		got, err := decryptWriteTo(ct[:cut], testDataKey)
		if !errors.Is(err, envelope.ErrDecryption) || !bytes.HasPrefix(pt, got) {
			t.Fatalf("truncated to %d: got %d bytes, %v; want a prefix, ErrDecryption", cut, len(got), err)
		}
	}
}

// errAfter returns its source's bytes, then err instead of io.EOF after n
// bytes.
type errAfter struct {
	r   io.Reader
	n   int
	err error
}

func (e *errAfter) Read(p []byte) (int, error) {
	if e.n <= 0 {
		return 0, e.err
	}
	k, err := e.r.Read(p[:min(len(p), e.n)])
	e.n -= k
	if err == io.EOF {
		err = nil
	}
	return k, err
}

// An I/O error in the middle of a batch releases only segments known to be
// non-final and authentic, then the error (never io.EOF).
func TestBatchIOError(t *testing.T) {
	const segSize = envelope.MinSegmentSize
	pt := detBytes("io error", 40*segSize+5)
	ct := encrypt(t, testHeader(segSize, nil), testDataKey, pt)
	hl := headerLen(t, ct)
	stride := segSize + 16
	for _, at := range []int{0, 1, stride, stride + 1, 3*stride + 7, 7 * stride, 7*stride + 1, 20 * stride, len(ct) - hl - 1, len(ct) - hl} {
		for name, dec := range map[string]func(r io.Reader) ([]byte, error){
			"Read": io.ReadAll,
			"WriteTo": func(r io.Reader) ([]byte, error) {
				var out bytes.Buffer
				_, err := io.Copy(&out, r)
				return out.Bytes(), err
			},
		} {
			src := bytes.NewReader(ct)
			h, _ := envelope.ReadHeader(src)
			r, err := envelope.NewReader(&errAfter{src, at, errSource}, h, testDataKey)
			if err != nil {
				t.Fatal(err)
			}
			got, err := dec(r)
			if !errors.Is(err, errSource) {
				t.Fatalf("error after %d body bytes, %s: got %v, want %v", at, name, err, errSource)
			}
			// Every segment followed by at least one more byte is
			// released; no other.
			want := max(0, (at-1)/stride) * segSize
			if at == 0 {
				want = 0
			}
			if !bytes.Equal(got, pt[:want]) {
				t.Fatalf("error after %d body bytes, %s: released %d bytes, want %d", at, name, len(got), want)
			}
		}
	}
}

// A writer error surfaces on Write or at the latest on Close, and nothing is
// written after it.
func TestBatchWriteError(t *testing.T) {
	for _, after := range []int{0, 200, 5000, 100000, 1 << 20, 3 << 20} {
		fw := &failWriter{after: after}
		w, err := envelope.NewWriter(fw, testHeader(envelope.MinSegmentSize, nil), testDataKey, nil)
		if err != nil {
			continue // the header did not fit
		}
		_, werr := io.Copy(w, bytes.NewReader(make([]byte, 4<<20)))
		cerr := w.Close()
		if !errors.Is(werr, errSink) && !errors.Is(cerr, errSink) {
			t.Errorf("sink failing after %d bytes: got %v from io.Copy and %v from Close, want %v", after, werr, cerr, errSink)
		}
		if !errors.Is(cerr, errSink) {
			t.Errorf("sink failing after %d bytes: Close gave %v, want %v", after, cerr, errSink)
		}
	}
}
