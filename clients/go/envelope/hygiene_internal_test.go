package envelope

import (
	"bytes"
	"io"
	"testing"
)

// Every batch buffer a writer or reader used holds no plaintext once the
// writer is closed or the reader has reached the end or an error: buffers
// go back to a pool shared by all streams.
func TestBuffersHoldNoPlaintext(t *testing.T) {
	const seg = MinSegmentSize
	pattern := bytes.Repeat([]byte{0xa5}, 32)
	pt := bytes.Repeat([]byte{0xa5}, 600*seg+123)
	key := bytes.Repeat([]byte{7}, DataKeySize)
	h := Header{Key: "k", KeyVersion: 1, WrappedKey: []byte{1}, SegmentSize: seg}

	check := func(name string, seen map[*byte][]byte) {
		t.Helper()
		if len(seen) < 2 {
			t.Fatalf("%s: saw %d buffers, want several", name, len(seen))
		}
		for _, b := range seen {
			if bytes.Contains(b, pattern) {
				t.Fatalf("%s: a %d-byte batch buffer still holds plaintext", name, len(b))
			}
		}
	}
	note := func(seen map[*byte][]byte, b []byte) {
		if len(b) > 0 {
			seen[&b[0]] = b
		}
	}

	// Writer, through small Writes and through ReadFrom with short reads.
	var ct bytes.Buffer
	for _, from := range []bool{false, true} {
		ct.Reset()
		wc, err := NewWriter(&ct, h, key, nil)
		if err != nil {
			t.Fatal(err)
		}
		w := wc.(*writer)
		seen := map[*byte][]byte{}
		for p := pt; len(p) > 0; {
			k := min(len(p), 3000)
			if from {
				w.ReadFrom(io.LimitReader(bytes.NewReader(p[:k]), int64(k)))
			} else {
				w.Write(p[:k])
			}
			note(seen, w.buf)
			p = p[k:]
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		check("writer", seen)
	}

	for _, tamper := range []int{-1, 300} {
		c := bytes.Clone(ct.Bytes())
		src := bytes.NewReader(c)
		hdr, err := ReadHeader(src)
		if err != nil {
			t.Fatal(err)
		}
		if tamper >= 0 {
			c[len(c)-src.Len()+tamper*(seg+tagSize)+5] ^= 1
		}
		rd, err := NewReader(src, hdr, key)
		if err != nil {
			t.Fatal(err)
		}
		r := rd.(*reader)
		seen := map[*byte][]byte{}
		buf := make([]byte, 5000)
		for {
			note(seen, r.buf)
			note(seen, r.ahead)
			_, err := r.Read(buf)
			if err != nil {
				break
			}
		}
		check("reader", seen)
	}
}
