package node_test

import (
	"context"
	"net"
	"testing"

	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
)

// TestRaftAdvertise: a node with RaftAdvertise binds RaftAddr but puts the
// advertised address in the Raft configuration (other nodes dial it, e.g.
// a proxy in front of the node: internal/robustness).
func TestRaftAdvertise(t *testing.T) {
	cfgs, _ := nodetest.ClusterConfigs(t, t.TempDir(), 1)
	cfg := cfgs[0]
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.RaftAdvertise = l.Addr().String() // held, so it is not the bind address
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), nodetest.StartTimeout)
	defer cancel()
	n, err := node.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if got := n.RaftAddr(); got != cfg.RaftAdvertise {
		t.Errorf("RaftAddr() = %s, want the advertised %s", got, cfg.RaftAdvertise)
	}
	servers, err := n.Raft().Servers()
	if err != nil {
		t.Fatal(err)
	}
	if len(servers) != 1 || servers[0].Addr != cfg.RaftAdvertise {
		t.Errorf("Raft configuration %+v, want %s at %s", servers, cfg.ID, cfg.RaftAdvertise)
	}
	// The bind address still serves the transport.
	c, err := net.Dial("tcp", cfg.RaftAddr)
	if err != nil {
		t.Fatalf("bind address %s: %v", cfg.RaftAddr, err)
	}
	_ = c.Close()
}
