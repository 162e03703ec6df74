package api

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custos-kms/custos/internal/pki"
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
	// IsMember reports whether the node with this Raft id belongs to the
	// cluster: the ids the Raft transport accepts (the current Raft
	// configuration plus the configured peers).
	IsMember(id string) bool
}

// ReplicationClock is implemented by a ReplicationLeader whose clock is not
// time.Now (tests inject one): the Replication service checks forwarded
// commands' stamps against it.
type ReplicationClock interface {
	Now() time.Time
}

// replicationServer implements raftlogv1.ReplicationServer: a follower
// proposes its commands on the leader through it (kms.ForwardingLog).
type replicationServer struct {
	raftlogv1.UnimplementedReplicationServer
	leader ReplicationLeader
	now    func() time.Time
	// trust is the officers' client authorities, against which the
	// certificate a follower forwards with a command is checked.
	trust TrustFunc
}

// NewReplicationServer returns the Replication service of a node. Only
// the cluster's other nodes may call it: the caller's principal must be a
// node certificate's common name (custos-node:<id>) whose id is a member
// (ReplicationLeader.IsMember), and a command must name that node as its
// proposer (and, for RegisterNodeKey, as the node whose key it registers);
// anyone else gets PermissionDenied. A member node is trusted to have
// authenticated the principal it proposes for, as it is trusted to run
// custos; a certificate of a node outside the cluster (removed, or never
// added) is not. A node that is not the leader answers
// FailedPrecondition and never forwards again, so there is no forwarding
// loop. The result is kms.EncodeResult of the local Apply.
//
// The leader also refuses a command stamped more than kms.MaxClockSkew
// ahead of its own clock (ReplicationClock, time.Now otherwise), with a
// FailedPrecondition result (a domain error, so the follower's caller gets
// it at once). This check is outside the replicated rules (it reads a
// clock): it stops a member whose clock runs ahead from pushing the state's
// clock forward (which would expire statements and grants early, and move
// policy time windows). A stamp behind is let through: the state machine
// clamps it to the state's clock on every replica (docs/raft-log.md,
// "Time").
func NewReplicationServer(leader ReplicationLeader) raftlogv1.ReplicationServer {
	now := time.Now
	if c, ok := leader.(ReplicationClock); ok {
		now = c.Now
	}
	return &replicationServer{leader: leader, now: now}
}

// checkStamp refuses a forwarded command stamped more than
// kms.MaxClockSkew ahead of the leader's clock.
func (s *replicationServer) checkStamp(cmd *raftlogv1.Command) error {
	now := s.now()
	stamp := time.Unix(0, cmd.GetTimeUnixNano())
	ahead := stamp.Sub(now)
	if ahead <= kms.MaxClockSkew {
		return nil
	}
	return fmt.Errorf("%w: command from node %q is stamped %s, %s ahead of the leader's clock %s (at most %s): "+
		"check the nodes' time synchronisation", kms.ErrFailedPrecondition, cmd.GetNode(),
		stamp.UTC().Format(time.RFC3339Nano), ahead, now.UTC().Format(time.RFC3339Nano), kms.MaxClockSkew)
}

// checkPrincipalCertificate checks the certificate a follower forwards
// with a command that names one (kms.ClientTrust.VerifyForwarded) and
// removes it, so that it never enters the log: a member node cannot name a
// principal's certificate, or a client authority, it does not hold a
// certificate for.
func (s *replicationServer) checkPrincipalCertificate(cmd *raftlogv1.Command) error {
	named := len(cmd.GetPrincipalIssuerSha256()) > 0 || len(cmd.GetPrincipalCertSha256()) > 0
	if !named && len(cmd.GetPrincipalCertificate()) == 0 {
		return nil
	}
	if !named || len(cmd.GetPrincipalCertificate()) == 0 {
		return fmt.Errorf("%w: a forwarded command that names a principal's certificate must carry it, and one that carries it must name it", kms.ErrPermissionDenied)
	}
	var t *kms.ClientTrust
	if s.trust != nil {
		t = s.trust()
	}
	if err := t.VerifyForwarded(cmd, pki.PrincipalFromCert); err != nil {
		return err
	}
	cmd.PrincipalCertificate = nil
	return nil
}

// member returns the Raft id of the calling node if it is a member of the
// cluster, or a PermissionDenied error saying what it may not do.
func (s *replicationServer) member(ctx context.Context, what string) (string, error) {
	p, ok := PrincipalFrom(ctx)
	if !ok || !strings.HasPrefix(p.Name, raft.NodeCNPrefix) || len(p.Name) == len(raft.NodeCNPrefix) {
		return "", status.Errorf(codes.PermissionDenied, "only cluster nodes (certificate custos-node:<id>) may %s", what)
	}
	id := strings.TrimPrefix(p.Name, raft.NodeCNPrefix)
	if !s.leader.IsMember(id) {
		return "", status.Errorf(codes.PermissionDenied, "node %q is not a member of this cluster and may not %s", id, what)
	}
	return id, nil
}

func (s *replicationServer) Apply(ctx context.Context, cmd *raftlogv1.Command) (*raftlogv1.ApplyResult, error) {
	id, err := s.member(ctx, "propose commands")
	if err != nil {
		return nil, err
	}
	if cmd == nil || cmd.Op == nil {
		return nil, status.Error(codes.InvalidArgument, "empty command")
	}
	if cmd.GetNode() != id {
		return nil, status.Errorf(codes.PermissionDenied, "node %q may propose commands only as itself, not as %q", id, cmd.GetNode())
	}
	if rk := cmd.GetRegisterNodeKey(); rk != nil && rk.GetNode() != id {
		return nil, status.Errorf(codes.PermissionDenied, "node %q may register only its own checkpoint key, not %q's", id, rk.GetNode())
	}
	if !s.leader.IsLeader() {
		return nil, status.Error(codes.FailedPrecondition, "this node is not the Raft leader")
	}
	if err := s.checkPrincipalCertificate(cmd); err != nil {
		// A domain result, like a stamp refusal: the follower's caller
		// gets it at once, where a gRPC error would be retried.
		return kms.EncodeResult(nil, err), nil
	}
	if err := s.checkStamp(cmd); err != nil {
		return kms.EncodeResult(nil, err), nil
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
	if _, err := s.member(ctx, "ask for a read index"); err != nil {
		return nil, err
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

// RecordSource is implemented by a ReplicationLeader that also serves
// ReadRecords: the stored decision records a peer copies into its ledger
// after restoring a snapshot without them (kms.State.PeerRecords).
type RecordSource interface {
	PeerRecords(from, to uint64) ([][]byte, error)
}

// ReadRecords serves a member's backfill (docs/ledger.md, "Storage"): the
// records from from_seq on, whether or not this node leads. The caller
// checks every record against the hash chain; a node that does not hold
// from_seq answers Unavailable, and the caller asks another.
func (s *replicationServer) ReadRecords(ctx context.Context, req *raftlogv1.ReadRecordsRequest) (*raftlogv1.ReadRecordsResponse, error) {
	if _, err := s.member(ctx, "read ledger records"); err != nil {
		return nil, err
	}
	src, ok := s.leader.(RecordSource)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "this node does not serve ledger records")
	}
	recs, err := src.PeerRecords(req.GetFromSeq(), req.GetToSeq())
	if err != nil {
		return nil, toStatus(err)
	}
	return &raftlogv1.ReadRecordsResponse{Records: recs}, nil
}

func isDomainErr(err error) bool { return kms.IsDomainError(err) }
