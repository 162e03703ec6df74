package custos

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Cluster: the operator's view and care of the Raft cluster
// (docs/cluster.md). Status is open to every authenticated principal; the
// membership changes and snapshots need a principal the cluster lists as
// an operator (codes.PermissionDenied otherwise).

// Cluster returns the raw ClusterService client, with the same failover as
// the convenience methods. Membership changes sent through it must reach
// the leader; AddVoter, RemoveServer and TransferLeadership find it.
func (c *Client) Cluster() custosv1.ClusterServiceClient {
	return custosv1.NewClusterServiceClient(failoverConn{c})
}

// Addrs returns the configured node addresses, in order.
func (c *Client) Addrs() []string { return append([]string(nil), c.addrs...) }

// clusterAt returns a ClusterService client for address i only.
func (c *Client) clusterAt(i int) (custosv1.ClusterServiceClient, error) {
	cc, err := c.conn(i)
	if err != nil {
		return nil, err
	}
	return custosv1.NewClusterServiceClient(cc), nil
}

// ClusterStatus returns the view of the first node that answers.
func (c *Client) ClusterStatus(ctx context.Context) (*custosv1.ClusterStatus, error) {
	st, err := c.Cluster().Status(ctx, &custosv1.ClusterStatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("custos: cluster status: %w", err)
	}
	return st, nil
}

// ClusterStatusAll asks every configured address, in parallel, for its own
// view. Both results have one entry per address (see Addrs), in order: the
// status, or nil and the error saying why that node did not answer.
func (c *Client) ClusterStatusAll(ctx context.Context) ([]*custosv1.ClusterStatus, []error) {
	sts := make([]*custosv1.ClusterStatus, len(c.addrs))
	errs := make([]error, len(c.addrs))
	var wg sync.WaitGroup
	for i := range c.addrs {
		wg.Go(func() {
			sts[i], errs[i] = c.statusAt(ctx, i)
		})
	}
	wg.Wait()
	return sts, errs
}

func (c *Client) statusAt(ctx context.Context, i int) (*custosv1.ClusterStatus, error) {
	cl, err := c.clusterAt(i)
	if err != nil {
		return nil, err
	}
	actx, cancel := c.attemptCtx(ctx)
	defer cancel()
	st, err := cl.Status(actx, &custosv1.ClusterStatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("custos: cluster status from %s: %w", c.addrs[i], err)
	}
	return st, nil
}

// NotLeader reports whether err is a membership change refused because the
// node that received it does not lead, with the leader's Raft id and
// address when the node knew them.
func NotLeader(err error) (leaderID, leaderRaftAddr string, ok bool) {
	st, isStatus := status.FromError(err)
	if !isStatus || st.Code() != codes.FailedPrecondition {
		return "", "", false
	}
	for _, d := range st.Details() {
		if info, isInfo := d.(*errdetails.ErrorInfo); isInfo && info.GetReason() == "NOT_LEADER" {
			return info.GetMetadata()["leader_id"], info.GetMetadata()["leader_raft_addr"], true
		}
	}
	return "", "", false
}

// onLeader runs a membership change: first through failover, and, if the
// node that answered does not lead, on the configured address whose node
// says it is the leader.
func (c *Client) onLeader(ctx context.Context, what string, call func(context.Context, custosv1.ClusterServiceClient) (*custosv1.ClusterStatus, error)) (*custosv1.ClusterStatus, error) {
	st, err := call(ctx, c.Cluster())
	if err == nil {
		return st, nil
	}
	if _, _, nl := NotLeader(err); !nl || len(c.addrs) < 2 {
		return nil, fmt.Errorf("custos: %s: %w", what, err)
	}
	sts, _ := c.ClusterStatusAll(ctx)
	for i, s := range sts {
		if s.GetRaftState() != "LEADER" {
			continue
		}
		cl, cerr := c.clusterAt(i)
		if cerr != nil {
			break
		}
		actx, cancel := c.attemptCtx(ctx)
		st, err = call(actx, cl)
		cancel()
		if err == nil {
			c.current.Store(int32(i))
			return st, nil
		}
		break
	}
	if id, addr, nl := NotLeader(err); nl {
		return nil, fmt.Errorf("custos: %s: no configured address is the leader's (leader %q at raft address %q; add its gRPC address to CUSTOS_ADDR): %w", what, id, addr, err)
	}
	return nil, fmt.Errorf("custos: %s: %w", what, err)
}

// AddVoter adds a voting member with Raft id id at Raft address raftAddr
// (operators only). The new node holds no key material until the officers
// admit it (docs/cluster.md). It returns the leader's view afterwards.
func (c *Client) AddVoter(ctx context.Context, id, raftAddr string) (*custosv1.ClusterStatus, error) {
	return c.onLeader(ctx, "add voter", func(ctx context.Context, cl custosv1.ClusterServiceClient) (*custosv1.ClusterStatus, error) {
		return cl.AddVoter(ctx, &custosv1.AddVoterRequest{Id: id, RaftAddr: raftAddr})
	})
}

// RemoveServer removes the member with Raft id id (operators only).
func (c *Client) RemoveServer(ctx context.Context, id string) (*custosv1.ClusterStatus, error) {
	return c.onLeader(ctx, "remove server", func(ctx context.Context, cl custosv1.ClusterServiceClient) (*custosv1.ClusterStatus, error) {
		return cl.RemoveServer(ctx, &custosv1.RemoveServerRequest{Id: id})
	})
}

// TransferLeadership asks the leader to hand over to the voter id, or to
// any other voter when id is empty (operators only).
func (c *Client) TransferLeadership(ctx context.Context, id string) (*custosv1.ClusterStatus, error) {
	return c.onLeader(ctx, "transfer leadership", func(ctx context.Context, cl custosv1.ClusterServiceClient) (*custosv1.ClusterStatus, error) {
		return cl.TransferLeadership(ctx, &custosv1.TransferLeadershipRequest{Id: id})
	})
}

// SaveSnapshot streams a snapshot file of the replicated state (ledger
// included) to w (operators only) and checks it as it goes: the header, the
// length and the SHA-256 trailer. On error w may hold a partial file. The
// call timeout does not apply: bound it with ctx.
func (c *Client) SaveSnapshot(ctx context.Context, w io.Writer) error {
	_, err := c.SaveSnapshotHeader(ctx, w)
	return err
}

// SaveSnapshotHeader is SaveSnapshot returning the file's header.
func (c *Client) SaveSnapshotHeader(ctx context.Context, w io.Writer) (*SnapshotHeader, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := c.Cluster().SaveSnapshot(ctx, &custosv1.SaveSnapshotRequest{})
	if err != nil {
		return nil, fmt.Errorf("custos: save snapshot: %w", err)
	}
	v := NewSnapshotVerifier()
	out := io.MultiWriter(v, w)
	for {
		ch, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("custos: save snapshot: %w", err)
		}
		if _, err := out.Write(ch.GetData()); err != nil {
			return nil, fmt.Errorf("custos: save snapshot: %w", err)
		}
	}
	hdr, err := v.Finish()
	if err != nil {
		return nil, fmt.Errorf("custos: save snapshot: %w", err)
	}
	return hdr, nil
}

// Snapshot file format (docs/cluster.md):
//
//	"custos-cluster-snapshot-v1\n"
//	uint32 big endian n, n bytes: SnapshotHeader as JSON
//	header.PayloadSize bytes: the Raft snapshot payload
//	32 bytes: SHA-256 of everything before it
const (
	SnapshotMagic     = "custos-cluster-snapshot-v1\n"
	maxSnapshotHeader = 64 << 10
)

// SnapshotHeader is the JSON header of a snapshot file. A restore must
// refuse a file whose ClusterID is not the cluster being restored.
type SnapshotHeader struct {
	Format      int       `json:"format"`
	ClusterID   string    `json:"cluster_id"`
	NodeID      string    `json:"node_id"`
	RaftIndex   uint64    `json:"raft_index"`
	RaftTerm    uint64    `json:"raft_term"`
	Created     time.Time `json:"created"`
	PayloadSize int64     `json:"payload_size"`
}

// ErrBadSnapshot reports a snapshot file that is malformed, truncated or
// altered.
var ErrBadSnapshot = errors.New("custos: not a valid snapshot file")

// SnapshotVerifier checks a snapshot file written to it, in constant
// memory; Finish reports the result.
type SnapshotVerifier struct {
	h      hash.Hash
	head   []byte // magic, length and header, until parsed
	hdr    *SnapshotHeader
	hdrEnd int64 // file offset where the payload starts
	n      int64 // bytes written
	tail   []byte
	err    error
}

// NewSnapshotVerifier returns a verifier for one file.
func NewSnapshotVerifier() *SnapshotVerifier {
	return &SnapshotVerifier{h: sha256.New()}
}

// Write takes the next bytes of the file. It fails as soon as the header
// is malformed or the file is longer than the header says.
func (v *SnapshotVerifier) Write(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n := len(p)
	v.n += int64(n)
	if v.hdr == nil {
		v.head = append(v.head, p...)
		if err := v.parseHead(); err != nil {
			v.err = err
			return 0, err
		}
	}
	if v.hdr != nil && v.n > v.hdrEnd+v.hdr.PayloadSize+sha256.Size {
		v.err = fmt.Errorf("%w: longer than its header says", ErrBadSnapshot)
		return 0, v.err
	}
	// Everything but the last 32 bytes seen so far is hashed.
	v.tail = append(v.tail, p...)
	if k := len(v.tail) - sha256.Size; k > 0 {
		v.h.Write(v.tail[:k])
		v.tail = append(v.tail[:0], v.tail[k:]...)
	}
	return n, nil
}

func (v *SnapshotVerifier) parseHead() error {
	m := len(SnapshotMagic)
	if len(v.head) < m {
		if !bytes.HasPrefix([]byte(SnapshotMagic), v.head) {
			return fmt.Errorf("%w: wrong magic", ErrBadSnapshot)
		}
		return nil
	}
	if string(v.head[:m]) != SnapshotMagic {
		return fmt.Errorf("%w: wrong magic", ErrBadSnapshot)
	}
	if len(v.head) < m+4 {
		return nil
	}
	hl := int(binary.BigEndian.Uint32(v.head[m : m+4]))
	if hl > maxSnapshotHeader {
		return fmt.Errorf("%w: header of %d bytes", ErrBadSnapshot, hl)
	}
	if len(v.head) < m+4+hl {
		return nil
	}
	var hdr SnapshotHeader
	if err := json.Unmarshal(v.head[m+4:m+4+hl], &hdr); err != nil {
		return fmt.Errorf("%w: header: %v", ErrBadSnapshot, err)
	}
	if hdr.Format != 1 {
		return fmt.Errorf("%w: unknown format %d", ErrBadSnapshot, hdr.Format)
	}
	if hdr.ClusterID == "" || hdr.PayloadSize < 0 {
		return fmt.Errorf("%w: header names no cluster or a negative size", ErrBadSnapshot)
	}
	v.hdr, v.hdrEnd, v.head = &hdr, int64(m+4+hl), nil
	return nil
}

// Finish checks the length and the SHA-256 trailer and returns the header.
func (v *SnapshotVerifier) Finish() (*SnapshotHeader, error) {
	if v.err != nil {
		return nil, v.err
	}
	if v.hdr == nil {
		return nil, fmt.Errorf("%w: truncated in the header", ErrBadSnapshot)
	}
	if want := v.hdrEnd + v.hdr.PayloadSize + sha256.Size; v.n != want {
		return nil, fmt.Errorf("%w: %d bytes, the header says %d (truncated)", ErrBadSnapshot, v.n, want)
	}
	if !bytes.Equal(v.h.Sum(nil), v.tail) {
		return nil, fmt.Errorf("%w: SHA-256 trailer does not match (altered or corrupted)", ErrBadSnapshot)
	}
	return v.hdr, nil
}

// VerifySnapshot reads a whole snapshot file from r, checks it, and returns
// its header.
func VerifySnapshot(r io.Reader) (*SnapshotHeader, error) {
	v := NewSnapshotVerifier()
	if _, err := io.Copy(v, r); err != nil {
		return nil, err
	}
	return v.Finish()
}
