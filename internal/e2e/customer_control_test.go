// Package e2e holds end-to-end walk-throughs over real gRPC with mTLS
// against a real node (SoftHSM token, Raft, ledger).
package e2e_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custos-kms/custos/internal/node/nodetest"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

const (
	appCN      = "payroll-app"
	providerCN = "provider-support"
	operatorCN = "cloud-operator"
)

type actor struct {
	keys custosv1.KeyServiceClient
	gov  custosv1.GovernanceServiceClient
}

func connect(t *testing.T, h *nodetest.Harness, cn string) actor {
	conn := h.Conn(t, cn)
	return actor{keys: custosv1.NewKeyServiceClient(conn), gov: custosv1.NewGovernanceServiceClient(conn)}
}

func code(err error) codes.Code { return status.Code(err) }

// requestID returns the approval request id carried by a FailedPrecondition.
func requestID(t *testing.T, err error) string {
	t.Helper()
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.Reason == "APPROVAL_REQUIRED" {
			return info.Metadata["request_id"]
		}
	}
	t.Fatalf("no APPROVAL_REQUIRED detail in %v", err)
	return ""
}

// TestCustomerControlWalkthrough is the walk-through of docs/governance.md:
// two of three officers set a policy; the application decrypts with
// CUSTOMER_INITIATED; the provider asks with THIRD_PARTY_DATA_REQUEST and
// gets a pending request; one officer denies it; a later request approved by
// two succeeds exactly within its grant; one officer revokes the key and
// every decrypt fails from that log position on; the operator alone cannot
// re-enable it; two officers do.
func TestCustomerControlWalkthrough(t *testing.T) {
	h := nodetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	app, provider, operator := connect(t, h, appCN), connect(t, h, providerCN), connect(t, h, operatorCN)
	submit := func(by actor, op func(*custosv1.Statement), signers ...int) (*custosv1.SubmitResponse, error) {
		return by.gov.Submit(ctx, h.Sign(t, op, signers...))
	}
	decrypt := func(by actor, ct []byte, reason custosv1.Reason, text string) (*custosv1.DecryptResponse, error) {
		return by.keys.Decrypt(ctx, &custosv1.DecryptRequest{Ciphertext: ct, EncryptionContext: map[string]string{"dept": "hr"},
			Justification: &custosv1.Justification{Reason: reason, Text: text, Ticket: "MLIT-2026-114"}})
	}

	// The application creates its key and a data key for a payroll file.
	if _, err := app.keys.CreateKey(ctx, &custosv1.CreateKeyRequest{Name: "payroll"}); err != nil {
		t.Fatal(err)
	}
	dk, err := app.keys.GenerateDataKey(ctx, &custosv1.GenerateDataKeyRequest{Key: "payroll", EncryptionContext: map[string]string{"dept": "hr"}})
	if err != nil {
		t.Fatal(err)
	}

	// 1. Two of three officers set the policy: the provider may ask.
	policy, err := app.gov.GetPolicy(ctx, &custosv1.GetPolicyRequest{Key: "payroll"})
	if err != nil {
		t.Fatal(err)
	}
	policy.DecryptPrincipals = append(policy.DecryptPrincipals, providerCN)
	setPolicy := func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "payroll", Policy: policy}}
	}
	if _, err := submit(operator, setPolicy, 0); code(err) != codes.PermissionDenied {
		t.Fatalf("policy with one signature: got %v, want PermissionDenied", err)
	}
	if _, err := submit(operator, setPolicy, 0, 2); err != nil {
		t.Fatalf("policy with two signatures: %v", err)
	}

	// 2. The application decrypts for its own reason.
	out, err := decrypt(app, dk.WrappedDataKey, custosv1.Reason_REASON_CUSTOMER_INITIATED, "monthly payroll run")
	if err != nil || !bytes.Equal(out.Plaintext, dk.Plaintext) {
		t.Fatalf("customer decrypt: %v", err)
	}

	// 3. The provider asks on behalf of a third party: pending.
	_, err = decrypt(provider, dk.WrappedDataKey, custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST, "court order 12-345")
	if code(err) != codes.FailedPrecondition {
		t.Fatalf("third-party request: got %v, want FailedPrecondition", err)
	}
	first := requestID(t, err)
	pending, err := app.gov.ListPending(ctx, &custosv1.ListPendingRequest{Key: "payroll"})
	if err != nil || len(pending.Requests) != 1 || pending.Requests[0].RequestId != first ||
		pending.Requests[0].Principal != providerCN || pending.Requests[0].Ticket != "MLIT-2026-114" {
		t.Fatalf("pending = %v, %v", pending, err)
	}

	// 4. One officer denies it; the provider gets nothing.
	deny := func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_DenyRequest{DenyRequest: &custosv1.DenyRequest{RequestId: first}}
	}
	if _, err := submit(operator, deny, 1); err != nil {
		t.Fatalf("deny: %v", err)
	}
	if r, _ := app.gov.GetRequest(ctx, &custosv1.GetRequestRequest{RequestId: first}); r.State != custosv1.RequestState_REQUEST_STATE_DENIED {
		t.Fatalf("request state = %v, want DENIED", r.State)
	}

	// 5. A later request approved by two succeeds exactly within its grant.
	_, err = decrypt(provider, dk.WrappedDataKey, custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST, "court order 12-346")
	second := requestID(t, err)
	approve := func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_ApproveRequest{ApproveRequest: &custosv1.ApproveRequest{RequestId: second, Uses: 2, TtlSeconds: 600}}
	}
	if _, err := submit(operator, approve, 2); code(err) != codes.PermissionDenied {
		t.Fatalf("approval by one officer: got %v, want PermissionDenied", err)
	}
	if _, err := submit(operator, approve, 1, 2); err != nil {
		t.Fatalf("approval by two officers: %v", err)
	}
	for i := 1; i <= 2; i++ {
		if _, err := decrypt(provider, dk.WrappedDataKey, custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST, "court order 12-346"); err != nil {
			t.Fatalf("use %d within the grant: %v", i, err)
		}
	}
	if _, err := decrypt(provider, dk.WrappedDataKey, custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST, "court order 12-346"); code(err) != codes.FailedPrecondition {
		t.Fatalf("use beyond the grant: got %v, want FailedPrecondition (pending again)", err)
	}

	// 6. One officer revokes the key: every decrypt fails from then on.
	revoke := func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_RevokeKey{RevokeKey: &custosv1.RevokeKey{Key: "payroll"}}
	}
	rv, err := submit(operator, revoke, 0)
	if err != nil {
		t.Fatalf("revoke: %v", err)
	}
	for _, who := range []actor{app, provider} {
		if _, err := decrypt(who, dk.WrappedDataKey, custosv1.Reason_REASON_CUSTOMER_INITIATED, "after revoke"); code(err) != codes.FailedPrecondition && code(err) != codes.PermissionDenied {
			t.Fatalf("decrypt after revoke: got %v", err)
		}
	}
	if _, err := app.keys.GenerateDataKey(ctx, &custosv1.GenerateDataKeyRequest{Key: "payroll"}); code(err) != codes.FailedPrecondition {
		t.Fatalf("GenerateDataKey after revoke: got %v", err)
	}

	// 7. The operator alone cannot re-enable it, whatever it calls.
	if _, err := operator.keys.SetKeyState(ctx, &custosv1.SetKeyStateRequest{Name: "payroll", State: custosv1.KeyState_KEY_STATE_ENABLED}); code(err) != codes.PermissionDenied {
		t.Fatalf("operator SetKeyState: got %v", err)
	}
	enable := func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_EnableKey{EnableKey: &custosv1.EnableKey{Key: "payroll"}}
	}
	if _, err := operator.gov.Submit(ctx, &custosv1.SignedStatement{Statement: h.Sign(t, enable).Statement}); code(err) != codes.InvalidArgument {
		t.Fatalf("operator unsigned enable: got %v", err)
	}
	if _, err := submit(operator, enable, 0); code(err) != codes.PermissionDenied {
		t.Fatalf("enable with one signature: got %v", err)
	}
	if k, _ := app.keys.GetKey(ctx, &custosv1.GetKeyRequest{Name: "payroll"}); k.State != custosv1.KeyState_KEY_STATE_REVOKED {
		t.Fatalf("key state = %v, want REVOKED", k.State)
	}

	// 8. Two officers re-enable it, and the application decrypts again.
	if _, err := submit(operator, enable, 0, 1); err != nil {
		t.Fatalf("enable with two signatures: %v", err)
	}
	if _, err := decrypt(app, dk.WrappedDataKey, custosv1.Reason_REASON_CUSTOMER_INITIATED, "after re-enable"); err != nil {
		t.Fatalf("decrypt after re-enable: %v", err)
	}
	if rv.LedgerSeq == 0 {
		t.Fatalf("revoke has no ledger position")
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("walk-through timed out")
	}
}
