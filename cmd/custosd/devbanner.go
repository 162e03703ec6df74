package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// devNextSteps is the banner's "In another shell" part: commands that work
// pasted as they are into a new shell. They load client.env, then put the
// custos CLI on PATH: binDir (the directory of this custosd, which make
// build fills with both binaries) when it holds custos, else, from the
// repository, make build and its bin/.
func devNextSteps(envFile, binDir string, commands ...string) string {
	var b strings.Builder
	b.WriteString("In another shell:\n")
	fmt.Fprintf(&b, "  source %s\n", shellQuote(envFile))
	if binDir != "" {
		fmt.Fprintf(&b, "  export PATH=%s:$PATH\n", shellQuote(binDir))
	} else {
		b.WriteString("  make build && export PATH=$PWD/bin:$PATH   # in the repository (no custos binary beside this custosd)\n")
	}
	for _, c := range commands {
		fmt.Fprintf(&b, "  %s\n", c)
	}
	return b.String()
}

// cliDir returns the directory of this executable if the custos CLI is
// beside it (bin/ after make build), else "".
func cliDir() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	return cliDirOf(exe)
}

// cliDirOf returns the directory of the executable exe (symbolic links
// resolved) if an executable custos file is beside it, else "".
func cliDirOf(exe string) string {
	exe, err := filepath.EvalSymlinks(exe)
	if err != nil {
		return ""
	}
	dir := filepath.Dir(exe)
	if fi, err := os.Stat(filepath.Join(dir, "custos")); err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return ""
	}
	return dir
}
