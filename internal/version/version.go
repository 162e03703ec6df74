// Package version says which build of custos is running: the release
// version and commit that `make build` and `make dist` stamp in with
// -ldflags, else what the Go toolchain recorded (the VCS revision of a
// `go build` in a checkout), else "dev". custos, custosd and every front
// door that names the product (XKS health, the Kubernetes plugin) report
// the same thing.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set with -ldflags "-X github.com/custos-kms/custos/internal/version.version=v1.2.3
// -X github.com/custos-kms/custos/internal/version.commit=<sha>"
// (Makefile: git describe --tags --always --dirty, git rev-parse HEAD).
var (
	version = ""
	commit  = ""
)

// Version is the release version ("v0.3.0", "v0.3.0-4-gabcdef012345"), or
// "dev" for a build that was not stamped and carries no module version.
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// Commit is the full commit hash the build came from, or "" when unknown.
// A build from a checkout with uncommitted changes says so ("<sha>-dirty").
func Commit() string {
	if commit != "" {
		return commit
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	var rev string
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev != "" && dirty {
		rev += "-dirty"
	}
	return rev
}

// Go is the Go release the binary was built with.
func Go() string { return runtime.Version() }

// String is the one line both binaries print for `version` and
// `--version`: "<program> <version> (commit <commit>, <go version>)".
func String(program string) string {
	c := Commit()
	if c == "" {
		c = "unknown"
	}
	return fmt.Sprintf("%s %s (commit %s, %s)", program, Version(), c, Go())
}
