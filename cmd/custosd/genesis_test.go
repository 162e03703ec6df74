package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-kms/custos/internal/pki"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// The configuration's genesis names a statement file the officers signed:
// loaded and checked at start, and exclusive with officers, quorum,
// profile and client_authorities (the genesis names them).
func TestConfigGenesis(t *testing.T) {
	dir := t.TempDir()
	if err := pki.CreateDevPKI(filepath.Join(dir, "pki"), nil); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"module.so": nil, "pin": []byte("1234\n")} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	k, err := governance.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alice.pub.pem"), governance.PublicKeyPEM(&k.PublicKey), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := governance.NewStatement("00112233445566778899aabbccddeeff", time.Hour, "")
	if err != nil {
		t.Fatal(err)
	}
	st.Operation = &custosv1.Statement_CreateCluster{CreateCluster: &custosv1.CreateCluster{
		Officers: []*custosv1.Officer{{Name: "alice", PublicKey: governance.MarshalPublicKey(&k.PublicKey)}}, Quorum: 1}}
	b, err := governance.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	f, err := governance.NewFile(b)
	if err != nil {
		t.Fatal(err)
	}
	unsigned := filepath.Join(dir, "unsigned.json")
	if err := governance.WriteFile(unsigned, f); err != nil {
		t.Fatal(err)
	}
	sig, err := governance.Sign(k, "alice", b)
	if err != nil {
		t.Fatal(err)
	}
	f.AddSignature(sig)
	signed := filepath.Join(dir, "genesis.json")
	if err := governance.WriteFile(signed, f); err != nil {
		t.Fatal(err)
	}
	base := `{"id":"n1","data_dir":"data","listen":"127.0.0.1:7400",
		"pkcs11":{"module":"module.so","token_label":"t","pin_file":"pin"},
		"tls":{"ca":"pki/ca.pem","cert":"pki/server.pem","key":"pki/server-key.pem"}`
	write := func(extra string) string {
		p := filepath.Join(dir, "custosd.json")
		if err := os.WriteFile(p, []byte(base+extra+"}"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	none := func(string) string { return "" }
	cfg, err := loadConfig(write(`,"genesis":"genesis.json"`), none)
	if err != nil || cfg.Genesis == nil || len(cfg.Genesis.Signatures) != 1 {
		t.Fatalf("a signed genesis: %v, %v", cfg.Genesis, err)
	}
	for extra, want := range map[string]string{
		`,"genesis":"unsigned.json"`: "genesis",
		`,"genesis":"genesis.json","officers":[{"name":"alice","public_key_file":"alice.pub.pem"}],"quorum":1`: "leave officers",
		`,"genesis":"genesis.json","profile":"development"`:                                                    "leave officers",
		`,"genesis":"missing.json"`: "genesis",
	} {
		if _, err := loadConfig(write(extra), none); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error saying %q", extra, err, want)
		}
	}
}
