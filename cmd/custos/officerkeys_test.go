package main

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-kms/custos/kms/governance"
)

// TestReadOfficersKeyFiles: an officers file may name each officer's PEM
// public key file (relative to the officers file), as the custosd
// configuration and officer keygen's entry do, or give the key itself.
func TestReadOfficersKeyFiles(t *testing.T) {
	dir := t.TempDir()
	var b64 []string
	for _, name := range []string{"alice", "bob"} {
		k, err := governance.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".pub.pem"), governance.PublicKeyPEM(&k.PublicKey), 0o644); err != nil {
			t.Fatal(err)
		}
		b64 = append(b64, base64.StdEncoding.EncodeToString(governance.MarshalPublicKey(&k.PublicKey)))
	}
	os.WriteFile(filepath.Join(dir, "junk.pem"), []byte("junk"), 0o644)
	write := func(s string) string {
		p := filepath.Join(dir, "officers.json")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	so, err := readOfficers(write(`{"officers":[{"name":"alice","public_key_file":"alice.pub.pem"},{"name":"bob","public_key":"` + b64[1] + `"}],"quorum":2}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := base64.StdEncoding.EncodeToString(so.GetOfficers()[0].GetPublicKey()); got != b64[0] || so.GetQuorum() != 2 {
		t.Errorf("alice's key from her file: %s, quorum %d", got, so.GetQuorum())
	}
	if _, err := readOfficers(write(`{"officers":[{"name":"bob","public_key_file":"` + filepath.Join(dir, "bob.pub.pem") + `"}],"quorum":1}`)); err != nil {
		t.Errorf("absolute public_key_file: %v", err)
	}
	for _, tc := range []struct{ json, want string }{
		{`{"officers":[{"name":"alice","public_key_file":"none.pem"}],"quorum":1}`, "officers[0].public_key_file"},
		{`{"officers":[{"name":"alice","public_key_file":"junk.pem"}],"quorum":1}`, "officers[0].public_key_file"},
		{`{"officers":[{"name":"alice","public_key_file":"alice.pub.pem","public_key":"` + b64[0] + `"}],"quorum":1}`, "not both"},
		{`{"officers":[{"name":"alice","public_key_file":""}],"quorum":1}`, "want a file name"},
		{`{"officers":[{"name":"alice","public_key_file":"alice.pub.pem","key":"x"}],"quorum":1}`, `"key"`},
	} {
		if _, err := readOfficers(write(tc.json)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.json, err, tc.want)
		}
	}
}
