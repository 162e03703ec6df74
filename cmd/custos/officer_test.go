package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// asOfficer returns the flags that sign as harness officer i.
func asOfficer(h *nodetest.Harness, i int) []string {
	return []string{"--officer", h.Officers[i].Name, "--officer-key", h.Officers[i].KeyFile}
}

func args(parts ...any) []string {
	var out []string
	for _, p := range parts {
		switch v := p.(type) {
		case string:
			out = append(out, v)
		case []string:
			out = append(out, v...)
		}
	}
	return out
}

// offlineQuorum proposes with propose (the `officer propose` arguments),
// has officers 0 and 1 sign from their own key files, and submits.
func offlineQuorum(t *testing.T, h *nodetest.Harness, propose ...string) result {
	t.Helper()
	file := filepath.Join(t.TempDir(), "statement.json")
	runCLI(t, "", args("officer", "propose", propose, "--out", file)...).want(t, 0, "wrote "+file)
	runCLI(t, "", args("officer", "sign", asOfficer(h, 0), file)...).want(t, 0, "signed by officer-1")
	runCLI(t, "", args("officer", "sign", asOfficer(h, 1), file)...).want(t, 0, "signed by officer-2", "2 signature(s)")
	r := runCLI(t, "", "officer", "submit", file)
	r.want(t, 0, "applied: ")
	return r
}

// enableByQuorum re-enables key with a 2-of-3 EnableKey statement.
func enableByQuorum(t *testing.T, h *nodetest.Harness, key string) {
	t.Helper()
	offlineQuorum(t, h, "enable", "--key", key).want(t, 0, "key "+key+" enabled", key+" state=ENABLED")
}

// appClient is a library client as "app", for checks around the CLI.
func appClient(t *testing.T, h *nodetest.Harness) *custos.Client {
	t.Helper()
	c, err := custos.Dial(context.Background(), custos.Config{Addrs: []string{h.Addr}, TLS: h.ClientTLS(t, "app")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// newPending waits until key has a pending request other than those in
// seen and returns its id.
func newPending(t *testing.T, c *custos.Client, key string, seen map[string]bool) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		reqs, err := c.ListPending(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range reqs {
			if !seen[r.GetRequestId()] {
				seen[r.GetRequestId()] = true
				return r.GetRequestId()
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no new pending request for key %s", key)
	return ""
}

func TestOfficerKeygen(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	pass := filepath.Join(dir, "pass")
	if err := os.WriteFile(pass, []byte("correct horse\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "alice.pem")
	pubFile := filepath.Join(dir, "alice.pub.pem")
	r := runCLI(t, "", "officer", "keygen", "--name", "alice", "--out", out, "--passphrase-file", pass)
	r.want(t, 0, "officer key for alice written to "+out, "encrypted with the passphrase", "public key written to "+pubFile,
		"fingerprint: ", "BEGIN PUBLIC KEY", `officers entry: {"name":"alice","public_key_file":"`+pubFile+`"}`)
	signer, err := governance.LoadKeyFile(out, func() ([]byte, error) { return []byte("correct horse"), nil })
	if err != nil {
		t.Fatalf("LoadKeyFile: %v", err)
	}
	if fp := fingerprintOf(signer); !strings.Contains(r.stdout, "fingerprint: "+fp) {
		t.Errorf("stdout %q lacks the key's fingerprint %s", r.stdout, fp)
	}
	// The entry is what the custosd configuration's "officers" takes: name
	// and public_key_file, nothing else; the file holds the public key.
	m := regexp.MustCompile(`officers entry: (.*)`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("no officers entry in %q", r.stdout)
	}
	dec := json.NewDecoder(strings.NewReader(m[1]))
	dec.DisallowUnknownFields()
	var entry struct {
		Name          string `json:"name"`
		PublicKeyFile string `json:"public_key_file"`
	}
	if err := dec.Decode(&entry); err != nil || entry.Name != "alice" || entry.PublicKeyFile != pubFile {
		t.Fatalf("officers entry %s: %+v, %v", m[1], entry, err)
	}
	pubPEM, err := os.ReadFile(pubFile)
	if err != nil {
		t.Fatal(err)
	}
	if pub, err := governance.ParsePublicKeyPEM(pubPEM); err != nil || !pub.Equal(signer.Public()) {
		t.Errorf("%s does not hold the key's public key (%v)", pubFile, err)
	}
	if fi, err := os.Stat(pubFile); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("%s: mode %v, %v; want 0644", pubFile, fi.Mode().Perm(), err)
	}
	// officer pubkey prints the same PEM from the key file, asking for the
	// passphrase as signing does.
	runCLI(t, "", "officer", "pubkey", out).want(t, 1, "passphrase")
	r = runCLI(t, "", "officer", "pubkey", "--passphrase-file", pass, out)
	if r.want(t, 0); r.stdout != string(pubPEM) {
		t.Errorf("officer pubkey = %q, want %q", r.stdout, pubPEM)
	}
	bad := filepath.Join(dir, "bad-pass")
	os.WriteFile(bad, []byte("wrong\n"), 0o600)
	runCLI(t, "", "officer", "pubkey", "--passphrase-file", bad, out).want(t, 1, "custos: officer pubkey:")
	runCLI(t, "", "officer", "pubkey", filepath.Join(dir, "none.pem")).want(t, 1, "none.pem")
	runCLI(t, "", "officer", "pubkey").want(t, 2, "too few arguments")
	// A public key file in the way: refused before anything is written.
	carolPub := filepath.Join(dir, "carol.pub.pem")
	os.WriteFile(carolPub, []byte("mine"), 0o644)
	runCLI(t, "", "officer", "keygen", "--name", "carol", "--out", filepath.Join(dir, "carol.pem"), "--passphrase-file", pass).
		want(t, 1, carolPub+" already exists")
	if _, err := os.Stat(filepath.Join(dir, "carol.pem")); err == nil {
		t.Error("keygen wrote the key although its public key file was in the way")
	}
	if _, err := governance.LoadKeyFile(out, func() ([]byte, error) { return []byte("wrong"), nil }); err == nil {
		t.Error("wrong passphrase accepted")
	}
	// Never overwritten.
	runCLI(t, "", "officer", "keygen", "--name", "alice", "--out", out).want(t, 1, "already exists")
	// Without a passphrase and without a terminal: unencrypted, with a warning.
	plain := filepath.Join(dir, "bob.pem")
	r = runCLI(t, "", "officer", "keygen", "--name", "bob", "--out", plain)
	r.want(t, 0, "UNENCRYPTED")
	if !strings.Contains(r.stderr, "warning") {
		t.Errorf("no warning for an unencrypted key: %q", r.stderr)
	}
	if _, err := governance.LoadKeyFile(plain, nil); err != nil {
		t.Errorf("LoadKeyFile(unencrypted): %v", err)
	}
	r = runCLI(t, "", "officer", "pubkey", plain)
	if want, _ := os.ReadFile(filepath.Join(dir, "bob.pub.pem")); r.code != 0 || r.stdout != string(want) {
		t.Errorf("officer pubkey of an unencrypted key: exit %d, %q; want %q", r.code, r.stdout, want)
	}
	// Signing with the encrypted key needs the passphrase: from the
	// environment here, never from a flag.
	st, err := governance.NewStatement("c1", time.Hour, "")
	if err != nil {
		t.Fatal(err)
	}
	st.Operation = &custosv1.Statement_RevokeKey{RevokeKey: &custosv1.RevokeKey{Key: "k"}}
	b, _ := governance.Marshal(st)
	f, _ := governance.NewFile(b)
	sfile := filepath.Join(dir, "s.json")
	if err := governance.WriteFile(sfile, f); err != nil {
		t.Fatal(err)
	}
	runCLI(t, "", "officer", "sign", "--officer", "alice", "--officer-key", out, sfile).want(t, 1, "passphrase")
	t.Setenv(envOfficerPassphrase, "correct horse")
	runCLI(t, "", "officer", "sign", "--officer", "alice", "--officer-key", out, sfile).
		want(t, 0, `statement: revoke_key key="k" (needs one) cluster="c1"`, "signed by alice", "1 signature(s): alice")
	// Offline propose with an explicit cluster id needs no connection.
	prop := filepath.Join(dir, "p.json")
	runCLI(t, "", "officer", "propose", "deny", "--cluster-id", "c1", "--out", prop, "req-1").
		want(t, 0, "wrote "+prop, `deny_request request="req-1"`)
	runCLI(t, "", "officer", "propose", "deny", "--cluster-id", "c1", "--out", prop, "req-1").want(t, 1, "already exists")
}

func TestOfficerUsageErrors(t *testing.T) {
	clearEnv(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"officer"}, "Usage: custos officer SUBCOMMAND"},
		{[]string{"officer", "propose"}, "Usage: custos officer propose SUBCOMMAND"},
		{[]string{"key", "policy"}, "Usage: custos key policy SUBCOMMAND"},
		{[]string{"officer", "keygen", "--out", "x"}, "--name and --out are required"},
		{[]string{"officer", "keygen", "--passphrase", "secret"}, "flag provided but not defined"},
		{[]string{"officer", "approve"}, "too few arguments"},
		{[]string{"officer", "approve", "--ttl", "10ms", "r1"}, "--ttl"},
		{[]string{"officer", "grant", "--key", "k"}, "--principal, --key and --reason are required"},
		{[]string{"officer", "grant", "--key", "k", "--principal", "p", "--reason", "whim"}, "unknown justification reason"},
		{[]string{"officer", "propose", "enable", "--out", "x"}, "--key is required"},
		{[]string{"officer", "propose", "enable", "--key", "k"}, "--out is required"},
		{[]string{"officer", "propose", "policy", "--key", "k", "--out", "x"}, "--file is required"},
		{[]string{"key", "policy", "set", "k"}, "--file is required"},
		{[]string{"key", "enable", "k", "--officer-key", "a", "--officer-pkcs11", "module=m,token=t,label=l"}, "not both"},
		{[]string{"decrypt", "--wait", "--wait-timeout", "0s", "a", "b"}, "must be positive"},
	} {
		r := runCLI(t, "", tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("custos %q: exit %d, stderr %q; want exit 2 and %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
	// No officer key configured.
	t.Setenv("CUSTOS_ADDR", "127.0.0.1:1")
	r := runCLI(t, "", "officer", "sign", "nofile.json")
	r.want(t, 1, "officer sign")
}

// TestGovernanceCLI runs every governance command against one real node.
func TestGovernanceCLI(t *testing.T) {
	clearEnv(t)
	h := nodetest.Start(t)
	usePrincipal(t, h, "app")
	c := appClient(t, h)
	dir := t.TempDir()

	t.Run("officer list", func(t *testing.T) {
		fp := governance.Fingerprint(&h.Officers[0].Key.PublicKey)
		runCLI(t, "", "officer", "list").want(t, 0, "cluster "+h.Node.ClusterID(), "quorum 2 of 3", "officer-1 fingerprint="+fp, "officer-3 fingerprint=")
		r := runCLI(t, "", "officer", "list", "--json")
		r.want(t, 0)
		g := &custosv1.Governance{}
		if err := protojson.Unmarshal([]byte(r.stdout), g); err != nil || len(g.GetOfficers()) != 3 {
			t.Errorf("officer list --json: %v, %v", g, err)
		}
	})

	t.Run("revoke, enable by quorum, disable", func(t *testing.T) {
		runCLI(t, "", "key", "create", "payroll").want(t, 0)
		plain := filepath.Join(dir, "p.txt")
		os.WriteFile(plain, []byte("pay"), 0o600)
		enc := plain + ".cst"
		runCLI(t, "", "encrypt", "--key", "payroll", plain, enc).want(t, 0)

		runCLI(t, "", args("key", "revoke", asOfficer(h, 2), "--comment", "incident 7", "payroll")...).
			want(t, 0, `statement: revoke_key key="payroll" (needs one)`, "applied: key payroll revoked (signed by officer-3; ledger ", "payroll state=REVOKED")
		runCLI(t, "", "decrypt", "--justification", "CUSTOMER_INITIATED", enc, filepath.Join(dir, "x")).want(t, 1, "revoked", "(FailedPrecondition)")

		// One local officer is not the quorum: the server's refusal, and
		// advice to gather signatures offline.
		r := runCLI(t, "", args("key", "enable", asOfficer(h, 0), "payroll")...)
		r.want(t, 1, "custos: key enable:", "(PermissionDenied)", "officer propose enable --key payroll --out statement.json")
		if k, _ := c.GetKey(context.Background(), "payroll"); k.GetState() != custosv1.KeyState_KEY_STATE_REVOKED {
			t.Errorf("state after a refused enable = %v", k.GetState())
		}
		// Without an officer key at all.
		runCLI(t, "", "key", "enable", "payroll").want(t, 1, "no officer key", "officer propose enable")

		// The offline flow: propose, officer-1 signs (key from the
		// environment), officer-2 signs (flags), an unprivileged
		// principal submits.
		file := filepath.Join(dir, "enable.json")
		runCLI(t, "", "officer", "propose", "enable", "--key", "payroll", "--comment", "incident closed", "--out", file).
			want(t, 0, "wrote "+file, `enable_key key="payroll" (needs quorum)`, "officer sign "+file)
		t.Setenv(envOfficerName, h.Officers[0].Name)
		t.Setenv(envOfficerKey, h.Officers[0].KeyFile)
		runCLI(t, "", "officer", "sign", file).want(t, 0, `statement: enable_key key="payroll" (needs quorum)`, `comment="incident closed"`, "signed by officer-1", "1 signature(s)")
		t.Setenv(envOfficerName, "")
		t.Setenv(envOfficerKey, "")
		// One signature is not enough.
		usePrincipal(t, h, "nobody")
		runCLI(t, "", "officer", "submit", file).want(t, 1, "custos: officer submit:", "(PermissionDenied)", "needs 2")
		runCLI(t, "", args("officer", "sign", asOfficer(h, 1), file)...).want(t, 0, "signed by officer-2", "2 signature(s): officer-1, officer-2")
		// Signing twice replaces the signature.
		runCLI(t, "", args("officer", "sign", asOfficer(h, 1), file)...).want(t, 0, "2 signature(s)")
		runCLI(t, "", "officer", "submit", file).want(t, 0, "applied: key payroll enabled (signed by officer-1, officer-2", "payroll state=ENABLED")
		// A replay is refused.
		runCLI(t, "", "officer", "submit", file).want(t, 1, "custos: officer submit:")
		usePrincipal(t, h, "app")
		runCLI(t, "", "decrypt", "--justification", "CUSTOMER_INITIATED", enc, filepath.Join(dir, "p.out")).want(t, 0, "decrypted")

		// key disable: a statement with an officer key, SetKeyState without.
		runCLI(t, "", args("key", "disable", asOfficer(h, 2), "payroll")...).want(t, 0, "applied: key payroll disabled", "payroll state=DISABLED")
		enableByQuorum(t, h, "payroll")
		runCLI(t, "", "key", "disable", "payroll").want(t, 0, "by SetKeyState", "payroll state=DISABLED")
		enableByQuorum(t, h, "payroll")
	})

	t.Run("policy", func(t *testing.T) {
		runCLI(t, "", "key", "create", "pol").want(t, 0)
		runCLI(t, "", "key", "policy", "get", "pol").want(t, 0, "policy of key pol: version 1", "encrypt principals: app", "decrypt principals: app",
			"reason CUSTOMER_INITIATED: ALLOW", "reason THIRD_PARTY_DATA_REQUEST: REQUIRE_APPROVAL")
		r := runCLI(t, "", "key", "policy", "get", "--json", "pol")
		r.want(t, 0, `"decrypt_principals"`)
		p := &custosv1.KeyPolicy{}
		if err := protojson.Unmarshal([]byte(r.stdout), p); err != nil {
			t.Fatalf("policy --json: %v", err)
		}
		p.DecryptPrincipals = append(p.DecryptPrincipals, "batch")
		p.MaxDecryptsPerPrincipalPerHour = 100
		b, _ := protojson.Marshal(p)
		pf := filepath.Join(dir, "policy.json")
		os.WriteFile(pf, b, 0o600)
		runCLI(t, "", args("key", "policy", "set", asOfficer(h, 0), "--file", pf, "pol")...).
			want(t, 1, "(PermissionDenied)", "officer propose policy --key pol --file "+pf)
		offlineQuorum(t, h, "policy", "--key", "pol", "--file", pf).want(t, 0, "policy of key pol: version 2", "decrypt principals: app, batch", "at most 100 decrypts")
		runCLI(t, "", "key", "policy", "get", "nope").want(t, 1, "(NotFound)")
		bad := filepath.Join(dir, "bad.json")
		os.WriteFile(bad, []byte(`{"bogus": 1}`), 0o600)
		runCLI(t, "", args("key", "policy", "set", asOfficer(h, 0), "--file", bad, "pol")...).want(t, 1, "policy file")
	})

	t.Run("approve with --wait", func(t *testing.T) {
		runCLI(t, "", "key", "create", "hr").want(t, 0)
		plain := filepath.Join(dir, "hr.txt")
		os.WriteFile(plain, []byte("salaries"), 0o600)
		enc := plain + ".cst"
		runCLI(t, "", "encrypt", "--key", "hr", plain, enc).want(t, 0)
		seen := map[string]bool{}

		out := filepath.Join(dir, "hr.out")
		r := runCLI(t, "", "decrypt", "--justification", "THIRD_PARTY_DATA_REQUEST", "--text", "court order", enc, out)
		r.want(t, 1, "approval required", "(FailedPrecondition)", "--wait")
		first := newPending(t, c, "hr", seen)
		if !strings.Contains(r.stderr, first) {
			t.Errorf("stderr %q does not name request %s", r.stderr, first)
		}
		runCLI(t, "", "officer", "pending", "--key", "hr").want(t, 0, "request "+first+" state=PENDING key=hr", `text="court order"`, "reason=THIRD_PARTY_DATA_REQUEST")
		// Online approval by one officer is not the quorum.
		runCLI(t, "", args("officer", "approve", asOfficer(h, 0), first)...).want(t, 1, "(PermissionDenied)", "officer propose approve "+first)

		done := make(chan result, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			var so, se bytes.Buffer
			code := run(ctx, []string{"decrypt", "--wait", "--poll-interval", "50ms", "--justification", "THIRD_PARTY_DATA_REQUEST", enc, out}, strings.NewReader(""), &so, &se)
			done <- result{code, so.String(), se.String()}
		}()
		id := newPending(t, c, "hr", seen)
		offlineQuorum(t, h, "approve", id, "--uses", "1", "--ttl", "10m").want(t, 0, "request "+id+" state=APPROVED", "grant=")
		w := <-done
		w.want(t, 0, "decrypted "+enc+" to "+out)
		if !strings.Contains(w.stderr, "waiting for approval of request "+id+"...") {
			t.Errorf("stderr %q lacks the waiting line", w.stderr)
		}
		if got, _ := os.ReadFile(out); string(got) != "salaries" {
			t.Errorf("output = %q", got)
		}
		// Deny the first request online (one officer suffices).
		runCLI(t, "", args("officer", "deny", asOfficer(h, 2), first)...).want(t, 0, "applied: ", "request "+first+" state=DENIED")
		runCLI(t, "", "officer", "pending", "--key", "hr").want(t, 0, "no pending requests")
	})

	t.Run("deny with --wait", func(t *testing.T) {
		enc := filepath.Join(dir, "hr.txt.cst")
		out := filepath.Join(dir, "denied.out")
		seen := map[string]bool{}
		reqs, _ := c.ListPending(context.Background(), "hr")
		for _, r := range reqs {
			seen[r.GetRequestId()] = true
		}
		done := make(chan result, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			var so, se bytes.Buffer
			ct, _ := os.ReadFile(enc)
			// From standard input: the header is replayed on the retry.
			code := run(ctx, []string{"decrypt", "--wait", "--poll-interval", "50ms", "--justification", "EMERGENCY", "-", out}, bytes.NewReader(ct), &so, &se)
			done <- result{code, so.String(), se.String()}
		}()
		id := newPending(t, c, "hr", seen)
		runCLI(t, "", args("officer", "deny", asOfficer(h, 1), id)...).want(t, 0, "request "+id+" state=DENIED")
		w := <-done
		w.want(t, 1, "custos: decrypt: request "+id+" was denied")
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("output file exists after a denied request (stat: %v)", err)
		}
	})

	t.Run("wait from stdin, approved", func(t *testing.T) {
		enc := filepath.Join(dir, "hr.txt.cst")
		out := filepath.Join(dir, "stdin.out")
		seen := map[string]bool{}
		reqs, _ := c.ListPending(context.Background(), "hr")
		for _, r := range reqs {
			seen[r.GetRequestId()] = true
		}
		done := make(chan result, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			var so, se bytes.Buffer
			ct, _ := os.ReadFile(enc)
			code := run(ctx, []string{"decrypt", "--wait", "--poll-interval", "50ms", "--justification", "PROVIDER_SUPPORT", "-", out}, bytes.NewReader(ct), &so, &se)
			done <- result{code, so.String(), se.String()}
		}()
		id := newPending(t, c, "hr", seen)
		offlineQuorum(t, h, "approve", id)
		(<-done).want(t, 0, "decrypted - to "+out)
		if got, _ := os.ReadFile(out); string(got) != "salaries" {
			t.Errorf("output = %q", got)
		}
	})

	t.Run("wait timeout", func(t *testing.T) {
		enc := filepath.Join(dir, "hr.txt.cst")
		out := filepath.Join(dir, "timeout.out")
		runCLI(t, "", "decrypt", "--wait", "--wait-timeout", "300ms", "--poll-interval", "50ms", "--justification", "EMERGENCY", enc, out).
			want(t, 1, "still pending after 300ms")
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("output file exists after a timeout (stat: %v)", err)
		}
	})

	t.Run("grants", func(t *testing.T) {
		enc := filepath.Join(dir, "hr.txt.cst")
		runCLI(t, "", args("officer", "grant", asOfficer(h, 0), "--principal", "app", "--key", "hr", "--reason", "PROVIDER_SERVICE")...).
			want(t, 1, "(PermissionDenied)", "officer propose grant --key hr --principal app --reason PROVIDER_SERVICE")
		r := offlineQuorum(t, h, "grant", "--principal", "app", "--key", "hr", "--reason", "provider_service", "--uses", "3", "--ttl", "30m")
		m := regexp.MustCompile(`grant: (\S+)`).FindStringSubmatch(r.stdout)
		if m == nil {
			t.Fatalf("no grant id in %q", r.stdout)
		}
		gid := m[1]
		r.want(t, 0, "grant "+gid+" key=hr principal=\"app\" reason=PROVIDER_SERVICE context=any uses_left=3")
		runCLI(t, "", "officer", "grants", "--key", "hr").want(t, 0, "grant "+gid, "uses_left=3")
		runCLI(t, "", "decrypt", "--justification", "PROVIDER_SERVICE", enc, filepath.Join(dir, "g.out")).want(t, 0, "decrypted")
		runCLI(t, "", "officer", "grants", "--key", "hr").want(t, 0, "uses_left=2")
		runCLI(t, "", args("officer", "revoke-grant", asOfficer(h, 2), gid)...).want(t, 0, "applied: ", "grant "+gid+" is no longer in force")
		runCLI(t, "", "officer", "grants", "--key", "hr").want(t, 0, "no grants in force")
		runCLI(t, "", "decrypt", "--justification", "PROVIDER_SERVICE", enc, filepath.Join(dir, "g2.out")).want(t, 1, "approval required")
	})

	t.Run("officers", func(t *testing.T) {
		var entries []*custosv1.Officer
		for _, o := range h.Officers {
			entries = append(entries, &custosv1.Officer{Name: o.Name, PublicKey: governance.MarshalPublicKey(&o.Key.PublicKey)})
		}
		newKey := filepath.Join(dir, "dave.pem")
		r := runCLI(t, "", "officer", "keygen", "--name", "dave", "--out", newKey)
		r.want(t, 0)
		m := regexp.MustCompile(`officers entry: (.*)`).FindStringSubmatch(r.stdout)
		if m == nil {
			t.Fatalf("no officers entry in %q", r.stdout)
		}
		// The officers file takes keygen's entry (public_key_file) beside
		// entries with the key itself (public_key).
		so := &custosv1.SetOfficers{Officers: entries, Quorum: 3}
		b, _ := protojson.MarshalOptions{UseProtoNames: true}.Marshal(so)
		b = []byte(strings.Replace(string(b), `"officers":[`, `"officers":[`+m[1]+`,`, 1))
		of := filepath.Join(dir, "officers.json")
		os.WriteFile(of, b, 0o600)
		offlineQuorum(t, h, "officers", "--file", of).want(t, 0, "4 officer(s), quorum 3 of 4", "dave fingerprint=")
		runCLI(t, "", "officer", "list").want(t, 0, "quorum 3 of 4")
		// The new officer signs with the new key.
		runCLI(t, "", "key", "create", "dk").want(t, 0)
		runCLI(t, "", "key", "revoke", "--officer", "dave", "--officer-key", newKey, "dk").want(t, 0, "signed by dave", "dk state=REVOKED")
	})
}
