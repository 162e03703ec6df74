package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/internal/pki"
)

// result is the outcome of one in-process run.
type result struct {
	code           int
	stdout, stderr string
}

func runCLI(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code := run(ctx, args, strings.NewReader(stdin), &out, &errOut)
	return result{code, out.String(), errOut.String()}
}

// want checks the exit code and that stderr (for failures) or stdout
// contains each of the substrings.
func (r result) want(t *testing.T, code int, contains ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
	text := r.stdout
	if code != 0 {
		text = r.stderr
	}
	for _, s := range contains {
		if !strings.Contains(text, s) {
			t.Errorf("output %q does not contain %q", text, s)
		}
	}
}

func clearEnv(t *testing.T) {
	for _, v := range []string{custos.EnvAddr, custos.EnvCA, custos.EnvCert, custos.EnvKey,
		envOfficerName, envOfficerKey, envOfficerPassphrase, envOfficerPKCS11, envOfficerPIN} {
		t.Setenv(v, "")
	}
}

func TestHelp(t *testing.T) {
	clearEnv(t)
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"key", "--help"}, {"help", "key"}, {"help", "decrypt"}} {
		r := runCLI(t, "", args...)
		r.want(t, 0, "Usage: custos")
		if r.stderr != "" {
			t.Errorf("%q: stderr %q, want none", args, r.stderr)
		}
	}
	// Every command group answers "GROUP help", "GROUP --help", "GROUP -h"
	// and "help GROUP" alike; "GROUP help SUBCOMMAND" is the subcommand's help.
	groups := map[string]bool{}
	for _, c := range commands {
		f := strings.Fields(c.name)
		for i := 1; i < len(f); i++ {
			groups[strings.Join(f[:i], " ")] = true
		}
	}
	for g := range groups {
		words := strings.Fields(g)
		for _, args := range [][]string{slices.Concat(words, []string{"help"}), slices.Concat(words, []string{"--help"}),
			slices.Concat(words, []string{"-h"}), slices.Concat([]string{"help"}, words)} {
			r := runCLI(t, "", args...)
			r.want(t, 0, "Usage: custos "+g+" SUBCOMMAND", "Subcommands:")
			if r.stderr != "" {
				t.Errorf("%q: stderr %q, want none", args, r.stderr)
			}
		}
	}
	runCLI(t, "", "key", "help", "create").want(t, 0, "Usage: custos [connection flags] key create ")
	runCLI(t, "", "officer", "help", "propose", "enable").want(t, 0, "Usage: custos [connection flags] officer propose enable ")
	runCLI(t, "", "key", "help", "explode").want(t, 2, `unknown command "key explode"`)
	for _, c := range commands {
		args := append(strings.Fields(c.name), "--help")
		t.Run(c.name, func(t *testing.T) {
			r := runCLI(t, "", args...)
			r.want(t, 0, "Usage: custos [connection flags] "+c.name)
		})
	}
}

func TestUsageErrors(t *testing.T) {
	clearEnv(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "Usage: custos"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"key"}, "Usage: custos key SUBCOMMAND"},
		{[]string{"key", "explode", "x"}, `unknown command "key explode"`},
		{[]string{"--bogus", "key", "list"}, "flag provided but not defined: -bogus"},
		{[]string{"key", "list", "--bogus"}, "custos: key list: flag provided but not defined: -bogus"},
		{[]string{"key", "create"}, "custos: key create: too few arguments"},
		{[]string{"key", "get", "a", "b"}, `unexpected argument "b"`},
		{[]string{"key", "min-version", "k", "zero"}, "positive integer"},
		{[]string{"encrypt", "in", "out"}, "--key is required"},
		{[]string{"encrypt", "--key", "k", "--context", "novalue", "in", "out"}, "want key=value"},
		{[]string{"encrypt", "--key", "k", "--context", "a=1", "--context", "a=2", "in", "out"}, "given twice"},
		{[]string{"decrypt", "--justification", "because", "in", "out"}, "unknown justification reason"},
		{[]string{"decrypt", "in"}, "too few arguments"},
		{[]string{"datakey"}, "--key is required"},
		{[]string{"version", "extra"}, "unexpected argument"},
	} {
		r := runCLI(t, "", tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("custos %q: exit %d, stderr %q; want exit 2 and %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
}

func TestMissingEnvironment(t *testing.T) {
	clearEnv(t)
	r := runCLI(t, "", "key", "list")
	r.want(t, 1, "custos: key list: not configured", "CUSTOS_ADDR", "CUSTOS_CA", "CUSTOS_CERT", "CUSTOS_KEY", "client.env")
	// Flags fill the gaps; the message names only what is still missing.
	r = runCLI(t, "", "--addr", "127.0.0.1:1", "--tls-ca", "ca.pem", "--tls-cert", "c.pem", "key", "list")
	r.want(t, 1, "CUSTOS_KEY (or --tls-key)")
	if strings.Contains(r.stderr, "CUSTOS_ADDR") || strings.Contains(r.stderr, "CUSTOS_CA ") || strings.Contains(r.stderr, "CUSTOS_CERT") {
		t.Errorf("stderr %q names a variable that a flag set", r.stderr)
	}
}

// TestConnectionFlagNames: the client's TLS files are --tls-ca, --tls-cert
// and --tls-key. --key before the command (once the TLS key, after it a
// custos key) is refused with a pointer to --tls-key, and --ca (officer
// propose genesis has a --ca) with one to --tls-ca; --cert still works,
// with a warning.
func TestConnectionFlagNames(t *testing.T) {
	clearEnv(t)
	for _, args := range [][]string{
		{"--key", "payroll", "encrypt", "--key", "payroll", "in", "out"},
		{"--key=app-key.pem", "key", "list"},
		{"-key", "app-key.pem", "key", "list"},
	} {
		r := runCLI(t, "", args...)
		r.want(t, 2, "before the command", "--tls-key FILE", "custos encrypt --key NAME")
		if strings.Count(r.stderr, "custos:") != 1 {
			t.Errorf("%q: stderr %q, want one error line", args, r.stderr)
		}
	}
	for _, args := range [][]string{
		{"--ca", "customer-ca.pem", "officer", "propose", "genesis", "--quorum", "1", "--out", "g.json"},
		{"--ca=ca.pem", "key", "list"},
	} {
		r := runCLI(t, "", args...)
		r.want(t, 2, "before the command", "--tls-ca FILE", "officer propose genesis --ca CA.pem")
	}
	r := runCLI(t, "", "--addr", "127.0.0.1:1", "--tls-ca", "ca.pem", "--cert", "c.pem", "key", "list")
	r.want(t, 1, "custos: warning: --cert is deprecated: use --tls-cert", "CUSTOS_KEY (or --tls-key)")
	if strings.Contains(r.stderr, "CUSTOS_CERT") {
		t.Errorf("stderr %q: the deprecated --cert did not set the certificate", r.stderr)
	}
	r = runCLI(t, "", "--help")
	r.want(t, 0, "  --tls-ca FILE\n", "  --tls-cert FILE\n", "  --tls-key FILE\n", "  --addr string\n", "(default 30s)")
	for _, old := range []string{"  --key", "  --cert", "  --ca"} {
		if strings.Contains(r.stdout, old) {
			t.Errorf("custos --help shows %q", old)
		}
	}
}

// usePrincipal points the CUSTOS_* environment at h with a client
// certificate for cn.
func usePrincipal(t *testing.T, h *nodetest.Harness, cn string) {
	t.Helper()
	h.ClientTLS(t, cn) // issues the certificate into the harness PKI
	cert, key := pki.ClientFiles(filepath.Dir(h.CAFile), cn)
	t.Setenv(custos.EnvAddr, h.Addr)
	t.Setenv(custos.EnvCA, h.CAFile)
	t.Setenv(custos.EnvCert, cert)
	t.Setenv(custos.EnvKey, key)
}

func TestVersion(t *testing.T) {
	runCLI(t, "", "version").want(t, 0, "custos ", "go1.")
}

// TestQuickstart walks through the README quickstart against a real node.
func TestQuickstart(t *testing.T) {
	clearEnv(t)
	h := nodetest.Start(t)
	usePrincipal(t, h, "app")
	// The connection flags do what the environment does.
	tlsFlags := []string{"--addr", os.Getenv(custos.EnvAddr), "--tls-ca", os.Getenv(custos.EnvCA),
		"--tls-cert", os.Getenv(custos.EnvCert), "--tls-key", os.Getenv(custos.EnvKey)}
	clearEnv(t)
	runCLI(t, "", args(tlsFlags, "key", "list")...).want(t, 0)
	usePrincipal(t, h, "app")

	dir := t.TempDir()
	plain := filepath.Join(dir, "salaries.csv")
	content := "name,salary\nalice,100\nbob,200\n"
	if err := os.WriteFile(plain, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	enc := plain + ".cst"
	out := filepath.Join(dir, "salaries.out.csv")

	runCLI(t, "", "key", "create", "--description", "Payroll exports", "payroll").
		want(t, 0, "payroll state=ENABLED primary=1", `description="Payroll exports"`)
	// Flags may also follow the positional arguments.
	runCLI(t, "", "key", "create", "audit", "--description", "x").want(t, 0, "audit state=ENABLED")
	runCLI(t, "", "key", "create", "payroll").want(t, 1, "custos: key create:", "(AlreadyExists)")

	r := runCLI(t, "", "key", "get", "--json", "payroll")
	r.want(t, 0)
	var kj keyJSON
	if err := json.Unmarshal([]byte(r.stdout), &kj); err != nil {
		t.Fatalf("key get --json: %v in %q", err, r.stdout)
	}
	if kj.Name != "payroll" || kj.State != "ENABLED" || kj.PrimaryVersion != 1 || len(kj.Versions) != 1 {
		t.Errorf("key get --json = %+v", kj)
	}
	r = runCLI(t, "", "key", "list")
	r.want(t, 0, "audit state=", "payroll state=")
	if n := strings.Count(r.stdout, "\n"); n != 2 {
		t.Errorf("key list printed %d lines, want 2: %q", n, r.stdout)
	}
	r = runCLI(t, "", "key", "list", "--json")
	r.want(t, 0)
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		if err := json.Unmarshal([]byte(line), &kj); err != nil {
			t.Errorf("key list --json line %q: %v", line, err)
		}
	}
	runCLI(t, "", "key", "get", "nope").want(t, 1, "custos: key get:", "(NotFound)")

	runCLI(t, "", "encrypt", "--key", "payroll", "--context", "dept=hr", "--context", "app=payroll", plain, enc).
		want(t, 0, "encrypted", "key payroll version 1")
	runCLI(t, "", "decrypt", "--justification", "customer_initiated", "--text", "monthly payroll run", "--ticket", "PAY-42", enc, out).
		want(t, 0, "decrypted", "version 1")
	if got, _ := os.ReadFile(out); string(got) != content {
		t.Errorf("decrypted file = %q, want %q", got, content)
	}
	// stdin to stdout.
	ct, err := os.ReadFile(enc)
	if err != nil {
		t.Fatal(err)
	}
	r = runCLI(t, string(ct), "decrypt", "--justification", "CUSTOMER_INITIATED", "-", "-")
	r.want(t, 0)
	if r.stdout != content {
		t.Errorf("decrypt - - wrote %q, want %q", r.stdout, content)
	}
	// Without --justification the reason is recorded as not given
	// (UNSPECIFIED), which the default policy holds for the officers; it is
	// never recorded as a reason the caller did not state.
	runCLI(t, "", "decrypt", enc, filepath.Join(dir, "noreason.out")).want(t, 1, "approval required", "officer approve")
	usePrincipal(t, h, nodetest.Auditor)
	r = runCLI(t, "", "audit", "list", "--reason", "UNSPECIFIED")
	r.want(t, 0, "PENDING key=payroll v1", "reason=UNSPECIFIED", "rule=policy/v1:reason=UNSPECIFIED:require-approval")
	if n := len(lines(r.stdout)); n != 1 {
		t.Errorf("audit list --reason UNSPECIFIED printed %d records, want 1:\n%s", n, r.stdout)
	}
	runCLI(t, "", "audit", "list", "--reason", "CUSTOMER_INITIATED").want(t, 0, "reason=CUSTOMER_INITIATED")
	usePrincipal(t, h, "app")
	r = runCLI(t, content, "encrypt", "--key", "payroll", "-", "-")
	r.want(t, 0)
	if !strings.HasPrefix(r.stdout, "CSTE") {
		t.Errorf("encrypt - - did not write an envelope to stdout: %q", r.stdout)
	}
	runCLI(t, "", "decrypt", "--expect-context", "dept=it", enc, filepath.Join(dir, "x")).
		want(t, 1, "custos: decrypt:", `"dept" is "hr" (want "it")`)

	runCLI(t, "", "datakey", "--key", "payroll", "--context", "a=b").want(t, 0, "key=payroll version=1 wrapped=")
	if r := runCLI(t, "", "datakey", "--key", "payroll"); strings.Contains(r.stdout, "plaintext") {
		t.Errorf("datakey without --show-plaintext printed %q", r.stdout)
	}
	runCLI(t, "", "datakey", "--key", "payroll", "--show-plaintext").want(t, 0, "plaintext=")
	r = runCLI(t, "", "datakey", "--key", "payroll", "--json")
	r.want(t, 0, `"wrapped":`)

	runCLI(t, "", "key", "rotate", "payroll").want(t, 0, "payroll state=ENABLED primary=2")
	enc2 := filepath.Join(dir, "v2.cst")
	runCLI(t, "", "encrypt", "--key", "payroll", plain, enc2).want(t, 0, "version 2")
	runCLI(t, "", "decrypt", "--justification", "CUSTOMER_INITIATED", enc, filepath.Join(dir, "old.out")).want(t, 0, "version 1")

	runCLI(t, "", "key", "disable", "payroll").want(t, 0, "payroll state=DISABLED")
	gone := filepath.Join(dir, "disabled.out")
	r = runCLI(t, "", "decrypt", "--justification", "CUSTOMER_INITIATED", enc, gone)
	r.want(t, 1, "custos: decrypt:", "payroll", "disabled", "(FailedPrecondition)")
	if strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("error is not one line: %q", r.stderr)
	}
	if _, err := os.Stat(gone); !os.IsNotExist(err) {
		t.Errorf("output file exists after a refused decrypt (stat: %v)", err)
	}
	// Re-enabling needs the officer quorum (2 of 3).
	enableByQuorum(t, h, "payroll")
	runCLI(t, "", "key", "min-version", "payroll", "2").want(t, 0, "min_decryption=2")
	runCLI(t, "", "decrypt", "--justification", "CUSTOMER_INITIATED", enc, gone).want(t, 1, "(FailedPrecondition)")
	runCLI(t, "", "decrypt", "--justification", "CUSTOMER_INITIATED", enc2, filepath.Join(dir, "v2.out")).want(t, 0, "version 2")
}
