package api

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custos-kms/custos/kms"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

type fakeLeader struct {
	last    *raftlogv1.Command
	leader  bool
	idx     uint64
	err     error
	calls   int
	applied int
}

// leaderNow is the fake leader's clock (ReplicationClock).
var leaderNow = time.Date(2030, 1, 7, 9, 0, 0, 0, time.UTC)

func (f *fakeLeader) Now() time.Time { return leaderNow }

// IsMember: node2 and node3 are the cluster's other members.
func (f *fakeLeader) IsMember(id string) bool { return id == "node2" || id == "node3" }

func (f *fakeLeader) IsLeader() bool { return f.leader }
func (f *fakeLeader) Apply(_ context.Context, cmd *raftlogv1.Command) (any, error) {
	f.applied++
	f.last = cmd
	return nil, nil
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
	for _, ctx := range []context.Context{context.Background(), as("app"), as("custos-node:"), as("custos-node:node9")} {
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

// TestReplicationApplyOnlyMembersAsThemselves: a node certificate outside
// the cluster, or a member proposing as another node (or registering
// another node's checkpoint key), is refused before anything is proposed.
func TestReplicationApplyOnlyMembersAsThemselves(t *testing.T) {
	as := func(name string) context.Context {
		return context.WithValue(context.Background(), principalKey{}, kms.Principal{Name: name})
	}
	f := &fakeLeader{leader: true}
	srv := NewReplicationServer(f)
	decide := func(node string) *raftlogv1.Command {
		return &raftlogv1.Command{TimeUnixNano: leaderNow.UnixNano(), Node: node, Principal: "app",
			Op: &raftlogv1.Command_SetKeyState{SetKeyState: &raftlogv1.SetKeyState{}}}
	}
	register := func(node, of string) *raftlogv1.Command {
		return &raftlogv1.Command{TimeUnixNano: leaderNow.UnixNano(), Node: node,
			Op: &raftlogv1.Command_RegisterNodeKey{RegisterNodeKey: &raftlogv1.RegisterNodeKey{Node: of}}}
	}
	for _, tc := range []struct {
		name   string
		caller string
		cmd    *raftlogv1.Command
	}{
		{"no principal", "", decide("node2")},
		{"an application", "app", decide("node2")},
		{"a node outside the cluster", "custos-node:node9", decide("node9")},
		{"a member as another node", "custos-node:node2", decide("node3")},
		{"a member as no node", "custos-node:node2", decide("")},
		{"a member registering another node's key", "custos-node:node2", register("node2", "node3")},
	} {
		ctx := context.Background()
		if tc.caller != "" {
			ctx = as(tc.caller)
		}
		if _, err := srv.Apply(ctx, tc.cmd); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: Apply = %v, want PermissionDenied", tc.name, err)
		}
	}
	if f.applied != 0 {
		t.Fatalf("%d refused commands reached the log", f.applied)
	}
	for _, cmd := range []*raftlogv1.Command{decide("node2"), register("node2", "node2")} {
		if _, err := srv.Apply(as("custos-node:node2"), cmd); err != nil {
			t.Fatalf("a member proposing as itself: %v", err)
		}
	}
	if f.applied != 2 {
		t.Fatalf("applied %d commands, want 2", f.applied)
	}
}

// TestReplicationRefusesSkewedStamps: the leader refuses a forwarded
// command stamped further than kms.MaxClockSkew ahead of its own clock with
// a FailedPrecondition domain error (the follower's caller gets it at once)
// and proposes nothing; a stamp behind, or ahead within the allowance, is
// proposed (the state machine clamps stamps behind its clock).
func TestReplicationRefusesSkewedStamps(t *testing.T) {
	ctx := context.WithValue(context.Background(), principalKey{}, kms.Principal{Name: "custos-node:node2"})
	f := &fakeLeader{leader: true}
	srv := NewReplicationServer(f)
	at := func(d time.Duration) *raftlogv1.Command {
		return &raftlogv1.Command{TimeUnixNano: leaderNow.Add(d).UnixNano(), Node: "node2", Principal: "app",
			Op: &raftlogv1.Command_SetKeyState{SetKeyState: &raftlogv1.SetKeyState{Name: "k"}}}
	}
	for _, d := range []time.Duration{kms.MaxClockSkew + time.Nanosecond, 24 * time.Hour} {
		r, err := srv.Apply(ctx, at(d))
		if err != nil {
			t.Fatalf("stamp %s from the leader's clock: transport error %v, want a result", d, err)
		}
		_, derr := kms.DecodeResult(r)
		if !errors.Is(derr, kms.ErrFailedPrecondition) || !strings.Contains(derr.Error(), "time synchronisation") {
			t.Fatalf("stamp %s from the leader's clock: %v, want FailedPrecondition naming the clocks", d, derr)
		}
	}
	if f.applied != 0 {
		t.Fatalf("%d commands with skewed stamps reached the log", f.applied)
	}
	for _, d := range []time.Duration{-time.Hour, -kms.MaxClockSkew - time.Nanosecond, 0, kms.MaxClockSkew} {
		r, err := srv.Apply(ctx, at(d))
		if _, derr := kms.DecodeResult(r); err != nil || derr != nil {
			t.Fatalf("stamp %s from the leader's clock: %v, %v", d, err, derr)
		}
	}
	if f.applied != 4 {
		t.Fatalf("applied %d commands, want 4", f.applied)
	}
}
