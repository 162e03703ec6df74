package kms_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// TestApprovalBoundToCiphertext: an approval covers the ciphertext it was
// asked for. The provider asks to decrypt file A's data key; the officers
// approve that request; file B's data key — same key, same (empty)
// context, same reason — is a new PENDING request, not released under A's
// grant. Every decrypt record names the digest of what was sent, and an
// advance grant can be scoped to named ciphertexts.
func TestApprovalBoundToCiphertext(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	fileA := dataKey(t, e, "k", nil)
	fileB := dataKey(t, e, "k", nil)
	const provider = "provider-support"
	third := custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST
	p := kms.DefaultPolicy(app.Name)
	p.DecryptPrincipals = append(p.DecryptPrincipals, provider)
	if _, err := e.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "k", Policy: p}}
	}, 0, 1); err != nil {
		t.Fatal(err)
	}
	digestA, digestB := sha256.Sum256(fileA.WrappedDataKey), sha256.Sum256(fileB.WrappedDataKey)

	_, err := decryptAs(e, provider, fileA.WrappedDataKey, third)
	var pe *kms.PendingError
	if !errors.As(err, &pe) {
		t.Fatalf("third-party request for file A: %v, want pending", err)
	}
	if rec := lastRecord(t, e); !bytes.Equal(rec.DataDigest, digestA[:]) {
		t.Fatalf("the PENDING record names data digest %x, want %x", rec.DataDigest, digestA)
	}
	pending, _ := e.svc.ListPending(bg, app, &custosv1.ListPendingRequest{})
	if len(pending.Requests) != 1 || !bytes.Equal(pending.Requests[0].DataDigest, digestA[:]) {
		t.Fatalf("pending requests %v: want A's digest", pending.Requests)
	}
	resp, err := e.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_ApproveRequest{ApproveRequest: &custosv1.ApproveRequest{RequestId: pe.RequestID, Uses: 5, TtlSeconds: 600}}
	}, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	grants, _ := e.svc.ListGrants(bg, app, &custosv1.ListGrantsRequest{Key: "k"})
	if len(grants.Grants) != 1 || grants.Grants[0].GrantId != resp.GrantId || len(grants.Grants[0].DataDigests) != 1 ||
		!bytes.Equal(grants.Grants[0].DataDigests[0], digestA[:]) {
		t.Fatalf("grants %v: want one scoped to A", grants.Grants)
	}
	// File B under A's approval: a new request, nothing released.
	if _, err := decryptAs(e, provider, fileB.WrappedDataKey, third); !errors.As(err, &pe) {
		t.Fatalf("file B with file A's approval: %v, want a new pending request", err)
	}
	if rec := lastRecord(t, e); rec.Outcome != custosv1.Outcome_OUTCOME_PENDING || !bytes.Equal(rec.DataDigest, digestB[:]) {
		t.Fatalf("file B's record %v", rec)
	}
	// File A is released, and its ALLOW record names A.
	out, err := decryptAs(e, provider, fileA.WrappedDataKey, third)
	if err != nil || !bytes.Equal(out.Plaintext, fileA.Plaintext) {
		t.Fatalf("file A with its approval: %v", err)
	}
	if rec := lastRecord(t, e); rec.Outcome != custosv1.Outcome_OUTCOME_ALLOW || !bytes.Equal(rec.DataDigest, digestA[:]) {
		t.Fatalf("file A's ALLOW record %v", rec)
	}

	// An advance grant names the ciphertexts it covers.
	if _, err := e.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_CreateGrant{CreateGrant: &custosv1.CreateGrant{Principal: provider, Key: "k", Reason: third,
			Uses: 3, TtlSeconds: 600, DataDigests: [][]byte{digestB[:1]}}}
	}, 0, 1); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("a grant naming a short digest: %v", err)
	}
	if _, err := e.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_CreateGrant{CreateGrant: &custosv1.CreateGrant{Principal: provider, Key: "k", Reason: third,
			Uses: 3, TtlSeconds: 600, DataDigests: [][]byte{digestB[:]}}}
	}, 0, 1); err != nil {
		t.Fatal(err)
	}
	if out, err := decryptAs(e, provider, fileB.WrappedDataKey, third); err != nil || !bytes.Equal(out.Plaintext, fileB.Plaintext) {
		t.Fatalf("file B with a grant naming it: %v", err)
	}
	fileC := dataKey(t, e, "k", nil)
	if _, err := decryptAs(e, provider, fileC.WrappedDataKey, third); !errors.As(err, &pe) {
		t.Fatalf("file C under grants naming A and B: %v, want pending", err)
	}
}
