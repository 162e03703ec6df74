package api

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"github.com/custos-kms/custos/raft"
)

// ClusterRaft is what the ClusterService needs of the node's Raft member;
// *raft.Node implements it.
type ClusterRaft interface {
	// ID is this server's Raft id.
	ID() string
	Stats() raft.Stats
	// Leader returns the leader's Raft address and id, empty if unknown.
	Leader() (addr, id string)
	// Servers returns the current Raft configuration.
	Servers() ([]raft.Server, error)
	// AddVoter, RemoveServer and TransferLeadership (to any other voter
	// when id is empty) are leader only.
	AddVoter(ctx context.Context, id, addr string) error
	RemoveServer(ctx context.Context, id string) error
	TransferLeadership(ctx context.Context, id string) error
	// OpenSnapshot takes a snapshot (or reuses the newest when nothing is
	// new) and opens its payload, meta.Size bytes long, for reading.
	OpenSnapshot(ctx context.Context) (raft.SnapshotMeta, io.ReadCloser, error)
}

var _ ClusterRaft = (*raft.Node)(nil)

// ClusterDeps are what NewClusterServer needs.
type ClusterDeps struct {
	// Raft is the node's Raft member. Required.
	Raft ClusterRaft
	// Service is the node's kms service: cluster id, ledger head, domain
	// key id. Required.
	Service *kms.Service
	// HSM is the node's own HSM: Status reports its health and whether it
	// holds the domain key. Required.
	HSM hsm.Backend
	// IsOperator reports whether a principal (client certificate common
	// name) may change the membership and take snapshots. Nil: nobody may.
	IsOperator func(principal string) bool
	// Logger receives one line per membership change or snapshot, with the
	// principal, and the details of internal errors. Default slog.Default().
	Logger *slog.Logger
}

// Snapshot file format (docs/cluster.md):
//
//	"custos-cluster-snapshot-v1\n"
//	uint32 big endian n, n bytes: SnapshotFileHeader as JSON
//	header.PayloadSize bytes: the Raft snapshot payload (kms.State Persist)
//	32 bytes: SHA-256 of everything before it
const (
	SnapshotFileMagic = "custos-cluster-snapshot-v1\n"
	// SnapshotChunkSize is the size of the SaveSnapshot stream's chunks
	// (the last one may be shorter).
	SnapshotChunkSize = 256 << 10
	// MaxSnapshotHeader bounds the JSON header of a snapshot file.
	MaxSnapshotHeader = 64 << 10
)

// SnapshotFileHeader is the JSON header of a snapshot file. A restore
// refuses a file whose ClusterID is not the cluster it restores.
type SnapshotFileHeader struct {
	Format    int    `json:"format"` // 1
	ClusterID string `json:"cluster_id"`
	// NodeID is the node that produced the file.
	NodeID    string `json:"node_id"`
	RaftIndex uint64 `json:"raft_index"`
	RaftTerm  uint64 `json:"raft_term"`
	// Created is when the file was produced (RFC 3339, UTC).
	Created     time.Time `json:"created"`
	PayloadSize int64     `json:"payload_size"`
}

// clusterStatusTimeout bounds the HSM calls of one Status.
const clusterStatusTimeout = 2 * time.Second

// ReasonNotLeader is the ErrorInfo reason of a membership change sent to a
// node that is not the leader; metadata "leader_id" and "leader_raft_addr"
// name the leader when known.
const ReasonNotLeader = "NOT_LEADER"

// clusterServer implements custosv1.ClusterServiceServer.
type clusterServer struct {
	custosv1.UnimplementedClusterServiceServer
	d   ClusterDeps
	log *slog.Logger
}

var _ custosv1.ClusterServiceServer = (*clusterServer)(nil)

// NewClusterServer returns the ClusterService over d. Status is open to
// every authenticated principal (it reveals no key material); AddVoter,
// RemoveServer, TransferLeadership and SaveSnapshot to operators only
// (d.IsOperator), everyone else gets PermissionDenied. Membership changes
// are leader only: a follower answers FailedPrecondition with an ErrorInfo
// (reason NOT_LEADER) naming the leader.
func NewClusterServer(d ClusterDeps) custosv1.ClusterServiceServer {
	log := d.Logger
	if log == nil {
		log = slog.Default()
	}
	return &clusterServer{d: d, log: log}
}

// operator returns the caller if it is an operator, else a status error.
func (s *clusterServer) operator(ctx context.Context, what string) (kms.Principal, error) {
	p, err := principal(ctx)
	if err != nil {
		return p, err
	}
	if s.d.IsOperator == nil || !s.d.IsOperator(p.Name) {
		return p, status.Errorf(codes.PermissionDenied, "principal %q is not an operator: only operators may %s", p.Name, what)
	}
	return p, nil
}

func (s *clusterServer) Status(ctx context.Context, _ *custosv1.ClusterStatusRequest) (*custosv1.ClusterStatus, error) {
	if _, err := principal(ctx); err != nil {
		return nil, err
	}
	return s.status(ctx), nil
}

// status is this node's view. It always answers: what cannot be read is
// left empty (and logged), an HSM that does not answer is reported.
func (s *clusterServer) status(ctx context.Context) *custosv1.ClusterStatus {
	st := s.d.Raft.Stats()
	leaderAddr, leaderID := s.d.Raft.Leader()
	out := &custosv1.ClusterStatus{
		NodeId:         s.d.Raft.ID(),
		RaftState:      strings.ToUpper(st.State),
		LeaderId:       leaderID,
		LeaderRaftAddr: leaderAddr,
		Term:           st.Term,
		CommitIndex:    st.CommitIndex,
		AppliedIndex:   st.AppliedIndex,
		LastLogIndex:   st.LastLogIndex,
	}
	servers, err := s.d.Raft.Servers()
	if err != nil {
		s.log.WarnContext(ctx, "cluster status: read raft configuration", "err", err)
	}
	for _, sv := range servers {
		out.Servers = append(out.Servers, &custosv1.Server{
			Id:       sv.ID,
			RaftAddr: sv.Addr,
			Suffrage: strings.ToUpper(sv.Suffrage),
			Leader:   leaderID != "" && sv.ID == leaderID,
		})
	}
	var domainKey hsm.KeyRef
	if s.d.Service != nil {
		state := s.d.Service.State()
		out.ClusterId = state.ClusterID()
		out.LedgerSeq, _ = state.LedgerHead()
		if out.ClusterId != "" {
			domainKey = state.DomainKey()
			out.Admissions = state.Admissions(false)
			out.Profile = state.Profile()
			out.Restore = state.RestoreInfo()
			out.DomainKeyEpoch, out.Rotation = state.DomainKeyEpoch(false)
		}
	}
	if s.d.HSM == nil {
		out.HsmDetail = "no HSM configured"
		return out
	}
	hctx, cancel := context.WithTimeout(ctx, clusterStatusTimeout)
	defer cancel()
	if err := s.d.HSM.Health(hctx); err != nil {
		out.HsmDetail = "HSM does not answer: " + err.Error()
		return out
	}
	out.HsmHealthy = true
	switch {
	case out.ClusterId == "":
		out.HsmDetail = "cluster not initialised"
	case len(domainKey.ID) == 0:
		out.HsmDetail = "no domain key recorded"
	default:
		err := s.d.HSM.VerifyKey(hctx, domainKey, hsm.UsageWrap)
		switch {
		case err == nil:
			out.HasDomainKey = true
		case errors.Is(err, hsm.ErrKeyNotFound):
			out.HsmDetail = "this HSM does not hold the domain key: the node serves no cryptographic requests until officers admit it (docs/key-transport.md)"
		case errors.Is(err, hsm.ErrObjectMismatch):
			out.HsmDetail = "the domain key object in this HSM is not the one the log records: refused (" + err.Error() + ")"
		default:
			out.HsmDetail = "domain key lookup failed: " + err.Error()
		}
	}
	return out
}

func (s *clusterServer) AddVoter(ctx context.Context, req *custosv1.AddVoterRequest) (*custosv1.ClusterStatus, error) {
	p, err := s.operator(ctx, "change the cluster membership")
	if err != nil {
		return nil, err
	}
	if err := checkServerID(req.GetId()); err != nil {
		return nil, err
	}
	if err := checkRaftAddr(req.GetRaftAddr()); err != nil {
		return nil, err
	}
	if err := s.leaderOnly(); err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "cluster: adding voter", "principal", p.Name, "id", req.GetId(), "raft_addr", req.GetRaftAddr())
	if err := s.d.Raft.AddVoter(ctx, req.GetId(), req.GetRaftAddr()); err != nil {
		return nil, s.raftFail(ctx, "AddVoter", err)
	}
	s.log.InfoContext(ctx, "cluster: voter added", "principal", p.Name, "id", req.GetId(), "raft_addr", req.GetRaftAddr())
	return s.status(ctx), nil
}

func (s *clusterServer) RemoveServer(ctx context.Context, req *custosv1.RemoveServerRequest) (*custosv1.ClusterStatus, error) {
	p, err := s.operator(ctx, "change the cluster membership")
	if err != nil {
		return nil, err
	}
	id := req.GetId()
	if err := checkServerID(id); err != nil {
		return nil, err
	}
	if err := s.leaderOnly(); err != nil {
		return nil, err
	}
	servers, err := s.d.Raft.Servers()
	if err != nil {
		return nil, s.raftFail(ctx, "RemoveServer", err)
	}
	found, otherVoters := false, 0
	for _, sv := range servers {
		switch {
		case sv.ID == id:
			found = true
		case isVoter(sv):
			otherVoters++
		}
	}
	if !found {
		return nil, status.Errorf(codes.NotFound, "no server %q in the cluster configuration", id)
	}
	if otherVoters == 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "server %q is the only voter: removing it would leave the cluster without voters", id)
	}
	s.log.WarnContext(ctx, "cluster: removing server", "principal", p.Name, "id", id)
	if err := s.d.Raft.RemoveServer(ctx, id); err != nil {
		return nil, s.raftFail(ctx, "RemoveServer", err)
	}
	s.log.WarnContext(ctx, "cluster: server removed", "principal", p.Name, "id", id)
	return s.status(ctx), nil
}

func (s *clusterServer) TransferLeadership(ctx context.Context, req *custosv1.TransferLeadershipRequest) (*custosv1.ClusterStatus, error) {
	p, err := s.operator(ctx, "transfer the leadership")
	if err != nil {
		return nil, err
	}
	id := req.GetId()
	if id != "" {
		if err := checkServerID(id); err != nil {
			return nil, err
		}
	}
	if err := s.leaderOnly(); err != nil {
		return nil, err
	}
	servers, err := s.d.Raft.Servers()
	if err != nil {
		return nil, s.raftFail(ctx, "TransferLeadership", err)
	}
	self := s.d.Raft.ID()
	if id == self {
		return nil, status.Errorf(codes.FailedPrecondition, "server %q already leads", id)
	}
	candidates := 0
	for _, sv := range servers {
		if sv.ID == self || !isVoter(sv) {
			if sv.ID == id {
				return nil, status.Errorf(codes.FailedPrecondition, "server %q is not a voter (%s) and cannot lead", id, sv.Suffrage)
			}
			continue
		}
		if id == "" || sv.ID == id {
			candidates++
		}
	}
	if candidates == 0 {
		if id != "" {
			return nil, status.Errorf(codes.NotFound, "no server %q in the cluster configuration", id)
		}
		return nil, status.Error(codes.FailedPrecondition, "there is no other voter to hand the leadership to")
	}
	s.log.InfoContext(ctx, "cluster: transferring leadership", "principal", p.Name, "to", id)
	if err := s.d.Raft.TransferLeadership(ctx, id); err != nil {
		return nil, s.raftFail(ctx, "TransferLeadership", err)
	}
	return s.status(ctx), nil
}

func (s *clusterServer) SaveSnapshot(_ *custosv1.SaveSnapshotRequest, stream grpc.ServerStreamingServer[custosv1.SnapshotChunk]) error {
	ctx := stream.Context()
	p, err := s.operator(ctx, "take snapshots")
	if err != nil {
		return err
	}
	if s.d.Service == nil {
		return status.Error(codes.FailedPrecondition, "cluster not initialised")
	}
	clusterID := s.d.Service.State().ClusterID()
	if clusterID == "" {
		return status.Error(codes.FailedPrecondition, "cluster not initialised")
	}
	meta, rc, err := s.d.Raft.OpenSnapshot(ctx)
	if err != nil {
		return s.raftFail(ctx, "SaveSnapshot", err)
	}
	defer rc.Close()
	hdr := SnapshotFileHeader{
		Format:      1,
		ClusterID:   clusterID,
		NodeID:      s.d.Raft.ID(),
		RaftIndex:   meta.Index,
		RaftTerm:    meta.Term,
		Created:     time.Now().UTC(),
		PayloadSize: meta.Size,
	}
	s.log.InfoContext(ctx, "cluster: saving snapshot", "principal", p.Name, "raft_index", meta.Index, "raft_term", meta.Term, "bytes", meta.Size)
	cw := &chunkWriter{send: stream.Send, buf: make([]byte, 0, SnapshotChunkSize)}
	if err := WriteSnapshotFile(cw, hdr, rc); err != nil {
		return s.base().streamFail(ctx, "SaveSnapshot", snapshotErr(err))
	}
	if err := cw.flush(); err != nil {
		return s.base().streamFail(ctx, "SaveSnapshot", err)
	}
	return nil
}

// snapshotErr keeps status errors (from Send) and context errors as they
// are; anything else is an internal error.
func snapshotErr(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: snapshot: %v", kms.ErrInternal, err)
}

// WriteSnapshotFile writes a snapshot file: magic, hdr, exactly
// hdr.PayloadSize bytes of payload read from payload (which must then be at
// its end), and the SHA-256 trailer. See docs/cluster.md.
func WriteSnapshotFile(w io.Writer, hdr SnapshotFileHeader, payload io.Reader) error {
	if hdr.PayloadSize < 0 {
		return fmt.Errorf("negative payload size %d", hdr.PayloadSize)
	}
	js, err := json.Marshal(hdr)
	if err != nil {
		return err
	}
	if len(js) > MaxSnapshotHeader {
		return fmt.Errorf("snapshot header is %d bytes, more than %d", len(js), MaxSnapshotHeader)
	}
	h := sha256.New()
	mw := io.MultiWriter(w, h)
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(js)))
	for _, b := range [][]byte{[]byte(SnapshotFileMagic), n[:], js} {
		if _, err := mw.Write(b); err != nil {
			return err
		}
	}
	copied, err := io.CopyN(mw, payload, hdr.PayloadSize)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("snapshot payload ended after %d of %d bytes", copied, hdr.PayloadSize)
		}
		return err
	}
	var one [1]byte
	if k, _ := io.ReadFull(payload, one[:]); k != 0 {
		return fmt.Errorf("snapshot payload is longer than its recorded %d bytes", hdr.PayloadSize)
	}
	_, err = w.Write(h.Sum(nil))
	return err
}

// chunkWriter turns writes into SnapshotChunks of SnapshotChunkSize bytes.
type chunkWriter struct {
	send func(*custosv1.SnapshotChunk) error
	buf  []byte
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), SnapshotChunkSize-len(c.buf))
		c.buf = append(c.buf, p[:k]...)
		p, n = p[k:], n+k
		if len(c.buf) == SnapshotChunkSize {
			if err := c.flush(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

func (c *chunkWriter) flush() error {
	if len(c.buf) == 0 {
		return nil
	}
	// Send marshals the message before returning: the buffer may be reused.
	err := c.send(&custosv1.SnapshotChunk{Data: c.buf})
	c.buf = c.buf[:0]
	return err
}

// leaderOnly fails with FailedPrecondition (ErrorInfo NOT_LEADER) unless
// this node leads.
func (s *clusterServer) leaderOnly() error {
	if strings.EqualFold(s.d.Raft.Stats().State, "Leader") {
		return nil
	}
	addr, id := s.d.Raft.Leader()
	return notLeaderStatus(addr, id)
}

func notLeaderStatus(addr, id string) error {
	msg := "this node is not the Raft leader (leader unknown): send membership changes to the leader"
	if id != "" || addr != "" {
		msg = fmt.Sprintf("this node is not the Raft leader: send membership changes to the leader, %s (raft address %s)", id, addr)
	}
	st := status.New(codes.FailedPrecondition, msg)
	withInfo, err := st.WithDetails(&errdetails.ErrorInfo{
		Reason:   ReasonNotLeader,
		Domain:   ErrorDomain,
		Metadata: map[string]string{"leader_id": id, "leader_raft_addr": addr},
	})
	if err != nil {
		return st.Err()
	}
	return withInfo.Err()
}

// raftFail maps an error from the Raft member to a status and logs what
// the caller is not told.
func (s *clusterServer) raftFail(ctx context.Context, method string, err error) error {
	var nl *raft.NotLeaderError
	switch {
	case errors.As(err, &nl):
		return notLeaderStatus(nl.LeaderAddr, nl.LeaderID)
	case errors.Is(err, raft.ErrNotLeader):
		addr, id := s.d.Raft.Leader()
		return notLeaderStatus(addr, id)
	case errors.Is(err, raft.ErrClosed):
		err = fmt.Errorf("%w: the node is shutting down", kms.ErrUnavailable)
	case errors.Is(err, raft.ErrTimeout):
		err = fmt.Errorf("%w: raft did not accept the change in time: %v", kms.ErrUnavailable, err)
	}
	return s.base().fail(ctx, method, err)
}

// base is the common server, for fail and streamFail.
func (s *clusterServer) base() *server { return &server{svc: s.d.Service, log: s.log} }

// isVoter reports whether sv votes.
func isVoter(sv raft.Server) bool { return strings.EqualFold(sv.Suffrage, "Voter") }

// checkServerID accepts a Raft server id: 1 to 128 printable ASCII
// characters without spaces.
func checkServerID(id string) error {
	if id == "" {
		return status.Error(codes.InvalidArgument, "server id is required")
	}
	if len(id) > 128 {
		return status.Error(codes.InvalidArgument, "server id is longer than 128 bytes")
	}
	for _, r := range id {
		if r <= ' ' || r > '~' {
			return status.Errorf(codes.InvalidArgument, "server id %q: only printable ASCII without spaces", id)
		}
	}
	return nil
}

// checkRaftAddr accepts host:port with a port in 1..65535.
func checkRaftAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return status.Errorf(codes.InvalidArgument, "raft address %q: want host:port", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return status.Errorf(codes.InvalidArgument, "raft address %q: bad port", addr)
	}
	return nil
}

// ClusterStatus returns this node's view of the cluster, as
// ClusterService.Status answers it (for the officer console).
func ClusterStatus(ctx context.Context, d ClusterDeps) *custosv1.ClusterStatus {
	s := NewClusterServer(d).(*clusterServer)
	return s.status(ctx)
}
