package envelope_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"testing"

	"github.com/custos-kms/custos/clients/go/envelope"
)

// detRand is a deterministic byte stream for tests and vectors:
// SHA-256(seed || uint64 i) for i = 0, 1, 2, ...
type detRand struct {
	seed string
	i    uint64
	buf  []byte
}

func newDetRand(seed string) *detRand { return &detRand{seed: seed} }

func (d *detRand) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(d.buf) == 0 {
			h := sha256.New()
			h.Write([]byte(d.seed))
			var c [8]byte
			binary.BigEndian.PutUint64(c[:], d.i)
			h.Write(c[:])
			d.i++
			d.buf = h.Sum(nil)
		}
		c := copy(p[n:], d.buf)
		d.buf = d.buf[c:]
		n += c
	}
	return n, nil
}

func detBytes(seed string, n int) []byte {
	b := make([]byte, n)
	newDetRand(seed).Read(b)
	return b
}

var testDataKey = detBytes("test data key", envelope.DataKeySize)

func testHeader(segSize int, ctx map[string]string) envelope.Header {
	return envelope.Header{
		Key:         "tenants/acme/keys/payroll",
		KeyVersion:  3,
		WrappedKey:  detBytes("wrapped", 61),
		Context:     ctx,
		SegmentSize: segSize,
	}
}

var testContext = map[string]string{"tenant": "acme", "purpose": "payroll", "地域": "東京"}

func encrypt(t testing.TB, h envelope.Header, key, pt []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := envelope.NewWriter(&buf, h, key, nil)
	if err != nil {
		t.Fatalf("NewWriter: %v", err)
	}
	if _, err := w.Write(pt); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return buf.Bytes()
}

// decrypt returns the plaintext read before any error, and the error.
func decrypt(ct, key []byte) ([]byte, error) {
	src := bytes.NewReader(ct)
	h, err := envelope.ReadHeader(src)
	if err != nil {
		return nil, err
	}
	r, err := envelope.NewReader(src, h, key)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

// headerLen returns the length of the header at the start of ct.
func headerLen(t testing.TB, ct []byte) int {
	t.Helper()
	src := bytes.NewReader(ct)
	if _, err := envelope.ReadHeader(src); err != nil {
		t.Fatalf("ReadHeader: %v", err)
	}
	return len(ct) - src.Len()
}
