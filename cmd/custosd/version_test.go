package main

import (
	"bytes"
	"testing"

	"github.com/custos-kms/custos/internal/version"
)

// `custosd version` and `custosd --version` print the version line.
func TestVersionCommand(t *testing.T) {
	want := version.String("custosd") + "\n"
	for _, args := range [][]string{{"version"}, {"--version"}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 0 || out.String() != want {
			t.Errorf("custosd %v: exit %d, stdout %q, stderr %q; want %q", args, code, out.String(), errb.String(), want)
		}
	}
}
