package version

import (
	"runtime"
	"strings"
	"testing"
)

// The line both binaries print names the program, the version, the commit
// and the Go release; the -ldflags values win over build info.
func TestString(t *testing.T) {
	oldV, oldC := version, commit
	t.Cleanup(func() { version, commit = oldV, oldC })
	version, commit = "v1.2.3", "0123456789abcdef0123456789abcdef01234567"
	got := String("custosd")
	want := "custosd v1.2.3 (commit 0123456789abcdef0123456789abcdef01234567, " + runtime.Version() + ")"
	if got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
	version, commit = "", ""
	if v := Version(); v == "" {
		t.Fatal("an unstamped build has an empty version")
	}
	if s := String("custos"); !strings.HasPrefix(s, "custos ") || !strings.HasSuffix(s, runtime.Version()+")") {
		t.Fatalf("unstamped String = %q", s)
	}
}
