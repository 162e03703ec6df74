package kms_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"google.golang.org/protobuf/proto"
)

// Results cross between nodes without losing what callers match on.
func TestResultRoundTrip(t *testing.T) {
	wire := func(res any, err error) (any, error) {
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
	for _, sentinel := range []error{kms.ErrInvalidArgument, kms.ErrNotFound, kms.ErrAlreadyExists, kms.ErrFailedPrecondition,
		kms.ErrPermissionDenied, kms.ErrDecryptionFailed, kms.ErrUnavailable, kms.ErrResourceExhausted, kms.ErrInternal} {
		orig := fmt.Errorf("%w: key %q", sentinel, "k")
		_, err := wire(orig, nil)
		if !errors.Is(err, sentinel) || err.Error() != orig.Error() {
			t.Fatalf("%v came back as %v", orig, err)
		}
	}
	if _, err := wire(nil, errors.New("boom")); !errors.Is(err, kms.ErrInternal) {
		t.Fatalf("unknown error came back as %v", err)
	}
	k := &raftlogv1.KeyRecord{Name: "k", PrimaryVersion: 3}
	if res, err := wire(k, nil); err != nil || !proto.Equal(res.(*raftlogv1.KeyRecord), k) {
		t.Fatalf("key record came back as %v, %v", res, err)
	}
	rec := &custosv1.DecisionRecord{Seq: 9, Outcome: custosv1.Outcome_OUTCOME_PENDING}
	res, err := wire(&kms.Decision{Record: rec, Err: &kms.PendingError{RequestID: "r1", Seq: 9}}, nil)
	d, ok := res.(*kms.Decision)
	var pe *kms.PendingError
	if err != nil || !ok || !proto.Equal(d.Record, rec) || !errors.As(d.Err, &pe) || pe.RequestID != "r1" || !errors.Is(d.Err, kms.ErrFailedPrecondition) {
		t.Fatalf("pending decision came back as %v, %v", res, err)
	}
	if res, err := wire(nil, nil); res != nil || err != nil {
		t.Fatalf("nil came back as %v, %v", res, err)
	}
}
