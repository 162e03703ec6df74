package envelope_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"strings"
	"testing"

	"github.com/custos-kms/custos/clients/go/envelope"
)

const seg = envelope.MinSegmentSize

func TestRoundTrip(t *testing.T) {
	sizes := []int{0, 1, seg - 1, seg, seg + 1, 2 * seg, 3*seg + 123}
	for _, ctx := range []map[string]string{nil, testContext} {
		for _, n := range sizes {
			t.Run(fmt.Sprintf("ctx=%d/size=%d", len(ctx), n), func(t *testing.T) {
				pt := detBytes(fmt.Sprint("pt", n), n)
				ct := encrypt(t, testHeader(seg, ctx), testDataKey, pt)
				// Every segment but the last is full; the last is
				// empty only for empty input.
				segs := max(1, (n+seg-1)/seg)
				if got, want := len(ct)-headerLen(t, ct), n+16*segs; got != want {
					t.Errorf("body length: got %d, want %d", got, want)
				}
				got, err := decrypt(ct, testDataKey)
				if err != nil {
					t.Fatalf("decrypt: got error %v, want nil", err)
				}
				if !bytes.Equal(got, pt) {
					t.Fatalf("decrypt: got %d bytes, want the %d-byte plaintext", len(got), len(pt))
				}
			})
		}
	}
}

func TestRoundTripLarge(t *testing.T) {
	pt := detBytes("large", 5<<20+17)
	ct := encrypt(t, testHeader(seg, testContext), testDataKey, pt)
	got, err := decrypt(ct, testDataKey)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("decrypt: got %d bytes, %v; want %d bytes, nil", len(got), err, len(pt))
	}
	// Small writes and small reads give the same result.
	var buf bytes.Buffer
	w, err := envelope.NewWriter(&buf, testHeader(seg, testContext), testDataKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	for p := pt; len(p) > 0; {
		n := min(len(p), 1+len(p)%977)
		if _, err := w.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	src := bytes.NewReader(buf.Bytes())
	h, err := envelope.ReadHeader(src)
	if err != nil {
		t.Fatal(err)
	}
	r, err := envelope.NewReader(src, h, testDataKey)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	small := make([]byte, 1000)
	for {
		n, err := r.Read(small[:1+out.Len()%999])
		out.Write(small[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Read: got %v, want nil", err)
		}
	}
	if !bytes.Equal(out.Bytes(), pt) {
		t.Fatalf("small reads: got %d bytes, want the %d-byte plaintext", out.Len(), len(pt))
	}
}

func TestReadHeaderFields(t *testing.T) {
	h := testHeader(0, testContext)
	ct := encrypt(t, h, testDataKey, []byte("x"))
	got, err := envelope.ReadHeader(bytes.NewReader(ct))
	if err != nil {
		t.Fatal(err)
	}
	if got.Suite != envelope.SuiteAES256GCMHMACSHA256 || got.Key != h.Key || got.KeyVersion != h.KeyVersion ||
		!bytes.Equal(got.WrappedKey, h.WrappedKey) || !maps.Equal(got.Context, h.Context) ||
		got.SegmentSize != envelope.DefaultSegmentSize {
		t.Errorf("ReadHeader: got %+v, want %+v with suite 1 and the default segment size", got, h)
	}
	enc, err := envelope.EncodeHeader(got)
	if err != nil {
		t.Fatal(err)
	}
	if n := headerLen(t, ct); !bytes.Equal(enc, ct[:n]) {
		t.Errorf("re-encoded header differs from the parsed bytes")
	}
	// Two encryptions use different salts.
	ct2 := encrypt(t, h, testDataKey, []byte("x"))
	if bytes.Equal(ct, ct2) {
		t.Errorf("two encryptions gave the same ciphertext")
	}
}

// mustFail decrypts ct and requires failure, with any plaintext released
// before the failure a prefix of pt.
func mustFail(t *testing.T, what string, ct, pt []byte) {
	t.Helper()
	got, err := decrypt(ct, testDataKey)
	if err == nil {
		t.Fatalf("%s: got success, want an error", what)
	}
	if !bytes.HasPrefix(pt, got) {
		t.Fatalf("%s: released %d bytes that are not a prefix of the plaintext", what, len(got))
	}
}

func TestTamperEveryByte(t *testing.T) {
	pt := detBytes("tamper", 2*seg+100)
	ct := encrypt(t, testHeader(seg, testContext), testDataKey, pt)
	hl := headerLen(t, ct)
	for i := range ct {
		for _, x := range []byte{0x01, 0x80} {
			c := bytes.Clone(ct)
			c[i] ^= x
			mustFail(t, fmt.Sprintf("flip %#x at %d", x, i), c, pt)
			// A modified header never releases anything.
			if i < hl {
				if got, _ := decrypt(c, testDataKey); len(got) != 0 {
					t.Fatalf("flip at header byte %d: released %d bytes", i, len(got))
				}
			}
		}
	}
}

func TestTruncateEveryLength(t *testing.T) {
	pt := detBytes("truncate", 2*seg+100)
	ct := encrypt(t, testHeader(seg, nil), testDataKey, pt)
	for n := 0; n < len(ct); n++ {
		got, err := decrypt(ct[:n], testDataKey)
		if err == nil {
			t.Fatalf("truncated to %d of %d: got success, want an error", n, len(ct))
		}
		if errors.Is(err, io.EOF) {
			t.Fatalf("truncated to %d: got io.EOF, want a decryption error", n)
		}
		if !bytes.HasPrefix(pt, got) {
			t.Fatalf("truncated to %d: released bytes not a prefix of the plaintext", n)
		}
	}
	// Empty plaintext: only the final empty segment, which is required.
	ct = encrypt(t, testHeader(seg, nil), testDataKey, nil)
	hl := headerLen(t, ct)
	if _, err := decrypt(ct[:hl], testDataKey); !errors.Is(err, envelope.ErrDecryption) {
		t.Fatalf("header only: got %v, want ErrDecryption", err)
	}
}

func TestSegmentManipulation(t *testing.T) {
	pt := detBytes("segments", 3*seg+100)
	ct := encrypt(t, testHeader(seg, testContext), testDataKey, pt)
	hl := headerLen(t, ct)
	hdr := ct[:hl]
	var s [][]byte
	for b := ct[hl:]; len(b) > 0; {
		n := min(len(b), seg+16)
		s = append(s, b[:n])
		b = b[n:]
	}
	if len(s) != 4 {
		t.Fatalf("got %d segments, want 4", len(s))
	}
	join := func(parts ...[]byte) []byte { return bytes.Join(append([][]byte{hdr}, parts...), nil) }
	other := encrypt(t, testHeader(seg, testContext), testDataKey, pt)
	for name, c := range map[string][]byte{
		"drop final":           join(s[0], s[1], s[2]),
		"drop first":           join(s[1], s[2], s[3]),
		"drop middle":          join(s[0], s[2], s[3]),
		"swap":                 join(s[1], s[0], s[2], s[3]),
		"duplicate":            join(s[0], s[0], s[1], s[2], s[3]),
		"duplicate final":      join(s[0], s[1], s[2], s[3], s[3]),
		"append byte":          append(bytes.Clone(ct), 0),
		"append empty segment": join(s[0], s[1], s[2], s[3], s[3][:16]),
		"other header":         append(bytes.Clone(other[:hl]), ct[hl:]...),
		"other body":           append(bytes.Clone(hdr), other[hl:]...),
		"other final":          join(s[0], s[1], s[2], other[len(other)-len(s[3]):]),
	} {
		t.Run(name, func(t *testing.T) {
			got, err := decrypt(c, testDataKey)
			if !errors.Is(err, envelope.ErrDecryption) {
				t.Fatalf("got error %v, want ErrDecryption", err)
			}
			if !bytes.HasPrefix(pt, got) {
				t.Fatalf("released bytes not a prefix of the plaintext")
			}
		})
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestWrongKey(t *testing.T) {
	ct := encrypt(t, testHeader(seg, nil), testDataKey, []byte("secret"))
	src := bytes.NewReader(ct)
	h, err := envelope.ReadHeader(src)
	if err != nil {
		t.Fatal(err)
	}
	body := &countingReader{r: src}
	wrong := bytes.Clone(testDataKey)
	wrong[31] ^= 1
	r, err := envelope.NewReader(body, h, wrong)
	if !errors.Is(err, envelope.ErrDecryption) || r != nil {
		t.Fatalf("NewReader with a wrong key: got %v, %v; want nil, ErrDecryption", r, err)
	}
	if body.n != 0 {
		t.Errorf("NewReader with a wrong key read %d body bytes, want 0", body.n)
	}
	if strings.Contains(err.Error(), hex.EncodeToString(wrong[:4])) || err.Error() != "envelope: decryption failed" {
		t.Errorf("error: got %q, want %q", err, "envelope: decryption failed")
	}
	for _, n := range []int{0, 16, 31, 33, 64} {
		if _, err := envelope.NewReader(src, h, make([]byte, n)); err == nil {
			t.Errorf("NewReader with a %d-byte key: got nil error", n)
		}
		if _, err := envelope.NewWriter(io.Discard, testHeader(seg, nil), make([]byte, n), nil); err == nil {
			t.Errorf("NewWriter with a %d-byte key: got nil error", n)
		}
	}
}

func TestModifiedHeaderStruct(t *testing.T) {
	ct := encrypt(t, testHeader(seg, testContext), testDataKey, []byte("secret"))
	for name, mod := range map[string]func(h *envelope.Header){
		"context value": func(h *envelope.Header) { h.Context["tenant"] = "evil" },
		"context added": func(h *envelope.Header) { h.Context["extra"] = "" },
		"key":           func(h *envelope.Header) { h.Key += "x" },
		"version":       func(h *envelope.Header) { h.KeyVersion++ },
		"wrapped":       func(h *envelope.Header) { h.WrappedKey[0] ^= 1 },
		"segment size":  func(h *envelope.Header) { h.SegmentSize *= 2 },
		"made up": func(h *envelope.Header) {
			*h = testHeader(seg, testContext)
			h.Suite = envelope.SuiteAES256GCMHMACSHA256
		},
	} {
		src := bytes.NewReader(ct)
		h, err := envelope.ReadHeader(src)
		if err != nil {
			t.Fatal(err)
		}
		mod(h)
		if _, err := envelope.NewReader(src, h, testDataKey); !errors.Is(err, envelope.ErrDecryption) {
			t.Errorf("%s changed: got %v, want ErrDecryption", name, err)
		}
	}
	if _, err := envelope.NewReader(bytes.NewReader(ct), nil, testDataKey); err == nil {
		t.Errorf("nil header: got nil error")
	}
}

func TestWriterLimits(t *testing.T) {
	big := map[string]string{}
	for i := range 65 {
		big[fmt.Sprint("k", i)] = ""
	}
	long := map[string]string{"k": strings.Repeat("v", envelope.MaxContextBytes)}
	exact := map[string]string{"k": strings.Repeat("v", envelope.MaxContextBytes-1)}
	ok64 := maps.Clone(big)
	delete(ok64, "k0")
	tests := []struct {
		name string
		mod  func(h *envelope.Header)
		want error
	}{
		{"empty key name", func(h *envelope.Header) { h.Key = "" }, envelope.ErrMalformed},
		{"long key name", func(h *envelope.Header) { h.Key = strings.Repeat("k", 257) }, envelope.ErrMalformed},
		{"max key name", func(h *envelope.Header) { h.Key = strings.Repeat("k", 256) }, nil},
		{"bad UTF-8 key name", func(h *envelope.Header) { h.Key = "k\xff" }, envelope.ErrMalformed},
		{"empty wrapped key", func(h *envelope.Header) { h.WrappedKey = nil }, envelope.ErrMalformed},
		{"long wrapped key", func(h *envelope.Header) { h.WrappedKey = make([]byte, 1025) }, envelope.ErrMalformed},
		{"max wrapped key", func(h *envelope.Header) { h.WrappedKey = make([]byte, 1024) }, nil},
		{"65 pairs", func(h *envelope.Header) { h.Context = big }, envelope.ErrMalformed},
		{"64 pairs", func(h *envelope.Header) { h.Context = ok64 }, nil},
		{"long context", func(h *envelope.Header) { h.Context = long }, envelope.ErrMalformed},
		{"max context", func(h *envelope.Header) { h.Context = exact }, nil},
		{"empty context key", func(h *envelope.Header) { h.Context = map[string]string{"": "v"} }, envelope.ErrMalformed},
		{"empty context value", func(h *envelope.Header) { h.Context = map[string]string{"k": ""} }, nil},
		{"bad UTF-8 context key", func(h *envelope.Header) { h.Context = map[string]string{"\xc3": "v"} }, envelope.ErrMalformed},
		{"bad UTF-8 context value", func(h *envelope.Header) { h.Context = map[string]string{"k": "\xc3"} }, envelope.ErrMalformed},
		{"segment too small", func(h *envelope.Header) { h.SegmentSize = envelope.MinSegmentSize - 1 }, envelope.ErrMalformed},
		{"segment too large", func(h *envelope.Header) { h.SegmentSize = envelope.MaxSegmentSize + 1 }, envelope.ErrMalformed},
		{"negative segment", func(h *envelope.Header) { h.SegmentSize = -1 }, envelope.ErrMalformed},
		{"max segment", func(h *envelope.Header) { h.SegmentSize = envelope.MaxSegmentSize }, nil},
		{"suite 2", func(h *envelope.Header) { h.Suite = 2 }, envelope.ErrUnsupportedSuite},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := testHeader(seg, nil)
			tt.mod(&h)
			var buf bytes.Buffer
			w, err := envelope.NewWriter(&buf, h, testDataKey, nil)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("NewWriter: got %v, want %v", err, tt.want)
			}
			if err != nil {
				if buf.Len() != 0 {
					t.Errorf("NewWriter failed but wrote %d bytes", buf.Len())
				}
				return
			}
			w.Write([]byte("abc"))
			w.Close()
			got, err := decrypt(buf.Bytes(), testDataKey)
			if err != nil || string(got) != "abc" {
				t.Fatalf("decrypt: got %q, %v; want %q, nil", got, err, "abc")
			}
		})
	}
}

// rawHeader builds header bytes field by field, valid unless modified.
type rawHeader struct {
	version, suite byte
	key            []byte
	keyLen         int // -1: len(key)
	wrapped        []byte
	wrappedLen     int // -1: len(wrapped)
	pairs          int // -1: len(ctx)/2
	ctx            [][]byte
	ctxLens        []uint32 // overrides for the context lengths, if set
	segSize        uint32
	tail           int // salt and commitment bytes, normally 64
}

func validRaw() rawHeader {
	return rawHeader{version: 1, suite: 1, key: []byte("k"), keyLen: -1, wrapped: []byte{1, 2, 3}, wrappedLen: -1,
		pairs: -1, ctx: [][]byte{[]byte("a"), []byte("1"), []byte("b"), []byte("2")}, segSize: seg, tail: 64}
}

func (r rawHeader) bytes() []byte {
	b := []byte("CSTE")
	b = append(b, r.version, r.suite)
	kl := r.keyLen
	if kl < 0 {
		kl = len(r.key)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(kl))
	b = append(b, r.key...)
	b = binary.BigEndian.AppendUint32(b, 7)
	wl := r.wrappedLen
	if wl < 0 {
		wl = len(r.wrapped)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(wl))
	b = append(b, r.wrapped...)
	p := r.pairs
	if p < 0 {
		p = len(r.ctx) / 2
	}
	b = binary.BigEndian.AppendUint16(b, uint16(p))
	for i, s := range r.ctx {
		l := uint32(len(s))
		if i < len(r.ctxLens) {
			l = r.ctxLens[i]
		}
		b = binary.BigEndian.AppendUint32(b, l)
		b = append(b, s...)
	}
	b = binary.BigEndian.AppendUint32(b, r.segSize)
	return append(b, make([]byte, r.tail)...)
}

func TestReadHeaderRejects(t *testing.T) {
	if _, err := envelope.ReadHeader(bytes.NewReader(validRaw().bytes())); err != nil {
		t.Fatalf("valid raw header: got %v, want nil", err)
	}
	tests := []struct {
		name string
		mod  func(r *rawHeader)
		want error
	}{
		{"version 0", func(r *rawHeader) { r.version = 0 }, envelope.ErrUnsupportedVersion},
		{"version 2", func(r *rawHeader) { r.version = 2 }, envelope.ErrUnsupportedVersion},
		{"suite 0", func(r *rawHeader) { r.suite = 0 }, envelope.ErrUnsupportedSuite},
		{"suite 2", func(r *rawHeader) { r.suite = 2 }, envelope.ErrUnsupportedSuite},
		{"empty key name", func(r *rawHeader) { r.key = nil }, envelope.ErrMalformed},
		{"key name 0xffff", func(r *rawHeader) { r.keyLen = 0xffff }, envelope.ErrMalformed},
		{"key name 257", func(r *rawHeader) { r.key = make([]byte, 257) }, envelope.ErrMalformed},
		{"bad UTF-8 key name", func(r *rawHeader) { r.key = []byte{0xff} }, envelope.ErrMalformed},
		{"empty wrapped key", func(r *rawHeader) { r.wrapped = nil }, envelope.ErrMalformed},
		{"wrapped key 1025", func(r *rawHeader) { r.wrapped = make([]byte, 1025) }, envelope.ErrMalformed},
		{"wrapped key 0xffff", func(r *rawHeader) { r.wrappedLen = 0xffff }, envelope.ErrMalformed},
		{"65 pairs", func(r *rawHeader) { r.pairs = 65 }, envelope.ErrMalformed},
		{"0xffff pairs", func(r *rawHeader) { r.pairs = 0xffff }, envelope.ErrMalformed},
		{"context key 4 GiB", func(r *rawHeader) { r.ctxLens = []uint32{0xffffffff} }, envelope.ErrMalformed},
		{"context value over budget", func(r *rawHeader) { r.ctxLens = []uint32{1, envelope.MaxContextBytes} }, envelope.ErrMalformed},
		{"unsorted context", func(r *rawHeader) { r.ctx[0], r.ctx[2] = r.ctx[2], r.ctx[0] }, envelope.ErrMalformed},
		{"duplicate context key", func(r *rawHeader) { r.ctx[2] = r.ctx[0] }, envelope.ErrMalformed},
		{"empty context key", func(r *rawHeader) { r.ctx[0] = nil }, envelope.ErrMalformed},
		{"bad UTF-8 context value", func(r *rawHeader) { r.ctx[1] = []byte{0xe3, 0x81} }, envelope.ErrMalformed},
		{"segment size 0", func(r *rawHeader) { r.segSize = 0 }, envelope.ErrMalformed},
		{"segment size 4095", func(r *rawHeader) { r.segSize = 4095 }, envelope.ErrMalformed},
		{"segment size 16 MiB + 1", func(r *rawHeader) { r.segSize = 16<<20 + 1 }, envelope.ErrMalformed},
		{"segment size max uint32", func(r *rawHeader) { r.segSize = 0xffffffff }, envelope.ErrMalformed},
		{"short commitment", func(r *rawHeader) { r.tail = 63 }, envelope.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := validRaw()
			tt.mod(&r)
			h, err := envelope.ReadHeader(bytes.NewReader(r.bytes()))
			if !errors.Is(err, tt.want) || h != nil {
				t.Fatalf("ReadHeader: got %v, %v; want nil, %v", h, err, tt.want)
			}
		})
	}
	for _, in := range []string{"", "CST", "XSTE\x01\x01", "CSTE"} {
		if _, err := envelope.ReadHeader(strings.NewReader(in)); !errors.Is(err, envelope.ErrMalformed) {
			t.Errorf("ReadHeader(%q): got %v, want ErrMalformed", in, err)
		}
	}
}

// endless is an infinite source of 'a' bytes.
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	return len(p), nil
}

// A hostile header claiming the largest lengths everywhere makes ReadHeader
// read and allocate no more than the limits.
func TestReadHeaderBounded(t *testing.T) {
	const maxHeader = 4 + 1 + 1 + 2 + envelope.MaxKeyNameLen + 4 + 2 + envelope.MaxWrappedKeyLen + 2 +
		8*envelope.MaxContextPairs + envelope.MaxContextBytes + 4 + 32 + 32
	var prefix []byte
	prefix = append(prefix, "CSTE\x01\x01"...)
	prefix = binary.BigEndian.AppendUint16(prefix, 256)
	prefix = append(prefix, bytes.Repeat([]byte("k"), 256)...)
	prefix = binary.BigEndian.AppendUint32(prefix, 1)
	prefix = binary.BigEndian.AppendUint16(prefix, 1024)
	prefix = append(prefix, make([]byte, 1024)...)
	prefix = binary.BigEndian.AppendUint16(prefix, 64)
	src := &countingReader{r: io.MultiReader(bytes.NewReader(prefix), endless{})}
	// Context keys and values are "aaaa...": the length prefix
	// 0x61616161 is over budget at once.
	if _, err := envelope.ReadHeader(src); !errors.Is(err, envelope.ErrMalformed) {
		t.Fatalf("got %v, want ErrMalformed", err)
	}
	if src.n > maxHeader {
		t.Errorf("read %d bytes, want at most %d", src.n, maxHeader)
	}
	allocs := testing.AllocsPerRun(10, func() {
		envelope.ReadHeader(io.MultiReader(bytes.NewReader(prefix), endless{}))
	})
	if allocs > 40 {
		t.Errorf("allocations: got %v, want at most 40", allocs)
	}
}

func TestCounterLimits(t *testing.T) {
	// The final segment may use counter 2^32-1.
	var buf bytes.Buffer
	w, err := envelope.NewWriter(&buf, testHeader(seg, nil), testDataKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	envelope.SetWriterCounter(w, 1<<32-2)
	pt := detBytes("counter", seg+5)
	w.Write(pt)
	if err := w.Close(); err != nil {
		t.Fatalf("Close at the last counter: got %v, want nil", err)
	}
	src := bytes.NewReader(buf.Bytes())
	h, _ := envelope.ReadHeader(src)
	r, err := envelope.NewReader(src, h, testDataKey)
	if err != nil {
		t.Fatal(err)
	}
	envelope.SetReaderCounter(r, 1<<32-2)
	if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("read at the last counters: got %d bytes, %v; want %d, nil", len(got), err, len(pt))
	}
	// Decrypting from counter 0 fails: the counter is in the nonce.
	if _, err := decrypt(buf.Bytes(), testDataKey); !errors.Is(err, envelope.ErrDecryption) {
		t.Fatalf("read from counter 0: got %v, want ErrDecryption", err)
	}

	// A non-final segment with counter 2^32-1 is refused.
	w, _ = envelope.NewWriter(io.Discard, testHeader(seg, nil), testDataKey, nil)
	envelope.SetWriterCounter(w, 1<<32-2)
	if _, err := w.Write(make([]byte, 2*seg+1)); err == nil {
		t.Fatalf("Write past the counter: got nil error")
	}
	if err := w.Close(); err == nil {
		t.Fatalf("Close after overflow: got nil error")
	}

	// A reader refuses a segment counter of 2^32.
	ct := encrypt(t, testHeader(seg, nil), testDataKey, []byte("x"))
	src = bytes.NewReader(ct)
	h, _ = envelope.ReadHeader(src)
	r, _ = envelope.NewReader(src, h, testDataKey)
	envelope.SetReaderCounter(r, 1<<32)
	if _, err := io.ReadAll(r); !errors.Is(err, envelope.ErrDecryption) {
		t.Fatalf("read at counter 2^32: got %v, want ErrDecryption", err)
	}
}

type failWriter struct{ after int }

var errSink = errors.New("sink failed")

func (f *failWriter) Write(p []byte) (int, error) {
	if f.after < len(p) {
		return 0, errSink
	}
	f.after -= len(p)
	return len(p), nil
}

type failReader struct{ r io.Reader }

var errSource = errors.New("source failed")

func (f failReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, errSource
	}
	return n, err
}

func TestIOErrorsAndClose(t *testing.T) {
	if _, err := envelope.NewWriter(&failWriter{}, testHeader(seg, nil), testDataKey, nil); !errors.Is(err, errSink) {
		t.Errorf("header write error: got %v, want %v", err, errSink)
	}
	w, err := envelope.NewWriter(&failWriter{after: 1000}, testHeader(seg, nil), testDataKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(make([]byte, 2*seg)); !errors.Is(err, errSink) {
		t.Errorf("segment write error: got %v, want %v", err, errSink)
	}
	if err := w.Close(); !errors.Is(err, errSink) {
		t.Errorf("Close after a write error: got %v, want %v", err, errSink)
	}
	if _, err := envelope.NewWriter(io.Discard, testHeader(seg, nil), testDataKey, strings.NewReader("short")); err == nil {
		t.Errorf("short randomness: got nil error")
	}

	var buf bytes.Buffer
	w, _ = envelope.NewWriter(&buf, testHeader(seg, nil), testDataKey, nil)
	w.Write([]byte("data"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
	if _, err := w.Write([]byte("more")); err == nil {
		t.Errorf("Write after Close: got nil error")
	}

	// An I/O error from the source is passed on, not reported as EOF.
	src := bytes.NewReader(buf.Bytes())
	h, _ := envelope.ReadHeader(src)
	r, _ := envelope.NewReader(failReader{src}, h, testDataKey)
	if _, err := io.ReadAll(r); !errors.Is(err, errSource) {
		t.Errorf("source error: got %v, want %v", err, errSource)
	}
	if _, err := envelope.ReadHeader(failReader{strings.NewReader("CSTE")}); !errors.Is(err, errSource) {
		t.Errorf("header source error: got %v, want %v", err, errSource)
	}

	// Without Close there is no final segment.
	buf.Reset()
	w, _ = envelope.NewWriter(&buf, testHeader(seg, nil), testDataKey, nil)
	w.Write(make([]byte, 3*seg))
	if _, err := decrypt(buf.Bytes(), testDataKey); !errors.Is(err, envelope.ErrDecryption) {
		t.Errorf("missing Close: got %v, want ErrDecryption", err)
	}

	// After the end, Read keeps returning io.EOF.
	ct := encrypt(t, testHeader(seg, nil), testDataKey, nil)
	src = bytes.NewReader(ct)
	h, _ = envelope.ReadHeader(src)
	r, _ = envelope.NewReader(src, h, testDataKey)
	for i := range 3 {
		if n, err := r.Read(make([]byte, 8)); n != 0 || err != io.EOF {
			t.Errorf("Read %d of empty stream: got %d, %v; want 0, io.EOF", i, n, err)
		}
	}
}

func TestCanonicalContext(t *testing.T) {
	if got := envelope.CanonicalContext(nil); len(got) != 0 {
		t.Errorf("CanonicalContext(nil): got %x, want empty", got)
	}
	if got, want := envelope.ContextDigest(nil), sha256.Sum256(nil); got != want {
		t.Errorf("ContextDigest(nil): got %x, want %x", got, want)
	}
	ctx := map[string]string{"b": "", "a": "xy", "ab": "z"}
	want := "00000001" + "61" + "00000002" + "7879" +
		"00000002" + "6162" + "00000001" + "7a" +
		"00000001" + "62" + "00000000"
	if got := hex.EncodeToString(envelope.CanonicalContext(ctx)); got != want {
		t.Errorf("CanonicalContext: got %s, want %s", got, want)
	}
	wantSum, _ := hex.DecodeString(want)
	if got := envelope.ContextDigest(ctx); got != sha256.Sum256(wantSum) {
		t.Errorf("ContextDigest: got %x, want SHA-256 of the canonical encoding", got)
	}
}
