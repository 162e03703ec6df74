package main

import (
	"context"
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/custos-kms/custos/internal/atomicfile"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Officer keys: officer keygen creates one and writes its public key file,
// officer pubkey prints the public key of a key file, and the officers
// file of officer propose officers names the officers' public keys the
// way the custosd configuration does (public_key_file).

// officerEntry is one officer as the custosd configuration's "officers"
// lists it, and as officer keygen prints it.
type officerEntry struct {
	Name          string `json:"name"`
	PublicKeyFile string `json:"public_key_file"`
}

// readOfficers reads a SetOfficers in protojson form, where an officer may
// name a PEM public key file as the custosd configuration does (a relative
// path is taken from the officers file's directory) instead of giving the
// key itself:
//
//	{"officers": [{"name": "alice", "public_key_file": "alice.pub.pem"},
//	              {"name": "bob", "public_key": "<base64 PKIX DER>"}], "quorum": 2}
func readOfficers(path string) (*custosv1.SetOfficers, error) {
	b, err := readSmall(path)
	if err != nil {
		return nil, err
	}
	if b, err = inlineKeyFiles(b, filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("officers file %s: %v", path, err)
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

// inlineKeyFiles replaces each officer's "public_key_file" in an officers
// file with the "public_key" that file holds. Other JSON is passed on as
// it is, for protojson to judge.
func inlineKeyFiles(b []byte, dir string) ([]byte, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(b, &doc); err != nil {
		return b, nil // protojson says what is wrong
	}
	var officers []map[string]json.RawMessage
	if raw, ok := doc["officers"]; !ok || json.Unmarshal(raw, &officers) != nil {
		return b, nil
	}
	changed := false
	for i, o := range officers {
		raw, ok := o["public_key_file"]
		if !ok {
			continue
		}
		var file string
		if err := json.Unmarshal(raw, &file); err != nil || strings.TrimSpace(file) == "" {
			return nil, fmt.Errorf("officers[%d].public_key_file: want a file name", i)
		}
		if _, both := o["public_key"]; both {
			return nil, fmt.Errorf("officers[%d]: give public_key or public_key_file, not both", i)
		}
		if !filepath.IsAbs(file) {
			file = filepath.Join(dir, file)
		}
		pemBytes, err := readSmall(file)
		if err != nil {
			return nil, fmt.Errorf("officers[%d].public_key_file: %v", i, err)
		}
		pub, err := governance.ParsePublicKeyPEM(pemBytes)
		if err != nil {
			return nil, fmt.Errorf("officers[%d].public_key_file %s: %v", i, file, err)
		}
		delete(o, "public_key_file")
		o["public_key"], _ = json.Marshal(base64.StdEncoding.EncodeToString(governance.MarshalPublicKey(pub)))
		changed = true
	}
	if !changed {
		return b, nil
	}
	doc["officers"], _ = json.Marshal(officers)
	return json.Marshal(doc)
}

// publicKeyFileFor returns where officer keygen writes the public key of
// key file out: alice.pem → alice.pub.pem.
func publicKeyFileFor(out string) string {
	return strings.TrimSuffix(out, ".pem") + ".pub.pem"
}

func runOfficerKeygen(ctx context.Context, a *app, args []string) error {
	fs := a.flags("officer keygen")
	name := fs.String("name", "", "officer name (required)")
	out := fs.String("out", "", "key `FILE` to create (required; never overwritten); the public key goes to FILE with .pub.pem for .pem")
	passFile := fs.String("passphrase-file", "", "encrypt the key with the passphrase in `FILE` (default $"+envOfficerPassphrase+", else a terminal prompt)")
	if _, err := a.parse("officer keygen", fs, args, 0, 0); err != nil {
		return err
	}
	if *name == "" || *out == "" {
		return usagef("--name and --out are required")
	}
	pubFile := publicKeyFileFor(*out)
	if _, err := os.Lstat(*out); err == nil {
		return fmt.Errorf("%s already exists: not overwriting an officer key", *out)
	}
	if _, err := os.Lstat(pubFile); err == nil {
		return fmt.Errorf("%s already exists: not overwriting it (officer keygen writes the new key's public key there)", pubFile)
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
	pubPEM := governance.PublicKeyPEM(&k.PublicKey)
	if err := atomicfile.Write(pubFile, pubPEM, 0o644, false); err != nil {
		os.Remove(*out) // nothing half done: no key without its public key file
		return err
	}
	how := "encrypted with the passphrase"
	if len(pass) == 0 {
		how = "UNENCRYPTED (protect the file, or use --passphrase-file)"
		fmt.Fprintf(a.stderr, "custos: warning: %s holds the officer key unencrypted\n", *out)
	}
	entry, err := json.Marshal(officerEntry{Name: *name, PublicKeyFile: pubFile})
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "officer key for %s written to %s, %s\n", *name, *out, how)
	fmt.Fprintf(a.stdout, "public key written to %s (give it to the node operators)\n", pubFile)
	fmt.Fprintf(a.stdout, "fingerprint: %s\n", governance.Fingerprint(&k.PublicKey))
	fmt.Fprintf(a.stdout, "%s", pubPEM)
	fmt.Fprintf(a.stdout, "officers entry: %s\n", entry)
	fmt.Fprintln(a.stdout, `(for "officers" in the custosd configuration and in the file of 'custos officer propose officers --file'; public_key_file is read relative to that file)`)
	return nil
}

func runOfficerPubkey(ctx context.Context, a *app, args []string) error {
	fs := a.flags("officer pubkey")
	passFile := fs.String("passphrase-file", "", "read the key file's passphrase from `FILE` (default $"+envOfficerPassphrase+", else a terminal prompt)")
	pos, err := a.parse("officer pubkey", fs, args, 1, 1)
	if err != nil {
		return err
	}
	signer, err := governance.LoadKeyFile(pos[0], func() ([]byte, error) { return a.passphrase(*passFile, "Passphrase for "+pos[0]+": ") })
	if err != nil {
		return err
	}
	pub, ok := signer.Public().(*ecdsa.PublicKey)
	if !ok {
		return fmt.Errorf("%s does not hold an ECDSA P-256 key", pos[0])
	}
	_, err = a.stdout.Write(governance.PublicKeyPEM(pub))
	return err
}
