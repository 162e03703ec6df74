package custos_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// officers returns the harness officers with the given indexes.
func officers(h *nodetest.Harness, idx ...int) []custos.Officer {
	var out []custos.Officer
	for _, i := range idx {
		out = append(out, custos.Officer{Name: h.Officers[i].Name, Signer: h.Officers[i].Key})
	}
	return out
}

// enableByQuorum re-enables key with an EnableKey statement signed by two
// of the three harness officers.
func enableByQuorum(t *testing.T, h *nodetest.Harness, c *custos.Client, key string) {
	t.Helper()
	ctx := testCtx(t)
	st, err := c.NewStatement(ctx, "re-enable "+key, 0)
	if err != nil {
		t.Fatalf("NewStatement: %v", err)
	}
	st.Operation = &custosv1.Statement_EnableKey{EnableKey: &custosv1.EnableKey{Key: key}}
	if _, err := c.SignAndSubmit(ctx, st, officers(h, 0, 1)...); err != nil {
		t.Fatalf("SignAndSubmit(enable_key %s): %v", key, err)
	}
}

var thirdParty = custos.Justification{Reason: custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST, Text: "court order 42"}

func TestGovernance(t *testing.T) {
	h := nodetest.Start(t)
	c := dial(t, h)

	t.Run("reads", func(t *testing.T) {
		ctx := testCtx(t)
		g, err := c.GetGovernance(ctx)
		if err != nil {
			t.Fatalf("GetGovernance: %v", err)
		}
		if g.GetClusterId() != h.Node.ClusterID() || g.GetQuorum() != nodetest.Quorum || len(g.GetOfficers()) != nodetest.NumOfficers {
			t.Errorf("GetGovernance = %v", g)
		}
		if _, err := c.Governance().GetGovernance(ctx, &custosv1.GetGovernanceRequest{}); err != nil {
			t.Errorf("raw Governance().GetGovernance: %v", err)
		}
		if _, err := c.CreateKey(ctx, "gov-read", ""); err != nil {
			t.Fatal(err)
		}
		p, err := c.GetPolicy(ctx, "gov-read")
		if err != nil {
			t.Fatalf("GetPolicy: %v", err)
		}
		if fmt.Sprint(p.GetEncryptPrincipals()) != "[app]" || fmt.Sprint(p.GetDecryptPrincipals()) != "[app]" || p.GetVersion() == 0 {
			t.Errorf("GetPolicy of a new key = %v, want app as the only principal", p)
		}
		_, err = c.GetPolicy(ctx, "no-such-key")
		wantCode(t, "GetPolicy of an unknown key", err, codes.NotFound)
		if reqs, err := c.ListPending(ctx, "gov-read"); err != nil || len(reqs) != 0 {
			t.Errorf("ListPending = %v, %v; want none", reqs, err)
		}
		if gs, err := c.ListGrants(ctx, "gov-read"); err != nil || len(gs) != 0 {
			t.Errorf("ListGrants = %v, %v; want none", gs, err)
		}
		_, err = c.GetRequest(ctx, "no-such-request")
		wantCode(t, "GetRequest of an unknown id", err, codes.NotFound)
	})

	t.Run("statement signatures verify", func(t *testing.T) {
		ctx := testCtx(t)
		st, err := c.NewStatement(ctx, "check", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if st.GetClusterId() != h.Node.ClusterID() || len(st.GetNonce()) != 16 {
			t.Errorf("NewStatement = %v", st)
		}
		st.Operation = &custosv1.Statement_RevokeKey{RevokeKey: &custosv1.RevokeKey{Key: "x"}}
		ss, err := custos.SignStatement(st, officers(h, 0, 2)...)
		if err != nil {
			t.Fatal(err)
		}
		// The client's encoding and signatures are what kms/governance
		// verifies.
		g, _ := c.GetGovernance(ctx)
		set, err := governance.NewOfficerSetFromGovernance(g)
		if err != nil {
			t.Fatal(err)
		}
		if _, signers, err := set.Verify(ss, h.Node.ClusterID(), time.Now()); err != nil || len(signers) != 2 {
			t.Errorf("Verify = %v, %v", signers, err)
		}
		if _, err := c.NewStatement(ctx, "", 8*24*time.Hour); err == nil {
			t.Error("NewStatement with an 8-day lifetime succeeded")
		}
		if _, err := custos.SignStatement(st); err == nil {
			t.Error("SignStatement without signers succeeded")
		}
	})

	t.Run("revoke by one, enable needs quorum", func(t *testing.T) {
		ctx := testCtx(t)
		if _, err := c.CreateKey(ctx, "gov-rev", ""); err != nil {
			t.Fatal(err)
		}
		ct := encryptBytes(t, c, "gov-rev", nil, []byte("secret"))
		st, err := c.NewStatement(ctx, "incident 7", 0)
		if err != nil {
			t.Fatal(err)
		}
		st.Operation = &custosv1.Statement_RevokeKey{RevokeKey: &custosv1.RevokeKey{Key: "gov-rev"}}
		res, err := c.SignAndSubmit(ctx, st, officers(h, 2)...)
		if err != nil {
			t.Fatalf("revoke: %v", err)
		}
		if res.GetResult() == "" || len(res.GetSigners()) != 1 || res.GetLedgerSeq() == 0 {
			t.Errorf("revoke response = %v", res)
		}
		if k, _ := c.GetKey(ctx, "gov-rev"); k.GetState() != custosv1.KeyState_KEY_STATE_REVOKED {
			t.Errorf("state after revoke = %v", k.GetState())
		}
		_, _, err = decryptBytes(c, ctx, ct)
		wantCode(t, "decrypt under a revoked key", err, codes.FailedPrecondition)

		st, _ = c.NewStatement(ctx, "", 0)
		st.Operation = &custosv1.Statement_EnableKey{EnableKey: &custosv1.EnableKey{Key: "gov-rev"}}
		_, err = c.SignAndSubmit(ctx, st, officers(h, 0)...)
		wantCode(t, "enable with one signature", err, codes.PermissionDenied)
		// The same statement with a second signature is accepted.
		ss, err := custos.SignStatement(st, officers(h, 0, 1)...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Submit(ctx, ss); err != nil {
			t.Fatalf("enable with two signatures: %v", err)
		}
		if got, _, err := decryptBytes(c, ctx, ct); err != nil || string(got) != "secret" {
			t.Errorf("decrypt after enable = %q, %v", got, err)
		}
		// A replay is refused.
		if _, err := c.Submit(ctx, ss); err == nil {
			t.Error("replayed statement accepted")
		}
	})

	t.Run("policy", func(t *testing.T) {
		ctx := testCtx(t)
		if _, err := c.CreateKey(ctx, "gov-pol", ""); err != nil {
			t.Fatal(err)
		}
		ct := encryptBytes(t, c, "gov-pol", nil, []byte("p"))
		pol, err := c.GetPolicy(ctx, "gov-pol")
		if err != nil {
			t.Fatal(err)
		}
		pol.Reasons = []*custosv1.ReasonRule{{Reason: custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST, Action: custosv1.Action_ACTION_ALLOW}}
		st, _ := c.NewStatement(ctx, "", 0)
		st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "gov-pol", Policy: pol}}
		if _, err := c.SignAndSubmit(ctx, st, officers(h, 1, 2)...); err != nil {
			t.Fatalf("set_policy: %v", err)
		}
		got, err := c.GetPolicy(ctx, "gov-pol")
		if err != nil || got.GetVersion() <= pol.GetVersion() {
			t.Errorf("policy after set_policy = %v, %v", got, err)
		}
		if _, _, err := c.DecryptStream(ctx, strings.NewReader(string(ct)), thirdParty); err != nil {
			t.Fatalf("third-party decrypt after the policy allows it: %v", err)
		}
	})

	t.Run("approval: approve", func(t *testing.T) {
		ctx := testCtx(t)
		if _, err := c.CreateKey(ctx, "gov-appr", ""); err != nil {
			t.Fatal(err)
		}
		dk, err := c.GenerateDataKey(ctx, "gov-appr", map[string]string{"a": "b"})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.DecryptDataKey(ctx, dk.Wrapped, map[string]string{"a": "b"}, thirdParty)
		wantCode(t, "third-party decrypt", err, codes.FailedPrecondition)
		id, ok := custos.PendingRequestID(err)
		if !ok || id == "" {
			t.Fatalf("PendingRequestID(%v) = %q, %v", err, id, ok)
		}
		reqs, err := c.ListPending(ctx, "gov-appr")
		if err != nil || len(reqs) != 1 || reqs[0].GetRequestId() != id || reqs[0].GetReason() != custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST {
			t.Fatalf("ListPending = %v, %v", reqs, err)
		}
		if r, err := c.GetRequest(ctx, id); err != nil || r.GetState() != custosv1.RequestState_REQUEST_STATE_PENDING {
			t.Errorf("GetRequest = %v, %v", r, err)
		}
		type waited struct {
			r   *custosv1.ApprovalRequest
			err error
		}
		done := make(chan waited, 1)
		go func() {
			r, err := c.WaitForApproval(ctx, id, custos.WithPollInterval(50*time.Millisecond))
			done <- waited{r, err}
		}()
		st, _ := c.NewStatement(ctx, "approved by legal", 0)
		st.Operation = &custosv1.Statement_ApproveRequest{ApproveRequest: &custosv1.ApproveRequest{RequestId: id, Uses: 1}}
		res, err := c.SignAndSubmit(ctx, st, officers(h, 0, 2)...)
		if err != nil {
			t.Fatalf("approve: %v", err)
		}
		w := <-done
		if w.err != nil || w.r.GetState() != custosv1.RequestState_REQUEST_STATE_APPROVED || w.r.GetGrantId() != res.GetGrantId() {
			t.Fatalf("WaitForApproval = %v, %v (grant %q)", w.r, w.err, res.GetGrantId())
		}
		pt, err := c.DecryptDataKey(ctx, dk.Wrapped, map[string]string{"a": "b"}, thirdParty)
		if err != nil || string(pt) != string(dk.Plaintext) {
			t.Errorf("decrypt after approval = %x, %v", pt, err)
		}
		// The grant allowed one use.
		_, err = c.DecryptDataKey(ctx, dk.Wrapped, map[string]string{"a": "b"}, thirdParty)
		if _, ok := custos.PendingRequestID(err); !ok {
			t.Errorf("second decrypt after a 1-use grant: %v, want a new pending request", err)
		}
	})

	t.Run("approval: deny", func(t *testing.T) {
		ctx := testCtx(t)
		if _, err := c.CreateKey(ctx, "gov-deny", ""); err != nil {
			t.Fatal(err)
		}
		ct := encryptBytes(t, c, "gov-deny", nil, []byte("x"))
		_, _, err := c.DecryptStream(ctx, strings.NewReader(string(ct)), thirdParty)
		id, ok := custos.PendingRequestID(err)
		if !ok {
			t.Fatalf("DecryptStream: %v, want pending", err)
		}
		st, _ := c.NewStatement(ctx, "no", 0)
		st.Operation = &custosv1.Statement_DenyRequest{DenyRequest: &custosv1.DenyRequest{RequestId: id}}
		if _, err := c.SignAndSubmit(ctx, st, officers(h, 1)...); err != nil {
			t.Fatalf("deny: %v", err)
		}
		r, err := c.WaitForApproval(ctx, id, custos.WithPollInterval(10*time.Millisecond))
		if !errors.Is(err, custos.ErrRequestDenied) || r.GetState() != custosv1.RequestState_REQUEST_STATE_DENIED {
			t.Errorf("WaitForApproval after deny = %v, %v", r, err)
		}
	})

	t.Run("wait is bounded by ctx", func(t *testing.T) {
		ctx := testCtx(t)
		if _, err := c.CreateKey(ctx, "gov-wait", ""); err != nil {
			t.Fatal(err)
		}
		ct := encryptBytes(t, c, "gov-wait", nil, []byte("x"))
		_, _, err := c.DecryptStream(ctx, strings.NewReader(string(ct)), thirdParty)
		id, ok := custos.PendingRequestID(err)
		if !ok {
			t.Fatalf("DecryptStream: %v, want pending", err)
		}
		wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		if _, err := c.WaitForApproval(wctx, id, custos.WithPollInterval(20*time.Millisecond)); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("WaitForApproval with a short deadline = %v", err)
		}
	})

	t.Run("grants", func(t *testing.T) {
		ctx := testCtx(t)
		if _, err := c.CreateKey(ctx, "gov-grant", ""); err != nil {
			t.Fatal(err)
		}
		ct := encryptBytes(t, c, "gov-grant", nil, []byte("g"))
		st, _ := c.NewStatement(ctx, "nightly export", 0)
		st.Operation = &custosv1.Statement_CreateGrant{CreateGrant: &custosv1.CreateGrant{
			Principal: "app", Key: "gov-grant", Reason: custosv1.Reason_REASON_PROVIDER_SERVICE, Uses: 5, TtlSeconds: 600}}
		res, err := c.SignAndSubmit(ctx, st, officers(h, 0, 1)...)
		if err != nil || res.GetGrantId() == "" {
			t.Fatalf("create_grant: %v, %v", res, err)
		}
		gs, err := c.ListGrants(ctx, "gov-grant")
		if err != nil || len(gs) != 1 || gs[0].GetGrantId() != res.GetGrantId() || gs[0].GetUsesLeft() != 5 {
			t.Fatalf("ListGrants = %v, %v", gs, err)
		}
		prov := custos.Justification{Reason: custosv1.Reason_REASON_PROVIDER_SERVICE, Text: "export"}
		if _, _, err := c.DecryptStream(ctx, strings.NewReader(string(ct)), prov); err != nil {
			t.Errorf("decrypt under the grant: %v", err)
		}
		st, _ = c.NewStatement(ctx, "", 0)
		st.Operation = &custosv1.Statement_RevokeGrant{RevokeGrant: &custosv1.RevokeGrant{GrantId: res.GetGrantId()}}
		if _, err := c.SignAndSubmit(ctx, st, officers(h, 2)...); err != nil {
			t.Fatalf("revoke_grant: %v", err)
		}
		if gs, err := c.ListGrants(ctx, "gov-grant"); err != nil || len(gs) != 0 {
			t.Errorf("ListGrants after revoke_grant = %v, %v", gs, err)
		}
		_, _, err = c.DecryptStream(ctx, strings.NewReader(string(ct)), prov)
		if _, ok := custos.PendingRequestID(err); !ok {
			t.Errorf("decrypt after revoke_grant: %v, want pending", err)
		}
	})
}

func TestPendingRequestID(t *testing.T) {
	withInfo, err := status.New(codes.FailedPrecondition, "approval required").WithDetails(
		&errdetails.ErrorInfo{Reason: "APPROVAL_REQUIRED", Domain: "custos", Metadata: map[string]string{"request_id": "r-123"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		err    error
		id     string
		wantOK bool
	}{
		{"detail", fmt.Errorf("custos: decrypt: %w", withInfo.Err()), "r-123", true},
		{"message", status.Error(codes.FailedPrecondition, "approval required: request req-9f is waiting for the security officers (decision 7: PENDING)"), "req-9f", true},
		{"nil", nil, "", false},
		{"not a status", errors.New("approval required: request x"), "", false},
		{"other code", status.Error(codes.PermissionDenied, "approval required: request x"), "", false},
		{"disabled", status.Error(codes.FailedPrecondition, `key "k" is disabled`), "", false},
	} {
		id, ok := custos.PendingRequestID(tc.err)
		if id != tc.id || ok != tc.wantOK {
			t.Errorf("%s: PendingRequestID = %q, %v; want %q, %v", tc.name, id, ok, tc.id, tc.wantOK)
		}
	}
}
