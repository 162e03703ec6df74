package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// TestCustosdHelp: every command's help shows its flags with two dashes;
// `custosd dev --help` shows the flags of both modes (single node and
// --nodes); `custosd help COMMAND` is `custosd COMMAND --help`.
func TestCustosdHelp(t *testing.T) {
	devFlagsAll := []string{"--data-dir DIR", "--listen ADDR", "--log-level LEVEL", "--nodes N", "--base-port PORT", "--xks ADDR", "--xks-mtls"}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"dev", "--help"}, devFlagsAll},
		{[]string{"dev", "-h"}, devFlagsAll},
		{[]string{"dev", "--nodes", "3", "--help"}, devFlagsAll},
		{[]string{"help", "dev"}, devFlagsAll},
		{[]string{"serve", "--help"}, []string{"--config FILE", "--log-format FORMAT", "--log-level LEVEL"}},
		{[]string{"help", "serve"}, []string{"--config FILE"}},
		{[]string{"help", "restore"}, []string{"--config FILE", "--snapshot FILE"}},
	} {
		var out, errb bytes.Buffer
		if code := run(tc.args, &out, &errb); code != 0 {
			t.Errorf("%q: exit %d, want 0 (stderr %q)", tc.args, code, errb.String())
			continue
		}
		help := out.String() + errb.String()
		for _, w := range tc.want {
			if !strings.Contains(help, "\n  "+w+"\n") {
				t.Errorf("%q: help lacks flag %q:\n%s", tc.args, w, help)
			}
		}
		for _, line := range strings.Split(help, "\n") {
			if strings.HasPrefix(line, "  -") && !strings.HasPrefix(line, "  --") {
				t.Errorf("%q: single-dash flag line %q", tc.args, line)
			}
			if strings.Count(line, "(default") > 1 {
				t.Errorf("%q: two defaults in %q", tc.args, line)
			}
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"help"}, &out, &errb); code != 0 || !strings.Contains(out.String(), `"custosd help COMMAND"`) {
		t.Errorf("help: exit %d, stdout %q", code, out.String())
	}
	// Each mode refuses the other's flags, and a bad --log-level, before
	// anything starts.
	dir := filepath.Join(t.TempDir(), "dev")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"dev", "--data-dir", dir, "--base-port", "7000"}, "--base-port goes with --nodes"},
		{[]string{"dev", "--data-dir", dir, "--nodes", "3", "--listen", "127.0.0.1:0"}, "--listen is for the single node"},
		{[]string{"dev", "--data-dir", dir, "--log-level", "loud"}, `--log-level must be debug, info, warn or error, not "loud"`},
		{[]string{"dev", "--data-dir", dir, "--nodes", "3", "--log-level", "loud"}, "--log-level must be"},
		{[]string{"dev", "--data-dir", dir, "--nodes", "3", "--xks", "127.0.0.1:0"}, "--xks and --xks-mtls are for the single node"},
		{[]string{"dev", "--data-dir", dir, "--xks-mtls"}, "--xks-mtls goes with --xks ADDR"},
	} {
		var out, errb bytes.Buffer
		if code := run(tc.args, &out, &errb); code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", tc.args, code, errb.String(), tc.want)
		}
	}
	if m, _ := filepath.Glob(dir); len(m) != 0 {
		t.Errorf("a refused custosd dev created %s", dir)
	}
}
