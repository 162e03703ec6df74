package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/custos-kms/custos/hsm/pkcs11/qualify"
)

// envPKCS11Module is the default of hsm check --module.
const envPKCS11Module = "CUSTOS_PKCS11_MODULE"

func init() {
	longHelp["hsm check"] = `Qualifies a PKCS#11 module for custos (docs/operations.md, "Qualifying
an HSM"): AES-256-GCM (12-byte IV, 16-byte tag), AES-KWP per RFC 5649,
RSA-3072 and RSA-OAEP with SHA-256 and SHA-1, CKA_WRAP_WITH_TRUSTED,
CKA_TRUSTED (user refused, SO allowed), CKA_UNWRAP_TEMPLATE,
CKA_MODIFIABLE=false ordering, unwrapped and generated key attributes,
ECDSA P-256, session-object isolation between processes, concurrent use
and C_GenerateRandom. It prints one row per check (PASS, FAIL, WARN or
SKIP, with the PKCS#11 return code) and whether the module meets the
production and development profiles.

It logs in with the user PIN (--pin-file, --pin-env, else asked on the
terminal) and creates only temporary objects: session objects, and, with
--so-pin-file, one public token key made by the SO, labelled
custos-check-<random>-trusted and destroyed at the end. It never touches
other objects. Without --so-pin-file the SO check is SKIPPED. PINs are
never printed. A second process (this program again) checks isolation and
logs in as SO.

NSS softokn needs its library parameters: --nss-config "configdir='sql:DIR'
certPrefix='' keyPrefix='' secmod='secmod.db' flags=".

Exit code 0 when the checks ran, whatever the verdict; with --require
PROFILE, 1 when the module does not meet it. Bad input (no module, no such
token, wrong PIN): one line, exit code 1.`
}

func runHSMCheck(ctx context.Context, a *app, args []string) error {
	fs := a.flags("hsm check")
	module := fs.String("module", "", "path of the PKCS#11 library (default $"+envPKCS11Module+")")
	token := fs.String("token", "", "label of the token to check")
	pinFile := fs.String("pin-file", "", "file holding the user PIN")
	pinEnv := fs.String("pin-env", "", "name of an environment variable holding the user PIN")
	soPinFile := fs.String("so-pin-file", "", "file holding the SO PIN (enables the CKA_TRUSTED check)")
	nssConfig := fs.String("nss-config", "", "NSS softokn library parameters (C_Initialize pReserved)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	require := fs.String("require", "none", "exit 1 unless the module meets this profile: none, development or production")
	workers := fs.Int("workers", 4, "goroutines of the concurrency check")
	ops := fs.Int("ops", 200, "AES-GCM encryptions per goroutine in the concurrency check")
	if _, err := a.parse("hsm check", fs, args, 0, 0); err != nil {
		return err
	}
	if *module == "" {
		*module = strings.TrimSpace(os.Getenv(envPKCS11Module))
	}
	switch {
	case *module == "":
		return usagef("--module is required (or set $%s)", envPKCS11Module)
	case *token == "":
		return usagef("--token is required")
	case *pinFile != "" && *pinEnv != "":
		return usagef("give --pin-file or --pin-env, not both")
	case *workers < 1 || *ops < 1:
		return usagef("--workers and --ops must be at least 1")
	}
	var want qualify.Profile
	switch *require {
	case "none", "":
	case string(qualify.Production), string(qualify.Development):
		want = qualify.Profile(*require)
	default:
		return usagef("--require must be none, development or production, not %q", *require)
	}
	pin, err := a.hsmPIN(*pinFile, *pinEnv, "User PIN for token "+*token+": ")
	if err != nil {
		return err
	}
	var soPIN string
	if *soPinFile != "" {
		if soPIN, err = readPINFile(*soPinFile, "SO PIN"); err != nil {
			return err
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding this program for the second process: %w", err)
	}
	rep, err := qualify.Check(ctx, qualify.Config{
		Module: *module, Token: *token, PIN: pin, SOPIN: soPIN, NSSConfig: *nssConfig,
		ChildCommand: []string{exe}, Workers: *workers, OpsPerWorker: *ops,
	})
	if err != nil {
		return err
	}
	if *asJSON {
		out := struct {
			*qualify.Report
			Summary string `json:"summary"`
		}{rep, qualify.Summary(rep)}
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else if err := qualify.WriteTable(a.stdout, rep); err != nil {
		return err
	}
	if want != "" && !rep.Meets(want) {
		return fmt.Errorf("the module does not meet the %s profile (--require %s)", want, want)
	}
	return nil
}

// hsmPIN returns the user PIN from a file, an environment variable, or the
// terminal. It is never a flag value.
func (a *app) hsmPIN(file, env, prompt string) (string, error) {
	switch {
	case file != "":
		return readPINFile(file, "PIN")
	case env != "":
		v := os.Getenv(env)
		if v == "" {
			return "", fmt.Errorf("--pin-env: $%s is not set or empty", env)
		}
		return v, nil
	}
	p, err := a.prompt(prompt)
	if err != nil {
		return "", fmt.Errorf("no PIN: give --pin-file or --pin-env, or run on a terminal (%w)", err)
	}
	return string(p), nil
}

// readPINFile reads a PIN from the first line of file.
func readPINFile(file, what string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s file: %w", what, err)
	}
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	b = bytes.TrimRight(b, "\r")
	if len(b) == 0 {
		return "", errors.New(what + " file " + file + " is empty")
	}
	return string(b), nil
}
