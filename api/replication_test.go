package api

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custos-kms/custos/kms"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

type fakeLeader struct {
	leader bool
	idx    uint64
	err    error
	calls  int
}

func (f *fakeLeader) IsLeader() bool { return f.leader }
func (f *fakeLeader) Apply(context.Context, *raftlogv1.Command) (any, error) {
	return nil, errors.New("unused")
}
func (f *fakeLeader) LeaderReadIndex(context.Context) (uint64, error) {
	f.calls++
	return f.idx, f.err
}

// TestReplicationReadIndex: only nodes may ask; only the leader answers,
// with its own read index (never forwarded).
func TestReplicationReadIndex(t *testing.T) {
	as := func(name string) context.Context {
		return context.WithValue(context.Background(), principalKey{}, kms.Principal{Name: name})
	}
	f := &fakeLeader{leader: true, idx: 42}
	srv := NewReplicationServer(f)
	for _, ctx := range []context.Context{context.Background(), as("app"), as("custos-node:")} {
		if _, err := srv.ReadIndex(ctx, &raftlogv1.ReadIndexRequest{}); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("ReadIndex by a non-node: %v", err)
		}
	}
	r, err := srv.ReadIndex(as("custos-node:node2"), &raftlogv1.ReadIndexRequest{})
	if err != nil || r.GetIndex() != 42 {
		t.Fatalf("ReadIndex on the leader: %v, %v", r, err)
	}
	f.err = errors.New("leadership lost")
	if _, err := srv.ReadIndex(as("custos-node:node2"), &raftlogv1.ReadIndexRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("ReadIndex without confirmed leadership: %v", err)
	}
	f.leader, f.calls = false, 0
	if _, err := srv.ReadIndex(as("custos-node:node2"), &raftlogv1.ReadIndexRequest{}); status.Code(err) != codes.FailedPrecondition || f.calls != 0 {
		t.Fatalf("ReadIndex on a follower: %v (%d leader rounds)", err, f.calls)
	}
}
