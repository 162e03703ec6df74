package kms_test

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/kms"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// wire sends a command result through the forwarding codec's wire form.
func wire(t *testing.T, res any, err error) (any, error) {
	t.Helper()
	b, merr := proto.Marshal(kms.EncodeResult(res, err))
	if merr != nil {
		t.Fatal(merr)
	}
	r := &raftlogv1.ApplyResult{}
	if err := proto.Unmarshal(b, r); err != nil {
		t.Fatal(err)
	}
	return kms.DecodeResult(r)
}

// TestErrorKinds: the one error table is complete and consistent, and
// every kind crosses between nodes as itself (errors.Is still matches its
// sentinel, and every sentinel that one wraps).
func TestErrorKinds(t *testing.T) {
	names := map[string]bool{}
	for _, k := range kms.ErrorKinds {
		if k.Name == "" || names[k.Name] {
			t.Errorf("kind %q: empty or duplicate name", k.Name)
		}
		names[k.Name] = true
		if k.Err == nil || k.Code == codes.Unknown || k.Code == codes.OK || k.XKS == "" {
			t.Errorf("kind %q: sentinel %v, gRPC %v, XKS %q", k.Name, k.Err, k.Code, k.XKS)
		}
		if !k.Public && k.Text == "" {
			t.Errorf("kind %q shows no message", k.Name)
		}
		if (k.XKS == "InternalException") != (k == kms.ErrorKindInternal) {
			t.Errorf("kind %q is XKS %s", k.Name, k.XKS)
		}
		if got := kms.ErrorKindOf(k.Err); got != k {
			t.Errorf("ErrorKindOf(%v) = %q, want %q (a more general kind comes first)", k.Err, got.Name, k.Name)
		}
		if kms.ErrorKindNamed(k.Name) != k {
			t.Errorf("ErrorKindNamed(%q)", k.Name)
		}

		orig := fmt.Errorf("decrypt: %w: key %q", k.Err, "k")
		if k == kms.ErrorKindPending {
			orig = fmt.Errorf("decrypt: %w", &kms.PendingError{RequestID: "r1", Seq: 9})
		}
		_, back := wire(t, nil, orig)
		// (A PendingError is rebuilt from its request id and position.)
		if kms.ErrorKindOf(back) != k || (k != kms.ErrorKindPending && back.Error() != orig.Error()) {
			t.Errorf("kind %q: %v came back as %v (kind %q)", k.Name, orig, back, kms.ErrorKindOf(back).Name)
		}
		for s := k.Err; s != nil; s = errors.Unwrap(s) {
			if !errors.Is(back, s) {
				t.Errorf("kind %q: %v no longer matches %v across nodes", k.Name, back, s)
			}
		}
		// The same inside a decision result.
		res, err := wire(t, &kms.Decision{Err: orig}, nil)
		if d, ok := res.(*kms.Decision); err != nil || !ok || kms.ErrorKindOf(d.Err) != k {
			t.Errorf("kind %q in a decision came back as %v, %v", k.Name, res, err)
		}
	}
	var pe *kms.PendingError
	if _, back := wire(t, nil, &kms.PendingError{RequestID: "r1", Seq: 9}); !errors.As(back, &pe) || pe.RequestID != "r1" || pe.Seq != 9 {
		t.Errorf("pending came back as %v", back)
	}
	if kms.ErrorKindOf(errors.New("boom")) != kms.ErrorKindInternal || kms.ErrorKindOf(nil) != nil {
		t.Error("unknown errors are not internal")
	}
	if !kms.IsDomainError(kms.ErrNotAdmitted) || kms.IsDomainError(errors.New("raft: timed out")) ||
		kms.IsDomainError(fmt.Errorf("apply: %w", kms.ErrorKindCanceled.Err)) {
		t.Error("IsDomainError")
	}
	// What a front door needs of the new kinds.
	for k, want := range map[*kms.ErrorKind]struct {
		code   codes.Code
		reason string
	}{
		kms.ErrorKindNotAdmitted:       {codes.FailedPrecondition, "NOT_ADMITTED"},
		kms.ErrorKindHSMObjectRejected: {codes.Unavailable, "HSM_OBJECT_REJECTED"},
	} {
		if k.Code != want.code || k.Reason != want.reason || k.XKS != "DependencyTimeoutException" {
			t.Errorf("kind %q: %v %q %s", k.Name, k.Code, k.Reason, k.XKS)
		}
	}
	if !errors.Is(fmt.Errorf("kek: %w", kms.ErrHSMObjectRejected), kms.ErrUnavailable) {
		t.Error("ErrHSMObjectRejected does not fail closed as ErrUnavailable")
	}
}
