package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Officer keys: officer keygen creates one, and the officers file of
// officer propose officers names the officers' public keys.

// readOfficers reads a SetOfficers in protojson form:
// {"officers": [{"name": "alice", "public_key": "<base64 PKIX DER>"}], "quorum": 2}.
func readOfficers(path string) (*custosv1.SetOfficers, error) {
	b, err := readSmall(path)
	if err != nil {
		return nil, err
	}
	so := &custosv1.SetOfficers{}
	if err := protojson.Unmarshal(b, so); err != nil {
		return nil, fmt.Errorf("officers file %s: %v", path, err)
	}
	if _, err := governance.NewOfficerSet(so.GetOfficers(), so.GetQuorum()); err != nil {
		return nil, fmt.Errorf("officers file %s: %v", path, err)
	}
	return so, nil
}

func runOfficerKeygen(ctx context.Context, a *app, args []string) error {
	fs := a.flags("officer keygen")
	name := fs.String("name", "", "officer name (required)")
	out := fs.String("out", "", "key `FILE` to create (required; never overwritten)")
	passFile := fs.String("passphrase-file", "", "encrypt the key with the passphrase in `FILE` (default $"+envOfficerPassphrase+", else a terminal prompt)")
	if _, err := a.parse("officer keygen", fs, args, 0, 0); err != nil {
		return err
	}
	if *name == "" || *out == "" {
		return usagef("--name and --out are required")
	}
	if _, err := os.Lstat(*out); err == nil {
		return fmt.Errorf("%s already exists: not overwriting an officer key", *out)
	}
	var pass []byte
	switch {
	case *passFile != "" || os.Getenv(envOfficerPassphrase) != "":
		p, err := a.passphrase(*passFile, "")
		if err != nil {
			return err
		}
		pass = p
	default:
		p, err := a.prompt("Passphrase for the new key (empty for none): ")
		if err == nil && len(p) > 0 {
			again, err := a.prompt("Repeat the passphrase: ")
			if err != nil {
				return err
			}
			if string(again) != string(p) {
				return errors.New("the passphrases differ")
			}
			pass = p
		}
	}
	k, err := governance.GenerateKey()
	if err != nil {
		return err
	}
	if err := governance.WriteKeyFile(*out, k, pass); err != nil {
		return err
	}
	how := "encrypted with the passphrase"
	if len(pass) == 0 {
		how = "UNENCRYPTED (protect the file, or use --passphrase-file)"
		fmt.Fprintf(a.stderr, "custos: warning: %s holds the officer key unencrypted\n", *out)
	}
	entry, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(&custosv1.Officer{Name: *name, PublicKey: governance.MarshalPublicKey(&k.PublicKey)})
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "officer key for %s written to %s, %s\n", *name, *out, how)
	fmt.Fprintf(a.stdout, "fingerprint: %s\n", governance.Fingerprint(&k.PublicKey))
	fmt.Fprintf(a.stdout, "%s", governance.PublicKeyPEM(&k.PublicKey))
	fmt.Fprintf(a.stdout, "officers file entry: %s\n", entry)
	return nil
}
