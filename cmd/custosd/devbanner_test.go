package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDevNextSteps: the dev banner's next steps load client.env and put
// the custos CLI on PATH (the directory of custosd when custos is beside
// it, as after make build; else make build's bin/) before any custos
// command.
func TestDevNextSteps(t *testing.T) {
	env := "/home/you/custos/.dev/client.env"
	got := devNextSteps(env, "/home/you/custos/bin", "custos key create payroll")
	want := "In another shell:\n  source " + env + "\n  export PATH=/home/you/custos/bin:$PATH\n  custos key create payroll\n"
	if got != want {
		t.Errorf("devNextSteps = %q, want %q", got, want)
	}
	got = devNextSteps("/tmp/a b/client.env", "/opt/my bin", "custos cluster status")
	if !strings.Contains(got, "source '/tmp/a b/client.env'\n") || !strings.Contains(got, "export PATH='/opt/my bin':$PATH\n") {
		t.Errorf("paths with spaces are not quoted: %q", got)
	}
	got = devNextSteps(env, "", "custos key create payroll")
	if !strings.Contains(got, "  make build && export PATH=$PWD/bin:$PATH") ||
		strings.Index(got, "export PATH") > strings.Index(got, "custos key create") {
		t.Errorf("without a custos binary: %q", got)
	}

	// cliDirOf finds an executable custos beside custosd only.
	bin := t.TempDir()
	custosd := filepath.Join(bin, "custosd")
	for _, f := range []string{custosd, filepath.Join(bin, "custos.txt")} {
		if err := os.WriteFile(f, nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if d := cliDirOf(custosd); d != "" {
		t.Errorf("cliDirOf without custos = %q", d)
	}
	if err := os.WriteFile(filepath.Join(bin, "custos"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if d := cliDirOf(custosd); d != "" {
		t.Errorf("cliDirOf with a custos that is not executable = %q", d)
	}
	if err := os.Chmod(filepath.Join(bin, "custos"), 0o755); err != nil {
		t.Fatal(err)
	}
	real, _ := filepath.EvalSymlinks(bin)
	if d := cliDirOf(custosd); d != real {
		t.Errorf("cliDirOf = %q, want %q", d, real)
	}
}
