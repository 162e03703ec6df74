package governance_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// TestPKCS11Signer makes an officer token and keys with the command-line
// tools only (softhsm2-util, pkcs11-tool: separate processes), then signs
// through crypto11 in this process. It deliberately does not use
// softhsm.TestToken or hsm/pkcs11, which initialise the module in-process:
// crypto11 initialises and finalises it itself.
func TestPKCS11Signer(t *testing.T) {
	module := os.Getenv("CUSTOS_PKCS11_MODULE")
	if module == "" {
		module = "/usr/lib/softhsm/libsofthsm2.so"
	}
	for _, p := range []string{module} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("SoftHSM2 module not installed (%v); run `make test` or softhsm/install.sh", err)
		}
	}
	for _, tool := range []string{"softhsm2-util", "pkcs11-tool"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed; run `make test` or softhsm/install.sh", tool)
		}
	}
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.WriteFile(conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Before crypto11 loads the module (SoftHSM reads it at C_Initialize).
	t.Setenv("SOFTHSM2_CONF", conf)

	const label, pin, soPin = "officer-token", "123456", "654321"
	run := func(name string, args ...string) {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	run("softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", soPin)
	run("pkcs11-tool", "--module", module, "--login", "--pin", pin, "--token-label", label,
		"--keypairgen", "--key-type", "EC:prime256v1", "--label", "officer1", "--id", "01")
	run("pkcs11-tool", "--module", module, "--login", "--pin", pin, "--token-label", label,
		"--keypairgen", "--key-type", "EC:secp384r1", "--label", "officer384", "--id", "02")

	// A wrong PIN, before any context is logged in (PKCS#11 login state is
	// per application, so a later wrong PIN would ride on the open login).
	_, _, err := governance.OpenPKCS11Signer(module, label, "000000", "officer1")
	if err == nil {
		t.Fatal("wrong PIN accepted")
	} else if strings.Contains(err.Error(), "000000") {
		t.Errorf("error shows the PIN: %v", err)
	}

	signer, closer, err := governance.OpenPKCS11Signer(module, label, pin, "officer1")
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	pub, err := governance.ParsePublicKey(governance.MarshalPublicKey(mustECDSAPub(t, signer.Public())))
	if err != nil {
		t.Fatal(err)
	}
	set, err := governance.NewOfficerSet([]*custosv1.Officer{
		{Name: "hsm-officer", PublicKey: governance.MarshalPublicKey(pub)},
		{Name: "alice", PublicKey: governance.MarshalPublicKey(&deterministicKey(t, "alice").PublicKey)},
	}, 2)
	if err != nil {
		t.Fatal(err)
	}
	b := mustMarshal(t, statement(&custosv1.EnableKey{Key: "payroll"}))
	sig, err := governance.Sign(signer, "hsm-officer", b)
	if err != nil {
		t.Fatal(err)
	}
	alice, _ := governance.Sign(deterministicKey(t, "alice"), "alice", b)
	_, signers, err := set.Verify(&custosv1.SignedStatement{Statement: b, Signatures: []*custosv1.OfficerSignature{sig, alice}}, testCluster, testNow)
	if err != nil || len(signers) != 2 {
		t.Fatalf("verify: %v %v", signers, err)
	}

	// The P-384 key on the same token is refused; so is a missing label.
	// (crypto11 counts module references, so a second context is fine.)
	if _, _, err := governance.OpenPKCS11Signer(module, label, pin, "officer384"); !errors.Is(err, governance.ErrBadKey) {
		t.Errorf("P-384 key: %v", err)
	}
	if _, _, err := governance.OpenPKCS11Signer(module, label, pin, "nobody"); !errors.Is(err, governance.ErrBadKey) {
		t.Errorf("missing key: %v", err)
	}
}
