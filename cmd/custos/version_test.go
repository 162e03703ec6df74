package main

import (
	"testing"

	"github.com/custos-kms/custos/internal/version"
)

// `custos version` and `custos --version` print the line custosd prints,
// with the same version, commit and Go release.
func TestVersionCommand(t *testing.T) {
	want := version.String("custos") + "\n"
	for _, args := range [][]string{{"version"}, {"--version"}} {
		r := runCLI(t, "", args...)
		if r.code != 0 || r.stdout != want {
			t.Errorf("custos %v: exit %d, stdout %q, stderr %q; want %q", args, r.code, r.stdout, r.stderr, want)
		}
	}
}
