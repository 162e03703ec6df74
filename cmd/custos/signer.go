package main

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/kms/governance"
)

// Environment variables for the officer's signing key. custosd dev writes
// CUSTOS_OFFICER_KEY and CUSTOS_OFFICER_NAME to client.env.
const (
	envOfficerName       = "CUSTOS_OFFICER_NAME"
	envOfficerKey        = "CUSTOS_OFFICER_KEY"
	envOfficerPassphrase = "CUSTOS_OFFICER_PASSPHRASE"
	envOfficerPKCS11     = "CUSTOS_OFFICER_PKCS11"
	envOfficerPIN        = "CUSTOS_OFFICER_PIN"
)

// officerFlags are the flags that say which officer signs and with what key.
type officerFlags struct {
	name, keyFile, passFile, pkcs11 string
}

func (o *officerFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&o.name, "officer", "", "officer name the cluster knows you by (default $"+envOfficerName+")")
	fs.StringVar(&o.keyFile, "officer-key", "", "officer key `FILE` (default $"+envOfficerKey+")")
	fs.StringVar(&o.passFile, "passphrase-file", "", "read the officer key's passphrase from `FILE` (default $"+envOfficerPassphrase+", else a terminal prompt)")
	fs.StringVar(&o.pkcs11, "officer-pkcs11", "", "sign on a PKCS#11 token: `module=PATH,token=LABEL,label=KEYLABEL` (PIN from $"+envOfficerPIN+"; default $"+envOfficerPKCS11+")")
}

func envOr(flagVal, env string) string {
	if flagVal != "" {
		return flagVal
	}
	return strings.TrimSpace(os.Getenv(env))
}

// configured reports whether a signing key is configured (a key file or a
// token), by flag or environment.
func (o *officerFlags) configured() bool {
	return envOr(o.keyFile, envOfficerKey) != "" || envOr(o.pkcs11, envOfficerPKCS11) != ""
}

// errNoOfficer says how to configure an officer key.
var errNoOfficer = errors.New("no officer key: give --officer-key FILE (or $" + envOfficerKey + ") or --officer-pkcs11 module=...,token=...,label=... (or $" +
	envOfficerPKCS11 + "), and --officer NAME (or $" + envOfficerName + ")")

// load opens the officer's signer. Close the returned closer when done.
func (o *officerFlags) load(a *app) (custos.Officer, io.Closer, error) {
	if o.keyFile != "" && o.pkcs11 != "" {
		return custos.Officer{}, nil, usagef("give --officer-key or --officer-pkcs11, not both")
	}
	name := envOr(o.name, envOfficerName)
	keyFile, spec := o.keyFile, o.pkcs11
	if keyFile == "" && spec == "" {
		// The environment, key file first.
		keyFile = envOr("", envOfficerKey)
		if keyFile == "" {
			spec = envOr("", envOfficerPKCS11)
		}
	}
	switch {
	case keyFile == "" && spec == "":
		return custos.Officer{}, nil, errNoOfficer
	case name == "":
		return custos.Officer{}, nil, fmt.Errorf("no officer name: give --officer NAME or set $%s", envOfficerName)
	}
	usePKCS11 := keyFile == ""
	if usePKCS11 {
		mod, tok, label, err := parsePKCS11Spec(spec)
		if err != nil {
			return custos.Officer{}, nil, err
		}
		pin := os.Getenv(envOfficerPIN)
		if pin == "" {
			p, err := a.prompt("PIN for token " + tok + ": ")
			if err != nil {
				return custos.Officer{}, nil, fmt.Errorf("no PIN: set $%s or run on a terminal (%v)", envOfficerPIN, err)
			}
			pin = string(p)
		}
		signer, closer, err := governance.OpenPKCS11Signer(mod, tok, pin, label)
		if err != nil {
			return custos.Officer{}, nil, err
		}
		return custos.Officer{Name: name, Signer: signer}, closer, nil
	}
	signer, err := governance.LoadKeyFile(keyFile, func() ([]byte, error) { return a.passphrase(o.passFile, "Passphrase for "+keyFile+": ") })
	if err != nil {
		return custos.Officer{}, nil, err
	}
	return custos.Officer{Name: name, Signer: signer}, io.NopCloser(nil), nil
}

// parsePKCS11Spec parses module=PATH,token=LABEL,label=KEYLABEL.
func parsePKCS11Spec(spec string) (module, token, label string, err error) {
	for part := range strings.SplitSeq(spec, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return "", "", "", usagef("--officer-pkcs11: %q is not key=value", part)
		}
		switch k {
		case "module":
			module = v
		case "token":
			token = v
		case "label":
			label = v
		default:
			return "", "", "", usagef("--officer-pkcs11: unknown field %q (want module, token, label)", k)
		}
	}
	if module == "" || token == "" || label == "" {
		return "", "", "", usagef("--officer-pkcs11: want module=PATH,token=LABEL,label=KEYLABEL")
	}
	return module, token, label, nil
}

// passphrase returns the passphrase from file, else $CUSTOS_OFFICER_PASSPHRASE,
// else a prompt on the terminal. A passphrase is never a flag value.
func (a *app) passphrase(file, prompt string) ([]byte, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("passphrase file: %w", err)
		}
		b = bytes.TrimRight(b, "\r\n")
		if len(b) == 0 {
			return nil, fmt.Errorf("passphrase file %s is empty", file)
		}
		return b, nil
	}
	if v := os.Getenv(envOfficerPassphrase); v != "" {
		return []byte(v), nil
	}
	p, err := a.prompt(prompt)
	if err != nil {
		return nil, fmt.Errorf("the key file is encrypted: give --passphrase-file, set $%s or run on a terminal (%v)", envOfficerPassphrase, err)
	}
	return p, nil
}

// prompt reads a line from the terminal without echo.
func (a *app) prompt(msg string) ([]byte, error) {
	f, ok := a.stdin.(*os.File)
	if !ok {
		return nil, errors.New("standard input is not a terminal")
	}
	return readPassword(f, a.stderr, msg)
}

// fingerprintOf returns the fingerprint of a signer's P-256 public key, or
// "".
func fingerprintOf(s crypto.Signer) string {
	pub, ok := s.Public().(*ecdsa.PublicKey)
	if !ok {
		return ""
	}
	return governance.Fingerprint(pub)
}
