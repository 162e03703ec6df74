package kms_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// A decrypt that gives no reason is recorded as REASON_UNSPECIFIED, as
// given, and policy decides it as a reason of its own: a policy may name
// it; one that does not gives it THIRD_PARTY_DATA_REQUEST's action, so
// leaving the reason out never loosens anything. The ledger is the
// evidence (docs/architecture.md, invariant 5): it must say what the caller
// said, and the rule that decided.
func TestUnspecifiedReasonIsItsOwnReason(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	dk := dataKey(t, e, "k", nil)
	unspecified := custosv1.Reason_REASON_UNSPECIFIED
	check := func(what string, wantErr error, outcome custosv1.Outcome, rule string) *custosv1.DecisionRecord {
		t.Helper()
		out, err := decryptAs(e, app.Name, dk.WrappedDataKey, unspecified)
		switch {
		case wantErr == nil && (err != nil || !bytes.Equal(out.Plaintext, dk.Plaintext)):
			t.Fatalf("%s: decrypt without a reason: %v, want the data key", what, err)
		case wantErr != nil && !errors.Is(err, wantErr):
			t.Fatalf("%s: decrypt without a reason: %v, want %v", what, err, wantErr)
		}
		rec := lastRecord(t, e)
		if rec.Reason != unspecified || rec.Outcome != outcome || rec.MatchedRule != rule {
			t.Fatalf("%s: record says reason %v, %v by %q; want UNSPECIFIED, %v by %q", what, rec.Reason, rec.Outcome, rec.MatchedRule, outcome, rule)
		}
		return rec
	}

	// The default policy names UNSPECIFIED: the officers decide, as for a
	// third-party request; the PENDING record notifies.
	rec := check("default policy", kms.ErrFailedPrecondition, custosv1.Outcome_OUTCOME_PENDING, "policy/v1:reason=UNSPECIFIED:require-approval")
	if !rec.Notify {
		t.Errorf("a PENDING decision without a reason must notify by default")
	}

	setPolicy := func(p *custosv1.KeyPolicy) {
		t.Helper()
		if _, err := e.govern(func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "k", Policy: p}}
		}, 0, 1); err != nil {
			t.Fatalf("set policy: %v", err)
		}
	}
	rule := func(r custosv1.Reason, a custosv1.Action) *custosv1.ReasonRule {
		return &custosv1.ReasonRule{Reason: r, Action: a}
	}
	allow, deny := custosv1.Action_ACTION_ALLOW, custosv1.Action_ACTION_DENY
	base := func(rules ...*custosv1.ReasonRule) *custosv1.KeyPolicy {
		return &custosv1.KeyPolicy{EncryptPrincipals: []string{app.Name}, DecryptPrincipals: []string{app.Name}, Reasons: rules}
	}

	// A policy that does not name UNSPECIFIED (as every policy written
	// before it could be named): the action of THIRD_PARTY_DATA_REQUEST,
	// here DENY, while CUSTOMER_INITIATED is allowed.
	setPolicy(base(rule(custosv1.Reason_REASON_CUSTOMER_INITIATED, allow), rule(custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST, deny)))
	check("policy without an UNSPECIFIED rule", kms.ErrPermissionDenied, custosv1.Outcome_OUTCOME_DENY,
		"policy/v2:reason=UNSPECIFIED(as THIRD_PARTY_DATA_REQUEST):deny")
	if _, err := decryptAs(e, app.Name, dk.WrappedDataKey, custosv1.Reason_REASON_CUSTOMER_INITIATED); err != nil {
		t.Fatalf("CUSTOMER_INITIATED under the same policy: %v", err)
	}

	// A policy may name it: ALLOW, while third-party requests are denied.
	// The record still says UNSPECIFIED, and the default notify rules
	// (THIRD_PARTY_DATA_REQUEST) select it: an unexplained release is not
	// quieter than a third-party one.
	setPolicy(base(rule(unspecified, allow), rule(custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST, deny)))
	rec = check("policy allowing UNSPECIFIED", nil, custosv1.Outcome_OUTCOME_ALLOW, "policy/v3:reason=UNSPECIFIED:allow")
	if !rec.Notify {
		t.Errorf("an ALLOW without a reason must notify under the default rules (THIRD_PARTY_DATA_REQUEST)")
	}
	if _, err := decryptAs(e, app.Name, dk.WrappedDataKey, custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("THIRD_PARTY_DATA_REQUEST under a policy denying it: %v", err)
	}

	// ... or DENY it while allowing third-party requests.
	setPolicy(base(rule(unspecified, deny), rule(custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST, allow)))
	check("policy denying UNSPECIFIED", kms.ErrPermissionDenied, custosv1.Outcome_OUTCOME_DENY, "policy/v4:reason=UNSPECIFIED:deny")

	// Approving a request without a reason is a grant for exactly that:
	// the retry is allowed by the grant and still recorded UNSPECIFIED.
	setPolicy(base(rule(unspecified, custosv1.Action_ACTION_REQUIRE_APPROVAL)))
	_, err := decryptAs(e, app.Name, dk.WrappedDataKey, unspecified)
	var pe *kms.PendingError
	if !errors.As(err, &pe) {
		t.Fatalf("decrypt without a reason under REQUIRE_APPROVAL: %v, want pending", err)
	}
	resp, err := e.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_ApproveRequest{ApproveRequest: &custosv1.ApproveRequest{RequestId: pe.RequestID, Uses: 1, TtlSeconds: 600}}
	}, 0, 1)
	if err != nil {
		t.Fatalf("approve: %v", err)
	}
	check("approved request", nil, custosv1.Outcome_OUTCOME_ALLOW, "grant:"+resp.GrantId)
}

// Policy rules may name REASON_UNSPECIFIED; the default policy does, with
// the action of THIRD_PARTY_DATA_REQUEST.
func TestPolicyMayNameUnspecified(t *testing.T) {
	p := kms.DefaultPolicy("app")
	if err := kms.ValidatePolicy(p); err != nil {
		t.Fatalf("default policy: %v", err)
	}
	actions := map[custosv1.Reason]custosv1.Action{}
	for _, r := range p.Reasons {
		actions[r.Reason] = r.Action
	}
	if a, ok := actions[custosv1.Reason_REASON_UNSPECIFIED]; !ok || a != actions[custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST] {
		t.Fatalf("default policy: UNSPECIFIED → %v (named %v), want THIRD_PARTY_DATA_REQUEST's %v", a, ok, actions[custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST])
	}
	p.Reasons = append(p.Reasons, &custosv1.ReasonRule{Reason: custosv1.Reason_REASON_UNSPECIFIED, Action: custosv1.Action_ACTION_DENY})
	if err := kms.ValidatePolicy(p); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("UNSPECIFIED named twice: %v, want ErrInvalidArgument", err)
	}
	p.Reasons = []*custosv1.ReasonRule{{Reason: custosv1.Reason(99), Action: custosv1.Action_ACTION_ALLOW}}
	if err := kms.ValidatePolicy(p); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("unknown reason: %v, want ErrInvalidArgument", err)
	}
}

// A ledger filter's UNSPECIFIED selects the key uses that gave no reason,
// not the records that carry none (key administration, membership, ...).
func TestReasonFilterUnspecifiedSelectsKeyUses(t *testing.T) {
	f := &custosv1.DecisionFilter{Reasons: []custosv1.Reason{custosv1.Reason_REASON_UNSPECIFIED}}
	for op, want := range map[custosv1.Operation]bool{
		custosv1.Operation_OPERATION_DECRYPT:          true,
		custosv1.Operation_OPERATION_DECRYPT_DATA_KEY: true,
		custosv1.Operation_OPERATION_REENCRYPT:        true,
		custosv1.Operation_OPERATION_CREATE_KEY:       false,
		custosv1.Operation_OPERATION_MEMBERSHIP:       false,
		custosv1.Operation_OPERATION_GOVERNANCE:       false,
	} {
		if got := kms.Matches(f, &custosv1.DecisionRecord{Operation: op}); got != want {
			t.Errorf("reason filter UNSPECIFIED on a %v record: %v, want %v", op, got, want)
		}
	}
}
