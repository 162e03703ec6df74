package kms_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/custos-kms/custos/kms"
)

var update = flag.Bool("update", false, "rewrite golden vectors")

// wrappedVector pins the wrapped ciphertext format (docs/wrapped-data-key.md):
// a change to these bytes is a format change.
type wrappedVector struct {
	Name       string            `json:"name"`
	KEK        string            `json:"kek"`
	Kind       byte              `json:"kind"`
	Key        string            `json:"key"`
	KeyVersion uint32            `json:"key_version"`
	IV         string            `json:"iv"`
	Plaintext  string            `json:"plaintext"`
	Context    map[string]string `json:"context"`
	Digest     string            `json:"context_digest"`
	Wrapped    string            `json:"wrapped"`
}

func seal(t *testing.T, v *wrappedVector) []byte {
	t.Helper()
	kek, _ := hex.DecodeString(v.KEK)
	iv, _ := hex.DecodeString(v.IV)
	pt, _ := hex.DecodeString(v.Plaintext)
	block, err := aes.NewCipher(kek)
	if err != nil {
		t.Fatal(err)
	}
	gcm, _ := cipher.NewGCM(block)
	w := &kms.Wrapped{Kind: kms.Kind(v.Kind), Key: v.Key, KeyVersion: v.KeyVersion, IV: iv}
	w.Ciphertext = gcm.Seal(nil, iv, pt, w.AAD(kms.ContextDigest(v.Context)))
	return w.Marshal()
}

func TestWrappedGoldenVectors(t *testing.T) {
	path := filepath.Join("testdata", "wrapped_vectors.json")
	if *update {
		vs := []wrappedVector{
			{Name: "data key, empty context", KEK: repeatHex("00", 32), Kind: 1, Key: "payroll", KeyVersion: 1,
				IV: repeatHex("11", 12), Plaintext: repeatHex("22", 32)},
			{Name: "data key, context", KEK: "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", Kind: 1,
				Key: "hr.records-2026", KeyVersion: 7, IV: "cafebabefacedbaddecaf888",
				Plaintext: "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100",
				Context:   map[string]string{"dept": "hr", "file": "report.pdf"}},
			{Name: "payload", KEK: repeatHex("42", 32), Kind: 2, Key: "k", KeyVersion: 4294967295,
				IV: repeatHex("00", 12), Plaintext: hex.EncodeToString([]byte("a small secret")), Context: map[string]string{"x": ""}},
		}
		for i := range vs {
			d := kms.ContextDigest(vs[i].Context)
			vs[i].Digest = hex.EncodeToString(d[:])
			vs[i].Wrapped = hex.EncodeToString(seal(t, &vs[i]))
		}
		b, _ := json.MarshalIndent(vs, "", "  ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var vs []wrappedVector
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		t.Run(v.Name, func(t *testing.T) {
			d := kms.ContextDigest(v.Context)
			if got := hex.EncodeToString(d[:]); got != v.Digest {
				t.Fatalf("context digest: got %s, want %s", got, v.Digest)
			}
			if got := hex.EncodeToString(seal(t, &v)); got != v.Wrapped {
				t.Fatalf("wrapped: got %s, want %s", got, v.Wrapped)
			}
			raw, _ := hex.DecodeString(v.Wrapped)
			w, err := kms.ParseWrapped(raw)
			if err != nil {
				t.Fatalf("ParseWrapped: %v", err)
			}
			if w.Key != v.Key || w.KeyVersion != v.KeyVersion || byte(w.Kind) != v.Kind || hex.EncodeToString(w.IV) != v.IV {
				t.Fatalf("parsed = %+v", w)
			}
			if !bytes.Equal(w.Marshal(), raw) {
				t.Fatalf("re-marshal differs")
			}
		})
	}
}

func repeatHex(b string, n int) string {
	out := ""
	for i := 0; i < n; i++ {
		out += b
	}
	return out
}

func TestParseWrappedRejects(t *testing.T) {
	good, _ := hex.DecodeString("0101077061") // header start only
	for name, b := range map[string][]byte{
		"empty":        nil,
		"short":        good,
		"version 2":    append([]byte{2, 1, 1, 'k', 0, 0, 0, 1}, make([]byte, 60)...),
		"kind 3":       append([]byte{1, 3, 1, 'k', 0, 0, 0, 1}, make([]byte, 60)...),
		"name len 0":   append([]byte{1, 1, 0}, make([]byte, 80)...),
		"name len 65":  append([]byte{1, 1, 65}, make([]byte, 140)...),
		"bad name":     append([]byte{1, 1, 1, '/', 0, 0, 0, 1}, make([]byte, 60)...),
		"version 0":    append([]byte{1, 1, 1, 'k', 0, 0, 0, 0}, make([]byte, 60)...),
		"data key 31B": append([]byte{1, 1, 1, 'k', 0, 0, 0, 1}, make([]byte, 12+31+16)...),
		"too long":     make([]byte, 70<<10),
	} {
		if _, err := kms.ParseWrapped(b); !errors.Is(err, kms.ErrInvalidArgument) {
			t.Errorf("%s: got %v, want ErrInvalidArgument", name, err)
		}
	}
}

func FuzzParseWrapped(f *testing.F) {
	b, err := os.ReadFile(filepath.Join("testdata", "wrapped_vectors.json"))
	if err != nil {
		f.Fatal(err)
	}
	var vs []wrappedVector
	_ = json.Unmarshal(b, &vs)
	for _, v := range vs {
		raw, _ := hex.DecodeString(v.Wrapped)
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := kms.ParseWrapped(data)
		if err != nil {
			if !errors.Is(err, kms.ErrInvalidArgument) {
				t.Fatalf("error %v does not wrap ErrInvalidArgument", err)
			}
			return
		}
		if !bytes.Equal(w.Marshal(), data) {
			t.Fatalf("parse/marshal round trip differs")
		}
	})
}
