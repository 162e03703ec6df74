package main

import (
	"crypto/ecdsa"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms/audit"
	"github.com/custos-kms/custos/kms/governance"
)

// TestWitnessCLI: the officers register the customer's witness; a key
// whose policy requires a fresh cosignature releases nothing until `audit
// witness` has cosigned; an export verifies against the witness's state;
// a witness whose last head the cluster no longer serves reports a fork
// and cosigns nothing.
func TestWitnessCLI(t *testing.T) {
	clearEnv(t)
	h := nodetest.Start(t)
	dir := t.TempDir()
	usePrincipal(t, h, "app")

	wkey := filepath.Join(dir, "witness.pem")
	runCLI(t, "", "officer", "keygen", "--name", "witness", "--out", wkey).want(t, 0)
	signer, err := governance.LoadKeyFile(wkey, nil)
	if err != nil {
		t.Fatal(err)
	}
	wpub := filepath.Join(dir, "witness.pub.pem")
	if err := os.WriteFile(wpub, governance.PublicKeyPEM(signer.Public().(*ecdsa.PublicKey)), 0o644); err != nil {
		t.Fatal(err)
	}
	runCLI(t, "", args("officer", "witness", "add", asOfficer(h, 0), "w1", wpub)...).want(t, 1, "PermissionDenied")
	offlineQuorum(t, h, "witness-add", "w1", wpub).want(t, 0, "witness w1 added", "witness w1 key=", "never cosigned")

	runCLI(t, "", "key", "create", "k").want(t, 0)
	policy := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(policy, []byte(`{"encrypt_principals":["app"],"decrypt_principals":["app"],"admin_principals":["app"],
		"reasons":[{"reason":"REASON_CUSTOMER_INITIATED","action":"ACTION_ALLOW"}],"witness_max_age_seconds":600}`), 0o600); err != nil {
		t.Fatal(err)
	}
	offlineQuorum(t, h, "policy", "--key", "k", "--file", policy).want(t, 0)
	plain, enc, out := filepath.Join(dir, "p.txt"), filepath.Join(dir, "p.cst"), filepath.Join(dir, "p.out")
	if err := os.WriteFile(plain, []byte("witnessed"), 0o600); err != nil {
		t.Fatal(err)
	}
	runCLI(t, "", "encrypt", "--key", "k", plain, enc).want(t, 0)
	runCLI(t, "", "decrypt", "--justification", "customer_initiated", enc, out).want(t, 1, "FailedPrecondition", "witness")

	state := filepath.Join(dir, "witness-state.json")
	usePrincipal(t, h, nodetest.Auditor)
	runCLI(t, "", "audit", "witness", "--name", "w1", "--key", wkey, "--state", state, "--once").want(t, 0, "cosigned seq ", "recorded at seq ")
	usePrincipal(t, h, "app")
	runCLI(t, "", "decrypt", "--justification", "customer_initiated", enc, out).want(t, 0)
	runCLI(t, "", "officer", "witness", "list").want(t, 0, "witness w1", "last cosigned seq ")

	// A second round extends the first.
	usePrincipal(t, h, nodetest.Auditor)
	runCLI(t, "", "audit", "witness", "--name", "w1", "--key", wkey, "--state", state, "--once").want(t, 0, "cosigned seq ")
	runCLI(t, "", "audit", "list", "--operation", "witness_cosignature").want(t, 0, "cosignature=seq:", "witness:w1")

	// The export holds what the witness cosigned.
	pem, export := filepath.Join(dir, "ledger.pem"), filepath.Join(dir, "ledger.export")
	r := runCLI(t, "", "audit", "pubkey")
	r.want(t, 0)
	if err := os.WriteFile(pem, []byte(r.stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	runCLI(t, "", "audit", "export", export).want(t, 0)
	runCLI(t, "", "audit", "verify", "--pubkey", pem, "--witness-state", state, export).want(t, 0, "holds the head the witness cosigned")

	// An auditor with only the genesis fingerprint and the witness's
	// public key (docs/audit.md): no checkpoint key obtained from the
	// cluster. The witness's newest cosignature in the export anchors the
	// records up to its head; the checkpoint keys they registered verify
	// the rest.
	var gen string
	for _, l := range strings.Split(runCLI(t, "", "officer", "list").stdout, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "genesis" {
			gen = f[1]
		}
	}
	if len(gen) != 64 {
		t.Fatalf("no genesis fingerprint in custos officer list")
	}
	runCLI(t, "", "audit", "verify", "--genesis", gen, "--witness-key", wpub, export).want(t, 0,
		"record 1 is the pinned genesis", "anchored by witness w1's cosignature", "checkpoint keys they registered verified the rest")
	other := filepath.Join(dir, "other.pem")
	runCLI(t, "", "officer", "keygen", "--name", "other", "--out", other).want(t, 0)
	runCLI(t, "", "audit", "verify", "--genesis", gen, "--witness-key", filepath.Join(dir, "other.pub.pem"), export).want(t, 1,
		"no cosignature by the given witness keys")
	runCLI(t, "", "audit", "verify", "--genesis", strings.Repeat("ab", 32), "--witness-key", wpub, export).want(t, 1, "NOT the ledger of the pinned genesis")

	// The cluster no longer serves what the witness cosigned (here: the
	// witness's memory of it differs, as after a rewrite): fork, nothing
	// cosigned, and verification of the export fails.
	b, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	var head audit.Head
	if err := json.Unmarshal(b, &head); err != nil {
		t.Fatal(err)
	}
	head.Hash = "00" + head.Hash[2:]
	b, _ = json.Marshal(head)
	if err := os.WriteFile(state, b, 0o600); err != nil {
		t.Fatal(err)
	}
	before := runCLI(t, "", "audit", "list", "--operation", "witness_cosignature").stdout
	runCLI(t, "", "audit", "witness", "--name", "w1", "--key", wkey, "--state", state, "--once").want(t, 1, "FORK", "not cosigning")
	if after := runCLI(t, "", "audit", "list", "--operation", "witness_cosignature").stdout; after != before {
		t.Fatalf("a forked witness cosigned:\n%s", after)
	}
	runCLI(t, "", "audit", "verify", "--pubkey", pem, "--witness-state", state, export).want(t, 1, "does NOT hold the head the witness cosigned")

	// A ledger that ends before the witnessed head (cut, or rolled back by
	// a restore) is a fork too, not an export error.
	head.Seq = 1_000_000
	b, _ = json.Marshal(head)
	if err := os.WriteFile(state, b, 0o600); err != nil {
		t.Fatal(err)
	}
	runCLI(t, "", "audit", "witness", "--name", "w1", "--key", wkey, "--state", state, "--once").want(t, 1, "FORK", "before seq 1000000")
}
