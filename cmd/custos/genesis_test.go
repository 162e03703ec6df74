package main

import (
	"crypto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-kms/custos/kms/governance"
)

// `custos officer propose genesis` writes an unsigned CreateCluster naming
// the officers by their public key files, with a new cluster id; once a
// quorum of them signed it, it is a genesis that holds.
func TestOfficerProposeGenesis(t *testing.T) {
	dir := t.TempDir()
	var args []string
	signers := map[string]crypto.Signer{}
	for _, name := range []string{"alice", "bob", "carol"} {
		k, err := governance.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		signers[name] = k
		pub := filepath.Join(dir, name+".pub.pem")
		if err := os.WriteFile(pub, governance.PublicKeyPEM(&k.PublicKey), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--officer", name+"="+pub)
	}
	out := filepath.Join(dir, "genesis.json")
	runCLI(t, "", append([]string{"officer", "propose", "genesis", "--quorum", "4", "--out", out}, args...)...).want(t, 2, "--quorum 4")
	runCLI(t, "", "officer", "propose", "genesis", "--quorum", "1", "--out", out).want(t, 2, "--officer NAME=PUBKEY.pem")
	r := runCLI(t, "", append([]string{"officer", "propose", "genesis", "--quorum", "2", "--out", out}, args...)...)
	r.want(t, 0, "create_cluster", `"alice"`, "quorum=2 of 3", "custos officer sign")
	runCLI(t, "", append([]string{"officer", "propose", "genesis", "--quorum", "2", "--out", out}, args...)...).want(t, 1, "already exists")

	f, err := governance.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := governance.VerifyGenesis(f.Signed(), time.Now()); err == nil {
		t.Fatal("an unsigned genesis holds")
	}
	for _, name := range []string{"alice", "carol"} {
		sig, err := governance.Sign(signers[name], name, f.Statement)
		if err != nil {
			t.Fatal(err)
		}
		f.AddSignature(sig)
	}
	st, who, err := governance.VerifyGenesis(f.Signed(), time.Now())
	if err != nil || strings.Join(who, ",") != "alice,carol" || len(st.ClusterId) != 32 {
		t.Fatalf("the signed genesis: %v, signers %v, %v", st, who, err)
	}
}
