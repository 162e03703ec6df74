package pkcs11_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"

	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/hsm/pkcs11"
)

// gcmVector is an AES-256-GCM known answer with a 96-bit IV and a 128-bit tag.
type gcmVector struct {
	name                      string
	key, iv, pt, aad, ct, tag string
}

// Sources:
//   - "CAVP ..." entries: NIST CAVP GCMVS, gcmEncryptExtIV256.rsp
//     (https://csrc.nist.gov/Projects/Cryptographic-Algorithm-Validation-Program/CAVP-TESTING-BLOCK-CIPHER-MODES#GCMVS),
//     [Keylen = 256] [IVlen = 96] [AADlen = 0] [Taglen = 128], the PTlen and
//     Count given in the name.
//   - "GCM spec TC..." entries: McGrew & Viega, "The Galois/Counter Mode of
//     Operation (GCM)", the specification submitted to NIST, Appendix B test
//     cases 13, 14 and 16 (AES-256; 16 has AAD).
//
// Each vector is first checked against crypto/cipher (so a transcription
// error shows up as such), then run through SoftHSM.
var gcmVectors = []gcmVector{
	{
		name: "CAVP PTlen=128 Count=0",
		key:  "31bdadd96698c204aa9ce1448ea94ae1fb4a9a0b3c9d773b51bb1822666b8f22",
		iv:   "0d18e06c7c725ac9e362e1ce",
		pt:   "2db5168e932556f8089a0622981d017d",
		ct:   "fa4362189661d163fcd6a56d8bf0405a",
		tag:  "d636ac1bbedd5cc3ee727dc2ab4a9489",
	},
	{
		name: "CAVP PTlen=104 Count=3",
		key:  "e5a0eb92cc2b064e1bc80891faf1fab5e9a17a9c3a984e25416720e30e6c2b21",
		iv:   "4742357c335913153ff0eb0f",
		pt:   "8499893e16b0ba8b007d54665a",
		ct:   "eb8e6175f1fe38eb1acf95fd51",
		tag:  "88a8b74bb74fda553e91020a23deed45",
	},
	{
		name: "CAVP PTlen=256 Count=6",
		key:  "37f39137416bafde6f75022a7a527cc593b6000a83ff51ec04871a0ff5360e4e",
		iv:   "a291484c3de8bec6b47f525f",
		pt:   "fafd94cede8b5a0730394bec68a8e77dba288d6ccaa8e1563a81d6e7ccc7fc97",
		ct:   "44dc868006b21d49284016565ffb3979cc4271d967628bf7cdaf86db888e92e5",
		tag:  "01a2b578aa2f41ec6379a44a31cc019c",
	},
	{
		name: "CAVP PTlen=408 Count=8",
		key:  "595f259c55abe00ae07535ca5d9b09d6efb9f7e9abb64605c337acbd6b14fc7e",
		iv:   "92f258071d79af3e63672285",
		pt:   "a6fee33eb110a2d769bbc52b0f36969c287874f665681477a25fc4c48015c541fbe2394133ba490a34ee2dd67b898177849a91",
		ct:   "bbca4a9e09ae9690c0f6f8d405e53dccd666aa9c5fa13c8758bc30abe1ddd1bcce0d36a1eaaaaffef20cd3c5970b9673f8a65c",
		tag:  "26ccecb9976fd6ac9c2c0f372c52c821",
	},
	{
		name: "GCM spec TC13 (empty)",
		key:  "0000000000000000000000000000000000000000000000000000000000000000",
		iv:   "000000000000000000000000",
		tag:  "530f8afbc74536b9a963b4f1c4cb738b",
	},
	{
		name: "GCM spec TC14",
		key:  "0000000000000000000000000000000000000000000000000000000000000000",
		iv:   "000000000000000000000000",
		pt:   "00000000000000000000000000000000",
		ct:   "cea7403d4d606b6e074ec5d3baf39d18",
		tag:  "d0d1c8a799996bf0265b98b5d48ab919",
	},
	{
		name: "GCM spec TC16 (AAD)",
		key:  "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
		iv:   "cafebabefacedbaddecaf888",
		pt: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72" +
			"1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
		aad: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
		ct: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa" +
			"8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
		tag: "76fc6ece0f4e1768cddf8853bb2d551b",
	},
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func TestGCMKnownAnswers(t *testing.T) {
	b, _ := open(t)
	c := testCtx(t)
	for i, v := range gcmVectors {
		t.Run(v.name, func(t *testing.T) {
			key, iv, pt, aad := unhex(t, v.key), unhex(t, v.iv), unhex(t, v.pt), unhex(t, v.aad)
			want := append(unhex(t, v.ct), unhex(t, v.tag)...)

			// The vector itself, checked against the Go standard library.
			block, err := aes.NewCipher(key)
			if err != nil {
				t.Fatal(err)
			}
			aead, err := cipher.NewGCM(block)
			if err != nil {
				t.Fatal(err)
			}
			if got := aead.Seal(nil, iv, pt, aad); !bytes.Equal(got, want) {
				t.Fatalf("vector transcription error: crypto/cipher gives %x, vector says %x", got, want)
			}

			id := fmt.Appendf(nil, "kat-%d", i)
			ref, err := pkcs11.ImportAESKeyForTest(b, c, id, key)
			if err != nil {
				t.Fatalf("import key: %v", err)
			}
			// The check value computed in the HSM is the documented one.
			if want := kekCheckValue(t, key); !bytes.Equal(ref.CheckValue, want) {
				t.Fatalf("key check value = %x, want %x", ref.CheckValue, want)
			}
			got, err := b.EncryptGCM(c, ref, iv, pt, aad)
			if err != nil {
				t.Fatalf("EncryptGCM: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("EncryptGCM = %x, want %x", got, want)
			}
			dec, err := b.DecryptGCM(c, ref, iv, want, aad)
			if err != nil {
				t.Fatalf("DecryptGCM: %v", err)
			}
			if !bytes.Equal(dec, pt) {
				t.Fatalf("DecryptGCM = %x, want %x", dec, pt)
			}

			// Wycheproof-style invalid cases (aes_gcm_test.json "modified
			// tag" groups): every single-bit flip of the tag, the tag
			// zeroed, and the tag replaced by the ciphertext's first block,
			// must be rejected.
			ctLen := len(want) - hsm.GCMTagSize
			var bad [][]byte
			for bit := 0; bit < 8*hsm.GCMTagSize; bit += 7 {
				m := bytes.Clone(want)
				m[ctLen+bit/8] ^= 1 << (bit % 8)
				bad = append(bad, m)
			}
			bad = append(bad, append(bytes.Clone(want[:ctLen]), make([]byte, hsm.GCMTagSize)...))
			if ctLen >= hsm.GCMTagSize {
				bad = append(bad, append(bytes.Clone(want[:ctLen]), want[:hsm.GCMTagSize]...))
			}
			for _, m := range bad {
				if _, err := b.DecryptGCM(c, ref, iv, m, aad); !errors.Is(err, hsm.ErrDecrypt) {
					t.Fatalf("DecryptGCM with tag %x: err = %v, want ErrDecrypt", m[ctLen:], err)
				}
			}
		})
	}
}
