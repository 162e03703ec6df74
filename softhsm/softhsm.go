// Package softhsm sets up SoftHSM2 tokens for development and tests.
//
// SoftHSM2 reads its configuration file, named by the SOFTHSM2_CONF
// environment variable, once per process, when the module is initialised
// (C_Initialize). A process therefore sees the tokens of one configuration
// only: every token used in one process must live in one Dir, and that Dir
// must be activated (Dir.Activate) before the first Backend opens the module.
// TestToken does this for tests.
package softhsm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// ModuleEnv names the environment variable that overrides the PKCS#11 module
// path found by ModulePath.
const ModuleEnv = "CUSTOS_PKCS11_MODULE"

// ConfEnv is the environment variable through which SoftHSM2 finds its
// configuration file.
const ConfEnv = "SOFTHSM2_CONF"

// InstallHint tells a human how to install what is missing.
const InstallHint = "run `make test` or softhsm/install.sh (apt-get install -y softhsm2 opensc)"

// ErrNotInstalled is returned when the SoftHSM2 module or its tools cannot be
// found.
var ErrNotInstalled = errors.New("softhsm: SoftHSM2 is not installed")

// modulePaths are the places Debian and Ubuntu packages put libsofthsm2.so.
var modulePaths = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
}

// ModulePath returns the path of the SoftHSM2 PKCS#11 module: the value of
// CUSTOS_PKCS11_MODULE when set, otherwise the first usual Debian path that
// exists. The error wraps ErrNotInstalled and says how to install it.
func ModulePath() (string, error) {
	if p := os.Getenv(ModuleEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%w: %s=%s: %v; %s", ErrNotInstalled, ModuleEnv, p, err, InstallHint)
		}
		return p, nil
	}
	for _, p := range modulePaths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: libsofthsm2.so not found in %s; %s",
		ErrNotInstalled, strings.Join(modulePaths, ", "), InstallHint)
}

// utilPath returns the path of softhsm2-util.
func utilPath() (string, error) {
	p, err := exec.LookPath("softhsm2-util")
	if err != nil {
		return "", fmt.Errorf("%w: softhsm2-util not found in PATH; %s", ErrNotInstalled, InstallHint)
	}
	return p, nil
}

// Dir is a private SoftHSM2 configuration: Path/softhsm2.conf, whose tokens
// live in Path/tokens.
type Dir struct {
	// Path is the absolute directory holding softhsm2.conf and tokens/.
	Path string

	mu sync.Mutex // serialises softhsm2-util runs
}

// Token is an initialised SoftHSM2 token.
type Token struct {
	// Module is the path of the PKCS#11 module (libsofthsm2.so).
	Module string
	// Label is the token label (CKA_LABEL of the token, at most 32 bytes).
	Label string
	// PIN is the user PIN.
	PIN string
	// SOPIN is the security officer PIN.
	SOPIN string
	// Dir is the configuration the token lives in.
	Dir *Dir
}

// OpenDir creates (or reuses) a SoftHSM2 configuration in path: it creates
// path/tokens and writes path/softhsm2.conf pointing at it.
func OpenDir(path string) (*Dir, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(abs, "tokens"), 0o700); err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	d := &Dir{Path: abs}
	conf := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n",
		filepath.Join(abs, "tokens"))
	if old, err := os.ReadFile(d.ConfPath()); err == nil && string(old) == conf {
		return d, nil
	}
	if err := os.WriteFile(d.ConfPath(), []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	return d, nil
}

// ConfPath returns the path of the configuration file, the value for
// SOFTHSM2_CONF.
func (d *Dir) ConfPath() string { return filepath.Join(d.Path, "softhsm2.conf") }

// Activate points this process's SOFTHSM2_CONF at the Dir. SoftHSM reads it
// at C_Initialize, once per process: call it before the first Backend opens
// the module, and keep every token the process uses in this Dir.
func (d *Dir) Activate() error {
	if err := os.Setenv(ConfEnv, d.ConfPath()); err != nil {
		return fmt.Errorf("softhsm: %w", err)
	}
	return nil
}

// InitToken initialises a token with that label in a free slot, by running
// softhsm2-util with SOFTHSM2_CONF set to this Dir. If a token with that
// label already exists it is returned as is (its PINs are not checked).
//
// A process that has already initialised the SoftHSM module does not see a
// token created this way until the module is finalized and initialised again
// (every Backend closed): create tokens first, or use pkcs11.InitToken, which
// works in-process (TestToken does).
func (d *Dir) InitToken(label, soPIN, userPIN string) (*Token, error) {
	if label == "" || len(label) > 32 {
		return nil, fmt.Errorf("softhsm: token label must be 1 to 32 bytes, got %d", len(label))
	}
	if len(soPIN) < 4 || len(userPIN) < 4 {
		return nil, errors.New("softhsm: PINs must be at least 4 characters")
	}
	module, err := ModulePath()
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	tok := &Token{Module: module, Label: label, PIN: userPIN, SOPIN: soPIN, Dir: d}
	labels, err := d.labels()
	if err != nil {
		return nil, err
	}
	for _, l := range labels {
		if l == label {
			return tok, nil
		}
	}
	if _, err := d.run("--init-token", "--free", "--label", label, "--so-pin", soPIN, "--pin", userPIN); err != nil {
		return nil, err
	}
	return tok, nil
}

// Labels returns the labels of the initialised tokens in the Dir.
func (d *Dir) Labels() ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.labels()
}

func (d *Dir) labels() ([]string, error) {
	out, err := d.run("--show-slots")
	if err != nil {
		return nil, err
	}
	return parseLabels(out), nil
}

// parseLabels extracts the labels of initialised tokens from the output of
// softhsm2-util --show-slots.
func parseLabels(out []byte) []string {
	var labels []string
	initialized := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "Slot "):
			initialized = false
		case strings.HasPrefix(line, "Initialized:"):
			initialized = strings.TrimSpace(strings.TrimPrefix(line, "Initialized:")) == "yes"
		case strings.HasPrefix(line, "Label:") && initialized:
			labels = append(labels, strings.TrimSpace(strings.TrimPrefix(line, "Label:")))
		}
	}
	return labels
}

// run runs softhsm2-util with SOFTHSM2_CONF set to the Dir. Its output is
// returned; on failure the error carries it, with PINs removed.
func (d *Dir) run(args ...string) ([]byte, error) {
	util, err := utilPath()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(util, args...)
	cmd.Env = append(os.Environ(), ConfEnv+"="+d.ConfPath())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("softhsm: softhsm2-util %s: %v: %s",
			redact(args), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// redact joins args for an error message, hiding the values of PIN flags.
func redact(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = a
		if i > 0 && (args[i-1] == "--pin" || args[i-1] == "--so-pin") {
			out[i] = "***"
		}
	}
	return strings.Join(out, " ")
}
