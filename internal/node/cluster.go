package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/custos-kms/custos/internal/pki"
	"github.com/custos-kms/custos/kms"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"github.com/custos-kms/custos/raft"
)

// Peer is another member (or future member) of the cluster.
type Peer struct {
	// ID is the peer's Raft id (its certificate's CN is custos-node:<ID>).
	ID string
	// RaftAddr is the peer's Raft transport address.
	RaftAddr string
	// APIAddr is the peer's gRPC address, where this node forwards
	// commands while the peer leads.
	APIAddr string
}

// membershipPoll is how often the allowed set follows the Raft
// configuration, and how often the leader looks for peers to add.
const membershipPoll = 250 * time.Millisecond

// allowedSet is the set of node ids the Raft transport talks to: the ids
// in the current Raft configuration plus the configured peers. Reads are
// lock-free.
type allowedSet struct {
	self  string
	peers map[string]bool
	cur   atomic.Pointer[map[string]bool]
	// isolate cuts this node off (fault tests): nobody is allowed.
	isolate *atomic.Bool
}

func newAllowedSet(self string, peers []Peer, isolate *atomic.Bool) *allowedSet {
	a := &allowedSet{self: self, peers: map[string]bool{}, isolate: isolate}
	for _, p := range peers {
		a.peers[p.ID] = true
	}
	m := map[string]bool{}
	a.cur.Store(&m)
	return a
}

func (a *allowedSet) Allowed(id string) bool {
	if a.isolate != nil && a.isolate.Load() {
		return false
	}
	if a.peers[id] {
		return true
	}
	return (*a.cur.Load())[id]
}

// inConfiguration reports whether id was in the Raft configuration when
// it was last polled.
func (a *allowedSet) inConfiguration(id string) bool { return (*a.cur.Load())[id] }

// isolated reports whether fault injection cut this node off.
func (a *allowedSet) isolated() bool { return a.isolate != nil && a.isolate.Load() }

func (a *allowedSet) update(servers []raft.Server) {
	m := make(map[string]bool, len(servers))
	for _, s := range servers {
		m[s.ID] = true
	}
	a.cur.Store(&m)
}

// nodeTLS is this node's identity towards other nodes.
type nodeTLS struct {
	id    string
	pools *pki.PoolSource // the cluster CA bundle, reloaded when its file changes
	cert  *pki.CertSource
}

func loadNodeTLS(cfg Config) (*nodeTLS, error) {
	pools, err := pki.NewPoolSource(cfg.TLS.CA)
	if err != nil {
		return nil, err
	}
	pool := pools.Current()
	src, err := pki.NewCertSource(cfg.TLS.Cert, cfg.TLS.Key)
	if err != nil {
		return nil, err
	}
	c, err := src.Current()
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return nil, err
	}
	if id, ok := raft.NodeIDFromCert(leaf); !ok || id != cfg.ID {
		return nil, fmt.Errorf("certificate %s has CN %q; a cluster node needs a node certificate with CN %q (pki.IssueNodeCert)",
			cfg.TLS.Cert, leaf.Subject.CommonName, raft.NodeCommonName(cfg.ID))
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("certificate %s is not a client certificate of CA %s: %w", cfg.TLS.Cert, cfg.TLS.CA, err)
	}
	return &nodeTLS{id: cfg.ID, pools: pools, cert: src}, nil
}

// clientConfig is the TLS configuration for dialing node peerID's gRPC
// server: TLS 1.3, our node certificate, and a server that must present
// the node certificate of peerID under the cluster CA (the address is not
// the identity).
func (t *nodeTLS) clientConfig(peerID string) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		InsecureSkipVerify:   true, // replaced by VerifyConnection
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return t.cert.Current() },
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("peer presented no certificate")
			}
			leaf := cs.PeerCertificates[0]
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: t.pools.Current(), Intermediates: inter,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return fmt.Errorf("node %s: certificate not valid under the cluster CA: %w", peerID, err)
			}
			if id, ok := raft.NodeIDFromCert(leaf); !ok || id != peerID {
				return fmt.Errorf("node %s presented certificate CN %q", peerID, leaf.Subject.CommonName)
			}
			return nil
		},
	}
}

// forwarder proposes commands on the leader through its Replication
// service, reusing one connection per peer.
type forwarder struct {
	tls     *nodeTLS
	peers   map[string]string // id -> API address from the configuration
	state   *kms.State
	isolate *atomic.Bool

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn // id+"|"+addr
}

func (f *forwarder) apiAddr(id string) string {
	if a := f.peers[id]; a != "" {
		return a
	}
	// Addresses registered through the log with the node keys.
	_, _, keys := f.state.Checkpoint()
	for i := len(keys) - 1; i >= 0; i-- {
		if keys[i].GetNode() == id && keys[i].GetApiAddr() != "" {
			return keys[i].GetApiAddr()
		}
	}
	return ""
}

func (f *forwarder) conn(id, addr string) (*grpc.ClientConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := id + "|" + addr
	if cc := f.conns[key]; cc != nil {
		return cc, nil
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(f.tls.clientConfig(id))))
	if err != nil {
		return nil, err
	}
	f.conns[key] = cc
	return cc, nil
}

// Forward implements kms.Forwarder.
func (f *forwarder) Forward(ctx context.Context, leaderID string, cmd *raftlogv1.Command) (*raftlogv1.ApplyResult, error) {
	if f.isolate != nil && f.isolate.Load() {
		return nil, errors.New("node isolated (fault injection)")
	}
	addr := f.apiAddr(leaderID)
	if addr == "" {
		return nil, fmt.Errorf("no gRPC address known for leader %s (add it to peers)", leaderID)
	}
	cc, err := f.conn(leaderID, addr)
	if err != nil {
		return nil, err
	}
	return raftlogv1.NewReplicationClient(cc).Apply(ctx, cmd)
}

// ReadIndex asks the leader for a read index (Replication.ReadIndex).
func (f *forwarder) ReadIndex(ctx context.Context, leaderID string) (uint64, error) {
	if f.isolate != nil && f.isolate.Load() {
		return 0, errors.New("node isolated (fault injection)")
	}
	addr := f.apiAddr(leaderID)
	if addr == "" {
		return 0, fmt.Errorf("no gRPC address known for leader %s (add it to peers)", leaderID)
	}
	cc, err := f.conn(leaderID, addr)
	if err != nil {
		return 0, err
	}
	r, err := raftlogv1.NewReplicationClient(cc).ReadIndex(ctx, &raftlogv1.ReadIndexRequest{})
	if err != nil {
		return 0, err
	}
	return r.GetIndex(), nil
}

func (f *forwarder) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, cc := range f.conns {
		_ = cc.Close()
		delete(f.conns, k)
	}
}

// Admitted reports whether this node's HSM holds the cluster's domain key,
// so that it can do key crypto. A node that joined a cluster without being
// admitted replicates everything and forwards commands, but refuses crypto.
func (n *Node) Admitted(ctx context.Context) bool {
	return n.svc.Admitted(ctx)
}

// followMembership keeps the allowed set equal to the Raft configuration
// (plus the configured peers) and, with AddPeers, adds configured peers
// that are missing from the configuration while this node leads.
func (n *Node) followMembership(ctx context.Context) {
	t := time.NewTicker(membershipPoll)
	defer t.Stop()
	for {
		if servers, err := n.raft.Servers(); err == nil {
			if n.allowed != nil {
				n.allowed.update(servers)
			}
			if n.cfg.AddPeers && n.raft.IsLeader() {
				n.addMissingPeers(ctx, servers)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (n *Node) addMissingPeers(ctx context.Context, servers []raft.Server) {
	have := map[string]bool{}
	for _, s := range servers {
		have[s.ID] = true
	}
	for _, p := range n.cfg.Peers {
		if have[p.ID] || p.ID == n.cfg.ID || p.RaftAddr == "" {
			continue
		}
		// Only once its Raft port answers: adding a voter that is not
		// running would cost the cluster its quorum.
		c, err := net.DialTimeout("tcp", p.RaftAddr, time.Second)
		if err != nil {
			continue
		}
		_ = c.Close()
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = n.raft.AddVoter(actx, p.ID, p.RaftAddr)
		cancel()
		if err != nil {
			n.log.Warn("could not add configured peer", "peer", p.ID, "raft", p.RaftAddr, "err", err)
			continue
		}
		n.log.Info("added configured peer as a voter", "peer", p.ID, "raft", p.RaftAddr)
	}
}

// waitCaughtUp waits, on a node that does not lead, until it has applied
// everything the leader told it is committed, so that it reads the
// cluster's state (cluster id, keys) before deciding how to start.
func (n *Node) waitCaughtUp(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if n.raft.IsLeader() {
			return n.raft.Barrier(ctx)
		}
		// Raft's AppliedIndex counts entries handed to the state machine,
		// not yet applied; so a node that has a cluster to find in its log
		// (one joining, or one restarting) also waits for the cluster id —
		// a bootstrap node restarting as a follower that read its state too
		// early found none and tried to initialise the cluster again
		// (docs/robustness.md, KI-4).
		st := n.raft.Stats()
		needID := n.cfg.Join || n.raft.HadState()
		if st.CommitIndex > 0 && st.AppliedIndex >= st.CommitIndex && (!needID || n.svc.ClusterID() != "") {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node: catch up with the leader's log: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// Read indexes (kms/readindex.go): Encrypt and GenerateDataKey on any node
// first make sure the node has applied everything committed before the
// request, so that no node seals under a key whose revoke or disable the
// cluster has acknowledged (docs/architecture.md, invariant 3; docs/robustness.md, KI-2).

// readIndexRetry is the pause between attempts while no leader is known
// or the leader changes; readIndexAttempts bounds them.
const (
	readIndexRetry    = 50 * time.Millisecond
	readIndexAttempts = 20
)

// readIndexes holds a node's read-index functions, both coalesced
// (kms.CoalesceReadIndex): concurrent requests share a round.
type readIndexes struct {
	n     *Node
	state *kms.State
	// leader is the leader's side: a barrier through the log, which
	// commits only with a quorum in this node's term — proof that it still
	// leads — and returns once everything before it is applied here.
	leader kms.ReadIndexFunc
	// any is this node's: the leader's side on the leader, else the
	// leader's answer over Replication.ReadIndex.
	any kms.ReadIndexFunc
}

func newReadIndexes(n *Node, state *kms.State, timeout time.Duration) *readIndexes {
	r := &readIndexes{n: n, state: state}
	r.leader = kms.CoalesceReadIndex(r.leaderOnce, timeout)
	r.any = kms.CoalesceReadIndex(r.anyOnce, timeout)
	return r
}

// leaderOnce is one leader-side round.
// TODO(raft): with raft.Node.VerifyLeader (a heartbeat round, no log
// write) this becomes: i := commit index in this term; VerifyLeader; wait
// applied ≥ i — cheaper than a barrier entry per round.
func (r *readIndexes) leaderOnce(ctx context.Context) (uint64, error) {
	if r.soleVoter() {
		// No other node can commit anything, and what this node
		// acknowledged it applied first: its state is the newest.
		return r.state.AppliedIndex(), nil
	}
	if err := r.n.raft.Barrier(ctx); err != nil {
		return 0, err
	}
	// The State's applied index, not Raft's: it counts only the entries
	// the State applies, so a follower waiting for it does reach it.
	return r.state.AppliedIndex(), nil
}

// soleVoter reports whether this node leads a configuration (the latest,
// committed or not, as Raft counts quorums) in which it is the only voter.
func (r *readIndexes) soleVoter() bool {
	servers, err := r.n.raft.Servers()
	if err != nil {
		return false
	}
	voters := 0
	for _, s := range servers {
		if s.Suffrage != "Nonvoter" {
			if s.ID != r.n.cfg.ID {
				return false
			}
			voters++
		}
	}
	return voters == 1 && r.n.raft.IsLeader()
}

// anyOnce is one round on any node, retrying across a leader change.
func (r *readIndexes) anyOnce(ctx context.Context) (uint64, error) {
	last := errors.New("no leader is known")
	for i := 0; i < readIndexAttempts; i++ {
		if r.n.raft.IsLeader() {
			idx, err := r.leader(ctx)
			if err == nil || !errors.Is(err, raft.ErrNotLeader) {
				return idx, err
			}
			last = err
		} else if _, id := r.n.raft.Leader(); id != "" && id != r.n.cfg.ID && r.n.fwd != nil {
			idx, err := r.n.fwd.ReadIndex(ctx, id)
			if err == nil {
				return idx, nil
			}
			last = err
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%v (last attempt: %v)", ctx.Err(), last)
		case <-time.After(readIndexRetry):
		}
	}
	return 0, fmt.Errorf("no leader confirmed a read index: %v", last)
}

// replicationLeader is what the Replication service serves from: the Raft
// node, the leader side of a read index, and the set of member ids.
type replicationLeader struct {
	*raft.Node
	ri      *readIndexes
	members *allowedSet
	now     func() time.Time // Config.Now; time.Now if nil
}

// Now is the node's clock (api.ReplicationClock): the leader checks
// forwarded commands' stamps against it.
func (l replicationLeader) Now() time.Time {
	if l.now != nil {
		return l.now()
	}
	return time.Now()
}

// IsMember reports whether id is in the Raft configuration now (an
// isolated node accepts no one). A configured peer that is not in it — a
// node removed, or the old nodes of a cluster restored from a snapshot
// file, whose configuration lists them still — proposes nothing and reads
// nothing through the Replication service, though the Raft transport
// accepts its connections.
func (l replicationLeader) IsMember(id string) bool {
	if l.members.isolated() {
		return false
	}
	// The configuration as last polled (every membershipPoll), and the
	// current one for a node added since.
	return l.members.inConfiguration(id) || l.Node.HasServer(id)
}

func (l replicationLeader) LeaderReadIndex(ctx context.Context) (uint64, error) {
	return l.ri.leader(ctx)
}
