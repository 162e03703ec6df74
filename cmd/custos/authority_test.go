package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/internal/pki"
)

// TestOfficerClientAuthorityCommands: `officer ca list` shows the CA the
// genesis pinned; adding one needs the quorum (propose, sign, submit),
// removing one a single officer; a file that is not one CA certificate is
// a usage error before anything is signed.
func TestOfficerClientAuthorityCommands(t *testing.T) {
	clearEnv(t)
	h := nodetest.Start(t)
	usePrincipal(t, h, "app")
	b, err := os.ReadFile(h.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	genesis := sha256.Sum256(blk.Bytes)
	runCLI(t, "", "officer", "ca", "list").want(t, 0, "client authorities: pinned (1)", hex.EncodeToString(genesis[:]))

	other := t.TempDir()
	if err := pki.CreateDevPKI(other, nil); err != nil {
		t.Fatal(err)
	}
	otherCA := filepath.Join(other, pki.CAFile)
	ob, err := os.ReadFile(otherCA)
	if err != nil {
		t.Fatal(err)
	}
	oblk, _ := pem.Decode(ob)
	sum := sha256.Sum256(oblk.Bytes)
	otherSum := hex.EncodeToString(sum[:])

	runCLI(t, "", args("officer", "ca", "add", asOfficer(h, 0), otherCA)...).want(t, 1, "PermissionDenied", "officer propose ca-add")
	runCLI(t, "", "officer", "propose", "ca-add", "--out", filepath.Join(t.TempDir(), "s.json"), filepath.Join(other, pki.ServerFile)).want(t, 2, "not a CA certificate")
	runCLI(t, "", "officer", "propose", "ca-remove", "--out", filepath.Join(t.TempDir(), "s.json"), "abc").want(t, 2, "64 hex digits")
	offlineQuorum(t, h, "ca-add", otherCA).want(t, 0, "client authority "+otherSum, "client authorities: pinned (2)")
	runCLI(t, "", args("officer", "ca", "remove", asOfficer(h, 2), otherSum)...).want(t, 0, "no longer trusted", "client authorities: pinned (1)")
	runCLI(t, "", "officer", "ca", "list", "--json").want(t, 0, `"pinned": true`, hex.EncodeToString(genesis[:]))
	runCLI(t, "", "key", "create", "k").want(t, 0)
	usePrincipal(t, h, nodetest.Auditor)
	runCLI(t, "", "audit", "list", "--key", "k").want(t, 0, `principal="app" issuer=`+hex.EncodeToString(genesis[:]))
}

// TestOfficerQuotaCommands: quotas read as defaults until the quorum sets
// them; one officer cannot.
func TestOfficerQuotaCommands(t *testing.T) {
	clearEnv(t)
	h := nodetest.Start(t)
	usePrincipal(t, h, "app")
	runCLI(t, "", "officer", "quotas", "get").want(t, 0, "max_keys_per_principal=1000 (default)", "max_pending_per_principal=16 (default)")
	runCLI(t, "", args("officer", "quotas", "set", "--keys", "5", asOfficer(h, 0))...).want(t, 1, "PermissionDenied", "officer propose quotas")
	offlineQuorum(t, h, "quotas", "--keys", "5", "--pending", "2").want(t, 0, "quotas set: 5 keys and 2 pending", "max_keys_per_principal=5 max_pending_per_principal=2")
}
