package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-kms/custos/internal/pki"
)

// TestLoadConfigRaftAdvertise: raft_advertise reaches node.Config and a
// value other nodes could not dial is refused with the field named.
func TestLoadConfigRaftAdvertise(t *testing.T) {
	dir := t.TempDir()
	if err := pki.CreateDevPKI(filepath.Join(dir, "pki"), nil); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"module.so": "", "pin": "1234\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write := func(extra string) string {
		p := filepath.Join(dir, "custosd.json")
		s := `{"id":"n1","data_dir":"data","listen":"127.0.0.1:7400","raft_addr":"127.0.0.1:7411",
			"pkcs11":{"module":"module.so","token_label":"t","pin_file":"pin"},
			"tls":{"ca":"pki/ca.pem","cert":"pki/server.pem","key":"pki/server-key.pem"}` + extra + `}`
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	none := func(string) string { return "" }
	cfg, err := loadConfig(write(""), none)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RaftAdvertise != "" {
		t.Errorf("RaftAdvertise = %q without raft_advertise", cfg.RaftAdvertise)
	}
	cfg, err = loadConfig(write(`,"raft_advertise":"127.0.0.1:9411"`), none)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RaftAddr != "127.0.0.1:7411" || cfg.RaftAdvertise != "127.0.0.1:9411" {
		t.Errorf("RaftAddr %q, RaftAdvertise %q", cfg.RaftAddr, cfg.RaftAdvertise)
	}
	for _, bad := range []string{"9411", ":9411", "127.0.0.1:0", "127.0.0.1"} {
		_, err := loadConfig(write(`,"raft_advertise":"`+bad+`"`), none)
		if err == nil || !strings.Contains(err.Error(), `"raft_advertise"`) {
			t.Errorf("raft_advertise %q: err = %v, want one naming the field", bad, err)
		}
	}
}
