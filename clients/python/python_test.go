// Package python_test runs the Python client's tests (clients/python/tests)
// against a real custos node, and checks that the Go and Python clients read
// each other's envelope files byte for byte. It is part of go test ./... and
// so of make test.
package python_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/internal/pki"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// python is the interpreter whose Debian packages the client is built on.
const python = "/usr/bin/python3"

const installHint = "install them with `sh softhsm/install.sh` (or `make test`, which runs it), " +
	"or: apt-get install -y python3-grpcio python3-protobuf python3-cryptography python3-grpc-tools"

// requirePython fails the test (never skips it) when the interpreter or its
// packages are missing.
func requirePython(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(python); err != nil {
		t.Fatalf("the Python client tests need %s (Debian's python3): %v; %s", python, err, installHint)
	}
	out, err := exec.Command(python, "-c", "import grpc, google.protobuf, cryptography").CombinedOutput()
	if err != nil {
		t.Fatalf("%s cannot import grpc, google.protobuf and cryptography: %v\n%s\n%s", python, err, out, installHint)
	}
}

func TestPythonClient(t *testing.T) {
	requirePython(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	h := nodetest.Start(t)
	// Go and Python present the same client certificate: keys are used by
	// the principal that created them.
	const cn = "pyclient"
	tlsCfg := h.ClientTLS(t, cn)
	certFile, keyFile := pki.ClientFiles(filepath.Dir(h.CAFile), cn)

	c, err := custos.Dial(ctx, custos.Config{Addrs: []string{h.Addr}, TLS: tlsCfg})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const key = "python-cross"
	if _, err := c.CreateKey(ctx, key, "clients/python cross-language test"); err != nil {
		t.Fatal(err)
	}
	// The key releases only to signed requests (docs/signed-requests.md):
	// every Python decrypt below must carry the Python client's signature.
	pol, err := c.GetPolicy(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	pol.RequireRequestSignature = true
	st, err := c.NewStatement(ctx, "signed requests only", 0)
	if err != nil {
		t.Fatal(err)
	}
	st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: key, Policy: pol}}
	if _, err := c.SignAndSubmit(ctx, st, custos.Officer{Name: h.Officers[0].Name, Signer: h.Officers[0].Key},
		custos.Officer{Name: h.Officers[1].Name, Signer: h.Officers[1].Key}); err != nil {
		t.Fatalf("set_policy: %v", err)
	}

	work := t.TempDir()
	plain := make([]byte, 3*4096+1234)
	if _, err := rand.Read(plain); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "plain.bin"), plain, 0o600); err != nil {
		t.Fatal(err)
	}
	// (1) Go encrypts, Python decrypts (test_decrypt_go_file).
	if _, err := c.EncryptFile(ctx, filepath.Join(work, "plain.bin"), filepath.Join(work, "go.cste"), key,
		map[string]string{"lang": "go"}, custos.WithSegmentSize(4096)); err != nil {
		t.Fatal(err)
	}

	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, python, "-m", "unittest", "discover", "-s", "clients/python/tests", "-v")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(),
		custos.EnvAddr+"="+h.Addr,
		custos.EnvCA+"="+h.CAFile,
		custos.EnvCert+"="+certFile,
		custos.EnvKey+"="+keyFile,
		"CUSTOS_PYTEST_DIR="+work,
		"CUSTOS_PYTEST_KEY="+key,
		"PYTHONDONTWRITEBYTECODE=1", // keep the source tree clean
		"PYTHONPATH="+filepath.Join(repo, "clients", "python"),
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s -m unittest discover -s clients/python/tests failed: %v\n%s", python, err, out)
	}
	t.Logf("python tests:\n%s", out)
	// The node tests skip themselves without a node: make sure they ran.
	for _, name := range []string{"decrypt_go_file", "encrypt_for_go", "data_key_round_trip", "unspecified_reason"} {
		if _, err := os.Stat(filepath.Join(work, "ok-"+name)); err != nil {
			t.Errorf("python test %s did not pass (skipped?):\n%s", name, out)
		}
	}
	if strings.Contains(string(out), "skipped") {
		t.Errorf("python tests were skipped:\n%s", out)
	}

	// test_unspecified_reason: the decrypt without a reason is recorded as
	// REASON_UNSPECIFIED and decided as its own reason, not as
	// CUSTOMER_INITIATED.
	aud, err := custos.Dial(ctx, custos.Config{Addrs: []string{h.Addr}, TLS: h.ClientTLS(t, nodetest.Auditor)})
	if err != nil {
		t.Fatal(err)
	}
	defer aud.Close()
	var found bool
	signed := 0
	for r, err := range aud.Decisions(ctx, &custosv1.DecisionFilter{Key: key}, 0) {
		if err != nil {
			t.Fatal(err)
		}
		if r.GetOutcome() == custosv1.Outcome_OUTCOME_ALLOW && r.GetPrincipal() == cn && r.GetOperation() == custosv1.Operation_OPERATION_DECRYPT_DATA_KEY {
			if r.GetRequestSignature() == nil || len(r.GetPrincipalCertificate()) == 0 {
				t.Errorf("record %d: a release to the Python client without its request signature", r.GetSeq())
			}
			signed++
		}
		if r.GetJustificationText() != "no reason given" {
			continue
		}
		found = true
		if r.GetReason() != custosv1.Reason_REASON_UNSPECIFIED || r.GetOutcome() != custosv1.Outcome_OUTCOME_PENDING ||
			r.GetMatchedRule() != "policy/v2:reason=UNSPECIFIED:require-approval" {
			t.Errorf("Python decrypt without a reason recorded as %v %v rule %q, want UNSPECIFIED PENDING by the default policy's UNSPECIFIED rule",
				r.GetReason(), r.GetOutcome(), r.GetMatchedRule())
		}
	}
	if !found {
		t.Errorf("no ledger record of the Python decrypt without a reason")
	}
	if signed < 2 {
		t.Errorf("%d signed releases to the Python client, want at least 2", signed)
	}

	// (1) The Python plaintext matches.
	if got, err := os.ReadFile(filepath.Join(work, "go.out")); err != nil || !bytes.Equal(got, plain) {
		t.Errorf("Go-encrypted file decrypted by Python: err %v, equal %v", err, bytes.Equal(got, plain))
	}
	// (2) Python encrypts (test_encrypt_for_go), Go decrypts.
	j := custos.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Text: "clients/python test"}
	hdr, err := c.DecryptFile(ctx, filepath.Join(work, "py.cste"), filepath.Join(work, "py.out"), j,
		custos.WithExpectedContext(map[string]string{"lang": "python", "地域": "東京"}))
	if err != nil {
		t.Fatalf("Go DecryptFile of the Python envelope: %v", err)
	}
	if hdr.Key != key || hdr.SegmentSize != 4096 {
		t.Errorf("Python envelope header: key %q segment size %d, want %q 4096", hdr.Key, hdr.SegmentSize, key)
	}
	if got, err := os.ReadFile(filepath.Join(work, "py.out")); err != nil || !bytes.Equal(got, plain) {
		t.Errorf("Python-encrypted file decrypted by Go: err %v, equal %v", err, bytes.Equal(got, plain))
	}
}
