package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms/audit"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// auditScenario records, on key, an ALLOW by "app" (CUSTOMER_INITIATED), a
// PENDING by "app" (THIRD_PARTY_DATA_REQUEST) and a DENY by "intruder".
func auditScenario(t *testing.T, h *nodetest.Harness, key string) {
	t.Helper()
	ctx := context.Background()
	app := appClient(t, h)
	intruder, err := custos.Dial(ctx, custos.Config{Addrs: []string{h.Addr}, TLS: h.ClientTLS(t, "intruder")})
	if err != nil {
		t.Fatal(err)
	}
	defer intruder.Close()
	if _, err := app.CreateKey(ctx, key, ""); err != nil {
		t.Fatal(err)
	}
	ct, err := app.Encrypt(ctx, key, []byte("payroll data"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := app.Decrypt(ctx, ct, nil, custos.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Text: "monthly payroll run"}); err != nil {
		t.Fatalf("ALLOW decrypt: %v", err)
	}
	_, err = app.Decrypt(ctx, ct, nil, custos.Justification{Reason: custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST, Text: "court order 12-345", Ticket: "MLIT-1"})
	if _, ok := custos.PendingRequestID(err); !ok {
		t.Fatalf("THIRD_PARTY decrypt: %v, want pending", err)
	}
	if _, err := intruder.Decrypt(ctx, ct, nil, custos.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Text: "let me in"}); err == nil {
		t.Fatal("intruder decrypted")
	}
}

func lines(s string) []string {
	var out []string
	for l := range strings.SplitSeq(strings.TrimSpace(s), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// rewriteExport copies the export file in to out with kms/audit's reader
// and writer, dropping the record with sequence number skip.
func rewriteExport(t *testing.T, in, out string, skip uint64) {
	t.Helper()
	f, err := os.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var buf bytes.Buffer
	rd, w := audit.NewReader(f), audit.NewWriter(&buf)
	dropped := false
	for {
		it, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if data := it.GetRecord(); data != nil {
			var r custosv1.DecisionRecord
			if err := proto.Unmarshal(data, &r); err != nil {
				t.Fatal(err)
			}
			if r.GetSeq() == skip {
				dropped = true
				continue
			}
		}
		if err := w.WriteItem(it); err != nil {
			t.Fatal(err)
		}
	}
	if !dropped {
		t.Fatalf("no record %d in %s", skip, in)
	}
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestAuditCLI(t *testing.T) {
	clearEnv(t)
	h := nodetest.Start(t)
	auditScenario(t, h, "payroll")
	auditScenario(t, h, "other") // so that payroll's records are inside the chain
	dir := t.TempDir()

	t.Run("non-auditor is refused clearly", func(t *testing.T) {
		usePrincipal(t, h, "app")
		for _, cmd := range [][]string{{"audit", "list"}, {"audit", "pubkey"}, {"audit", "export", filepath.Join(dir, "no.export")}, {"audit", "report"}, {"audit", "watch"}} {
			r := runCLI(t, "", cmd...)
			r.want(t, 1, `principal "app" is not an auditor (PermissionDenied)`, "may read the ledger")
		}
		if _, err := os.Stat(filepath.Join(dir, "no.export")); !os.IsNotExist(err) {
			t.Errorf("a refused export left a file: %v", err)
		}
	})

	usePrincipal(t, h, nodetest.Auditor)

	t.Run("list filters", func(t *testing.T) {
		r := runCLI(t, "", "audit", "list", "--key", "payroll")
		// The key's creation is on record before its uses (after the
		// genesis, record 1, and the node's checkpoint key, record 2).
		r.want(t, 0, "#3 ", "CREATE_KEY ALLOW key=payroll v1", "rule=key-admin:create",
			"DECRYPT ALLOW key=payroll", "DECRYPT PENDING key=payroll", "DECRYPT DENY key=payroll", `principal="intruder"`, `text="court order 12-345"`, `ticket="MLIT-1"`)
		if n := len(lines(r.stdout)); n != 4 {
			t.Errorf("list --key payroll: %d lines, want 4:\n%s", n, r.stdout)
		}
		r = runCLI(t, "", "audit", "list", "--key", "payroll", "--outcome", "deny")
		r.want(t, 0, `principal="intruder"`)
		if n := len(lines(r.stdout)); n != 1 {
			t.Errorf("--outcome deny: %d lines", n)
		}
		r = runCLI(t, "", "audit", "list", "--key", "payroll", "--reason", "third-party-data-request,emergency")
		r.want(t, 0, "PENDING", "reason=THIRD_PARTY_DATA_REQUEST")
		if n := len(lines(r.stdout)); n != 1 {
			t.Errorf("--reason: %d lines", n)
		}
		r = runCLI(t, "", "audit", "list", "--principal", "app", "--key", "payroll", "--limit", "1")
		r.want(t, 0, "ALLOW")
		if n := len(lines(r.stdout)); n != 1 || !strings.Contains(r.stderr, "more from --from ") {
			t.Errorf("--limit 1: %d lines, stderr %q", n, r.stderr)
		}
		// The --from printed continues the listing.
		next := strings.TrimSpace(strings.TrimSuffix(r.stderr[strings.Index(r.stderr, "--from ")+len("--from "):], "\n"))
		r = runCLI(t, "", "audit", "list", "--principal", "app", "--key", "payroll", "--from", next)
		r.want(t, 0, "DECRYPT ALLOW", "PENDING")
		if n := len(lines(r.stdout)); n != 2 {
			t.Errorf("--from %s: %d lines", next, n)
		}
		r = runCLI(t, "", "audit", "list", "--key", "payroll", "--json", "--since", "1h")
		for _, l := range lines(r.stdout) {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil || m["key"] != "payroll" {
				t.Errorf("--json line %q: %v", l, err)
			}
		}
		if n := len(lines(r.stdout)); n != 4 {
			t.Errorf("--since 1h --json: %d lines", n)
		}
		r = runCLI(t, "", "audit", "list", "--until", "1h")
		r.want(t, 0)
		if r.stdout != "" || !strings.Contains(r.stderr, "no matching records") {
			t.Errorf("--until 1h: stdout %q stderr %q", r.stdout, r.stderr)
		}
		r = runCLI(t, "", "audit", "list", "--operation", "governance")
		r.want(t, 0)
		runCLI(t, "", "audit", "list", "--since", "yesterday").want(t, 2, "neither an RFC 3339 time nor a duration")
		runCLI(t, "", "audit", "list", "--since", "1h", "--until", "2h").want(t, 2, "is not before")
		runCLI(t, "", "audit", "list", "--outcome", "maybe").want(t, 2, "unknown outcome")
	})

	pemFile := filepath.Join(dir, "ledger.pem")
	exportFile := filepath.Join(dir, "ledger.export")
	t.Run("export and verify offline", func(t *testing.T) {
		// Wait for a signed checkpoint in the ledger (the test node records
		// one a second after new records).
		deadline := time.Now().Add(30 * time.Second)
		for len(lines(runCLI(t, "", "audit", "list", "--operation", "checkpoint").stdout)) == 0 {
			if time.Now().After(deadline) {
				t.Fatal("no checkpoint recorded")
			}
			time.Sleep(100 * time.Millisecond)
		}
		r := runCLI(t, "", "audit", "pubkey")
		r.want(t, 0, "-----BEGIN PUBLIC KEY-----")
		if err := os.WriteFile(pemFile, []byte(r.stdout), 0o644); err != nil {
			t.Fatal(err)
		}
		r = runCLI(t, "", "audit", "export", exportFile)
		r.want(t, 0, "exported ", " records (seq 1 to ", "to "+exportFile, "trailer checkpoint")
		if m, _ := filepath.Glob(filepath.Join(dir, ".ledger.export.tmp-*")); len(m) > 0 {
			t.Errorf("temporary files left: %v", m)
		}
		// Offline: no connection settings at all.
		clearEnv(t)
		r = runCLI(t, "", "audit", "verify", exportFile, "--pubkey", pemFile)
		r.want(t, 0, "verified ", " records through seq ", " checkpoints", "and the export trailer",
			"recomputed from the genesis and the officers' statements: all ")
		if strings.Contains(r.stdout, " 0 checkpoints") {
			t.Errorf("no checkpoint verified: %s", r.stdout)
		}
		usePrincipal(t, h, nodetest.Auditor)

		// Export to stdout gives the same verifiable bytes.
		r = runCLI(t, "", "audit", "export", "-")
		r.want(t, 0)
		if !strings.Contains(r.stderr, "exported ") {
			t.Errorf("export -: stderr %q", r.stderr)
		}
		keys, err := readPublicKeys([]string{pemFile})
		if err != nil {
			t.Fatal(err)
		}
		pubs, err := audit.ParseKeys(keys)
		if err != nil {
			t.Fatal(err)
		}
		if rep, err := audit.Verify(strings.NewReader(r.stdout), pubs); err != nil || !rep.OK() {
			t.Errorf("export to stdout: %+v, %v", rep, err)
		}
	})

	t.Run("verify names the removed record", func(t *testing.T) {
		// Remove the DENY record.
		r := runCLI(t, "", "audit", "list", "--key", "payroll", "--outcome", "deny", "--json")
		var rec map[string]any
		if err := json.Unmarshal([]byte(lines(r.stdout)[0]), &rec); err != nil {
			t.Fatal(err)
		}
		var seq uint64
		fmt.Sscan(fmt.Sprint(rec["seq"]), &seq)
		if seq == 0 {
			t.Fatalf("no seq in %v", rec)
		}
		tampered := filepath.Join(dir, "tampered.export")
		rewriteExport(t, exportFile, tampered, seq)
		clearEnv(t)
		r = runCLI(t, "", "audit", "verify", "--pubkey", pemFile, tampered)
		r.want(t, 1, "does NOT verify", fmt.Sprintf("first broken link at seq %d: removed", seq))
		t.Logf("tampered export: %s", r.stderr)

		// The right file with the wrong key.
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		wrong := filepath.Join(dir, "wrong.pem")
		if err := os.WriteFile(wrong, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
			t.Fatal(err)
		}
		r = runCLI(t, "", "audit", "verify", "--pubkey", wrong, exportFile)
		r.want(t, 1, "does NOT verify")
		t.Logf("wrong key: %s", r.stderr)
		runCLI(t, "", "audit", "verify", exportFile).want(t, 2, "--pubkey or --witness-key is required")
		runCLI(t, "", "audit", "verify", "--pubkey", exportFile, exportFile).want(t, 1, "no PUBLIC KEY PEM block")
		usePrincipal(t, h, nodetest.Auditor)
	})

	t.Run("report", func(t *testing.T) {
		r := runCLI(t, "", "audit", "report", "--since", "1h")
		r.want(t, 0, "custos key-use disclosure", "app", "payroll", "CUSTOMER_INITIATED", "THIRD_PARTY_DATA_REQUEST",
			"Denied attempts: 2", "intruder", "Pending (awaiting officer approval): 2", "court order 12-345")
		t.Logf("report:\n%s", r.stdout)
		r = runCLI(t, "", "audit", "report", "--key", "payroll", "--json")
		r.want(t, 0)
		var d audit.Disclosure
		if err := json.Unmarshal([]byte(r.stdout), &d); err != nil {
			t.Fatalf("report --json: %v\n%s", err, r.stdout)
		}
		if len(d.Denied) != 1 || d.Denied[0].Principal != "intruder" || len(d.Pending) != 1 || len(d.Allowed) != 1 || d.Allowed[0].Principal != "app" {
			t.Errorf("report --json = %+v", d)
		}
		// Offline, on a verified export; a tampered one is refused.
		clearEnv(t)
		defer usePrincipal(t, h, nodetest.Auditor)
		r = runCLI(t, "", "audit", "report", "--export", exportFile, "--pubkey", pemFile, "--key", "payroll")
		r.want(t, 0, "key:     payroll", "Denied attempts: 1", "intruder", "court order 12-345")
		r = runCLI(t, "", "audit", "report", "--export", filepath.Join(dir, "tampered.export"), "--pubkey", pemFile)
		r.want(t, 1, "does NOT verify", "not reporting on it")
		runCLI(t, "", "audit", "report", "--export", exportFile).want(t, 2, "--export and --pubkey go together")
	})

	t.Run("watch", func(t *testing.T) {
		r := runCLI(t, "", "audit", "watch", "--from", "1000000")
		r.want(t, 1, "beyond the ledger head", "InvalidArgument")

		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var out, errOut syncBuffer
		done := make(chan int, 1)
		go func() {
			done <- run(ctx, []string{"audit", "watch", "--key", "watched"}, strings.NewReader(""), &out, &errOut)
		}()
		// Wait until the watch has started, then make records.
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(errOut.String(), "watching the ledger from seq") && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		auditScenario(t, h, "watched")
		for len(lines(out.String())) < 4 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("watch exit code %d: %s", code, errOut.String())
		}
		got := lines(out.String())
		if len(got) != 4 || !strings.Contains(got[0], "CREATE_KEY ALLOW") || !strings.Contains(got[1], "DECRYPT ALLOW") ||
			!strings.Contains(got[2], "PENDING") || !strings.Contains(got[3], "DENY") {
			t.Errorf("watch printed %q", got)
		}
	})

	t.Run("sinks", func(t *testing.T) {
		hmacHex := hex.EncodeToString(bytes.Repeat([]byte{0xA7}, 32))
		keyFile := filepath.Join(dir, "hook.key")
		if err := os.WriteFile(keyFile, []byte(hmacHex+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		noSecret := func(r result) {
			t.Helper()
			for _, s := range []string{hmacHex, base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xA7}, 32)), strings.Repeat("\xa7", 32)} {
				if strings.Contains(r.stdout+r.stderr, s) {
					t.Errorf("output shows the HMAC key: %s%s", r.stdout, r.stderr)
				}
			}
		}
		siemPath := filepath.Join(dir, "siem.jsonl")
		r := runCLI(t, "", args("officer", "sink", "add", "--name", "siem", "--file", siemPath, asOfficer(h, 0))...)
		r.want(t, 0, "applied: sink siem added", "sink siem type=FILE path="+siemPath)
		r = runCLI(t, "", args("officer", "sink", "add", "--name", "hook", "--webhook", "http://127.0.0.1:9/notify", "--hmac-key-file", keyFile, "--required-for-release", asOfficer(h, 1))...)
		r.want(t, 0, "applied: sink hook added", "url=http://127.0.0.1:9/notify", "required_for_release=true")
		noSecret(r)
		short := filepath.Join(dir, "short.key")
		os.WriteFile(short, []byte("abcd"), 0o600)
		runCLI(t, "", args("officer", "sink", "add", "--name", "x", "--webhook", "https://example.com/", "--hmac-key-file", short, asOfficer(h, 0))...).want(t, 1, "at least 32")
		runCLI(t, "", args("officer", "sink", "add", "--name", "x", "--webhook", "https://example.com/", asOfficer(h, 0))...).want(t, 2, "--webhook needs --hmac-key-file")

		r = runCLI(t, "", "officer", "sink", "list")
		r.want(t, 0, "sink siem type=FILE", "sink hook type=WEBHOOK")
		noSecret(r)
		r = runCLI(t, "", "officer", "sink", "list", "--json")
		r.want(t, 0, `"name":"hook"`)
		noSecret(r)

		// Removing a sink needs the quorum: one signature is refused, with
		// the offline flow suggested.
		r = runCLI(t, "", args("officer", "sink", "remove", "siem", asOfficer(h, 0))...)
		r.want(t, 1, "PermissionDenied", "custos officer propose sink-remove siem --out statement.json", "custos officer sign statement.json")
		offlineQuorum(t, h, "sink-remove", "siem").want(t, 0, "applied: sink siem removed", "sink hook type=WEBHOOK")
		r = runCLI(t, "", "officer", "sink", "list")
		if strings.Contains(r.stdout, "siem") {
			t.Errorf("siem still listed: %s", r.stdout)
		}

		// Notify rules: quorum, from a JSON file.
		rules := filepath.Join(dir, "rules.json")
		os.WriteFile(rules, []byte(`{"reasons": ["REASON_THIRD_PARTY_DATA_REQUEST"], "outcomes": ["OUTCOME_DENY"], "customer_principals": ["app"], "governance": true}`), 0o644)
		runCLI(t, "", args("officer", "notify-rules", "set", "--file", rules, asOfficer(h, 0))...).want(t, 1, "officer propose notify-rules --file "+rules)
		offlineQuorum(t, h, "notify-rules", "--file", rules).want(t, 0, "applied: notify rules set", "customer principals:  app")
		r = runCLI(t, "", "officer", "notify-rules", "get", "--json")
		r.want(t, 0, `"REASON_THIRD_PARTY_DATA_REQUEST"`, `"customer_principals"`)

		// A sink-add statement file can be signed offline too.
		stmt := filepath.Join(dir, "sink-add.json")
		runCLI(t, "", "officer", "propose", "sink-add", "--name", "siem2", "--file", siemPath, "--out", stmt).want(t, 0, "wrote "+stmt, "(needs one)")
		runCLI(t, "", args("officer", "sign", asOfficer(h, 2), stmt)...).want(t, 0, "signed by officer-3")
		runCLI(t, "", "officer", "submit", stmt).want(t, 0, "applied: sink siem2 added")
	})
}
