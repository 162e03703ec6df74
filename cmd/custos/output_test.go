package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-kms/custos/internal/node/nodetest"
)

// TestOutputFiles: encrypt, decrypt and audit export refuse an OUT file
// that exists (exit 1, the file untouched, nothing asked of custos) unless
// --force; and no command leaves an OUT file, or a temporary file, after
// any failure.
func TestOutputFiles(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	absent := func(p string) {
		t.Helper()
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s exists after a failure", p)
		}
	}
	const refused = "already exists: not overwriting it (--force replaces it)"
	plain := file("plain.txt", "the plaintext\n")
	keep := file("keep", "keep me")

	// Refused before any connection: no CUSTOS_* is set.
	for cmd, args := range map[string][]string{
		"encrypt":      {"encrypt", "--key", "k", plain, keep},
		"decrypt":      {"decrypt", "--justification", "CUSTOMER_INITIATED", plain, keep},
		"audit export": {"audit", "export", keep},
	} {
		runCLI(t, "", args...).want(t, 1, "custos: "+cmd+": "+keep+" "+refused)
		if string(read(keep)) != "keep me" {
			t.Fatalf("%q changed %s", args, keep)
		}
	}

	h := nodetest.Start(t)
	usePrincipal(t, h, "app")
	runCLI(t, "", "key", "create", "k").want(t, 0)
	enc := filepath.Join(dir, "plain.txt.cst")
	runCLI(t, "", "encrypt", "--key", "k", plain, enc).want(t, 0, "encrypted")
	first := read(enc)
	runCLI(t, "", "encrypt", "--key", "k", plain, enc).want(t, 1, "custos: encrypt: "+enc+" "+refused)
	if !bytes.Equal(read(enc), first) {
		t.Fatal("a refused encrypt changed OUT")
	}
	runCLI(t, "", "encrypt", "--key", "k", "--force", plain, enc).want(t, 0, "encrypted")
	if bytes.Equal(read(enc), first) {
		t.Fatal("encrypt --force did not replace OUT")
	}

	out := filepath.Join(dir, "plain.out")
	runCLI(t, "", "decrypt", "--justification", "CUSTOMER_INITIATED", enc, out).want(t, 0, "decrypted")
	decrypts := func() int {
		usePrincipal(t, h, nodetest.Auditor)
		defer usePrincipal(t, h, "app")
		r := runCLI(t, "", "audit", "list", "--operation", "DECRYPT", "--limit", "0", "--json")
		r.want(t, 0)
		return len(lines(r.stdout))
	}
	before := decrypts()
	file("plain.out", "mine")
	runCLI(t, "", "decrypt", "--justification", "CUSTOMER_INITIATED", enc, out).want(t, 1, "custos: decrypt: "+out+" "+refused)
	if string(read(out)) != "mine" {
		t.Fatal("a refused decrypt changed OUT")
	}
	if after := decrypts(); after != before {
		t.Errorf("a decrypt refused for its existing OUT recorded %d decision(s)", after-before)
	}
	runCLI(t, "", "decrypt", "--justification", "CUSTOMER_INITIATED", "--force", enc, out).want(t, 0, "decrypted")
	if string(read(out)) != "the plaintext\n" {
		t.Fatal("decrypt --force did not replace OUT")
	}

	// No OUT after a failure; with --force the old OUT stays as it was.
	runCLI(t, "", "encrypt", "--key", "nope", plain, filepath.Join(dir, "nope.cst")).want(t, 1, "(NotFound)")
	absent(filepath.Join(dir, "nope.cst"))
	trunc := file("trunc.cst", string(read(enc)[:len(read(enc))-7]))
	runCLI(t, "", "decrypt", "--justification", "CUSTOMER_INITIATED", trunc, filepath.Join(dir, "trunc.out")).want(t, 1, "custos: decrypt:")
	absent(filepath.Join(dir, "trunc.out"))
	runCLI(t, "", "decrypt", "--justification", "CUSTOMER_INITIATED", "--force", trunc, out).want(t, 1, "custos: decrypt:")
	if string(read(out)) != "the plaintext\n" {
		t.Fatal("a failed decrypt --force changed the existing OUT")
	}
	runCLI(t, "", "audit", "export", filepath.Join(dir, "denied.export")).want(t, 1, "(PermissionDenied)")
	absent(filepath.Join(dir, "denied.export"))

	usePrincipal(t, h, nodetest.Auditor)
	exp := filepath.Join(dir, "ledger.export")
	runCLI(t, "", "audit", "export", exp).want(t, 0, "exported")
	size := len(read(exp))
	runCLI(t, "", "audit", "export", exp).want(t, 1, "custos: audit export: "+exp+" "+refused)
	if len(read(exp)) != size {
		t.Fatal("a refused audit export changed OUT")
	}
	runCLI(t, "", "audit", "export", "--force", exp).want(t, 0, "exported")

	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}
