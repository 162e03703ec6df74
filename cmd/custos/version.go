package main

import (
	"runtime"
	"runtime/debug"
)

// programVersion is the -ldflags version, else the module version or VCS
// revision recorded at build time, else "dev".
func programVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return "dev-" + s.Value[:12]
		}
	}
	return "dev"
}

func goVersion() string { return runtime.Version() }
