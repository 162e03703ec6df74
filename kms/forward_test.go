package kms_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"github.com/custos-kms/custos/raft"
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

// follower is a Leader that never leads and knows leader "n1".
type follower struct{}

func (follower) Apply(context.Context, *raftlogv1.Command) (any, error) {
	return nil, raft.ErrNotLeader
}
func (follower) IsLeader() bool           { return false }
func (follower) Leader() (string, string) { return "127.0.0.1:1", "n1" }

// A follower does not retry what the leader refused for good (the caller's
// certificate, a malformed command): the caller gets the refusal at once,
// with its kind; a leader that was unreachable is retried.
func TestForwardingStopsOnRefusal(t *testing.T) {
	for _, tc := range []struct {
		code  codes.Code
		want  error
		calls int
	}{
		{codes.PermissionDenied, kms.ErrPermissionDenied, 1},
		{codes.Unauthenticated, kms.ErrPermissionDenied, 1},
		{codes.InvalidArgument, kms.ErrInvalidArgument, 1},
		{codes.Unavailable, kms.ErrUnavailable, 3},
	} {
		calls := 0
		f := &kms.ForwardingLog{Local: follower{}, Retry: time.Millisecond, Attempts: 3,
			Forward: func(context.Context, string, *raftlogv1.Command) (*raftlogv1.ApplyResult, error) {
				calls++
				return nil, status.Error(tc.code, "refused")
			}}
		_, err := f.Apply(context.Background(), &raftlogv1.Command{})
		if !errors.Is(err, tc.want) || calls != tc.calls {
			t.Errorf("leader answers %s: %v after %d calls; want %v after %d", tc.code, err, calls, tc.want, tc.calls)
		}
	}
}
