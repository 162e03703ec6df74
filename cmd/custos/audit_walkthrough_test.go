package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/internal/node/nodetest"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// TestAuditWalkthrough replays the customer-control walk-through
// (internal/e2e/customer_control_test.go) and has the auditor export,
// verify and report on it with the CLI, as docs/audit.md shows. Run with
// -v to see the report the documentation quotes.
func TestAuditWalkthrough(t *testing.T) {
	clearEnv(t)
	h := nodetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	type actor struct {
		keys custosv1.KeyServiceClient
		gov  custosv1.GovernanceServiceClient
	}
	connect := func(cn string) actor {
		cc := h.Conn(t, cn)
		return actor{custosv1.NewKeyServiceClient(cc), custosv1.NewGovernanceServiceClient(cc)}
	}
	app, provider, operator := connect("payroll-app"), connect("provider-support"), connect("cloud-operator")
	submit := func(op func(*custosv1.Statement), signers ...int) error {
		_, err := operator.gov.Submit(ctx, h.Sign(t, op, signers...))
		return err
	}
	decrypt := func(by actor, ct []byte, reason custosv1.Reason, text string) error {
		_, err := by.keys.Decrypt(ctx, &custosv1.DecryptRequest{Ciphertext: ct, EncryptionContext: map[string]string{"dept": "hr"},
			Justification: &custosv1.Justification{Reason: reason, Text: text, Ticket: "MLIT-2026-114"}})
		return err
	}
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	pendingID := func(err error) string {
		t.Helper()
		id, ok := custos.PendingRequestID(err)
		if !ok {
			t.Fatalf("want a pending request, got %v", err)
		}
		return id
	}

	_, err := app.keys.CreateKey(ctx, &custosv1.CreateKeyRequest{Name: "payroll"})
	must("create key", err)
	dk, err := app.keys.GenerateDataKey(ctx, &custosv1.GenerateDataKeyRequest{Key: "payroll", EncryptionContext: map[string]string{"dept": "hr"}})
	must("data key", err)
	policy, err := app.gov.GetPolicy(ctx, &custosv1.GetPolicyRequest{Key: "payroll"})
	must("get policy", err)
	policy.DecryptPrincipals = append(policy.DecryptPrincipals, "provider-support")
	setPolicy := func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "payroll", Policy: policy}}
	}
	if err := submit(setPolicy, 0); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("policy with one signature: %v", err)
	}
	must("set policy", submit(setPolicy, 0, 2))
	must("customer decrypt", decrypt(app, dk.WrappedDataKey, custosv1.Reason_REASON_CUSTOMER_INITIATED, "monthly payroll run"))
	first := pendingID(decrypt(provider, dk.WrappedDataKey, custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST, "court order 12-345"))
	must("deny", submit(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_DenyRequest{DenyRequest: &custosv1.DenyRequest{RequestId: first}}
	}, 1))
	second := pendingID(decrypt(provider, dk.WrappedDataKey, custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST, "court order 12-346"))
	must("approve", submit(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_ApproveRequest{ApproveRequest: &custosv1.ApproveRequest{RequestId: second, Uses: 2, TtlSeconds: 600}}
	}, 1, 2))
	for range 2 {
		must("use within the grant", decrypt(provider, dk.WrappedDataKey, custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST, "court order 12-346"))
	}
	pendingID(decrypt(provider, dk.WrappedDataKey, custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST, "court order 12-346"))
	must("revoke", submit(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_RevokeKey{RevokeKey: &custosv1.RevokeKey{Key: "payroll"}}
	}, 0))
	if decrypt(app, dk.WrappedDataKey, custosv1.Reason_REASON_CUSTOMER_INITIATED, "after revoke") == nil {
		t.Fatal("decrypt after revoke succeeded")
	}
	must("enable", submit(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_EnableKey{EnableKey: &custosv1.EnableKey{Key: "payroll"}}
	}, 0, 1))
	must("decrypt after re-enable", decrypt(app, dk.WrappedDataKey, custosv1.Reason_REASON_CUSTOMER_INITIATED, "after re-enable"))

	// The auditor's side, with the CLI.
	usePrincipal(t, h, nodetest.Auditor)
	dir := t.TempDir()
	pem, export := filepath.Join(dir, "ledger.pem"), filepath.Join(dir, "ledger.export")
	r := runCLI(t, "", "audit", "pubkey")
	r.want(t, 0, "BEGIN PUBLIC KEY")
	must("write pem", os.WriteFile(pem, []byte(r.stdout), 0o644))
	runCLI(t, "", "audit", "export", export).want(t, 0, "exported ")
	r = runCLI(t, "", "audit", "verify", "--pubkey", pem, export)
	r.want(t, 0, "verified ")
	t.Logf("verify: %s", r.stdout)
	r = runCLI(t, "", "audit", "report")
	r.want(t, 0, "custos key-use disclosure", "payroll-app", "provider-support", "THIRD_PARTY_DATA_REQUEST",
		"(third-party data requests: 2)", "Pending (awaiting officer approval): 3", "court order 12-345", "Governance actions: 6", "officer-1",
		"Denied attempts: 1", "rule=key-state:revoked")
	t.Logf("report:\n%s", r.stdout)
	r = runCLI(t, "", "audit", "list", "--key", "payroll")
	r.want(t, 0)
	t.Logf("list:\n%s", r.stdout)
	if !strings.Contains(r.stdout, "GOVERNANCE") {
		t.Errorf("no governance records listed")
	}
}
