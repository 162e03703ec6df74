package main

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"

	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/hsm/pkcs11"
)

func init() {
	longHelp["hsm trust"] = `The security officer's step of key transport (docs/key-transport.md):
marks a node's RSA-3072 transport public key CKA_TRUSTED on this HSM's
token, so that this HSM may wrap the cluster's domain key to it. The HSM
wraps the domain key (CKA_WRAP_WITH_TRUSTED) to no other key.

--public-key is the PEM (PUBLIC KEY) file of the key, --fingerprint the
SHA-256 fingerprint the officers approved for it: the command refuses a
key whose fingerprint differs. It logs in as the token's security officer
with the SO PIN from --so-pin-file (else asked on the terminal; never a
flag, never stored or printed), creates one public, unmodifiable token key
(id custos/trusted/<first 32 hex digits of the fingerprint>, or --id) and
logs out. Run it on the holder's machine while custosd runs, as its own
process: PKCS#11 login state is per process.

Bad input (no module, no such token, wrong SO PIN, not an RSA-3072 key,
fingerprint mismatch, id taken): one line, exit code 1, nothing created.`
}

func runHSMTrust(ctx context.Context, a *app, args []string) error {
	fs := a.flags("hsm trust")
	module := fs.String("module", "", "path of the PKCS#11 library (default $"+envPKCS11Module+")")
	token := fs.String("token", "", "label of the holder's token")
	soPinFile := fs.String("so-pin-file", "", "file holding the SO PIN (else asked on the terminal)")
	pubFile := fs.String("public-key", "", "PEM file of the transport public key")
	fingerprint := fs.String("fingerprint", "", "the fingerprint the officers approved (hex SHA-256 of the key)")
	id := fs.String("id", "", "CKA_ID of the trusted key (default custos/trusted/<fingerprint prefix>)")
	if _, err := a.parse("hsm trust", fs, args, 0, 0); err != nil {
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
	case *pubFile == "":
		return usagef("--public-key is required")
	case *fingerprint == "":
		return usagef("--fingerprint is required: the one the officers approved")
	}
	pub, err := readTransportKey(*pubFile)
	if err != nil {
		return err
	}
	fp, err := hsm.TransportFingerprint(pub)
	if err != nil {
		return fmt.Errorf("%s: %w", *pubFile, err)
	}
	if want := strings.ToLower(strings.ReplaceAll(*fingerprint, ":", "")); fp != want {
		return fmt.Errorf("%s has fingerprint %s, not the approved %s: nothing was trusted", *pubFile, fp, want)
	}
	if *id == "" {
		*id = "custos/trusted/" + fp[:32]
	}
	var soPIN string
	if *soPinFile != "" {
		if soPIN, err = readPINFile(*soPinFile, "SO PIN"); err != nil {
			return err
		}
	} else {
		p, err := a.prompt("SO PIN for token " + *token + ": ")
		if err != nil {
			return fmt.Errorf("no SO PIN: give --so-pin-file or run on a terminal (%w)", err)
		}
		soPIN = string(p)
	}
	if err := pkcs11.TrustPublicKey(ctx, pkcs11.SOConfig{Module: *module, TokenLabel: *token, SOPIN: soPIN},
		[]byte(*id), "custos transport key "+fp[:16], pub); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "trusted transport key %s on token %q as %s\n", fp, *token, *id)
	return nil
}

// readTransportKey reads a PEM PUBLIC KEY file holding an RSA key.
func readTransportKey(file string) (*rsa.PublicKey, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("%s: not a PEM PUBLIC KEY", file)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	pub, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%s: a %T, not an RSA key", file, k)
	}
	return pub, nil
}
