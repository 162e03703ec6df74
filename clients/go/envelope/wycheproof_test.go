package envelope_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
)

// The AES-256 groups of Project Wycheproof's aes_gcm_test.json, kept once,
// next to the HSM backend's test that also reads them (source, licence and
// selection: the file's "source", "license" and "note" fields).
const wycheproofGCMFile = "../../../hsm/pkcs11/testdata/wycheproof_aes_gcm_256_subset.json"

// segmentAEAD builds the AEAD the envelope seals and opens segments with.
//
// The package's own instance is not reachable from a test: it is built in
// stream.go's derive from a segment key derived from the data key by the
// KDF, so no chosen key can be put into it. This is the same construction
// (crypto/aes, then cipher.NewGCM: the standard 12-byte nonce and 16-byte
// tag); the test below checks those sizes, which the envelope relies on
// (nonce = 7-byte prefix || 4-byte counter || 1-byte last flag).
func segmentAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// openRecover calls aead.Open and turns the panic crypto/cipher raises on
// a nonce of the wrong length into an error, with sizeRefused set.
func openRecover(aead cipher.AEAD, nonce, sealed, aad []byte) (pt []byte, sizeRefused bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			pt, sizeRefused, err = nil, true, fmt.Errorf("panic: %v", r)
		}
	}()
	pt, err = aead.Open(nil, nonce, sealed, aad)
	return pt, false, err
}

// TestWycheproofAESGCMSegments runs every AES-256-GCM vector of Project
// Wycheproof through the envelope's segment AEAD. Valid vectors with a 12-byte IV and
// a 16-byte tag must seal to ct||tag and open to msg; invalid ones must not
// open; every vector with another IV size (SmallIv, LongIv, CounterWrap,
// ZeroLengthIv, 16-byte IVs) must be refused, valid or not: the AEAD takes
// 12-byte nonces only (crypto/cipher panics on any other length, which the
// envelope never passes). All tags in these groups are 128-bit; truncated
// tags derived from the valid vectors must not open either (the tag size is
// fixed at 16 bytes).
func TestWycheproofAESGCMSegments(t *testing.T) {
	data, err := os.ReadFile(wycheproofGCMFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Source        string `json:"source"`
		Algorithm     string `json:"algorithm"`
		NumberOfTests int    `json:"numberOfTests"`
		TestGroups    []struct {
			IVSize  int `json:"ivSize"`
			KeySize int `json:"keySize"`
			TagSize int `json:"tagSize"`
			Tests   []struct {
				TcID    int      `json:"tcId"`
				Comment string   `json:"comment"`
				Flags   []string `json:"flags"`
				Key     string   `json:"key"`
				IV      string   `json:"iv"`
				AAD     string   `json:"aad"`
				Msg     string   `json:"msg"`
				CT      string   `json:"ct"`
				Tag     string   `json:"tag"`
				Result  string   `json:"result"`
			} `json:"tests"`
		} `json:"testGroups"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	if f.Algorithm != "AES-GCM" {
		t.Fatalf("algorithm %q", f.Algorithm)
	}
	unhex := func(s string) []byte {
		b, err := hex.DecodeString(s)
		if err != nil {
			t.Fatalf("bad hex %q: %v", s, err)
		}
		return b
	}

	counts := map[string]map[string]int{}
	add := func(class, outcome string) {
		if counts[class] == nil {
			counts[class] = map[string]int{}
		}
		counts[class][outcome]++
	}
	n, valid, invalid := 0, 0, 0
	for _, g := range f.TestGroups {
		if g.KeySize != 256 {
			t.Fatalf("group keySize %d", g.KeySize)
		}
		for _, tc := range g.Tests {
			n++
			key, iv, aad := unhex(tc.Key), unhex(tc.IV), unhex(tc.AAD)
			msg, ct, tag := unhex(tc.Msg), unhex(tc.CT), unhex(tc.Tag)
			name := fmt.Sprintf("tcId %d (%s %v, %d-byte IV)", tc.TcID, tc.Comment, tc.Flags, len(iv))
			class := fmt.Sprintf("iv=%d tag=%d %s %s", g.IVSize, g.TagSize, tc.Result, strings.Join(tc.Flags, "+"))
			switch tc.Result {
			case "valid":
				valid++
			case "invalid":
				invalid++
			default:
				t.Fatalf("%s: result %q not used in this file", name, tc.Result)
			}
			aead, err := segmentAEAD(key)
			if err != nil {
				t.Fatal(err)
			}
			if aead.NonceSize() != 12 || aead.Overhead() != 16 {
				t.Fatalf("segment AEAD has a %d-byte nonce and a %d-byte tag", aead.NonceSize(), aead.Overhead())
			}
			sealed := append(bytes.Clone(ct), tag...)
			got, sizeRefused, err := openRecover(aead, iv, sealed, aad)
			switch {
			case err == nil:
				add(class, "accepted")
			case sizeRefused:
				add(class, "refused (nonce size)")
			default:
				add(class, "refused (authentication)")
			}
			usual := len(iv) == 12 && len(tag) == 16
			switch {
			case !usual:
				if !sizeRefused {
					t.Errorf("%s: Open err = %v, want the nonce size refused", name, err)
				}
			case tc.Result == "valid":
				if err != nil || !bytes.Equal(got, msg) {
					t.Errorf("%s: Open = %x, %v; want %x", name, got, err, msg)
				}
				if s := aead.Seal(nil, iv, msg, aad); !bytes.Equal(s, sealed) {
					t.Errorf("%s: Seal = %x, want %x", name, s, sealed)
				}
				// Derived: the valid tag truncated (not in the file).
				for _, tl := range []int{4, 8, 12, 13, 14, 15} {
					short := append(bytes.Clone(ct), tag[:tl]...)
					c := fmt.Sprintf("iv=96 tag=%d derived: valid tag truncated", 8*tl)
					if _, _, err := openRecover(aead, iv, short, aad); err == nil {
						add(c, "accepted")
						t.Errorf("%s: opens with its tag truncated to %d bytes", name, tl)
					} else {
						add(c, "refused (authentication)")
					}
				}
			default:
				if err == nil || sizeRefused {
					t.Errorf("%s: Open err = %v, want an authentication failure", name, err)
				}
			}
		}
	}
	if n != f.NumberOfTests || valid == 0 || invalid == 0 {
		t.Fatalf("ran %d of %d vectors (%d valid, %d invalid)", n, f.NumberOfTests, valid, invalid)
	}
	classes := make([]string, 0, len(counts))
	for k := range counts {
		classes = append(classes, k)
	}
	sort.Strings(classes)
	t.Log("segment AEAD (crypto/aes + cipher.NewGCM) by class:")
	for _, k := range classes {
		outs := make([]string, 0, len(counts[k]))
		for o, c := range counts[k] {
			outs = append(outs, fmt.Sprintf("%s %d", o, c))
		}
		sort.Strings(outs)
		t.Logf("  %-52s %s", k, strings.Join(outs, ", "))
	}
	t.Logf("%d Wycheproof vectors (%d valid, %d invalid) from %s", n, valid, invalid, f.Source)
}
