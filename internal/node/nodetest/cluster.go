package nodetest

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/pki"
	"github.com/custos-kms/custos/softhsm"
)

// Member is one node of a test Cluster.
type Member struct {
	// Node is the running node; nil while killed.
	Node *node.Node
	// Config is the node's configuration (Restart reuses it).
	Config node.Config
	// Token is the node's own SoftHSM2 token.
	Token *softhsm.Token
	// Addr is the node's gRPC address (fixed across restarts).
	Addr string
	// Isolated cuts the node off from the others while true (a network
	// partition of the Raft transport and of forwarding).
	Isolated *atomic.Bool
}

// Cluster is n real custos nodes in this process, Raft over mutual TLS on
// loopback, each with its own SoftHSM2 token and data directory, all with
// node certificates of one test CA. Node 0 bootstraps and initialises the
// cluster (only its HSM holds the domain key); the others join, added by the
// leader with AddVoter.
type Cluster struct {
	Members []*Member
	// Dir holds Dir/pki (the CA, node and client certificates) and
	// Dir/node<i> (data directories).
	Dir    string
	CAFile string
	// Officers are the cluster's security officers (2 of 3).
	Officers []Officer

	mu    sync.Mutex
	conns []*grpc.ClientConn
}

// Listen gives m.Config open listeners on the member's addresses, for a
// test that starts m.Config itself (node.Start) after the member was
// killed; Restart and Join call it. See relisten.
func (m *Member) Listen() error { return m.relisten() }

// relisten gives m.Config listeners on the member's addresses. The ports
// are held by the harness for the whole test (keptPort): a node that was
// killed closed its lease, and the restarted one gets a new lease on the
// same port, never binding it again. A listener the test supplied itself
// is left alone; with none, one is opened on the address.
func (m *Member) relisten() error {
	for _, p := range []struct {
		l    *net.Listener
		addr string
	}{{&m.Config.Listener, m.Config.Listen}, {&m.Config.RaftListener, m.Config.RaftAddr}} {
		if ls, ok := (*p.l).(*lease); ok {
			if ls.closed() {
				*p.l = ls.k.lend()
			}
			continue
		}
		if *p.l != nil {
			continue // the test's own listener: its business
		}
		l, err := net.Listen("tcp", p.addr)
		if err != nil {
			return fmt.Errorf("nodetest: listen on %s: %w", p.addr, err)
		}
		*p.l = l
	}
	return nil
}

// ClusterConfigs returns the configurations of an n-node cluster in dir,
// with node certificates issued by the CA in dir/pki, and the officers (set
// on node 0, which bootstraps; the others join). Each configuration carries
// listeners already open on its addresses (Listener, RaftListener), which
// the node started with it takes over.
func ClusterConfigs(tb testing.TB, dir string, n int) ([]node.Config, []Officer) {
	tb.Helper()
	pkiDir := filepath.Join(dir, "pki")
	if err := pki.CreateDevPKI(pkiDir, []string{"127.0.0.1", "localhost"}); err != nil {
		tb.Fatal(err)
	}
	var peers []node.Peer
	var apiLis, raftLis []net.Listener
	for i := 0; i < n; i++ {
		apiLis, raftLis = append(apiLis, keepPort(tb).lend()), append(raftLis, keepPort(tb).lend())
		peers = append(peers, node.Peer{ID: fmt.Sprintf("node%d", i+1),
			RaftAddr: raftLis[i].Addr().String(), APIAddr: apiLis[i].Addr().String()})
	}
	officers, pub := NewOfficers(tb, dir)
	var cfgs []node.Config
	for i := 0; i < n; i++ {
		tok := softhsm.TestToken(tb)
		var cfg node.Config
		cfg.ID = peers[i].ID
		cfg.DataDir = filepath.Join(dir, cfg.ID)
		cfg.Listen, cfg.Listener = peers[i].APIAddr, apiLis[i]
		cfg.RaftAddr, cfg.RaftListener = peers[i].RaftAddr, raftLis[i]
		cfg.PKCS11.Module, cfg.PKCS11.TokenLabel, cfg.PKCS11.PIN = tok.Module, tok.Label, tok.PIN
		certFile, keyFile, err := pki.IssueNodeCert(pkiDir, cfg.ID, []string{"127.0.0.1", "localhost"})
		if err != nil {
			tb.Fatal(err)
		}
		cfg.TLS.CA, cfg.TLS.Cert, cfg.TLS.Key = filepath.Join(pkiDir, pki.CAFile), certFile, keyFile
		cfg.RaftTLS = true
		cfg.RaftLocalTimeouts = true
		cfg.Auditors = []string{Auditor}
		cfg.NoNotifier = true
		cfg.CheckpointEvery, cfg.CheckpointInterval = CheckpointEvery, CheckpointInterval
		cfg.Logger = Logger().With("node", cfg.ID)
		for j, p := range peers {
			if j != i {
				cfg.Peers = append(cfg.Peers, p)
			}
		}
		if i == 0 {
			cfg.Bootstrap = true
			cfg.Officers, cfg.Quorum = pub, Quorum
		} else {
			cfg.Join = true
		}
		cfg.Isolate = new(atomic.Bool)
		cfgs = append(cfgs, cfg)
	}
	return cfgs, officers
}

// StartCluster starts an n-node cluster; t.Cleanup closes it.
func StartCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	return StartClusterOf(tb, n, n)
}

// StartClusterOf configures n nodes and starts the first `start` of them
// (the others can be started with Join after changing their Config).
func StartClusterOf(tb testing.TB, n, start int) *Cluster {
	tb.Helper()
	return StartClusterWith(tb, n, start, nil)
}

// StartClusterWith is StartClusterOf with mod, if not nil, changing each
// node's configuration (mod(i, &cfg)) before any node starts.
func StartClusterWith(tb testing.TB, n, start int, mod func(i int, cfg *node.Config)) *Cluster {
	tb.Helper()
	dir := tb.TempDir()
	cfgs, officers := ClusterConfigs(tb, dir, n)
	if mod != nil {
		for i := range cfgs {
			mod(i, &cfgs[i])
		}
	}
	c := &Cluster{Dir: dir, CAFile: cfgs[0].TLS.CA, Officers: officers}
	for i := range cfgs {
		c.Members = append(c.Members, &Member{Config: cfgs[i], Addr: cfgs[i].Listen, Isolated: cfgs[i].Isolate})
	}
	tb.Cleanup(func() { c.close(tb) })
	c.start(tb, 0)
	for i := 1; i < start; i++ {
		c.Join(tb, i)
	}
	return c
}

func (c *Cluster) start(tb testing.TB, i int) {
	tb.Helper()
	if err := c.Members[i].relisten(); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	nd, err := node.Start(ctx, c.Members[i].Config)
	if err != nil {
		tb.Fatalf("nodetest: start %s: %v", c.Members[i].Config.ID, err)
	}
	c.Members[i].Node = nd
}

// Join starts member i (configured to join) while the leader adds it as a
// voter, and waits for both.
func (c *Cluster) Join(tb testing.TB, i int) {
	tb.Helper()
	if err := c.TryJoin(i); err != nil {
		tb.Fatal(err)
	}
}

// TryJoin is Join returning the error of the joining node's start.
func (c *Cluster) TryJoin(i int) error { return c.TryJoinWithin(i, StartTimeout) }

// TryJoinWithin is TryJoin bounded by d.
func (c *Cluster) TryJoinWithin(i int, d time.Duration) error {
	m := c.Members[i]
	if err := m.relisten(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		nd, err := node.Start(ctx, m.Config)
		m.Node = nd
		done <- err
	}()
	l := c.Leader()
	if l < 0 {
		return fmt.Errorf("nodetest: no leader to add %s", m.Config.ID)
	}
	if err := c.Members[l].Node.Raft().AddVoter(ctx, m.Config.ID, m.Config.RaftAddr); err != nil {
		cancel()
		<-done
		return fmt.Errorf("nodetest: add voter %s: %w", m.Config.ID, err)
	}
	if err := <-done; err != nil {
		return fmt.Errorf("nodetest: start %s: %w", m.Config.ID, err)
	}
	return nil
}

// Leader returns the index of the member that leads (-1 if none, after
// waiting up to StartTimeout for one).
func (c *Cluster) Leader() int {
	deadline := time.Now().Add(StartTimeout)
	for time.Now().Before(deadline) {
		for i, m := range c.Members {
			if m.Node != nil && m.Node.Raft().IsLeader() {
				return i
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return -1
}

// Kill stops member i (its Raft, gRPC server, ledger and HSM session).
func (c *Cluster) Kill(tb testing.TB, i int) {
	tb.Helper()
	m := c.Members[i]
	if m.Node == nil {
		return
	}
	if err := m.Node.Close(); err != nil {
		tb.Logf("nodetest: close %s: %v", m.Config.ID, err)
	}
	m.Node = nil
}

// Restart starts a killed member i again on its data directory and token.
func (c *Cluster) Restart(tb testing.TB, i int) {
	tb.Helper()
	c.start(tb, i)
}

func (c *Cluster) close(tb testing.TB) {
	c.mu.Lock()
	conns := c.conns
	c.conns = nil
	c.mu.Unlock()
	for _, cc := range conns {
		_ = cc.Close()
	}
	for i := range c.Members {
		c.Kill(tb, i)
	}
}

// ClientTLS returns a client TLS configuration for principal cn under the
// cluster CA.
func (c *Cluster) ClientTLS(tb testing.TB, cn string) *tls.Config {
	tb.Helper()
	pkiDir := filepath.Dir(c.CAFile)
	c.mu.Lock()
	err := pki.CreateDevPKI(pkiDir, nil, cn)
	c.mu.Unlock()
	if err != nil {
		tb.Fatal(err)
	}
	certFile, keyFile := pki.ClientFiles(pkiDir, cn)
	cfg, err := pki.ClientTLSConfig(c.CAFile, certFile, keyFile)
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// Conn returns a gRPC connection to member i authenticated as cn; it
// reconnects across restarts and is closed when the test ends.
func (c *Cluster) Conn(tb testing.TB, i int, cn string) *grpc.ClientConn {
	tb.Helper()
	cc, err := grpc.NewClient(c.Members[i].Addr, grpc.WithTransportCredentials(credentials.NewTLS(c.ClientTLS(tb, cn))))
	if err != nil {
		tb.Fatal(err)
	}
	c.mu.Lock()
	c.conns = append(c.conns, cc)
	c.mu.Unlock()
	return cc
}

// ClusterID returns the cluster id (from the first running member).
func (c *Cluster) ClusterID() string {
	for _, m := range c.Members {
		if m.Node != nil {
			return m.Node.ClusterID()
		}
	}
	return ""
}
