package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-kms/custos/hsm/pkcs11/qualify"
	"github.com/custos-kms/custos/softhsm"
)

func TestMain(m *testing.M) {
	// hsm check runs this binary again as its second process.
	qualify.MaybeChild()
	maybeCLIChild()
	os.Exit(m.Run())
}

// pinFile writes pin to a file and returns its path.
func pinFile(t *testing.T, pin string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(p, []byte(pin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHSMCheck(t *testing.T) {
	tok := softhsm.TestToken(t)
	pin, so := pinFile(t, tok.PIN), pinFile(t, tok.SOPIN)
	base := []string{"hsm", "check", "--module", tok.Module, "--token", tok.Label, "--pin-file", pin,
		"--workers", "2", "--ops", "20"}

	r := runCLI(t, "", append(base, "--so-pin-file", so, "--require", "development")...)
	r.want(t, 0, "RSA-OAEP-SHA256", "CKR_ARGUMENTS_BAD (0x7)", "Profile development: MET",
		"Verdict: development profile only")
	if strings.Contains(r.stdout+r.stderr, tok.SOPIN) {
		t.Error("the output shows the SO PIN")
	}

	// The verdict does not change the exit code unless --require says so.
	runCLI(t, "", append(base, "--require", "production")...).want(t, 1,
		"does not meet the production profile")

	r = runCLI(t, "", append(base, "--json")...)
	r.want(t, 0)
	var rep struct {
		Results []struct{ ID, Status, Code string }
		Summary string
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("--json: %v\n%s", err, r.stdout)
	}
	if len(rep.Results) < 20 || rep.Summary == "" {
		t.Errorf("--json: %d results, summary %q", len(rep.Results), rep.Summary)
	}

	t.Setenv("HSMCHECK_TEST_PIN", tok.PIN)
	runCLI(t, "", "hsm", "check", "--module", tok.Module, "--token", tok.Label,
		"--pin-env", "HSMCHECK_TEST_PIN", "--workers", "1", "--ops", "1").want(t, 0, "Verdict:")
}

func TestHSMCheckBadInput(t *testing.T) {
	tok := softhsm.TestToken(t)
	pin := pinFile(t, tok.PIN)
	bad := pinFile(t, "99999999")
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--module", "/nonexistent.so", "--token", tok.Label, "--pin-file", pin}, 1, "cannot load PKCS#11 module"},
		{[]string{"--module", tok.Module, "--token", "no-such-token", "--pin-file", pin}, 1, "token not found"},
		{[]string{"--module", tok.Module, "--token", tok.Label, "--pin-file", bad}, 1, "CKR_PIN_INCORRECT"},
		{[]string{"--module", tok.Module, "--token", tok.Label, "--pin-file", "/nonexistent"}, 1, "PIN file"},
		{[]string{"--module", tok.Module, "--pin-file", pin}, 2, "--token is required"},
		{[]string{"--module", tok.Module, "--token", tok.Label, "--pin-file", pin, "--require", "gold"}, 2, "--require"},
	}
	for _, c := range cases {
		r := runCLI(t, "", append([]string{"hsm", "check"}, c.args...)...)
		r.want(t, c.code, c.want)
		if n := strings.Count(strings.TrimSpace(r.stderr), "\n"); c.code == 1 && n > 0 {
			t.Errorf("%v: %d lines on stderr, want one: %q", c.args, n+1, r.stderr)
		}
		if strings.Contains(r.stderr, "99999999") {
			t.Errorf("%v: stderr shows a PIN: %q", c.args, r.stderr)
		}
	}
}
