// Package version says which build of custos is running, for the binaries
// and for every front door that names the product (the XKS health
// response's model strings).
package version

import "runtime/debug"

// version is set at link time:
//
//	go build -ldflags "-X github.com/custos-kms/custos/internal/version.version=v1.2.3"
var version = ""

// Version is the -ldflags version if the build set one, else the VCS
// revision the Go toolchain recorded (a `go build` in a checkout; with
// "-dirty" for uncommitted changes), else "dev".
func Version() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	return fromSettings(bi.Settings)
}

// fromSettings is Version's fallback from the build settings.
func fromSettings(settings []debug.BuildSetting) string {
	var rev string
	var dirty bool
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	switch {
	case rev == "":
		return "dev"
	case dirty:
		return rev + "-dirty"
	}
	return rev
}
