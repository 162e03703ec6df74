package envelope_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/custos-kms/custos/clients/go/envelope"
)

func FuzzReadHeader(f *testing.F) {
	for _, v := range loadVectors(f) {
		ct := unhex(f, v.Ciphertext)
		f.Add(ct[:v.HeaderLen])
		f.Add(ct)
	}
	f.Add(validRaw().bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		src := bytes.NewReader(data)
		h, err := envelope.ReadHeader(src)
		if err != nil {
			if h != nil {
				t.Fatalf("got a header and error %v", err)
			}
			if !errors.Is(err, envelope.ErrMalformed) && !errors.Is(err, envelope.ErrUnsupportedVersion) &&
				!errors.Is(err, envelope.ErrUnsupportedSuite) {
				t.Fatalf("got error %v, want ErrMalformed or an unsupported version or suite", err)
			}
			return
		}
		// A parsed header is canonical: it re-encodes to exactly the
		// bytes consumed.
		n := len(data) - src.Len()
		enc, err := envelope.EncodeHeader(h)
		if err != nil {
			t.Fatalf("re-encoding a parsed header: %v", err)
		}
		if !bytes.Equal(enc, data[:n]) {
			t.Fatalf("re-encoded header:\ngot  %x\nwant %x", enc, data[:n])
		}
	})
}

// FuzzDecrypt decrypts mutated vectors under the data key of vector i. Every
// vector has its own data key, so the only authentic plaintext under that
// key is vector i's: whatever decryption releases must be a prefix of it, and
// a ciphertext that decrypts completely must be exactly what the writer
// produces for that plaintext under the parsed header and its salt.
func FuzzDecrypt(f *testing.F) {
	vs := loadVectors(f)
	for i, v := range vs {
		f.Add(uint8(i), unhex(f, v.Ciphertext))
	}
	f.Fuzz(func(t *testing.T, i uint8, ct []byte) {
		v := vs[int(i)%len(vs)]
		key := unhex(t, v.DataKey)
		pt := unhex(t, v.Plaintext)
		src := bytes.NewReader(ct)
		h, err := envelope.ReadHeader(src)
		if err != nil {
			return
		}
		r, err := envelope.NewReader(src, h, key)
		if err != nil {
			return
		}
		got, err := io.ReadAll(r)
		if !bytes.HasPrefix(pt, got) {
			t.Fatalf("released %d bytes that are not a prefix of the plaintext (err %v)", len(got), err)
		}
		if err != nil {
			if !errors.Is(err, envelope.ErrDecryption) {
				t.Fatalf("got error %v, want ErrDecryption", err)
			}
			return
		}
		if !bytes.Equal(got, pt) {
			t.Fatalf("decrypted %d bytes, want the full %d-byte plaintext", len(got), len(pt))
		}
		// Accepted input is the writer's output for the parsed header.
		var buf bytes.Buffer
		w, err := envelope.NewWriter(&buf, *h, key, bytes.NewReader(h.Salt()))
		if err != nil {
			t.Fatal(err)
		}
		w.Write(got)
		w.Close()
		if !bytes.Equal(buf.Bytes(), ct) {
			t.Fatalf("accepted a ciphertext that is not the canonical encryption of its plaintext")
		}
	})
}
