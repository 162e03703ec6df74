package main

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/custos-kms/custos/clients/go/keyimport"
	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms"
)

// TestKeyImportCommands: bring your own key with the documented commands,
// in one go and with material wrapped by another tool; bad input creates
// nothing.
func TestKeyImportCommands(t *testing.T) {
	clearEnv(t)
	h := nodetest.StartWith(t, func(cfg *node.Config) { cfg.Profile = kms.ProfileDevelopment })
	usePrincipal(t, h, "app")
	dir := t.TempDir()
	raw := bytes.Repeat([]byte{0x42}, 32)
	kcv, err := keyimport.CheckValue(raw)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "key.hex")
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(raw)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "aes128.bin")
	if err := os.WriteFile(short, raw[:16], 0o600); err != nil {
		t.Fatal(err)
	}

	runCLI(t, "", "key", "import", "--key-file", short, "byok").want(t, 1, "AES-256")
	runCLI(t, "", "key", "import", "byok").want(t, 2, "--key-file")
	runCLI(t, "", "key", "import", "--key-file", keyFile, "--algorithm", "RSAES_PKCS1", "byok").want(t, 2, "--algorithm")
	runCLI(t, "", "key", "get", "byok").want(t, 1, "NotFound")

	runCLI(t, "", "key", "import", "--key-file", keyFile, "--description", "ours", "byok").want(t, 0,
		"imported version 1 of byok (origin EXTERNAL, RSA_AES_KEY_WRAP_SHA_1)", hex.EncodeToString(kcv)+" matches your key")
	runCLI(t, "", "key", "get", "--json", "byok").want(t, 0, `"origin":"EXTERNAL"`, `"key_check_value":"`+hex.EncodeToString(kcv)+`"`)

	// Parameters, wrapping by another tool, import of the material.
	pubFile := filepath.Join(dir, "import.pem")
	runCLI(t, "", "key", "import-params", "byok").want(t, 1, "FailedPrecondition", "creates a new key")
	r := runCLI(t, "", "key", "import-params", "--public-key", pubFile, "byok2")
	r.want(t, 0, "algorithm:    RSA_AES_KEY_WRAP_SHA_1", "node:         node1")
	token := regexp.MustCompile(`import token: (\S+)`).FindStringSubmatch(r.stdout)
	if token == nil {
		t.Fatalf("no token in %q", r.stdout)
	}
	b, err := os.ReadFile(pubFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	wrapped, err := keyimport.Wrap(pub.(*rsa.PublicKey), keyimport.RSAAESKeyWrapSHA1, raw)
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(wrapped)
	tampered[0] ^= 1
	material := filepath.Join(dir, "material.bin")
	if err := os.WriteFile(material, tampered, 0o600); err != nil {
		t.Fatal(err)
	}
	runCLI(t, "", "key", "import", "--token", token[1], "--material", material, "byok2").want(t, 1, "InvalidArgument", "does not unwrap")
	runCLI(t, "", "key", "import", "--token", token[1], "--material", material, "byok2").want(t, 1, "NotFound", "get new import parameters")
	runCLI(t, "", "key", "get", "byok2").want(t, 1, "NotFound")

	r = runCLI(t, "", "key", "import-params", "--public-key", filepath.Join(dir, "import2.pem"), "byok2")
	token = regexp.MustCompile(`import token: (\S+)`).FindStringSubmatch(r.stdout)
	b, _ = os.ReadFile(filepath.Join(dir, "import2.pem"))
	blk, _ = pem.Decode(b)
	pub, _ = x509.ParsePKIXPublicKey(blk.Bytes)
	if wrapped, err = keyimport.Wrap(pub.(*rsa.PublicKey), keyimport.RSAAESKeyWrapSHA1, raw); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(material, wrapped, 0o600); err != nil {
		t.Fatal(err)
	}
	runCLI(t, "", "key", "import", "--token", token[1], "--material", material, "byok2").want(t, 0,
		"imported version 1 of byok2 (origin EXTERNAL); key check value "+hex.EncodeToString(kcv))
}
