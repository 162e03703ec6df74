package api

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custos-kms/custos/kms"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"github.com/custos-kms/custos/raft"
)

// ReplicationLeader is what the Replication service needs of the local Raft
// node: whether it leads, proposing a command, and the leader's side of a
// read index (internal/node implements it on raft.Node).
type ReplicationLeader interface {
	IsLeader() bool
	Apply(ctx context.Context, cmd *raftlogv1.Command) (any, error)
	// LeaderReadIndex confirms with a quorum that this node leads and
	// returns a committed index at least as new as every entry committed
	// before the call (kms.ReadIndexFunc, leader side only: it never asks
	// another node).
	LeaderReadIndex(ctx context.Context) (uint64, error)
}

// replicationServer implements raftlogv1.ReplicationServer: a follower
// proposes its commands on the leader through it (kms.ForwardingLog).
type replicationServer struct {
	raftlogv1.UnimplementedReplicationServer
	leader ReplicationLeader
}

// NewReplicationServer returns the Replication service of a node. Only
// other nodes may call it: the caller's principal must be a node
// certificate's common name (custos-node:<id>); anyone else gets
// PermissionDenied. A node that is not the leader answers
// FailedPrecondition and never forwards again, so there is no forwarding
// loop. The result is kms.EncodeResult of the local Apply.
func NewReplicationServer(leader ReplicationLeader) raftlogv1.ReplicationServer {
	return &replicationServer{leader: leader}
}

func isNode(ctx context.Context) bool {
	p, ok := PrincipalFrom(ctx)
	return ok && strings.HasPrefix(p.Name, raft.NodeCNPrefix) && len(p.Name) > len(raft.NodeCNPrefix)
}

func (s *replicationServer) Apply(ctx context.Context, cmd *raftlogv1.Command) (*raftlogv1.ApplyResult, error) {
	if !isNode(ctx) {
		return nil, status.Error(codes.PermissionDenied, "only cluster nodes (certificate custos-node:<id>) may propose commands")
	}
	if cmd == nil || cmd.Op == nil {
		return nil, status.Error(codes.InvalidArgument, "empty command")
	}
	if !s.leader.IsLeader() {
		return nil, status.Error(codes.FailedPrecondition, "this node is not the Raft leader")
	}
	res, err := s.leader.Apply(ctx, cmd)
	if err != nil && !isDomainErr(err) {
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		// Not committed (leadership lost, node closing): the follower
		// retries on the new leader.
		return nil, status.Errorf(codes.Unavailable, "not committed: %v", err)
	}
	return kms.EncodeResult(res, err), nil
}

// ReadIndex answers a follower's read index (kms.ReadIndexFunc): the
// leader's own, never forwarded. A node that is not the leader answers
// FailedPrecondition; one that cannot confirm its leadership, Unavailable.
func (s *replicationServer) ReadIndex(ctx context.Context, _ *raftlogv1.ReadIndexRequest) (*raftlogv1.ReadIndexResponse, error) {
	if !isNode(ctx) {
		return nil, status.Error(codes.PermissionDenied, "only cluster nodes (certificate custos-node:<id>) may ask for a read index")
	}
	if !s.leader.IsLeader() {
		return nil, status.Error(codes.FailedPrecondition, "this node is not the Raft leader")
	}
	idx, err := s.leader.LeaderReadIndex(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return nil, status.Errorf(codes.Unavailable, "leadership not confirmed: %v", err)
	}
	return &raftlogv1.ReadIndexResponse{Index: idx}, nil
}

func isDomainErr(err error) bool {
	for _, e := range []error{kms.ErrInvalidArgument, kms.ErrNotFound, kms.ErrAlreadyExists, kms.ErrFailedPrecondition,
		kms.ErrPermissionDenied, kms.ErrDecryptionFailed, kms.ErrUnavailable, kms.ErrInternal, kms.ErrResourceExhausted} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
