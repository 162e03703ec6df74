package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-kms/custos/internal/pki"
	"github.com/custos-kms/custos/softhsm"
)

// TestServeRefusesBadHSMSettings starts `custosd serve` on a real SoftHSM
// token with a wrong PIN and with a label no token has: each exits with
// status 1 and one clear line on stderr (the PIN refused, never printed;
// the labels present), without a panic and without bootstrapping a
// cluster in the data directory.
func TestServeRefusesBadHSMSettings(t *testing.T) {
	tok := softhsm.TestToken(t)
	dir := t.TempDir()
	if err := pki.CreateDevPKI(filepath.Join(dir, "pki"), []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	const wrongPIN = "not-the-pin-4711"
	for name, data := range map[string]string{"wrong-pin": wrongPIN + "\n", "pin": tok.PIN + "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// SoftHSM finds the test token through SOFTHSM2_CONF, set for this
	// process by softhsm.TestToken.
	serve := func(label, pinFile string) (int, string) {
		cfg := `{"id":"n1","data_dir":"data","listen":"127.0.0.1:0","bootstrap":true,
			"pkcs11":{"module":"` + tok.Module + `","token_label":"` + label + `","pin_file":"` + pinFile + `"},
			"tls":{"ca":"pki/ca.pem","cert":"pki/server.pem","key":"pki/server-key.pem"}}`
		path := filepath.Join(dir, "custosd.json")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		code := run([]string{"serve", "--config", path}, &out, &errb)
		t.Logf("exit %d: %s", code, errb.String())
		return code, errb.String()
	}
	raftState := func() bool {
		ents, _ := os.ReadDir(filepath.Join(dir, "data", "raft"))
		return len(ents) > 0
	}

	code, stderr := serve(tok.Label, "wrong-pin")
	if code != 1 || !strings.Contains(stderr, "PIN refused") || strings.Count(strings.TrimSpace(stderr), "\n") > 3 {
		t.Errorf("wrong PIN: exit %d, stderr %q; want 1 and a short message saying the PIN was refused", code, stderr)
	}
	if strings.Contains(stderr, wrongPIN) || strings.Contains(stderr, tok.PIN) {
		t.Errorf("wrong PIN: stderr shows a PIN: %q", stderr)
	}
	if raftState() {
		t.Error("wrong PIN: the node created Raft state before its HSM opened")
	}

	code, stderr = serve("no-such-token", "pin")
	if code != 1 || !strings.Contains(stderr, `"no-such-token"`) || !strings.Contains(stderr, tok.Label) {
		t.Errorf("unknown token: exit %d, stderr %q; want 1, naming the label asked for and the labels present", code, stderr)
	}
	if strings.Contains(stderr, tok.PIN) {
		t.Errorf("unknown token: stderr shows the PIN: %q", stderr)
	}
	if raftState() {
		t.Error("unknown token: the node created Raft state before its HSM opened")
	}
}
