package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-kms/custos/internal/node/nodetest"
)

// TestOfficerSignReadiness: after each signature officer sign says whether
// the statement is ready to submit (and how) or how many more signatures
// the cluster's quorum needs, asking the cluster for its officer set when
// a connection is configured; offline it says it cannot know.
func TestOfficerSignReadiness(t *testing.T) {
	clearEnv(t)
	h := nodetest.Start(t) // three officers, quorum 2
	usePrincipal(t, h, "app")
	dir := t.TempDir()

	file := filepath.Join(dir, "enable.json")
	runCLI(t, "", "officer", "propose", "enable", "--key", "payroll", "--out", file).want(t, 0)
	r := runCLI(t, "", args("officer", "sign", asOfficer(h, 0), file)...)
	r.want(t, 0, "1 signature(s): officer-1; it needs the quorum, 2 of the cluster's 3 officers: 1 more signature(s); the next officer runs 'custos officer sign "+file+"'")
	if strings.Contains(r.stdout, "ready to submit") {
		t.Errorf("one of two signatures: %q says ready", r.stdout)
	}
	runCLI(t, "", args("officer", "sign", asOfficer(h, 1), file)...).
		want(t, 0, "2 signature(s): officer-1, officer-2; that meets the quorum of 2 of the cluster's 3 officers: ready to submit: custos officer submit "+file)

	// One signature suffices for a tightening statement.
	revoke := filepath.Join(dir, "revoke.json")
	runCLI(t, "", "officer", "propose", "revoke", "--key", "payroll", "--out", revoke).want(t, 0)
	runCLI(t, "", args("officer", "sign", asOfficer(h, 2), revoke)...).
		want(t, 0, "one officer's signature suffices: ready to submit: custos officer submit "+revoke)

	// A signer the cluster does not know.
	mallory := filepath.Join(dir, "mallory.pem")
	runCLI(t, "", "officer", "keygen", "--name", "mallory", "--out", mallory).want(t, 0)
	other := filepath.Join(dir, "other.json")
	runCLI(t, "", "officer", "propose", "enable", "--key", "payroll", "--out", other).want(t, 0)
	runCLI(t, "", "officer", "sign", "--officer", "mallory", "--officer-key", mallory, other).
		want(t, 0, "the cluster would refuse it:", "mallory")

	// A statement for another cluster, and no connection at all.
	foreign := filepath.Join(dir, "foreign.json")
	runCLI(t, "", "officer", "propose", "enable", "--key", "payroll", "--cluster-id", "c0ffee", "--out", foreign).want(t, 0)
	runCLI(t, "", args("officer", "sign", asOfficer(h, 0), foreign)...).
		want(t, 0, "it needs the officer quorum, which is not known here (the configured cluster is ", "the statement's is c0ffee")
	offline := filepath.Join(dir, "offline.json")
	runCLI(t, "", "officer", "propose", "enable", "--key", "payroll", "--out", offline).want(t, 0)
	clearEnv(t)
	runCLI(t, "", args("officer", "sign", asOfficer(h, 0), offline)...).
		want(t, 0, "it needs the officer quorum, which is not known here (no connection is configured", "once enough officers have signed, submit it: custos officer submit "+offline)
}

// TestOfficerSignGenesisReadiness: for an officer-signed genesis the
// officer set is the one the statement names (there is no cluster to ask):
// officer sign counts the signatures against its quorum and, once met,
// says the bootstrap node's configuration is to name the file. The
// officers' public key files are those officer keygen writes.
func TestOfficerSignGenesisReadiness(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	var officers []string
	for _, name := range []string{"alice", "bob", "carol", "mallory"} {
		runCLI(t, "", "officer", "keygen", "--name", name, "--out", filepath.Join(dir, name+".pem")).want(t, 0)
		if name != "mallory" {
			officers = append(officers, "--officer", name+"="+filepath.Join(dir, name+".pub.pem"))
		}
	}
	sign := func(name, file string) result {
		return runCLI(t, "", "officer", "sign", "--officer", name, "--officer-key", filepath.Join(dir, name+".pem"), file)
	}
	genesis := filepath.Join(dir, "genesis.json")
	runCLI(t, "", args("officer", "propose", "genesis", "--quorum", "2", "--out", genesis, officers)...).want(t, 0)
	sign("alice", genesis).want(t, 0, "1 signature(s): alice; it needs 2 of the 3 officers it names: 1 more signature(s); the next of them runs 'custos officer sign "+genesis+"'")
	sign("carol", genesis).want(t, 0, "2 signature(s): alice, carol; that meets the quorum of 2 of the 3 officers it names: ready: the bootstrap node's configuration names it (\"genesis\": \""+genesis+"\")")

	other := filepath.Join(dir, "other.json")
	runCLI(t, "", args("officer", "propose", "genesis", "--quorum", "2", "--out", other, officers)...).want(t, 0)
	sign("mallory", other).want(t, 0, "the bootstrap node would refuse it:", "mallory")
}
