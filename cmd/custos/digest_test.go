package main

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/custos-kms/custos/clients/go/envelope"
	"github.com/custos-kms/custos/internal/node/nodetest"
)

// TestDigestAndScopedGrant: `custos digest` prints the SHA-256 of the
// wrapped data key an envelope file's decrypt sends, and an officers' grant
// scoped to it with --data-digest lists it.
func TestDigestAndScopedGrant(t *testing.T) {
	clearEnv(t)
	h := nodetest.Start(t)
	usePrincipal(t, h, "app")
	runCLI(t, "", "key", "create", "payroll").want(t, 0)
	in, out := filepath.Join(t.TempDir(), "in"), filepath.Join(t.TempDir(), "out.env")
	if err := os.WriteFile(in, []byte("salaries"), 0o600); err != nil {
		t.Fatal(err)
	}
	runCLI(t, "", "encrypt", "--key", "payroll", in, out).want(t, 0)
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	hdr, err := envelope.ReadHeader(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(hdr.WrappedKey)
	r := runCLI(t, "", "digest", out)
	r.want(t, 0, hex.EncodeToString(want[:]), "envelope")
	runCLI(t, "", "digest", filepath.Join(t.TempDir(), "missing")).want(t, 1)

	r = offlineQuorum(t, h, "grant", "--principal", "support", "--key", "payroll", "--reason", "PROVIDER_SUPPORT",
		"--data-digest", hex.EncodeToString(want[:]))
	r.want(t, 0, "grant ")
	runCLI(t, "", "officer", "propose", "grant", "--principal", "support", "--key", "payroll", "--reason", "PROVIDER_SUPPORT",
		"--data-digest", "abc", "--out", filepath.Join(t.TempDir(), "s.json")).want(t, 2, "64 hex digits")
	grants := runCLI(t, "", "officer", "grants", "--key", "payroll")
	if !regexp.MustCompile(`data=` + hex.EncodeToString(want[:])).MatchString(grants.stdout) {
		t.Fatalf("officer grants does not show the scope:\n%s", grants.stdout)
	}
}
