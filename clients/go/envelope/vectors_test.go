package envelope_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"testing"

	"github.com/custos-kms/custos/clients/go/envelope"
)

var update = flag.Bool("update", false, "regenerate testdata/vectors.json")

const vectorsFile = "testdata/vectors.json"

// The golden vectors in testdata/vectors.json pin the envelope format:
// encryption must reproduce them byte for byte and decryption must recover
// their plaintext. Any change to that file is a format change, which needs a
// new format version or algorithm suite, never an edit of version 1.
// Regenerate with: go test ./clients/go/envelope/ -run TestVectors -update

type vectorFile struct {
	Comment string   `json:"comment"`
	Vectors []vector `json:"vectors"`
}

// vector holds hex strings for all byte fields. Rand is what the writer read
// from its random source (the salt). SegmentKey, NoncePrefix, Commitment and
// HeaderDigest are intermediate values for other implementations.
type vector struct {
	Name         string            `json:"name"`
	DataKey      string            `json:"data_key"`
	Key          string            `json:"key"`
	KeyVersion   uint32            `json:"key_version"`
	WrappedKey   string            `json:"wrapped_key"`
	Context      map[string]string `json:"context"`
	SegmentSize  int               `json:"segment_size"`
	Rand         string            `json:"rand"`
	Plaintext    string            `json:"plaintext"`
	SegmentKey   string            `json:"segment_key"`
	NoncePrefix  string            `json:"nonce_prefix"`
	Commitment   string            `json:"commitment"`
	HeaderDigest string            `json:"header_digest"`
	HeaderLen    int               `json:"header_len"`
	Ciphertext   string            `json:"ciphertext"`
}

type vectorSpec struct {
	name       string
	key        string
	version    uint32
	wrappedLen int
	ctx        map[string]string
	segSize    int
	ptLen      int
}

var vectorSpecs = []vectorSpec{
	{"empty plaintext, no context, default segment size", "k", 1, 60, nil, envelope.DefaultSegmentSize, 0},
	{"short plaintext with context", "tenants/acme/keys/payroll", 3, 60,
		map[string]string{"tenant": "acme", "purpose": "payroll"}, envelope.DefaultSegmentSize, 13},
	{"exactly one segment", "tenants/acme/keys/files", 1, 60, map[string]string{"path": "/a/b"}, 4096, 4096},
	{"two segments and a bit, UTF-8 context", "鍵/東京", 0xfffffffe, 101,
		map[string]string{"地域": "東京", "z": "x", "a": ""}, 4096, 2*4096 + 100},
	{"three full segments", "k2", 7, 1024, map[string]string{"n": "3"}, 4096, 3 * 4096},
}

func makeVector(t testing.TB, s vectorSpec) vector {
	seed := "custos envelope v1 vector: " + s.name
	v := vector{
		Name:        s.name,
		DataKey:     hex.EncodeToString(detBytes(seed+" data key", 32)),
		Key:         s.key,
		KeyVersion:  s.version,
		WrappedKey:  hex.EncodeToString(detBytes(seed+" wrapped key", s.wrappedLen)),
		Context:     s.ctx,
		SegmentSize: s.segSize,
		Rand:        hex.EncodeToString(detBytes(seed+" rand", 32)),
		Plaintext:   hex.EncodeToString(detBytes(seed+" plaintext", s.ptLen)),
	}
	if v.Context == nil {
		v.Context = map[string]string{}
	}
	ct := encryptVector(t, v)
	src := bytes.NewReader(ct)
	h, err := envelope.ReadHeader(src)
	if err != nil {
		t.Fatal(err)
	}
	segKey, commitment, noncePrefix, aad, err := envelope.Derived(h, unhex(t, v.DataKey))
	if err != nil {
		t.Fatal(err)
	}
	v.SegmentKey = hex.EncodeToString(segKey)
	v.NoncePrefix = hex.EncodeToString(noncePrefix)
	v.Commitment = hex.EncodeToString(commitment)
	v.HeaderDigest = hex.EncodeToString(aad)
	v.HeaderLen = len(ct) - src.Len()
	v.Ciphertext = hex.EncodeToString(ct)
	return v
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (v vector) header(t testing.TB) envelope.Header {
	return envelope.Header{
		Key:         v.Key,
		KeyVersion:  v.KeyVersion,
		WrappedKey:  unhex(t, v.WrappedKey),
		Context:     v.Context,
		SegmentSize: v.SegmentSize,
	}
}

func encryptVector(t testing.TB, v vector) []byte {
	t.Helper()
	rand := bytes.NewReader(unhex(t, v.Rand))
	var buf bytes.Buffer
	w, err := envelope.NewWriter(&buf, v.header(t), unhex(t, v.DataKey), rand)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(unhex(t, v.Plaintext)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if rand.Len() != 0 {
		t.Fatalf("writer left %d random bytes unread", rand.Len())
	}
	return buf.Bytes()
}

func loadVectors(t testing.TB) []vector {
	t.Helper()
	b, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatal(err)
	}
	var f vectorFile
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	return f.Vectors
}

func TestVectors(t *testing.T) {
	if *update {
		f := vectorFile{Comment: "Golden vectors for the custos envelope format, version 1, suite 1 " +
			"(docs/envelope-format.md). They pin the format: a change to this file is a format change. " +
			"All byte strings are hex; rand is the output of the writer's random source (the salt); " +
			"segment_key, nonce_prefix, commitment and header_digest are intermediate values."}
		for _, s := range vectorSpecs {
			f.Vectors = append(f.Vectors, makeVector(t, s))
		}
		b, err := json.MarshalIndent(f, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vectorsFile, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	vs := loadVectors(t)
	if len(vs) != len(vectorSpecs) {
		t.Errorf("vectors: got %d, want %d (run with -update?)", len(vs), len(vectorSpecs))
	}
	for _, v := range vs {
		t.Run(v.Name, func(t *testing.T) {
			want := unhex(t, v.Ciphertext)
			if got := encryptVector(t, v); !bytes.Equal(got, want) {
				t.Fatalf("ciphertext:\ngot  %x\nwant %x", got, want)
			}
			src := bytes.NewReader(want)
			h, err := envelope.ReadHeader(src)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(want) - src.Len(); got != v.HeaderLen {
				t.Errorf("header length: got %d, want %d", got, v.HeaderLen)
			}
			if got := hex.EncodeToString(h.Salt()); got != v.Rand {
				t.Errorf("salt: got %s, want %s", got, v.Rand)
			}
			segKey, commitment, noncePrefix, aad, err := envelope.Derived(h, unhex(t, v.DataKey))
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct{ name, got, want string }{
				{"segment key", hex.EncodeToString(segKey), v.SegmentKey},
				{"nonce prefix", hex.EncodeToString(noncePrefix), v.NoncePrefix},
				{"commitment", hex.EncodeToString(commitment), v.Commitment},
				{"header commitment", hex.EncodeToString(h.Commitment()), v.Commitment},
				{"header digest", hex.EncodeToString(aad), v.HeaderDigest},
			} {
				if c.got != c.want {
					t.Errorf("%s: got %s, want %s", c.name, c.got, c.want)
				}
			}
			got, err := decrypt(want, unhex(t, v.DataKey))
			if err != nil {
				t.Fatalf("decrypt: got %v, want nil", err)
			}
			if hex.EncodeToString(got) != v.Plaintext {
				t.Fatalf("plaintext: got %x, want %s", got, v.Plaintext)
			}
		})
	}
	// The vectors' inputs still come from vectorSpecs.
	for i, s := range vectorSpecs[:min(len(vs), len(vectorSpecs))] {
		if makeVector(t, s).Ciphertext != vs[i].Ciphertext {
			t.Errorf("vector %q: generator and file disagree (run with -update?)", s.name)
		}
	}
}
