package pkcs11_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/hsm/pkcs11"
)

// wycheproofGCMFile holds the AES-256 groups of Project Wycheproof's
// aes_gcm_test.json; source, licence and selection are in the file's
// "source", "license" and "note" fields. clients/go/envelope's
// TestWycheproofAESGCMSegments reads the same file.
const wycheproofGCMFile = "testdata/wycheproof_aes_gcm_256_subset.json"

type wycheproofGCMTest struct {
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
}

type wycheproofGCMFileData struct {
	Source        string `json:"source"`
	License       string `json:"license"`
	Algorithm     string `json:"algorithm"`
	NumberOfTests int    `json:"numberOfTests"`
	TestGroups    []struct {
		IVSize  int                 `json:"ivSize"`
		KeySize int                 `json:"keySize"`
		TagSize int                 `json:"tagSize"`
		Type    string              `json:"type"`
		Tests   []wycheproofGCMTest `json:"tests"`
	} `json:"testGroups"`
}

// tally counts outcomes per vector class, for the log.
type tally map[string]map[string]int

func (c tally) add(class, outcome string) {
	if c[class] == nil {
		c[class] = map[string]int{}
	}
	c[class][outcome]++
}

func (c tally) log(t *testing.T, title string) {
	t.Helper()
	classes := make([]string, 0, len(c))
	for k := range c {
		classes = append(classes, k)
	}
	sort.Strings(classes)
	t.Logf("%s:", title)
	for _, k := range classes {
		outs := make([]string, 0, len(c[k]))
		for o, n := range c[k] {
			outs = append(outs, fmt.Sprintf("%s %d", o, n))
		}
		sort.Strings(outs)
		t.Logf("  %-52s %s", k, strings.Join(outs, ", "))
	}
}

// TestWycheproofAESGCMBackend runs every AES-256-GCM vector of Project
// Wycheproof (see wycheproofGCMFile) through the backend's GCM path on a
// SoftHSM token: DecryptGCM for every vector, EncryptGCM (which takes the IV) for
// the valid ones. Valid vectors with a 12-byte IV and a 16-byte tag must
// round-trip exactly; invalid ones must be refused; vectors with any other
// IV size (SmallIv, LongIv, CounterWrap, ZeroLengthIv, 16-byte IVs) must be
// refused by the wrapper itself with hsm.ErrInvalidInput, whether or not
// SoftHSM would take them (RawDecryptGCMForTest shows what SoftHSM does).
//
// Every AES-256 group of the file has a 128-bit tag; truncated tags are
// derived from the valid 12-byte-IV vectors (the tag's leading bytes, as
// SP 800-38D truncates) to check that SoftHSM takes them when asked for a
// short tag and that the wrapper, which always asks for 128 bits, never
// does.
func TestWycheproofAESGCMBackend(t *testing.T) {
	data, err := os.ReadFile(wycheproofGCMFile)
	if err != nil {
		t.Fatal(err)
	}
	var f wycheproofGCMFileData
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	if f.Algorithm != "AES-GCM" {
		t.Fatalf("algorithm %q", f.Algorithm)
	}

	b, _ := open(t)
	c := testCtx(t)
	ids := map[string]hsm.KeyRef{} // key (hex) -> token key
	keyRef := func(t *testing.T, key []byte) hsm.KeyRef {
		t.Helper()
		if ref, ok := ids[string(key)]; ok {
			return ref
		}
		id := fmt.Appendf(nil, "wycheproof-%d", len(ids))
		ref, err := pkcs11.ImportAESKeyForTest(b, c, id, key)
		if err != nil {
			t.Fatalf("import key: %v", err)
		}
		ids[string(key)] = ref
		return ref
	}

	wrapper, module := tally{}, tally{}
	n, valid, invalid := 0, 0, 0
	type sample struct {
		key                   hsm.KeyRef
		iv, ct, tag, aad, msg []byte
	}
	var usual []sample // valid vectors with a 12-byte IV, for the tag truncation below
	for _, g := range f.TestGroups {
		if g.KeySize != 256 || g.Type != "AeadTest" {
			t.Fatalf("group keySize %d type %s", g.KeySize, g.Type)
		}
		for _, tc := range g.Tests {
			n++
			key, iv, aad := unhex(t, tc.Key), unhex(t, tc.IV), unhex(t, tc.AAD)
			msg, ct, tag := unhex(t, tc.Msg), unhex(t, tc.CT), unhex(t, tc.Tag)
			if 8*len(iv) != g.IVSize || 8*len(tag) != g.TagSize || len(key) != hsm.AESKeySize {
				t.Fatalf("tcId %d: sizes do not match its group", tc.TcID)
			}
			name := fmt.Sprintf("tcId %d (%s %v, %d-byte IV)", tc.TcID, tc.Comment, tc.Flags, len(iv))
			class := fmt.Sprintf("iv=%d tag=%d %s %s", g.IVSize, g.TagSize, tc.Result, strings.Join(tc.Flags, "+"))
			usualSizes := len(iv) == hsm.GCMIVSize && len(tag) == hsm.GCMTagSize
			switch tc.Result {
			case "valid":
				valid++
			case "invalid":
				invalid++
			default:
				t.Fatalf("%s: result %q not used in this file", name, tc.Result)
			}
			ref := keyRef(t, key)
			sealed := append(bytes.Clone(ct), tag...)

			// The backend's decrypt entry point.
			got, err := b.DecryptGCM(c, ref, iv, sealed, aad)
			switch {
			case err == nil:
				wrapper.add(class, "accepted")
			case errors.Is(err, hsm.ErrInvalidInput):
				wrapper.add(class, "refused by wrapper")
			case errors.Is(err, hsm.ErrDecrypt):
				wrapper.add(class, "refused by module")
			default:
				t.Fatalf("%s: DecryptGCM: unexpected error %v", name, err)
			}
			switch {
			case !usualSizes:
				if !errors.Is(err, hsm.ErrInvalidInput) {
					t.Errorf("%s: DecryptGCM err = %v, want ErrInvalidInput before the module", name, err)
				}
				if _, err := b.EncryptGCM(c, ref, iv, msg, aad); !errors.Is(err, hsm.ErrInvalidInput) {
					t.Errorf("%s: EncryptGCM err = %v, want ErrInvalidInput", name, err)
				}
			case tc.Result == "valid":
				if err != nil || !bytes.Equal(got, msg) {
					t.Errorf("%s: DecryptGCM = %x, %v; want %x", name, got, err, msg)
				}
				enc, err := b.EncryptGCM(c, ref, iv, msg, aad)
				if err != nil || !bytes.Equal(enc, sealed) {
					t.Errorf("%s: EncryptGCM = %x, %v; want %x", name, enc, err, sealed)
				}
				usual = append(usual, sample{ref, iv, ct, tag, aad, msg})
			default:
				if !errors.Is(err, hsm.ErrDecrypt) {
					t.Errorf("%s: DecryptGCM err = %v, want ErrDecrypt", name, err)
				}
			}

			// What SoftHSM itself does with the vector as given.
			raw, rerr := pkcs11.RawDecryptGCMForTest(b, c, ref.ID, iv, sealed, aad, 8*len(tag))
			switch {
			case rerr != nil:
				module.add(class, "refused")
				if !usualSizes {
					t.Logf("SoftHSM refuses %s: %v", name, rerr)
				}
			case bytes.Equal(raw, msg) && tc.Result == "valid":
				module.add(class, "accepted")
			case bytes.Equal(raw, msg):
				module.add(class, "ACCEPTED INVALID")
				t.Logf("SoftHSM accepts invalid vector %s (our wrapper refuses it: %v)", name, err)
			default:
				module.add(class, "WRONG PLAINTEXT")
				t.Logf("SoftHSM decrypts %s to %x, want %x", name, raw, msg)
			}
			if usualSizes && (rerr == nil) != (tc.Result == "valid") {
				// For the sizes we use, the module must agree with the
				// vector, or the wrapper's answers above mean nothing.
				t.Errorf("%s: SoftHSM raw decrypt err = %v, vector is %s", name, rerr, tc.Result)
			}
		}
	}
	if n != f.NumberOfTests || valid == 0 || invalid == 0 || len(usual) == 0 {
		t.Fatalf("ran %d of %d vectors (%d valid, %d invalid)", n, f.NumberOfTests, valid, invalid)
	}

	// Truncated tags (derived, not in the file): t bytes of a valid tag,
	// for each tag length PKCS#11 and SP 800-38D allow below 128 bits.
	for _, s := range usual {
		for _, tl := range []int{4, 8, 12, 13, 14, 15} {
			class := fmt.Sprintf("iv=96 tag=%d derived: valid tag truncated", 8*tl)
			short := append(bytes.Clone(s.ct), s.tag[:tl]...)
			got, err := b.DecryptGCM(c, s.key, s.iv, short, s.aad)
			switch {
			case err == nil:
				wrapper.add(class, "accepted")
				t.Errorf("DecryptGCM accepted a %d-byte tag: %x", tl, got)
			case errors.Is(err, hsm.ErrInvalidInput):
				wrapper.add(class, "refused by wrapper")
			case errors.Is(err, hsm.ErrDecrypt):
				// The wrapper has no tag-size parameter: it always asks
				// the module for a 128-bit tag, so the last 16 bytes are
				// taken as the tag and do not verify.
				wrapper.add(class, "refused by module")
			default:
				t.Fatalf("DecryptGCM with a %d-byte tag: unexpected error %v", tl, err)
			}
			raw, rerr := pkcs11.RawDecryptGCMForTest(b, c, s.key.ID, s.iv, short, s.aad, 8*tl)
			switch {
			case rerr != nil:
				module.add(class, "refused")
			case bytes.Equal(raw, s.msg):
				module.add(class, "accepted")
			default:
				module.add(class, "WRONG PLAINTEXT")
			}
		}
	}

	wrapper.log(t, "Backend.DecryptGCM (custos wrapper) by class")
	module.log(t, "SoftHSM C_Decrypt with the vector's own IV and tag sizes (RawDecryptGCMForTest) by class")
	t.Logf("%d Wycheproof vectors (%d valid, %d invalid) from %s", n, valid, invalid, f.Source)
}

// TestWycheproofAESGCMFile checks the vector file against crypto/cipher, so
// that a corrupted copy shows up as such rather than as a backend failure:
// valid vectors seal to ct||tag and open to msg (with the vector's IV size,
// which crypto/cipher allows from 1 byte up), invalid ones do not open.
func TestWycheproofAESGCMFile(t *testing.T) {
	data, err := os.ReadFile(wycheproofGCMFile)
	if err != nil {
		t.Fatal(err)
	}
	var f wycheproofGCMFileData
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(f.Source, "github.com/C2SP/wycheproof/blob/") || !strings.Contains(f.License, "Apache") {
		t.Fatalf("source %q, license %q", f.Source, f.License)
	}
	for _, g := range f.TestGroups {
		for _, tc := range g.Tests {
			key, iv, aad := unhex(t, tc.Key), unhex(t, tc.IV), unhex(t, tc.AAD)
			msg, ct, tag := unhex(t, tc.Msg), unhex(t, tc.CT), unhex(t, tc.Tag)
			block, err := aes.NewCipher(key)
			if err != nil {
				t.Fatal(err)
			}
			if len(iv) == 0 {
				// crypto/cipher refuses a zero-length nonce outright.
				if _, err := cipher.NewGCMWithNonceSize(block, 0); err == nil || tc.Result != "invalid" {
					t.Errorf("tcId %d: zero-length IV: err = %v, result %s", tc.TcID, err, tc.Result)
				}
				continue
			}
			aead, err := cipher.NewGCMWithNonceSize(block, len(iv))
			if err != nil {
				t.Fatal(err)
			}
			sealed := append(bytes.Clone(ct), tag...)
			got, err := aead.Open(nil, iv, sealed, aad)
			if tc.Result == "valid" {
				if err != nil || !bytes.Equal(got, msg) {
					t.Errorf("tcId %d: Open = %x, %v", tc.TcID, got, err)
				}
				if s := aead.Seal(nil, iv, msg, aad); !bytes.Equal(s, sealed) {
					t.Errorf("tcId %d: Seal = %s", tc.TcID, hex.EncodeToString(s))
				}
			} else if err == nil {
				t.Errorf("tcId %d: invalid vector opens", tc.TcID)
			}
		}
	}
}
