package kms_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/audit"
	"github.com/custos-kms/custos/kms/requestsig"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

func sum(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}

// Signed requests (docs/signed-requests.md), decided by the state machine
// on commands as any member node could propose them: with a policy that
// requires them, an unsigned decision in the application's name — what a
// member node that never saw the application's key can propose — is
// refused; the application's own signed request is allowed and its record
// carries the proof; a replay (also after a restart), a signature over
// something else, a stale one, another principal's certificate and one
// from a CA the officers do not trust are refused; `audit verify`
// checks the proofs and finds a release under such a policy without one.
func TestSignedRequests(t *testing.T) {
	e := newEnv(t)
	if err := e.svc.EnsureCheckpointKey(bg); err != nil {
		t.Fatal(err)
	}
	ca := newTestCA(t, "apps CA")
	if _, err := e.govern(addAuthority(ca.cert.Raw), 0, 1); err != nil {
		t.Fatal(err)
	}
	createKey(t, e, "k")
	p := kms.DefaultPolicy(app.Name)
	p.RequireRequestSignature = true
	if _, err := e.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "k", Policy: p}}
	}, 0, 1); err != nil {
		t.Fatal(err)
	}
	appLeaf, appKey := ca.issueWithKey(t, app.Name)
	appCert := appLeaf.Raw
	dd, cd := sha256.Sum256([]byte("a wrapped data key")), sha256.Sum256(nil)
	// command is what a node proposes for app's request (signed with
	// signer when it is not nil).
	command := func(signer *ecdsa.PrivateKey, cert []byte, at time.Time) *raftlogv1.Command {
		t.Helper()
		op := &raftlogv1.Decide{Key: "k", KeyVersion: 1, Operation: custosv1.Operation_OPERATION_DECRYPT_DATA_KEY,
			Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Ticket: "T-1", ContextDigest: cd[:], DataDigest: dd[:], RequestId: hex.EncodeToString(sum([]byte(at.String())))[:32]}
		if signer != nil {
			sig, err := requestsig.Sign(signer, requestsig.Request{Method: requestsig.MethodDecrypt,
				Header: requestsig.Headers(op.Operation, op.Key, op.KeyVersion)[0], DataDigest: dd[:], ContextDigest: cd[:],
				Reason: op.Reason, Ticket: op.Ticket}, at)
			if err != nil {
				t.Fatal(err)
			}
			op.RequestSignature, op.PrincipalCertificate = sig, cert
		}
		return &raftlogv1.Command{TimeUnixNano: time.Now().UnixNano(), Node: "node-2", Principal: app.Name,
			PrincipalIssuerSha256: sum(ca.cert.Raw), PrincipalCertSha256: sum(cert), Op: &raftlogv1.Command_Decide{Decide: op}}
	}
	decide := func(c *raftlogv1.Command) *custosv1.DecisionRecord {
		t.Helper()
		res, err := e.node.Apply(bg, proto.Clone(c).(*raftlogv1.Command))
		if err != nil {
			t.Fatal(err)
		}
		d, ok := res.(*kms.Decision)
		if !ok || d.Record == nil {
			t.Fatalf("apply: %T %v", res, res)
		}
		return d.Record
	}
	want := func(what string, rec *custosv1.DecisionRecord, outcome custosv1.Outcome, rule string) {
		t.Helper()
		if rec.Outcome != outcome || rec.MatchedRule != rule {
			t.Fatalf("%s: %s by %q, want %s by %q", what, rec.Outcome, rec.MatchedRule, outcome, rule)
		}
	}

	want("unsigned, in app's name", decide(command(nil, appCert, time.Now())), custosv1.Outcome_OUTCOME_DENY, "policy/v2:request-signature")
	signed := command(appKey, appCert, time.Now())
	rec := decide(signed)
	want("app's signed request", rec, custosv1.Outcome_OUTCOME_ALLOW, "policy/v2:reason=CUSTOMER_INITIATED:allow")
	if rec.GetRequestSignature() == nil || !bytes.Equal(rec.GetPrincipalCertificate(), appCert) {
		t.Fatalf("the ALLOW record carries signature %v and a %d-byte certificate, want the proof", rec.GetRequestSignature(), len(rec.GetPrincipalCertificate()))
	}
	want("a replay", decide(signed), custosv1.Outcome_OUTCOME_DENY, "request-signature:invalid")

	other := command(appKey, appCert, time.Now())
	other.GetDecide().Ticket = "T-2" // signed for T-1
	want("a signature over another ticket", decide(other), custosv1.Outcome_OUTCOME_DENY, "request-signature:invalid")
	want("signed ten minutes ago", decide(command(appKey, appCert, time.Now().Add(-10*time.Minute))), custosv1.Outcome_OUTCOME_DENY, "request-signature:invalid")
	batchLeaf, batchKey := ca.issueWithKey(t, "batch")
	batchCert := batchLeaf.Raw
	want("another principal's certificate", decide(command(batchKey, batchCert, time.Now())), custosv1.Outcome_OUTCOME_DENY, "request-signature:invalid")
	rogue := newTestCA(t, "operator's CA")
	rogueLeaf, rogueKey := rogue.issueWithKey(t, app.Name)
	rogueCert := rogueLeaf.Raw
	forged := command(rogueKey, rogueCert, time.Now())
	forged.PrincipalIssuerSha256 = sum(ca.cert.Raw) // claims the trusted CA
	want("a certificate the operator minted", decide(forged), custosv1.Outcome_OUTCOME_DENY, "request-signature:invalid")
	noCert := command(appKey, appCert, time.Now())
	noCert.GetDecide().PrincipalCertificate = nil
	want("a signature without its certificate", decide(noCert), custosv1.Outcome_OUTCOME_DENY, "request-signature:invalid")

	// The nonce survives a restart (log replay) and a snapshot restore.
	e.restart()
	want("a replay after a restart", decide(signed), custosv1.Outcome_OUTCOME_DENY, "request-signature:invalid")
	fresh := command(appKey, appCert, time.Now())
	want("a fresh signed request", decide(fresh), custosv1.Outcome_OUTCOME_ALLOW, "policy/v2:reason=CUSTOMER_INITIATED:allow")
	if err := e.state.Restore(bytes.NewReader(snapshotBytes(t, e.state))); err != nil {
		t.Fatal(err)
	}
	want("a replay after a snapshot restore", decide(fresh), custosv1.Outcome_OUTCOME_DENY, "request-signature:invalid")

	// The auditor checks every proof, and that the policy's releases
	// carry one.
	keys := publishedKeys(t, e)
	rep, err := audit.Verify(bytes.NewReader(exportOf(t, e)), keys)
	if err != nil || !rep.Recomputed || rep.ReleasesChecked != 2 {
		t.Fatalf("honest export: %v (%+v), want verified, recomputed, 2 releases checked", err, rep)
	}
}

// A request signature is checked only from state machine version 4: below
// it the fields are dropped as the release before ignored them (records
// identical across a rolling upgrade), and a policy cannot require them.
func TestSignedRequestsNeedVersion4(t *testing.T) {
	e := newEnvVersion(t, 3)
	createKey(t, e, "k")
	p := kms.DefaultPolicy(app.Name)
	p.RequireRequestSignature = true
	_, err := e.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "k", Policy: p}}
	}, 0, 1)
	if !errors.Is(err, kms.ErrPermissionDenied) && !errors.Is(err, kms.ErrInvalidArgument) || !strings.Contains(err.Error(), "unknown field in statement.set_policy.policy") {
		t.Fatalf("require_request_signature at version 3: %v, want the refusal a version 3 release gives", err)
	}
	dd, cd := sha256.Sum256([]byte("x")), sha256.Sum256(nil)
	res, err := e.node.Apply(bg, &raftlogv1.Command{TimeUnixNano: time.Now().UnixNano(), Node: "node-1", Principal: app.Name,
		Op: &raftlogv1.Command_Decide{Decide: &raftlogv1.Decide{Key: "k", KeyVersion: 1, Operation: custosv1.Operation_OPERATION_DECRYPT,
			Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, ContextDigest: cd[:], DataDigest: dd[:], RequestId: "0123456789abcdef0123456789abcdef",
			RequestSignature: &custosv1.RequestSignature{Nonce: make([]byte, 16), Signature: []byte{1}}, PrincipalCertificate: []byte("junk")}}})
	if err != nil {
		t.Fatal(err)
	}
	rec := res.(*kms.Decision).Record
	if rec.Outcome != custosv1.Outcome_OUTCOME_ALLOW || rec.RequestSignature != nil || rec.PrincipalCertificate != nil {
		t.Fatalf("version 3: %s by %s, signature %v, %d-byte certificate: want the fields ignored and not recorded",
			rec.Outcome, rec.MatchedRule, rec.RequestSignature, len(rec.PrincipalCertificate))
	}
}

// From state machine version 4 every replica refuses a decision while a
// restore waits for the officers' acceptance (the API refused it before),
// so that a RESTORE record cannot hide releases from the recomputation.
func TestNoReleaseWhileRestorePending(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	e.state.SetRestoreForTest(&custosv1.ClusterRestore{Node: "node-1", RestoreId: strings.Repeat("ab", 16)})
	dd, cd := sha256.Sum256([]byte("x")), sha256.Sum256(nil)
	res, err := e.node.Apply(bg, &raftlogv1.Command{TimeUnixNano: time.Now().UnixNano(), Node: "node-2", Principal: app.Name,
		Op: &raftlogv1.Command_Decide{Decide: &raftlogv1.Decide{Key: "k", KeyVersion: 1, Operation: custosv1.Operation_OPERATION_DECRYPT,
			Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, ContextDigest: cd[:], DataDigest: dd[:], RequestId: "0123456789abcdef0123456789abcdef"}}})
	if err != nil {
		t.Fatal(err)
	}
	if rec := res.(*kms.Decision).Record; rec.Outcome != custosv1.Outcome_OUTCOME_DENY || rec.MatchedRule != "restore:pending" {
		t.Fatalf("a decision while a restore is pending: %s by %s, want DENY by restore:pending", rec.Outcome, rec.MatchedRule)
	}
}
