package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"time"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/clients/go/keyimport"
	"github.com/custos-kms/custos/kms"
)

// Bring your own key (docs/key-transport.md, *Key import*): `key import
// --key-file` does the whole import with the key wrapped in this process;
// `key import-params` and `key import --token --material` let other tools
// (openssl, AWS KMS scripts) wrap it instead.

// importAlgorithm returns the algorithm named by flag, or the default for
// the cluster: RSA_AES_KEY_WRAP_SHA_256, or its SHA-1 variant in a cluster
// with the development profile (SoftHSM wraps with OAEP-SHA1 only).
func importAlgorithm(ctx context.Context, c *custos.Client, flag string) (keyimport.Algorithm, error) {
	if flag != "" {
		a := keyimport.Algorithm(flag)
		if _, _, err := a.Hash(); err != nil {
			return "", usagef("--algorithm %q: RSAES_OAEP_SHA_256, RSA_AES_KEY_WRAP_SHA_256, or their _SHA_1 variants (development profile only)", flag)
		}
		return a, nil
	}
	cs, err := c.ClusterStatus(ctx)
	if err == nil && cs.GetProfile() == kms.ProfileDevelopment {
		return keyimport.RSAAESKeyWrapSHA1, nil
	}
	return keyimport.RSAAESKeyWrapSHA256, nil
}

// readKeyFile reads a raw AES-256 key: 32 bytes, or 64 hex digits (and an
// optional newline).
func readKeyFile(path string) ([]byte, error) {
	b, err := readSmall(path)
	if err != nil {
		return nil, err
	}
	if len(b) == 32 {
		return b, nil
	}
	defer clear(b)
	t := bytes.TrimSpace(b)
	if len(t) == 64 {
		k := make([]byte, 32)
		if _, err := hex.Decode(k, t); err == nil {
			return k, nil
		}
	}
	return nil, fmt.Errorf("%s: want an AES-256 key, 32 bytes or 64 hex digits (custos imports AES-256 keys only)", path)
}

func runKeyImport(ctx context.Context, a *app, args []string) error {
	fs := a.flags("key import")
	keyFile := fs.String("key-file", "", "your AES-256 key, `FILE` of 32 bytes or 64 hex digits: wrapped here, sent only wrapped")
	token := fs.String("token", "", "import token from custos key import-params (with --material)")
	material := fs.String("material", "", "key material you wrapped yourself under the import public key (`FILE`, with --token)")
	alg := fs.String("algorithm", "", "wrapping algorithm (default RSA_AES_KEY_WRAP_SHA_256; _SHA_1 in a development cluster)")
	desc := fs.String("description", "", "description, if the import creates the key")
	asJSON := fs.Bool("json", false, "print the key as one JSON object")
	pos, err := a.parse("key import", fs, args, 1, 1)
	if err != nil {
		return err
	}
	switch {
	case *keyFile != "" && (*token != "" || *material != ""):
		return usagef("give --key-file, or --token and --material, not both")
	case *keyFile == "" && (*token == "" || *material == ""):
		return usagef("give --key-file FILE, or --token T and --material FILE")
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		if *keyFile != "" {
			raw, err := readKeyFile(*keyFile)
			if err != nil {
				return err
			}
			defer clear(raw)
			al, err := importAlgorithm(ctx, c, *alg)
			if err != nil {
				return err
			}
			k, err := c.ImportKey(ctx, pos[0], raw, al, *desc)
			if err != nil {
				return err
			}
			if !*asJSON {
				kcv, _ := keyimport.CheckValue(raw)
				fmt.Fprintf(a.stdout, "imported version %d of %s (origin EXTERNAL, %s); key check value %x matches your key\n",
					k.GetPrimaryVersion(), k.GetName(), al, kcv)
			}
			return printKey(a.stdout, k, *asJSON)
		}
		m, err := readSmall(*material)
		if err != nil {
			return err
		}
		k, err := c.ImportKeyMaterial(ctx, pos[0], *token, m, *desc)
		if err != nil {
			return err
		}
		if !*asJSON {
			fmt.Fprintf(a.stdout, "imported version %d of %s (origin EXTERNAL); key check value %x\n",
				k.GetPrimaryVersion(), k.GetName(), k.GetVersions()[len(k.GetVersions())-1].GetKeyCheckValue())
		}
		return printKey(a.stdout, k, *asJSON)
	})
}

func runKeyImportParams(ctx context.Context, a *app, args []string) error {
	fs := a.flags("key import-params")
	alg := fs.String("algorithm", "", "wrapping algorithm (default RSA_AES_KEY_WRAP_SHA_256; _SHA_1 in a development cluster)")
	pubOut := fs.String("public-key", "", "write the import public key to `FILE` (PEM)")
	asJSON := fs.Bool("json", false, "print the parameters as one JSON object")
	pos, err := a.parse("key import-params", fs, args, 1, 1)
	if err != nil {
		return err
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		al, err := importAlgorithm(ctx, c, *alg)
		if err != nil {
			return err
		}
		p, _, err := c.GetParametersForImport(ctx, pos[0], al)
		if err != nil {
			return err
		}
		if *pubOut != "" {
			if _, err := writeAtomicPrivate(*pubOut, func(w io.Writer) (struct{}, error) {
				return struct{}{}, pem.Encode(w, &pem.Block{Type: "PUBLIC KEY", Bytes: p.GetPublicKey()})
			}); err != nil {
				return err
			}
		}
		expires := time.Unix(0, p.GetExpireTimeUnixNano()).UTC().Format(time.RFC3339)
		if *asJSON {
			b, err := json.Marshal(map[string]any{"key": p.GetKey(), "import_token": p.GetImportToken(), "algorithm": string(al),
				"node": p.GetNodeId(), "expires": expires, "public_key": p.GetPublicKey()})
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "%s\n", b)
			return nil
		}
		fmt.Fprintf(a.stdout, "key:          %s\nalgorithm:    %s\nimport token: %s\nnode:         %s (import there: the import key lives in its HSM)\nexpires:      %s\n",
			p.GetKey(), al, p.GetImportToken(), p.GetNodeId(), expires)
		if *pubOut != "" {
			fmt.Fprintf(a.stdout, "public key:   %s\n", *pubOut)
		}
		return nil
	})
}

func init() {
	longHelp["key import"] = `Imports your own AES-256 key as a new key NAME: version 1, origin
EXTERNAL, its policy naming you only. An import never adds material to a
key that exists (its users could then read what others encrypt under it):
import new material under a new name. With --key-file, custos gets one-time import parameters from the
node that answers, wraps the key in this process under the import public key
(AWS KMS's formats: RSA_AES_KEY_WRAP_SHA_256 by default, RSAES_OAEP_SHA_256;
the _SHA_1 variants only in a development cluster) and imports it; only that
node's HSM unwraps it, and the new version's key check value is compared with
your key's. With --token and --material, it imports what you wrapped with
other tools under the key from 'custos key import-params' (on the same node,
within 24 hours). A wrong or altered blob, an expired or used token, a key of
another length: a clear error, and nothing is created.`
	longHelp["key import-params"] = `Makes a one-time import key (RSA-3072) in the HSM of the node that answers
and prints its token, the node and the expiry (24 hours); --public-key FILE
writes the public key (PEM) to wrap your key under, in the named algorithm's
format, with tools of your choice. Then: custos key import --token T
--material FILE NAME, through the same node. The import key ends when it is
used, expires, or the node restarts.`
}
