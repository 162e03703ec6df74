package main

import (
	"strings"
	"testing"
)

// TestHelpDefaultsOnce: in every command's help, each flag shows its
// default at most once, and never the zero value a flag uses to mean its
// real default ("(default 1h) (default 0s)").
func TestHelpDefaultsOnce(t *testing.T) {
	clearEnv(t)
	check := func(name string, out string) {
		t.Helper()
		for _, line := range strings.Split(out, "\n") {
			if strings.Count(line, "(default") > 1 {
				t.Errorf("%s: two defaults: %q", name, line)
			}
			for _, zero := range []string{"(default 0)", "(default 0s)", "(default false)", "(default )", "h0m0s"} {
				if strings.Contains(line, zero) {
					t.Errorf("%s: %q shows %q", name, line, zero)
				}
			}
		}
	}
	for _, c := range commands {
		r := runCLI(t, "", append(strings.Fields(c.name), "--help")...)
		r.want(t, 0)
		check(c.name, r.stdout)
	}
	r := runCLI(t, "", "--help")
	check("custos", r.stdout)

	// The flags the defaults were doubled on, now shown once and right.
	for _, tc := range []struct {
		cmd  []string
		want []string
	}{
		{[]string{"officer", "approve"}, []string{"how long the grant lasts (default 1h)\n", "decrypts the grant allows (default 1)\n", "at most 168h) (default 1h)\n"}},
		{[]string{"officer", "grant"}, []string{"how long the grant lasts (default 1h)\n", "decrypts the grant allows (default 1)\n"}},
		{[]string{"audit", "list"}, []string{"start at ledger sequence number SEQ (default 1)\n", "(0 for all) (default 100)\n"}},
		{[]string{"encrypt"}, []string{"plaintext bytes per segment (default 65536)\n"}},
		{[]string{"decrypt"}, []string{"give up after this long (default 1h)\n", "was decided (default 1s)\n"}},
	} {
		r := runCLI(t, "", append(tc.cmd, "--help")...)
		r.want(t, 0, tc.want...)
	}
}
