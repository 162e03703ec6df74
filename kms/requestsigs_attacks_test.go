package kms_test

// Attacks on signed requests (docs/signed-requests.md) found in review, as
// a member node (or modified leader code) that proposes any Decide or an
// application with its own certificate would make them, kept as
// regressions: each must fail.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/audit"
	"github.com/custos-kms/custos/kms/governance"
	"github.com/custos-kms/custos/kms/requestsig"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

type signedFixture struct {
	e    *env
	ca   testCA
	leaf *x509.Certificate
	key  *ecdsa.PrivateKey
}

var attackReqID atomic.Uint64

// newSignedFixture: a cluster at version 4 with the apps CA pinned and
// keys (created by app-1) whose policy requires signed requests.
func newSignedFixture(t *testing.T, keys ...string) *signedFixture {
	t.Helper()
	e := newEnv(t)
	if err := e.svc.EnsureCheckpointKey(bg); err != nil {
		t.Fatal(err)
	}
	ca := newTestCA(t, "apps CA")
	if _, err := e.govern(addAuthority(ca.cert.Raw), 0, 1); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		createKey(t, e, k)
		p := kms.DefaultPolicy(app.Name)
		p.RequireRequestSignature = true
		if _, err := e.govern(func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: k, Policy: p}}
		}, 0, 1); err != nil {
			t.Fatal(err)
		}
	}
	leaf, key := ca.issueWithKey(t, app.Name)
	return &signedFixture{e: e, ca: ca, leaf: leaf, key: key}
}

// signedDecide is the Decide a node proposes for a request signed by
// signer over (ciphertext digest dd, empty context, CUSTOMER_INITIATED,
// ticket T-1), at signedAt, naming key/version/op.
func signedDecide(t *testing.T, signer *ecdsa.PrivateKey, cert []byte, dd []byte, signedAt time.Time,
	key string, version uint32, op custosv1.Operation) *raftlogv1.Decide {
	t.Helper()
	cd := sha256.Sum256(nil)
	sig, err := requestsig.Sign(signer, requestsig.Request{Method: requestsig.MethodOf(op), Header: requestsig.Headers(op, key, version)[0],
		DataDigest: dd, ContextDigest: cd[:],
		Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Ticket: "T-1"}, signedAt)
	if err != nil {
		t.Fatal(err)
	}
	return &raftlogv1.Decide{Key: key, KeyVersion: version, Operation: op, Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED,
		Ticket: "T-1", ContextDigest: cd[:], DataDigest: dd, RequestId: fmt.Sprintf("%032x", attackReqID.Add(1)),
		RequestSignature: sig, PrincipalCertificate: cert}
}

func (f *signedFixture) command(principal string, cert []byte, at time.Time, op *raftlogv1.Decide) *raftlogv1.Command {
	return &raftlogv1.Command{TimeUnixNano: at.UnixNano(), Node: "node-2", Principal: principal,
		PrincipalIssuerSha256: sum(f.ca.cert.Raw), PrincipalCertSha256: sum(cert), Op: &raftlogv1.Command_Decide{Decide: op}}
}

func (f *signedFixture) apply(t *testing.T, c *raftlogv1.Command) *custosv1.DecisionRecord {
	t.Helper()
	res, err := f.e.node.Apply(bg, proto.Clone(c).(*raftlogv1.Command))
	if err != nil {
		t.Fatal(err)
	}
	d, ok := res.(*kms.Decision)
	if !ok || d.Record == nil {
		t.Fatalf("apply: %T %v", res, res)
	}
	return d.Record
}

// The signature names the key, the version and the kind (the ciphertext's
// header): a member node that receives app-1's signed request to decrypt
// a data key of key "a" and proposes it for key "b" as a DECRYPT gets a
// DENY, and app-1's own request is still allowed.
func TestAttackSignedRequestNotBoundToKey(t *testing.T) {
	f := newSignedFixture(t, "a", "b")
	wrapped := dataKey(t, f.e, "a", nil).WrappedDataKey
	w, err := kms.ParseWrapped(wrapped)
	if err != nil || w.Key != "a" || w.KeyVersion != 1 {
		t.Fatalf("wrapped data key names %v %v", w, err)
	}
	dd := sha256.Sum256(wrapped)
	// What app-1 signed (as clients/go signs a DecryptDataKey of key a).
	genuine := signedDecide(t, f.key, f.leaf.Raw, dd[:], time.Now(), "a", 1, custosv1.Operation_OPERATION_DECRYPT_DATA_KEY)
	// What the member node proposes: the same signature for key b, as DECRYPT.
	swapped := proto.Clone(genuine).(*raftlogv1.Decide)
	swapped.Key, swapped.Operation, swapped.RequestId = "b", custosv1.Operation_OPERATION_DECRYPT, "ffffffffffffffffffffffffffffffff"
	rec := f.apply(t, f.command(app.Name, f.leaf.Raw, time.Now(), swapped))
	if rec.Outcome == custosv1.Outcome_OUTCOME_ALLOW {
		t.Errorf("app-1 signed a DECRYPT_DATA_KEY of a ciphertext of key %q; a member node got %s of key %q by %s with that signature",
			w.Key, rec.Operation, rec.Key, rec.MatchedRule)
	}
	if g := f.apply(t, f.command(app.Name, f.leaf.Raw, time.Now(), genuine)); g.Outcome != custosv1.Outcome_OUTCOME_ALLOW {
		t.Errorf("app-1's own request for key a: %s by %s, want ALLOW", g.Outcome, g.MatchedRule)
	}
	rep, err := audit.Verify(bytes.NewReader(exportOf(t, f.e)), publishedKeys(t, f.e))
	if err == nil && rec.Outcome == custosv1.Outcome_OUTCOME_ALLOW {
		t.Errorf("audit verify accepts the swapped release (recomputed %v, releases checked %d)", rep.Recomputed, rep.ReleasesChecked)
	}
}

// A principal no policy names spends no nonce (here "mallory", asking
// for a key that does not exist), and one principal that fills its share
// of the nonces (a flood by an application the officers named) does not
// stop another principal's signed requests.
func TestAttackAnyCertificateHolderExhaustsRequestNonces(t *testing.T) {
	f := newSignedFixture(t, "k")
	mLeaf, mKey := f.ca.issueWithKey(t, "mallory")
	dd := sha256.Sum256([]byte("anything"))
	m := f.command("mallory", mLeaf.Raw, time.Now(), signedDecide(t, mKey, mLeaf.Raw, dd[:], time.Now(), "no-such-key", 1, custosv1.Operation_OPERATION_DECRYPT))
	if r := f.apply(t, m); r.MatchedRule != "key:not-found" {
		t.Fatalf("mallory: %s by %s", r.Outcome, r.MatchedRule)
	}
	if r := f.apply(t, m); r.MatchedRule == "request-signature:invalid" {
		t.Errorf("a principal no policy names, asking for a key that does not exist, spent a nonce (its repeat: %s by %s)", r.Outcome, r.MatchedRule)
	}
	if n := f.e.state.FillRequestNoncesForTest("app-2"); n == 0 {
		t.Fatal("nothing filled")
	}
	wrapped := dataKey(t, f.e, "k", nil).WrappedDataKey
	d2 := sha256.Sum256(wrapped)
	res, err := f.e.node.Apply(bg, f.command(app.Name, f.leaf.Raw, time.Now(), signedDecide(t, f.key, f.leaf.Raw, d2[:], time.Now(), "k", 1, custosv1.Operation_OPERATION_DECRYPT_DATA_KEY)))
	if err != nil {
		t.Fatal(err)
	}
	if d := res.(*kms.Decision); d.Record.Outcome != custosv1.Outcome_OUTCOME_ALLOW {
		t.Errorf("app-1's own signed request for its own key: %s by %s (%v), want ALLOW", d.Record.Outcome, d.Record.MatchedRule, d.Err)
	}
}

// At state machine version 3 (a rolling upgrade: release-3 and this
// release's nodes apply the same log) KeyPolicy field 12
// (require_request_signature) is refused exactly as release 3 refuses it —
// an unknown field, "unknown field in statement.set_policy.policy" —
// whatever its encoding (false, twice, beside an unknown field deeper
// down), signed by a quorum or junk-signed by anyone: the two releases
// write the same records.
func TestAttackVersion3ParsesAnEncodedRequestSignatureField(t *testing.T) {
	e := newEnvVersion(t, 3)
	createKey(t, e, "k")
	craft := func(field12 []byte) []byte {
		st, err := governance.NewStatement(e.state.ClusterID(), time.Hour, "test")
		if err != nil {
			t.Fatal(err)
		}
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		pol, err := proto.MarshalOptions{Deterministic: true}.Marshal(kms.DefaultPolicy(app.Name))
		if err != nil {
			t.Fatal(err)
		}
		pol = append(pol, field12...)
		sp := protowire.AppendTag(nil, 1, protowire.BytesType)
		sp = protowire.AppendString(sp, "k")
		sp = protowire.AppendTag(sp, 2, protowire.BytesType)
		sp = protowire.AppendBytes(sp, pol)
		n := (&custosv1.Statement{}).ProtoReflect().Descriptor().Fields().ByName("set_policy").Number()
		b = protowire.AppendTag(b, n, protowire.BytesType)
		return protowire.AppendBytes(b, sp)
	}
	junk := func(b []byte) *custosv1.DecisionRecord {
		t.Helper()
		_, _ = e.svc.Submit(bg, kms.Principal{Name: "anyone"}, &custosv1.SignedStatement{Statement: b,
			Signatures: []*custosv1.OfficerSignature{{Officer: e.officers[0].name, Signature: []byte{0x30, 0}}}})
		return lastRecord(t, e)
	}
	// What release 3 records for any statement carrying field 12 in a policy
	// (the true case, checked by TestSignedRequestsNeedVersion4).
	release3 := junk(craft([]byte{0x60, 0x01}))
	if !strings.Contains(release3.Detail, "unknown field in statement.set_policy.policy") {
		t.Fatalf("baseline: %q", release3.Detail)
	}
	// true, plus a reasons element carrying a field (99) no release knows.
	deeper := append([]byte{0x60, 0x01, 0x22, 0x07, 0x08, 0x01, 0x10, 0x01}, protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1)...)
	for name, f12 := range map[string][]byte{"encoded false": {0x60, 0x00}, "true then false": {0x60, 0x01, 0x60, 0x00}, "true and an unknown field in a reasons element": deeper} {
		rec := junk(craft(f12))
		if rec.Detail != release3.Detail || rec.MatchedRule != release3.MatchedRule {
			t.Errorf("%s, junk-signed: this release records %q (rule %q); release 3 records %q (rule %q)", name, rec.Detail, rec.MatchedRule, release3.Detail, release3.MatchedRule)
		}
	}
	if _, err := e.svc.Submit(bg, kms.Principal{Name: "officer"}, e.signed(craft([]byte{0x60, 0x00}), 0, 1)); err == nil {
		t.Errorf("quorum-signed set_policy with field 12 encoded false: applied at version 3 (policy version %d); release 3 refuses it as an unknown field",
			func() uint64 { k, _ := e.state.Key("k"); return k.GetPolicy().GetVersion() }())
	}
}

// WouldRefuse (the node's guess for its refusal quota) checks a request
// signature as the state machine will: a junk signature on a key that
// requires signed requests is guessed a refusal, charged to the refusals
// quota.
func TestAttackWouldRefuseTrustsAnySignature(t *testing.T) {
	f := newSignedFixture(t, "k")
	dd := sha256.Sum256([]byte("x"))
	op := signedDecide(t, f.key, f.leaf.Raw, dd[:], time.Now(), "k", 1, custosv1.Operation_OPERATION_DECRYPT)
	op.RequestSignature.Signature = []byte{0x30, 0x00} // junk
	c := f.command(app.Name, f.leaf.Raw, time.Now(), op)
	guess := f.e.state.WouldRefuse(proto.Clone(c).(*raftlogv1.Command))
	rec := f.apply(t, c)
	if rec.Outcome == custosv1.Outcome_OUTCOME_DENY && !guess {
		t.Errorf("WouldRefuse guessed no refusal; the state machine applied %s by %s", rec.Outcome, rec.MatchedRule)
	}
}

// Each of these is a DENY (request-signature:invalid or principal:issuer),
// and a replay is refused whenever it comes (by its spent nonce, then by
// the skew once the nonce is forgotten).
func TestSignedRequestAttacksThatHold(t *testing.T) {
	f := newSignedFixture(t, "k")
	dd := sha256.Sum256(dataKey(t, f.e, "k", nil).WrappedDataKey)
	now := time.Now()
	deny := func(what string, c *raftlogv1.Command) {
		t.Helper()
		if r := f.apply(t, c); r.Outcome != custosv1.Outcome_OUTCOME_DENY {
			t.Errorf("%s: %s by %s", what, r.Outcome, r.MatchedRule)
		}
	}
	// Decrypt signature proposed as ReEncrypt.
	op := signedDecide(t, f.key, f.leaf.Raw, dd[:], now, "k", 1, custosv1.Operation_OPERATION_DECRYPT)
	re := proto.Clone(op).(*raftlogv1.Decide)
	re.Operation = custosv1.Operation_OPERATION_REENCRYPT
	deny("decrypt signature as reencrypt", f.command(app.Name, f.leaf.Raw, now, re))
	// The CA certificate itself as the leaf (CN app-1 CA is not app-1; use a CA named app-1).
	caApp := newTestCA(t, app.Name)
	if _, err := f.e.govern(addAuthority(caApp.cert.Raw), 0, 1); err != nil {
		t.Fatal(err)
	}
	c := f.command(app.Name, caApp.cert.Raw, now, signedDecide(t, caApp.key, caApp.cert.Raw, dd[:], now, "k", 1, custosv1.Operation_OPERATION_DECRYPT))
	c.PrincipalIssuerSha256 = sum(caApp.cert.Raw)
	deny("CA certificate as leaf", c)
	// Expired certificate: the command's (monotonic) time is after NotAfter.
	late := now.Add(2 * time.Hour)
	deny("expired certificate", f.command(app.Name, f.leaf.Raw, late, signedDecide(t, f.key, f.leaf.Raw, dd[:], late, "k", 1, custosv1.Operation_OPERATION_DECRYPT)))
	// Replays around the nonce retention, the clock moved by later commands.
	f2 := newSignedFixture(t, "k")
	t0 := time.Now()
	s := f2.command(app.Name, f2.leaf.Raw, t0, signedDecide(t, f2.key, f2.leaf.Raw, dd[:], t0.Add(requestsig.MaxSkew-time.Second), "k", 1, custosv1.Operation_OPERATION_DECRYPT))
	if r := f2.apply(t, s); r.Outcome != custosv1.Outcome_OUTCOME_ALLOW {
		t.Fatalf("first: %s by %s", r.Outcome, r.MatchedRule)
	}
	for _, d := range []time.Duration{time.Minute, 2*requestsig.MaxSkew - time.Second, 2*requestsig.MaxSkew + 2*time.Second, time.Hour} {
		r := proto.Clone(s).(*raftlogv1.Command)
		r.TimeUnixNano = t0.Add(d).UnixNano()
		if rec := func() *custosv1.DecisionRecord {
			res, err := f2.e.node.Apply(bg, r)
			if err != nil {
				t.Fatal(err)
			}
			return res.(*kms.Decision).Record
		}(); rec.Outcome != custosv1.Outcome_OUTCOME_DENY {
			t.Errorf("replay at +%s: %s", d, rec.Outcome)
		}
	}
	// The same signed request twice in one BatchDecrypt (service path).
	f3 := newSignedFixture(t, "k")
	w := dataKey(t, f3.e, "k", nil).WrappedDataKey
	cd := sha256.Sum256(nil)
	d3 := sha256.Sum256(w)
	sig, err := requestsig.Sign(f3.key, requestsig.Request{Method: requestsig.MethodDecrypt, Header: requestsig.HeaderOf(w), DataDigest: d3[:], ContextDigest: cd[:],
		Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	item := &custosv1.DecryptRequest{Ciphertext: w, Justification: &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED}, RequestSignature: sig}
	resp, err := f3.e.svc.BatchDecrypt(bg, principalOf(f3.leaf, f3.ca), &custosv1.BatchDecryptRequest{Requests: []*custosv1.DecryptRequest{item, item}})
	if err != nil {
		t.Fatal(err)
	}
	ok := 0
	for _, r := range resp {
		if r.Err == nil && len(r.Response.GetPlaintext()) > 0 {
			ok++
		}
	}
	if ok != 1 {
		t.Errorf("one signed item twice in a batch released %d times", ok)
	}
}
