package console_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/custos-kms/custos/internal/console"
	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/internal/webauthntest"
	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

var bg = context.Background()

// browser is an HTTP client with a cookie jar, as a browser tab of the
// console at origin.
type browser struct {
	t      *testing.T
	c      *http.Client
	base   string // https://localhost:port
	origin string
	csrf   string
}

func newBrowser(t *testing.T, h *nodetest.Harness) *browser {
	t.Helper()
	pem, err := os.ReadFile(h.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	jar, _ := cookiejar.New(nil)
	u := strings.TrimSuffix(h.Node.ConsoleURL(), "/")
	b := &browser{t: t, base: u, origin: u, c: &http.Client{Jar: jar, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}}
	b.session()
	return b
}

// session (re)reads the CSRF token.
func (b *browser) session() map[string]any {
	var out map[string]any
	if code := b.do("GET", "/api/session", nil, &out); code != 200 {
		b.t.Fatalf("session: %d %v", code, out)
	}
	b.csrf, _ = out["csrf"].(string)
	return out
}

// do sends a request the way the page does and decodes the JSON answer.
func (b *browser) do(method, path string, body any, out any) int {
	b.t.Helper()
	var rd io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		if err != nil {
			b.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, b.base+path, rd)
	if err != nil {
		b.t.Fatal(err)
	}
	if method == "POST" {
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Origin", b.origin)
		req.Header.Set("X-Custos-CSRF", b.csrf)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			b.t.Fatalf("%s %s: %d %q: %v", method, path, resp.StatusCode, data, err)
		}
	}
	return resp.StatusCode
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func unb64(t *testing.T, v any) []byte {
	t.Helper()
	s, _ := v.(string)
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("not base64url: %q", s)
	}
	return b
}

func assertionJSON(a *custosv1.WebAuthnAssertion) map[string]any {
	return map[string]any{"credential_id": b64(a.CredentialId), "authenticator_data": b64(a.AuthenticatorData),
		"client_data_json": b64(a.ClientDataJson), "signature": b64(a.Signature)}
}

// register binds a software security key to officer i through the
// console's registration, then two officers' PEM keys sign the proposal.
func register(t *testing.T, h *nodetest.Harness, b *browser, i int) *webauthntest.Authenticator {
	t.Helper()
	name := h.Officers[i].Name
	var begin map[string]any
	if code := b.do("POST", "/api/register/begin", map[string]any{"officer": name, "enrolment": enrolCode(t, h, i)}, &begin); code != 200 {
		t.Fatalf("register/begin: %d %v", code, begin)
	}
	a := webauthntest.New()
	c := a.Credential("localhost", false)
	var st map[string]any
	if code := b.do("POST", "/api/register/statement", map[string]any{"officer": name, "label": name + "'s key", "challenge": begin["challenge"],
		"credential_id": b64(c.CredentialId), "public_key": b64(c.PublicKey)}, &st); code != 200 {
		t.Fatalf("register/statement: %d %v", code, st)
	}
	stmt := unb64(t, st["statement"])
	if !bytes.Equal(unb64(t, st["challenge"]), governance.SignedDigest(stmt)) || !strings.Contains(st["description"].(string), "add_officer_credential") {
		t.Fatalf("statement = %v", st)
	}
	var fin map[string]any
	if code := b.do("POST", "/api/register/finish", map[string]any{"statement": b64(stmt),
		"proof": assertionJSON(a.Assert("localhost", b.origin, governance.SignedDigest(stmt)))}, &fin); code != 200 {
		t.Fatalf("register/finish: %d %v", code, fin)
	}
	svc := h.Node.Service()
	for _, j := range []int{0, 1} {
		ss := &custosv1.SignedStatement{Statement: stmt}
		sig, err := governance.Sign(h.Officers[j].Key, h.Officers[j].Name, stmt)
		if err != nil {
			t.Fatal(err)
		}
		ss.Signatures = append(ss.Signatures, sig)
		if _, err := svc.Propose(bg, kms.Principal{Name: "officer-cli"}, &custosv1.ProposeRequest{Statement: ss}); err != nil {
			t.Fatalf("PEM signature %d: %v", j, err)
		}
	}
	return a
}

// enrolCode is officer i's enrolment code (what custos officer enrol
// prints).
func enrolCode(t *testing.T, h *nodetest.Harness, i int) string {
	t.Helper()
	code, err := governance.MakeEnrolment(h.Officers[i].Key, h.Node.ClusterID(), h.Officers[i].Name, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return governance.EncodeEnrolment(code)
}

// signIn signs officer i in with its key.
func signIn(t *testing.T, h *nodetest.Harness, b *browser, i int, a *webauthntest.Authenticator) {
	t.Helper()
	var begin map[string]any
	if code := b.do("POST", "/api/signin/begin", map[string]any{"officer": h.Officers[i].Name}, &begin); code != 200 {
		t.Fatalf("signin/begin: %d %v", code, begin)
	}
	var out map[string]any
	if code := b.do("POST", "/api/signin/finish", map[string]any{"officer": h.Officers[i].Name,
		"assertion": assertionJSON(a.Assert("localhost", b.origin, unb64(t, begin["challenge"])))}, &out); code != 200 {
		t.Fatalf("signin/finish: %d %v", code, out)
	}
	b.csrf = out["csrf"].(string)
}

// sign prepares a statement in the console and signs it with a.
func sign(t *testing.T, b *browser, a *webauthntest.Authenticator, op map[string]any) map[string]any {
	t.Helper()
	var st map[string]any
	if code := b.do("POST", "/api/statements", op, &st); code != 200 {
		t.Fatalf("statements %v: %d %v", op, code, st)
	}
	var out map[string]any
	if code := b.do("POST", "/api/proposals/sign", map[string]any{"statement": st["statement"],
		"assertion": assertionJSON(a.Assert("localhost", b.origin, unb64(t, st["challenge"])))}, &out); code != 200 {
		t.Fatalf("proposals/sign %v: %d %v", op, code, out)
	}
	return out
}

func startWithConsole(t *testing.T) *nodetest.Harness {
	return nodetest.StartWith(t, func(cfg *node.Config) {
		cfg.Console = &node.ConsoleConfig{Listen: "127.0.0.1:0", RPID: "localhost"}
	})
}

// Two officers register security keys in the console, sign in with them,
// approve a third-party request 2 of 3 (the second sees the first's
// signature), deny another, revoke the key, and read the evidence; the
// ledger verifies (docs/console.md).
func TestConsoleApprovesDeniesRevokes(t *testing.T) {
	h := startWithConsole(t)
	svc := h.Node.Service()
	app := kms.Principal{Name: "app"}
	if _, err := svc.CreateKey(bg, app, &custosv1.CreateKeyRequest{Name: "records"}); err != nil {
		t.Fatal(err)
	}
	dk, err := svc.GenerateDataKey(bg, app, &custosv1.GenerateDataKeyRequest{Key: "records"})
	if err != nil {
		t.Fatal(err)
	}
	alice, bob := newBrowser(t, h), newBrowser(t, h)
	aliceKey := register(t, h, alice, 0)
	bobKey := register(t, h, bob, 1)
	signIn(t, h, alice, 0, aliceKey)
	signIn(t, h, bob, 1, bobKey)

	request := func() string {
		_, err := svc.Decrypt(bg, app, &custosv1.DecryptRequest{Ciphertext: dk.WrappedDataKey, Justification: &custosv1.Justification{
			Reason: custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST, Text: "court order 12", Ticket: "LEGAL-7"}})
		var pe *kms.PendingError
		if !errors.As(err, &pe) {
			t.Fatalf("decrypt for a third party: %v, want pending", err)
		}
		return pe.RequestID
	}
	id := request()
	var pend struct {
		Requests []map[string]any `json:"requests"`
	}
	if code := alice.do("GET", "/api/pending", nil, &pend); code != 200 || len(pend.Requests) != 1 ||
		pend.Requests[0]["request_id"] != id || pend.Requests[0]["justification"] != "court order 12" || pend.Requests[0]["ticket"] != "LEGAL-7" {
		t.Fatalf("pending: %d %v", code, pend)
	}
	out := sign(t, alice, aliceKey, map[string]any{"operation": "approve_request", "request_id": id, "uses": 1, "ttl_seconds": 600})
	p, _ := out["proposal"].(map[string]any)
	if p == nil || out["applied"] != nil {
		t.Fatalf("one approval applied: %v", out)
	}
	// Bob sees alice's signature and signs the same statement.
	if code := bob.do("GET", "/api/pending", nil, &pend); code != 200 || fmt.Sprint(pend.Requests[0]["approvals"]) != "[officer-1]" {
		t.Fatalf("bob's pending: %v", pend)
	}
	prop := pend.Requests[0]["proposal"].(map[string]any)
	var done map[string]any
	if code := bob.do("POST", "/api/proposals/sign", map[string]any{"statement": prop["statement"],
		"assertion": assertionJSON(bobKey.Assert("localhost", bob.origin, unb64(t, prop["challenge"])))}, &done); code != 200 {
		t.Fatalf("bob signs: %d %v", code, done)
	}
	applied, _ := done["applied"].(map[string]any)
	if applied == nil || applied["grant_id"] != "g-"+id {
		t.Fatalf("2 of 3 did not apply: %v", done)
	}
	if _, err := svc.Decrypt(bg, app, &custosv1.DecryptRequest{Ciphertext: dk.WrappedDataKey, Justification: &custosv1.Justification{
		Reason: custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST, Text: "court order 12", Ticket: "LEGAL-7"}}); err != nil {
		t.Fatalf("decrypt under the approval: %v", err)
	}

	// One officer denies the next request; one revokes the key.
	id2 := request()
	if out := sign(t, bob, bobKey, map[string]any{"operation": "deny_request", "request_id": id2}); out["applied"] == nil {
		t.Fatalf("deny: %v", out)
	}
	if out := sign(t, alice, aliceKey, map[string]any{"operation": "revoke_key", "key": "records"}); out["applied"] == nil {
		t.Fatalf("revoke: %v", out)
	}
	if _, err := svc.Decrypt(bg, app, &custosv1.DecryptRequest{Ciphertext: dk.WrappedDataKey, Justification: &custosv1.Justification{
		Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED}}); err == nil {
		t.Fatal("decrypt after the console revoked the key")
	}

	// The evidence pages.
	var keys struct {
		Keys []map[string]any `json:"keys"`
	}
	if code := alice.do("GET", "/api/keys", nil, &keys); code != 200 || len(keys.Keys) != 1 || keys.Keys[0]["state"] != "revoked" {
		t.Fatalf("keys: %d %v", code, keys)
	}
	var dec struct {
		Records []map[string]any `json:"records"`
		Hourly  []map[string]any `json:"hourly"`
	}
	if code := alice.do("GET", "/api/decisions?outcome=pending", nil, &dec); code != 200 || len(dec.Records) != 2 || len(dec.Hourly) == 0 {
		t.Fatalf("decisions: %d %v", code, dec)
	}
	var rep map[string]any
	if code := alice.do("GET", "/api/report", nil, &rep); code != 200 || !strings.Contains(rep["text"].(string), "THIRD_PARTY") {
		t.Fatalf("report: %d %v", code, rep)
	}
	var chain map[string]any
	if code := alice.do("GET", "/api/chain", nil, &chain); code != 200 || chain["verified"] != true {
		t.Fatalf("chain: %d %v", code, chain)
	}
	var cl map[string]any
	if code := alice.do("GET", "/api/cluster", nil, &cl); code != 200 || len(cl["nodes"].([]any)) != 1 {
		t.Fatalf("cluster: %d %v", code, cl)
	}
}

// The console refuses what a page of another origin, a page without the
// session's CSRF token, a reader who did not sign in, a replayed sign-in
// or a challenge it never gave could send.
func TestConsoleRefuses(t *testing.T) {
	h := startWithConsole(t)
	b := newBrowser(t, h)
	key := register(t, h, b, 0)
	for _, path := range []string{"/api/pending", "/api/keys", "/api/decisions", "/api/report", "/api/chain", "/api/cluster", "/api/overview", "/api/events"} {
		if code := b.do("GET", path, nil, nil); code != http.StatusUnauthorized {
			t.Errorf("GET %s before sign-in: %d", path, code)
		}
	}
	if code := b.do("POST", "/api/statements", map[string]any{"operation": "revoke_key", "key": "k"}, nil); code != http.StatusUnauthorized {
		t.Errorf("statements before sign-in: %d", code)
	}
	var begin map[string]any
	b.do("POST", "/api/signin/begin", map[string]any{"officer": h.Officers[0].Name}, &begin)
	// A challenge the console did not give.
	if code := b.do("POST", "/api/signin/finish", map[string]any{"officer": h.Officers[0].Name,
		"assertion": assertionJSON(key.Assert("localhost", b.origin, []byte("not the challenge")))}, nil); code != http.StatusUnauthorized {
		t.Errorf("sign-in over another challenge: %d", code)
	}
	// The right challenge, but for another origin (a phishing page).
	b.do("POST", "/api/signin/begin", map[string]any{"officer": h.Officers[0].Name}, &begin)
	if code := b.do("POST", "/api/signin/finish", map[string]any{"officer": h.Officers[0].Name,
		"assertion": assertionJSON(key.Assert("localhost", "https://evil.example", unb64(t, begin["challenge"])))}, nil); code != http.StatusUnauthorized {
		t.Errorf("sign-in from another origin: %d", code)
	}
	signIn(t, h, b, 0, key)
	good := b.csrf
	b.csrf = "forged"
	if code := b.do("POST", "/api/statements", map[string]any{"operation": "revoke_key", "key": "k"}, nil); code != http.StatusForbidden {
		t.Errorf("wrong CSRF token: %d", code)
	}
	b.csrf, b.origin = good, "https://evil.example"
	if code := b.do("POST", "/api/statements", map[string]any{"operation": "revoke_key", "key": "k"}, nil); code != http.StatusForbidden {
		t.Errorf("another origin: %d", code)
	}
	b.origin = b.base
	var e map[string]any
	if code := b.do("POST", "/api/statements", map[string]any{"operation": "become_root"}, &e); code != http.StatusBadRequest || e["code"] != "InvalidArgument" {
		t.Errorf("unknown operation: %d %v", code, e)
	}
	// A statement signed over another statement's digest.
	var st map[string]any
	b.do("POST", "/api/statements", map[string]any{"operation": "revoke_key", "key": "k"}, &st)
	if code := b.do("POST", "/api/proposals/sign", map[string]any{"statement": st["statement"],
		"assertion": assertionJSON(key.Assert("localhost", b.origin, []byte("another digest")))}, &e); code != http.StatusForbidden || e["code"] != "PermissionDenied" {
		t.Errorf("assertion over another digest: %d %v", code, e)
	}
	// A cloned key: the counter set back refuses sign-in.
	key.SetCount(0)
	nb := newBrowser(t, h)
	nb.do("POST", "/api/signin/begin", map[string]any{"officer": h.Officers[0].Name}, &begin)
	if code := nb.do("POST", "/api/signin/finish", map[string]any{"officer": h.Officers[0].Name,
		"assertion": assertionJSON(key.Assert("localhost", nb.origin, unb64(t, begin["challenge"])))}, nil); code != http.StatusUnauthorized {
		t.Errorf("sign-in with a counter set back: %d", code)
	}
	// Plain form posts (no JSON) are refused before anything else.
	req, _ := http.NewRequest("POST", b.base+"/api/signout", strings.NewReader("x=1"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("form post: %d", resp.StatusCode)
	}
	// Security headers on the page itself.
	resp, err = b.c.Get(b.base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") {
		t.Errorf("CSP = %q", csp)
	}
}

// The registration pages submit only what they prepared for the session,
// after the challenge they gave, at a bounded pace: anyone who reaches the
// console proposes nothing else unsigned.
func TestConsoleRegistrationRefuses(t *testing.T) {
	h := startWithConsole(t)
	b := newBrowser(t, h)
	name := h.Officers[0].Name
	a := webauthntest.New()
	c := a.Credential("localhost", false)
	stmtReq := func(challenge any) map[string]any {
		return map[string]any{"officer": name, "label": "k", "challenge": challenge,
			"credential_id": b64(c.CredentialId), "public_key": b64(c.PublicKey)}
	}
	var e map[string]any
	if code := b.do("POST", "/api/register/statement", stmtReq("made-up"), &e); code != http.StatusUnauthorized {
		t.Errorf("statement without begin's challenge: %d %v", code, e)
	}
	// Without the officer's enrolment code (none, another officer's),
	// nothing starts.
	for what, code := range map[string]string{"none": "", "another officer's": enrolCode(t, h, 1), "garbage": "abc"} {
		if status := b.do("POST", "/api/register/begin", map[string]any{"officer": name, "enrolment": code}, &e); status != http.StatusForbidden || e["code"] != "PermissionDenied" {
			t.Errorf("register/begin with enrolment code %s: %d %v", what, status, e)
		}
	}
	enrol := enrolCode(t, h, 0)
	var begin map[string]any
	b.do("POST", "/api/register/begin", map[string]any{"officer": name, "enrolment": enrol}, &begin)
	// A challenge given for another officer does not serve.
	other := stmtReq(begin["challenge"])
	other["officer"] = h.Officers[1].Name
	if code := b.do("POST", "/api/register/statement", other, &e); code != http.StatusUnauthorized {
		t.Errorf("statement with another officer's challenge: %d %v", code, e)
	}
	b.do("POST", "/api/register/begin", map[string]any{"officer": name, "enrolment": enrol}, &begin)
	var st map[string]any
	if code := b.do("POST", "/api/register/statement", stmtReq(begin["challenge"]), &st); code != 200 {
		t.Fatalf("register/statement: %d %v", code, st)
	}
	if code := b.do("POST", "/api/register/statement", stmtReq(begin["challenge"]), &e); code != http.StatusUnauthorized {
		t.Errorf("a challenge used twice: %d %v", code, e)
	}
	// A statement of the caller's own making, properly proven by the
	// credential it adds, is refused: the page did not prepare it.
	own, err := governance.NewStatement(h.Node.Service().State().ClusterID(), 7*24*time.Hour, strings.Repeat("x", 4000))
	if err != nil {
		t.Fatal(err)
	}
	own.Operation = &custosv1.Statement_AddOfficerCredential{AddOfficerCredential: &custosv1.AddOfficerCredential{Officer: name, Credential: c}}
	ob, err := governance.Marshal(own)
	if err != nil {
		t.Fatal(err)
	}
	if code := b.do("POST", "/api/register/finish", map[string]any{"statement": b64(ob),
		"proof": assertionJSON(a.Assert("localhost", b.origin, governance.SignedDigest(ob)))}, &e); code != http.StatusForbidden {
		t.Errorf("finish with a statement the page did not prepare: %d %v", code, e)
	}
	// Another session cannot finish this session's statement.
	stmt := unb64(t, st["statement"])
	fin := map[string]any{"statement": b64(stmt), "proof": assertionJSON(a.Assert("localhost", b.origin, governance.SignedDigest(stmt)))}
	if code := newBrowser(t, h).do("POST", "/api/register/finish", fin, &e); code != http.StatusForbidden {
		t.Errorf("finish from another session: %d %v", code, e)
	}
	// Finishes the cluster would refuse (a proof by another key) are
	// refused without using up the console's registration pace.
	g := newBrowser(t, h)
	for i := range console.RegistrationBurst + 1 {
		var gb, gs map[string]any
		g.do("POST", "/api/register/begin", map[string]any{"officer": name, "enrolment": enrol}, &gb)
		gc := webauthntest.New().Credential("localhost", false)
		if code := g.do("POST", "/api/register/statement", map[string]any{"officer": name, "label": "g", "challenge": gb["challenge"],
			"credential_id": b64(gc.CredentialId), "public_key": b64(gc.PublicKey)}, &gs); code != 200 {
			t.Fatalf("register/statement %d: %d %v", i, code, gs)
		}
		gstmt := unb64(t, gs["statement"])
		if code := g.do("POST", "/api/register/finish", map[string]any{"statement": b64(gstmt),
			"proof": assertionJSON(a.Assert("localhost", g.origin, governance.SignedDigest(gstmt)))}, &e); code != http.StatusForbidden {
			t.Fatalf("finish with another key's proof %d: %d %v", i, code, e)
		}
	}
	if code := b.do("POST", "/api/register/finish", fin, &e); code != 200 {
		t.Fatalf("register/finish: %d %v", code, e)
	}
	if code := b.do("POST", "/api/register/finish", fin, &e); code != http.StatusForbidden {
		t.Errorf("finish twice: %d %v", code, e)
	}
	ps, err := h.Node.Service().ListProposals(bg, kms.Principal{Name: "auditor"}, &custosv1.ListProposalsRequest{})
	if err != nil || len(ps.Proposals) != 1 || ps.Proposals[0].Proposer != "console:registration" {
		t.Fatalf("proposals = %v, %v", ps, err)
	}
}
