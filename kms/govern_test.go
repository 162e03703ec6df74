package kms_test

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"google.golang.org/protobuf/proto"
)

func keyState(t *testing.T, e *env, name string) custosv1.KeyState {
	t.Helper()
	k, err := e.svc.GetKey(bg, app, &custosv1.GetKeyRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return k.State
}

func decryptAs(e *env, who string, ct []byte, reason custosv1.Reason) (*custosv1.DecryptResponse, error) {
	return e.svc.Decrypt(bg, kms.Principal{Name: who}, &custosv1.DecryptRequest{Ciphertext: ct,
		Justification: &custosv1.Justification{Reason: reason, Text: "why", Ticket: "CASE-7"}})
}

// lastRecord returns the newest ledger record.
func lastRecord(t *testing.T, e *env) *custosv1.DecisionRecord {
	t.Helper()
	seq, _ := e.state.LedgerHead()
	rec, err := e.state.DecisionRecord(seq)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// Invariant 4 (docs/architecture.md): one officer tightens, loosening needs the quorum, and the
// key's own users cannot loosen either.
func TestTighteningNeedsOneLooseningNeedsQuorum(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	resp, err := e.govern(revokeKey("k"), 2)
	if err != nil {
		t.Fatalf("revoke by one officer: %v", err)
	}
	if keyState(t, e, "k") != custosv1.KeyState_KEY_STATE_REVOKED {
		t.Fatalf("key not revoked")
	}
	rec, _ := e.state.DecisionRecord(resp.LedgerSeq)
	if rec.Operation != custosv1.Operation_OPERATION_GOVERNANCE || rec.Outcome != custosv1.Outcome_OUTCOME_ALLOW ||
		rec.MatchedRule != "governance:revoke_key" || len(rec.Signers) != 1 || rec.Signers[0] != "officer-3" || rec.Key != "k" {
		t.Fatalf("governance record = %v", rec)
	}
	// The key's creator cannot undo a revocation, nor can one officer.
	if _, err := e.svc.SetKeyState(bg, app, &custosv1.SetKeyStateRequest{Name: "k", State: custosv1.KeyState_KEY_STATE_ENABLED}); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("SetKeyState(ENABLED) by the creator: got %v, want ErrPermissionDenied", err)
	}
	if _, err := e.govern(enableKey("k"), 0); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("enable by one officer: got %v, want ErrPermissionDenied", err)
	}
	if rec := lastRecord(t, e); rec.Outcome != custosv1.Outcome_OUTCOME_DENY || rec.MatchedRule != "governance:enable_key" {
		t.Fatalf("refused statement record = %v", rec)
	}
	if keyState(t, e, "k") != custosv1.KeyState_KEY_STATE_REVOKED {
		t.Fatalf("a refused statement changed the key")
	}
	if _, err := e.govern(enableKey("k"), 0, 1); err != nil {
		t.Fatalf("enable by two officers: %v", err)
	}
	if keyState(t, e, "k") != custosv1.KeyState_KEY_STATE_ENABLED {
		t.Fatalf("key not re-enabled")
	}
	// Users of the key may tighten: disable, raise the minimum version.
	if _, err := e.svc.RotateKey(bg, app, &custosv1.RotateKeyRequest{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.SetMinDecryptionVersion(bg, app, &custosv1.SetMinDecryptionVersionRequest{Name: "k", MinDecryptionVersion: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.SetMinDecryptionVersion(bg, app, &custosv1.SetMinDecryptionVersionRequest{Name: "k", MinDecryptionVersion: 1}); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("lowering the min version: got %v, want ErrPermissionDenied", err)
	}
	// Someone the policy does not name cannot even tighten.
	op := kms.Principal{Name: "operator"}
	if _, err := e.svc.SetKeyState(bg, op, &custosv1.SetKeyStateRequest{Name: "k", State: custosv1.KeyState_KEY_STATE_DISABLED}); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("disable by a stranger: got %v, want ErrPermissionDenied", err)
	}
	if _, err := e.svc.RotateKey(bg, op, &custosv1.RotateKeyRequest{Name: "k"}); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("rotate by a stranger: got %v, want ErrPermissionDenied", err)
	}
}

func TestStatementBadInput(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	stranger, _ := governance.GenerateKey()
	good := e.statement(enableKey("k"))
	other := e.statement(enableKey("k"))

	flipped := e.signed(good, 0, 1)
	flipped.Signatures[1].Signature = bytes.Clone(flipped.Signatures[1].Signature)
	flipped.Signatures[1].Signature[10] ^= 1
	wrongBytes := e.signed(good, 0)
	wrongBytes.Signatures = append(wrongBytes.Signatures, e.signed(other, 1).Signatures...)
	unknown := e.signed(good, 0)
	sig, _ := governance.Sign(stranger, "mallory", good)
	unknown.Signatures = append(unknown.Signatures, sig)
	dup := e.signed(good, 0, 0)
	expired := e.signed(e.statement(func(st *custosv1.Statement) {
		enableKey("k")(st)
		st.NotAfterUnix = time.Now().Add(-time.Minute).Unix()
	}), 0, 1)
	otherCluster := e.signed(e.statement(func(st *custosv1.Statement) {
		enableKey("k")(st)
		st.ClusterId = "another-cluster"
	}), 0, 1)
	missingKey := e.signed(e.statement(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "nope", Policy: kms.DefaultPolicy("x")}}
	}), 0, 1)
	badPolicy := e.signed(e.statement(func(st *custosv1.Statement) {
		p := kms.DefaultPolicy("x")
		p.DecryptPrincipals = append(p.DecryptPrincipals, "x")
		st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "k", Policy: p}}
	}), 0, 1)
	noSuchRequest := e.signed(e.statement(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_ApproveRequest{ApproveRequest: &custosv1.ApproveRequest{RequestId: "nope"}}
	}), 0, 1)

	policyBefore, _ := e.svc.GetPolicy(bg, app, &custosv1.GetPolicyRequest{Key: "k"})
	for _, c := range []struct {
		name string
		ss   *custosv1.SignedStatement
		want error
	}{
		{"no signatures", &custosv1.SignedStatement{Statement: good}, kms.ErrInvalidArgument},
		{"empty statement", &custosv1.SignedStatement{Signatures: e.signed(good, 0).Signatures}, kms.ErrInvalidArgument},
		{"garbage statement", e.signed(good, 0, 1), nil}, // replaced below
		{"bad signature", flipped, kms.ErrPermissionDenied},
		{"signature over other bytes", wrongBytes, kms.ErrPermissionDenied},
		{"unknown officer", unknown, kms.ErrPermissionDenied},
		{"duplicate signer", dup, kms.ErrInvalidArgument},
		{"expired", expired, kms.ErrFailedPrecondition},
		{"other cluster", otherCluster, kms.ErrInvalidArgument},
		{"policy for a missing key", missingKey, kms.ErrNotFound},
		{"policy naming a principal twice", badPolicy, kms.ErrInvalidArgument},
		{"approve a missing request", noSuchRequest, kms.ErrNotFound},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.want == nil {
				c.ss.Statement = append(bytes.Clone(c.ss.Statement), 0xff, 0x01)
				c.want = kms.ErrInvalidArgument // no longer parses
			}
			before, _ := e.state.LedgerHead()
			if _, err := e.svc.Submit(bg, app, c.ss); !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if after, _ := e.state.LedgerHead(); after > before && lastRecord(t, e).Outcome != custosv1.Outcome_OUTCOME_DENY {
				t.Fatalf("a refused statement was recorded as applied")
			}
		})
	}
	// Nothing changed, and the good statement still applies exactly once.
	if p, _ := e.svc.GetPolicy(bg, app, &custosv1.GetPolicyRequest{Key: "k"}); !proto.Equal(p, policyBefore) {
		t.Fatalf("policy changed by refused statements")
	}
	if _, err := e.svc.Submit(bg, app, e.signed(good, 0, 1)); err != nil {
		t.Fatalf("good statement: %v", err)
	}
	if _, err := e.svc.Submit(bg, app, e.signed(good, 1, 2)); !errors.Is(err, kms.ErrFailedPrecondition) {
		t.Fatalf("replayed statement: got %v, want ErrFailedPrecondition", err)
	}
}

// The customer-control walk-through of docs/governance.md (policies, approvals, grants), at the service level.
func TestPolicyApprovalsAndGrants(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	dk := dataKey(t, e, "k", nil)
	const provider = "provider-support"

	// A stranger is denied outright, and the denial is recorded.
	if _, err := decryptAs(e, provider, dk.WrappedDataKey, custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("decrypt by a principal outside the policy: got %v, want ErrPermissionDenied", err)
	}
	if rec := lastRecord(t, e); rec.Outcome != custosv1.Outcome_OUTCOME_DENY || rec.MatchedRule != "policy/v1:principal" || rec.Principal != provider {
		t.Fatalf("record = %v", rec)
	}
	// Two officers let the provider ask; third-party requests need approval.
	p := kms.DefaultPolicy(app.Name)
	p.DecryptPrincipals = append(p.DecryptPrincipals, provider)
	setPolicy := func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "k", Policy: p}}
	}
	if _, err := e.govern(setPolicy, 0, 2); err != nil {
		t.Fatalf("set policy: %v", err)
	}
	if _, err := decryptAs(e, app.Name, dk.WrappedDataKey, custosv1.Reason_REASON_CUSTOMER_INITIATED); err != nil {
		t.Fatalf("customer decrypt: %v", err)
	}
	if rec := lastRecord(t, e); rec.MatchedRule != "policy/v2:reason=CUSTOMER_INITIATED:allow" {
		t.Fatalf("matched rule = %q", rec.MatchedRule)
	}
	ask := func() (string, error) {
		_, err := decryptAs(e, provider, dk.WrappedDataKey, custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST)
		var pe *kms.PendingError
		if errors.As(err, &pe) {
			return pe.RequestID, err
		}
		return "", err
	}
	id1, err := ask()
	if !errors.Is(err, kms.ErrFailedPrecondition) || id1 == "" {
		t.Fatalf("third-party request: got %v, want a pending request", err)
	}
	if rec := lastRecord(t, e); rec.Outcome != custosv1.Outcome_OUTCOME_PENDING || rec.Ticket != "CASE-7" {
		t.Fatalf("pending record = %v", rec)
	}
	pending, _ := e.svc.ListPending(bg, app, &custosv1.ListPendingRequest{})
	if len(pending.Requests) != 1 || pending.Requests[0].RequestId != id1 || pending.Requests[0].Principal != provider {
		t.Fatalf("pending = %v", pending)
	}
	// One officer denies it; it cannot be approved afterwards.
	deny := func(id string) func(*custosv1.Statement) {
		return func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_DenyRequest{DenyRequest: &custosv1.DenyRequest{RequestId: id}}
		}
	}
	approve := func(id string, uses uint32) func(*custosv1.Statement) {
		return func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_ApproveRequest{ApproveRequest: &custosv1.ApproveRequest{RequestId: id, Uses: uses, TtlSeconds: 600}}
		}
	}
	if _, err := e.govern(deny(id1), 1); err != nil {
		t.Fatalf("deny: %v", err)
	}
	if rec := lastRecord(t, e); rec.Key != "k" || rec.MatchedRule != "governance:deny_request" {
		t.Fatalf("deny record = %v: want it to name the request's key", rec)
	}
	if _, err := e.govern(approve(id1, 1), 0, 1); !errors.Is(err, kms.ErrFailedPrecondition) {
		t.Fatalf("approve a denied request: got %v, want ErrFailedPrecondition", err)
	}
	if _, err := ask(); !errors.Is(err, kms.ErrFailedPrecondition) {
		t.Fatalf("after deny, asking again must be pending again: %v", err)
	}
	// A later request approved by two is a grant of exactly 2 uses.
	id2, _ := ask()
	if _, err := e.govern(approve(id2, 2), 0); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("approve by one officer: got %v, want ErrPermissionDenied", err)
	}
	resp, err := e.govern(approve(id2, 2), 0, 1)
	if err != nil || resp.GrantId == "" {
		t.Fatalf("approve by two: %v, %v", resp, err)
	}
	for i := 0; i < 2; i++ {
		out, err := decryptAs(e, provider, dk.WrappedDataKey, custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST)
		if err != nil || !bytes.Equal(out.Plaintext, dk.Plaintext) {
			t.Fatalf("use %d of the grant: %v", i+1, err)
		}
		if rec := lastRecord(t, e); rec.MatchedRule != "grant:"+resp.GrantId {
			t.Fatalf("matched rule = %q, want the grant", rec.MatchedRule)
		}
	}
	if _, err := ask(); !errors.Is(err, kms.ErrFailedPrecondition) {
		t.Fatalf("third use: got %v, want pending again", err)
	}
	// The grant is scoped to its reason: another reason is not covered.
	if _, err := decryptAs(e, provider, dk.WrappedDataKey, custosv1.Reason_REASON_PROVIDER_SUPPORT); !errors.Is(err, kms.ErrFailedPrecondition) {
		t.Fatalf("other reason: %v", err)
	}
	req, err := e.svc.GetRequest(bg, app, &custosv1.GetRequestRequest{RequestId: id2})
	if err != nil || req.State != custosv1.RequestState_REQUEST_STATE_APPROVED || req.GrantId != resp.GrantId {
		t.Fatalf("GetRequest = %v, %v", req, err)
	}
	// Grants made in advance, and revoked by one officer.
	g, err := e.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_CreateGrant{CreateGrant: &custosv1.CreateGrant{Principal: provider, Key: "k",
			Reason: custosv1.Reason_REASON_PROVIDER_SERVICE, Uses: 5, TtlSeconds: 60}}
	}, 1, 2)
	if err != nil {
		t.Fatalf("create grant: %v", err)
	}
	if _, err := decryptAs(e, provider, dk.WrappedDataKey, custosv1.Reason_REASON_PROVIDER_SERVICE); err != nil {
		t.Fatalf("decrypt under an advance grant: %v", err)
	}
	if _, err := e.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_RevokeGrant{RevokeGrant: &custosv1.RevokeGrant{GrantId: g.GrantId}}
	}, 2); err != nil {
		t.Fatalf("revoke grant: %v", err)
	}
	if _, err := decryptAs(e, provider, dk.WrappedDataKey, custosv1.Reason_REASON_PROVIDER_SERVICE); !errors.Is(err, kms.ErrFailedPrecondition) {
		t.Fatalf("after grant revoked: %v", err)
	}
	// Grants and requests survive a restart (they are replicated state).
	e.restart()
	if r, err := e.svc.GetRequest(bg, app, &custosv1.GetRequestRequest{RequestId: id2}); err != nil || r.State != custosv1.RequestState_REQUEST_STATE_APPROVED {
		t.Fatalf("request after restart = %v, %v", r, err)
	}
}

func TestPolicyLimits(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	dk := dataKey(t, e, "k", nil)
	p := kms.DefaultPolicy(app.Name)
	p.MaxDecryptsPerPrincipalPerHour = 3
	p.Reasons[0].Action = custosv1.Action_ACTION_ALLOW
	if _, err := e.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "k", Policy: p}}
	}, 0, 1); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := decrypt(e, dk.WrappedDataKey, nil); err != nil {
			t.Fatalf("decrypt %d: %v", i, err)
		}
	}
	if _, err := decrypt(e, dk.WrappedDataKey, nil); !errors.Is(err, kms.ErrResourceExhausted) {
		t.Fatalf("fourth decrypt in the hour: got %v, want ErrResourceExhausted", err)
	}
	// A time window that excludes now denies everything.
	now := time.Now().UTC()
	m := int32(now.Hour()*60 + now.Minute())
	p.MaxDecryptsPerPrincipalPerHour = 0
	p.Windows = []*custosv1.TimeWindow{{StartMinute: (m + 120) % 1380, EndMinute: (m+120)%1380 + 30}}
	if _, err := e.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "k", Policy: p}}
	}, 0, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := decrypt(e, dk.WrappedDataKey, nil); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("decrypt outside the window: got %v, want ErrPermissionDenied", err)
	}
	if rec := lastRecord(t, e); rec.MatchedRule != "policy/v3:time-window" {
		t.Fatalf("matched rule = %q", rec.MatchedRule)
	}
	// Encrypt-side policy: a stranger cannot make data keys.
	if _, err := e.svc.GenerateDataKey(bg, kms.Principal{Name: "stranger"}, &custosv1.GenerateDataKeyRequest{Key: "k"}); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("GenerateDataKey by a stranger: got %v, want ErrPermissionDenied", err)
	}
}

// Invariant 3 (docs/architecture.md): once a revoke is acknowledged, no later decision allows the
// key. Decrypts hammer the key from 16 goroutines while an officer revokes.
func TestRevokeIsInLogOrderUnderLoad(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	dk := dataKey(t, e, "k", nil)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		revoked bool
		late    int
	)
	stop := make(chan struct{})
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				after := revoked
				mu.Unlock()
				if _, err := decrypt(e, dk.WrappedDataKey, nil); err == nil && after {
					mu.Lock()
					late++
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond) // let the load build up (not a timing assertion)
	resp, err := e.govern(revokeKey("k"), 1)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	revoked = true
	mu.Unlock()
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	if late > 0 {
		t.Fatalf("%d decrypts started after the revoke was acknowledged succeeded", late)
	}
	seq, _ := e.state.LedgerHead()
	allows := 0
	for i := uint64(1); i <= seq; i++ {
		rec, _ := e.state.DecisionRecord(i)
		if rec.Outcome == custosv1.Outcome_OUTCOME_ALLOW && rec.Operation != custosv1.Operation_OPERATION_GOVERNANCE {
			allows++
			if i > resp.LedgerSeq {
				t.Fatalf("decision %d allowed the key after the revoke at %d", i, resp.LedgerSeq)
			}
		}
	}
	if allows == 0 {
		t.Fatalf("no decrypt was allowed before the revoke: the test proved nothing")
	}
}
