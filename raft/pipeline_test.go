package raft_test

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	hraft "github.com/hashicorp/raft"

	"github.com/custos-kms/custos/raft"
)

// rpcAppendEntries is the first byte NetworkTransport writes for an
// AppendEntries request (hashicorp/raft net_transport.go).
const rpcAppendEntries = 0

// dropper loses one AppendEntries request on its way to an address when
// armed: the connection stays open and later requests arrive, so the
// follower sees a gap in the log and answers the next one with
// Success=false — what it also does after a failed log write, or when a
// request is lost after a connection was half torn down.
type dropper struct {
	mu      sync.Mutex
	to      string // armed: the address to lose the next request to
	dropped atomic.Int64
}

func (d *dropper) arm(addr string) {
	d.mu.Lock()
	d.to = addr
	d.mu.Unlock()
}

// drop reports whether the write p to addr is to be lost.
func (d *dropper) drop(addr string, p []byte) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	// NetworkTransport sends each request with one flush of a 256 KiB
	// buffer: with small entries one Write is one whole request.
	if d.to == "" || d.to != addr || len(p) == 0 || p[0] != rpcAppendEntries {
		return false
	}
	d.to = ""
	d.dropped.Add(1)
	return true
}

// faultLayer is a plain-TCP hraft.StreamLayer whose outbound connections
// pass through a dropper.
type faultLayer struct {
	ln net.Listener
	d  *dropper
}

func newFaultLayer(t *testing.T, d *dropper) *faultLayer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &faultLayer{ln: ln, d: d}
}

func (l *faultLayer) Accept() (net.Conn, error) { return l.ln.Accept() }
func (l *faultLayer) Close() error              { return l.ln.Close() }
func (l *faultLayer) Addr() net.Addr            { return l.ln.Addr() }

func (l *faultLayer) Dial(addr hraft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", string(addr), timeout)
	if err != nil {
		return nil, err
	}
	return &faultConn{Conn: c, d: l.d, to: string(addr)}, nil
}

type faultConn struct {
	net.Conn
	d  *dropper
	to string
}

func (c *faultConn) Write(p []byte) (int, error) {
	if c.d.drop(c.to, p) {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// closeWithin closes the nodes and fails the test if that does not finish
// within d, a liveness bound (a wedged raft goroutine makes Shutdown wait
// forever), printing the raft replication goroutines.
func closeWithin(t *testing.T, d time.Duration, nodes ...*raft.Node) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		var wg sync.WaitGroup
		for _, n := range nodes {
			wg.Go(func() { _ = n.Close() })
		}
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d):
		buf := make([]byte, 1<<22)
		buf = buf[:runtime.Stack(buf, true)]
		var stuck []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "hashicorp/raft.(*Raft).pipeline") || strings.Contains(g, "netPipeline") {
				stuck = append(stuck, g)
			}
		}
		t.Errorf("raft shutdown did not finish within %v; raft pipeline goroutines:\n%s", d, strings.Join(stuck, "\n\n"))
	}
}

// TestPipelineFailureDoesNotWedgeReplication: a follower that stops
// answering for a moment under apply load must get every entry once it
// answers again, and the cluster must shut down. With hashicorp/raft's
// pipelined replication a failed pipelined AppendEntries can park the
// leader's replication goroutine for that follower for good: the follower
// still gets heartbeats, never another entry, and Raft.Shutdown never
// returns (raft/nopipeline.go). The nodes here use a NetworkTransport that
// offers pipelining; Open must not use it.
//
// The bounds are liveness bounds, not speed assertions: a healthy cluster
// meets them with a wide margin on a loaded machine.
func TestPipelineFailureDoesNotWedgeReplication(t *testing.T) {
	const (
		episodes = 12
		// A short RPC timeout: without pipelining a lost request costs
		// one timeout.
		rpcTimeout = 200 * time.Millisecond
		liveness   = 30 * time.Second
	)
	var d dropper
	ids := []string{"n1", "n2", "n3"}
	nodes := make([]*raft.Node, 3)
	layers := make([]*faultLayer, 3)
	for i, id := range ids {
		layers[i] = newFaultLayer(t, &d)
		trans := hraft.NewNetworkTransportWithConfig(&hraft.NetworkTransportConfig{
			Logger:  hclogQuiet(),
			Stream:  layers[i],
			MaxPool: 3,
			Timeout: rpcTimeout,
			// MaxRPCsInFlight left at hashicorp's default (2): pipelining
			// on offer.
		})
		cfg := testConfig(id, t.TempDir())
		cfg.Bootstrap = i == 0
		cfg.Transport = trans
		n, err := raft.Open(cfg, &listSM{})
		if err != nil {
			_ = trans.Close()
			t.Fatalf("Open(%s): %v", id, err)
		}
		nodes[i] = n
	}
	t.Cleanup(func() { closeWithin(t, 2*liveness, nodes...) })
	waitLeaderSelf(t, nodes[0])
	ctx := ctxT(t, 5*time.Minute)
	for _, n := range nodes[1:] {
		eventually(t, "AddVoter("+n.ID()+")", func() bool {
			l := leaderOf(nodes)
			return l != nil && l.AddVoter(ctx, n.ID(), n.Addr()) == nil
		})
	}

	// Apply load on whoever leads, until the test ends.
	stop := make(chan struct{})
	var load sync.WaitGroup
	for w := range 8 {
		load.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				l := leaderOf(nodes)
				if l == nil {
					runtime.Gosched()
					continue
				}
				actx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, _ = l.Apply(actx, cmd(fmt.Sprintf("w%d-%d", w, i), 1))
				cancel()
			}
		})
	}
	defer func() { close(stop); load.Wait() }()

	for ep := range episodes {
		var lead *raft.Node
		eventually(t, "a leader", func() bool { lead = leaderOf(nodes); return lead != nil })
		f := 0
		for nodes[f] == lead {
			f++
		}
		// Lose one AppendEntries to f, then wait for it to be lost.
		before := d.dropped.Load()
		d.arm(nodes[f].Addr())
		eventually(t, fmt.Sprintf("episode %d: a request to %s to be lost", ep, nodes[f].ID()), func() bool {
			return d.dropped.Load() > before
		})

		// Every follower must then receive what the leader has.
		target := lead.Stats().LastLogIndex
		deadline := time.Now().Add(liveness)
		for nodes[f].Stats().LastLogIndex < target {
			if time.Now().After(deadline) {
				t.Fatalf("episode %d: follower %s stuck at log index %d, leader %s at %d: replication to it stopped",
					ep, nodes[f].ID(), nodes[f].Stats().LastLogIndex, lead.ID(), lead.Stats().LastLogIndex)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	t.Logf("%d requests lost, every follower caught up each time", d.dropped.Load())
}

func hclogQuiet() hclog.Logger { return hclog.NewNullLogger() }
