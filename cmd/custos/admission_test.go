package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"github.com/custos-kms/custos/softhsm"
)

// cliChildEnv, when set, makes the test binary run the custos command line
// with the JSON-encoded arguments it holds, and exit: a separate process,
// as an HSM security officer's `custos hsm trust` must be (it logs in as SO,
// which a process where custosd is logged in as user cannot).
const cliChildEnv = "CUSTOS_TEST_CLI_ARGS"

func maybeCLIChild() {
	raw := os.Getenv(cliChildEnv)
	if raw == "" {
		return
	}
	var args []string
	if err := json.Unmarshal([]byte(raw), &args); err != nil {
		os.Exit(exitUsage)
	}
	os.Exit(run(context.Background(), args, os.Stdin, os.Stdout, os.Stderr))
}

// runCLIProcess runs the command line in a child process.
func runCLIProcess(t *testing.T, args ...string) result {
	t.Helper()
	raw, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), cliChildEnv+"="+string(raw))
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{code, out.String(), errOut.String()}
}

// TestClusterAdmitCommands: the whole admission of a node with the
// commands the docs give, each step checked as a user sees it.
func TestClusterAdmitCommands(t *testing.T) {
	clearEnv(t)
	c := nodetest.StartClusterWith(t, 2, 2, func(i int, cfg *node.Config) {
		if i == 0 {
			cfg.Profile = kms.ProfileDevelopment
		}
	})
	c.ClientTLS(t, "officer-cli")
	cert, key := filepath.Join(filepath.Dir(c.CAFile), "officer-cli.pem"), filepath.Join(filepath.Dir(c.CAFile), "officer-cli-key.pem")
	if _, err := os.Stat(cert); err != nil {
		t.Fatal(err)
	}
	t.Setenv(custos.EnvAddr, c.Members[0].Addr+","+c.Members[1].Addr)
	t.Setenv(custos.EnvCA, c.CAFile)
	t.Setenv(custos.EnvCert, cert)
	t.Setenv(custos.EnvKey, key)
	officer := func(i int) []string {
		return []string{"--officer", c.Officers[i].Name, "--officer-key", c.Officers[i].KeyFile}
	}

	offer := c.WaitAdmission(t, 0, 1, custosv1.AdmissionState_ADMISSION_STATE_OFFERED)
	fp := offer.TransportKeyFingerprint
	identity := c.Members[0].Node.Service().State().IdentityFingerprint("node2")
	r := runCLI(t, "", "cluster", "status")
	r.want(t, 0, "Custodians of the domain key (profile: development", "NOT CRYPTREC-compliant", "OFFERED")
	pubFile := filepath.Join(t.TempDir(), "node2-transport.pem")
	runCLI(t, "", "cluster", "admission", "--public-key", pubFile, "node2").want(t, 0,
		"state:         OFFERED", "transport key: "+fp, "identity key:  "+identity, "custos cluster admit node2")

	admit := []string{"--transport-key", fp, "--identity-key", identity, "--oaep", "sha1"}
	// One officer cannot admit: the quorum is 2 of 3, and the hint says how.
	runCLI(t, "", args("cluster", "admit", admit, officer(0), "node2")...).want(t, 1, "PermissionDenied", "officer propose admit node2")
	runCLI(t, "", args("cluster", "admit", "--transport-key", fp, "--identity-key", identity, "--oaep", "md5", officer(0), "node2")...).want(t, 2, "--oaep")
	file := filepath.Join(t.TempDir(), "admit.json")
	runCLI(t, "", args("officer", "propose", "admit", admit, "--out", file, "node2")...).want(t, 0, "wrote "+file)
	runCLI(t, "", args("officer", "sign", officer(0), file)...).want(t, 0, "NOT CRYPTREC", "signed by officer-1")
	runCLI(t, "", args("officer", "sign", officer(1), file)...).want(t, 0, "signed by officer-2")
	runCLI(t, "", "officer", "submit", file).want(t, 0, "node node2 admitted", "state:         APPROVED", "custos hsm trust")

	// node1's HSM security officer trusts the key, from its own process.
	so := pinFile(t, softhsm.TestSOPIN)
	cfg := c.Members[0].Config
	runCLIProcess(t, "hsm", "trust", "--module", cfg.PKCS11.Module, "--token", cfg.PKCS11.TokenLabel,
		"--public-key", pubFile, "--fingerprint", fp, "--so-pin-file", so).want(t, 0, "trusted transport key "+fp)
	c.WaitAdmission(t, 0, 1, custosv1.AdmissionState_ADMISSION_STATE_ADMITTED)
	for deadline := time.Now().Add(nodetest.AdmissionTimeout); ; {
		r = runCLI(t, "", "cluster", "status", "--json")
		if strings.Count(r.stdout, `"has_domain_key":true`) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node2 holds no domain key after its admission:\n%s", r.stdout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	runCLI(t, "", "cluster", "admission", "node2").want(t, 0, "state:         ADMITTED", "sent by:       node1")

	// One officer revokes it.
	runCLI(t, "", args("cluster", "revoke-admission", officer(2), "node2")...).want(t, 0, "admission of node node2 revoked", "REVOKED")
	runCLI(t, "", args("cluster", "revoke-admission", officer(2), "node1")...).want(t, 1, "only custodian")
}
