package softhsm

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestModulePath(t *testing.T) {
	p, err := ModulePath()
	if err != nil {
		t.Fatalf("ModulePath: %v", err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("ModulePath returned %q: %v", p, err)
	}
}

func TestModulePathOverride(t *testing.T) {
	t.Setenv(ModuleEnv, "/nonexistent/libfoo.so")
	_, err := ModulePath()
	if !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("ModulePath with a bad override: err = %v, want ErrNotInstalled", err)
	}
	for _, want := range []string{"/nonexistent/libfoo.so", "install.sh"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	real, _ := filepath.Glob("/usr/lib/*/softhsm/libsofthsm2.so")
	if len(real) > 0 {
		t.Setenv(ModuleEnv, real[0])
		if p, err := ModulePath(); err != nil || p != real[0] {
			t.Fatalf("ModulePath with override %q = %q, %v", real[0], p, err)
		}
	}
}

func TestOpenDirInitToken(t *testing.T) {
	d, err := OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile(d.ConfPath())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"directories.tokendir = " + filepath.Join(d.Path, "tokens"),
		"objectstore.backend = file",
		"log.level = ERROR",
	} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("conf lacks %q:\n%s", want, conf)
		}
	}
	// Reopening is harmless.
	if _, err := OpenDir(d.Path); err != nil {
		t.Fatal(err)
	}

	tok, err := d.InitToken("first", "12345678", "1234")
	if err != nil {
		t.Fatal(err)
	}
	if tok.Label != "first" || tok.PIN != "1234" || tok.SOPIN != "12345678" || tok.Dir != d || tok.Module == "" {
		t.Fatalf("token = %+v", tok)
	}
	if _, err := d.InitToken("second token", "12345678", "1234"); err != nil {
		t.Fatal(err)
	}
	// Idempotent: same label again does not add a token.
	if _, err := d.InitToken("first", "12345678", "1234"); err != nil {
		t.Fatal(err)
	}
	labels, err := d.Labels()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(labels)
	if !slices.Equal(labels, []string{"first", "second token"}) {
		t.Fatalf("labels = %q", labels)
	}
}

func TestInitTokenBadInput(t *testing.T) {
	d, err := OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ label, so, pin string }{
		{"", "12345678", "1234"},
		{strings.Repeat("x", 33), "12345678", "1234"},
		{"ok", "1", "1234"},
		{"ok", "12345678", ""},
	} {
		if _, err := d.InitToken(tc.label, tc.so, tc.pin); err == nil {
			t.Errorf("InitToken(%q, %q, %q) succeeded", tc.label, tc.so, tc.pin)
		}
	}
}

func TestRedact(t *testing.T) {
	got := redact([]string{"--init-token", "--so-pin", "s3cret", "--pin", "p1n", "--label", "x"})
	if strings.Contains(got, "s3cret") || strings.Contains(got, "p1n") {
		t.Fatalf("redact leaked a PIN: %q", got)
	}
}

func TestTestToken(t *testing.T) {
	a := TestToken(t)
	b := TestToken(t)
	if a.Label == b.Label {
		t.Fatalf("TestToken returned the same label twice: %q", a.Label)
	}
	if a.Dir != b.Dir {
		t.Fatal("TestToken used two Dirs in one process")
	}
	if got := os.Getenv(ConfEnv); got != a.Dir.ConfPath() {
		t.Fatalf("%s = %q, want %q", ConfEnv, got, a.Dir.ConfPath())
	}
	labels, err := a.Dir.Labels()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(labels, a.Label) || !slices.Contains(labels, b.Label) {
		t.Fatalf("labels %q lack %q or %q", labels, a.Label, b.Label)
	}
}

func TestInstallScriptIdempotent(t *testing.T) {
	if _, err := exec.LookPath("pkcs11-tool"); err != nil {
		t.Fatalf("pkcs11-tool missing: %s", InstallHint)
	}
	out, err := exec.Command("sh", "install.sh").CombinedOutput()
	if err != nil {
		t.Fatalf("install.sh: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "already installed") {
		t.Fatalf("install.sh on an installed machine said:\n%s", out)
	}
}

func TestInitTokenScript(t *testing.T) {
	dir := t.TempDir()
	for range 2 { // the second run finds the token and leaves it alone
		out, err := exec.Command("sh", "init-token.sh", dir, "script token", "4321").CombinedOutput()
		if err != nil {
			t.Fatalf("init-token.sh: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "export SOFTHSM2_CONF="+filepath.Join(dir, "softhsm2.conf")) {
			t.Fatalf("init-token.sh did not print the SOFTHSM2_CONF line:\n%s", out)
		}
	}
	d, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	labels, err := d.Labels()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(labels, []string{"script token"}) {
		t.Fatalf("labels after two runs = %q", labels)
	}
	if out, err := exec.Command("sh", "init-token.sh", dir).CombinedOutput(); err == nil {
		t.Fatalf("init-token.sh without a label succeeded:\n%s", out)
	}
}
