package governance_test

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"

	"github.com/custos-kms/custos/kms/governance"
)

// TestWycheproofECDSAP256 runs a subset of Project Wycheproof's
// ecdsa_secp256r1_sha256 (DER) vectors through VerifyECDSA, the primitive
// OfficerSet.Verify uses. Source and selection: see the file's "source" and
// "note" fields.
func TestWycheproofECDSAP256(t *testing.T) {
	data, err := os.ReadFile("testdata/wycheproof_ecdsa_secp256r1_sha256_subset.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Source        string `json:"source"`
		NumberOfTests int    `json:"numberOfTests"`
		TestGroups    []struct {
			PublicKeyDer string `json:"publicKeyDer"`
			Sha          string `json:"sha"`
			Tests        []struct {
				TcID    int      `json:"tcId"`
				Comment string   `json:"comment"`
				Flags   []string `json:"flags"`
				Msg     string   `json:"msg"`
				Sig     string   `json:"sig"`
				Result  string   `json:"result"`
			} `json:"tests"`
		} `json:"testGroups"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	n, valid, invalid := 0, 0, 0
	for _, g := range f.TestGroups {
		if g.Sha != "SHA-256" {
			t.Fatalf("group hash %s", g.Sha)
		}
		der, _ := hex.DecodeString(g.PublicKeyDer)
		pub, perr := governance.ParsePublicKey(der)
		for _, tc := range g.Tests {
			n++
			msg, err1 := hex.DecodeString(tc.Msg)
			sig, err2 := hex.DecodeString(tc.Sig)
			if err1 != nil || err2 != nil {
				t.Fatalf("tcId %d: bad hex", tc.TcID)
			}
			got := perr == nil && governance.VerifyECDSA(pub, msg, sig)
			switch tc.Result {
			case "valid":
				valid++
				if !got {
					t.Errorf("tcId %d (%s %v): valid signature refused (key err %v)", tc.TcID, tc.Comment, tc.Flags, perr)
				}
			case "invalid":
				invalid++
				if got {
					t.Errorf("tcId %d (%s %v): invalid signature accepted", tc.TcID, tc.Comment, tc.Flags)
				}
			default:
				t.Errorf("tcId %d: result %q not used in this subset", tc.TcID, tc.Result)
			}
		}
	}
	if n != f.NumberOfTests || valid == 0 || invalid == 0 {
		t.Fatalf("ran %d of %d vectors (%d valid, %d invalid)", n, f.NumberOfTests, valid, invalid)
	}
	t.Logf("%d Wycheproof vectors (%d valid, %d invalid) from %s", n, valid, invalid, f.Source)
}
