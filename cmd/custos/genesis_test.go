package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/internal/node/nodetest"
)

// TestGenesisPinning: a cluster's genesis fingerprint (the chain hash of
// its first ledger record) is printed by `officer list`; a client that
// pins it ($CUSTOS_GENESIS) refuses any other cluster, and `audit verify
// --genesis` refuses an export of another ledger.
func TestGenesisPinning(t *testing.T) {
	clearEnv(t)
	h := nodetest.Start(t)
	usePrincipal(t, h, "app")
	r := runCLI(t, "", "officer", "list")
	r.want(t, 0, "genesis ")
	m := regexp.MustCompile(`genesis ([0-9a-f]{64})`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("no genesis fingerprint in %q", r.stdout)
	}
	genesis := m[1]
	other := strings.Repeat("0", 64)

	t.Setenv(custos.EnvGenesis, genesis)
	runCLI(t, "", "key", "create", "k").want(t, 0)
	t.Setenv(custos.EnvGenesis, other)
	runCLI(t, "", "key", "list").want(t, 1, "genesis is not the pinned one", genesis, other)
	t.Setenv(custos.EnvGenesis, "")

	dir := t.TempDir()
	usePrincipal(t, h, nodetest.Auditor)
	pem, export := filepath.Join(dir, "ledger.pem"), filepath.Join(dir, "ledger.export")
	r = runCLI(t, "", "audit", "pubkey")
	r.want(t, 0)
	if err := os.WriteFile(pem, []byte(r.stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	runCLI(t, "", "audit", "export", export).want(t, 0)
	runCLI(t, "", "audit", "verify", "--pubkey", pem, "--genesis", genesis, export).want(t, 0, "record 1 is the pinned genesis")
	runCLI(t, "", "audit", "verify", "--pubkey", pem, "--genesis", other, export).want(t, 1, "NOT the ledger of the pinned genesis")
	runCLI(t, "", "audit", "list", "--operation", "genesis").want(t, 0, "#1 ", "GENESIS ALLOW", "rule=genesis")
}
