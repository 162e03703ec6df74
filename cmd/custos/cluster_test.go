package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-kms/custos/api"
	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/hsm/pkcs11"
	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/internal/pki"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// clusterAddr returns the gRPC address serving the ClusterService of h's
// node, with "operator" as its operator: the node's own server when it
// registers the service, else one served here over the node's pieces.
func clusterAddr(t *testing.T, h *nodetest.Harness) string {
	t.Helper()
	pkiDir := filepath.Dir(h.CAFile)
	tlsCfg, err := pki.ServerTLSConfig(h.CAFile, filepath.Join(pkiDir, pki.ServerFile), filepath.Join(pkiDir, pki.ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	srv, err := api.NewServer(api.Options{Service: h.Node.Service(), TLS: tlsCfg, Logger: slog.New(slog.DiscardHandler), Context: sctx})
	if err != nil {
		t.Fatal(err)
	}
	b, err := pkcs11.Open(sctx, pkcs11.Config{Module: h.Token.Module, TokenLabel: h.Token.Label, PIN: h.Token.PIN})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := srv.GetServiceInfo()[custosv1.ClusterService_ServiceDesc.ServiceName]; !ok {
		custosv1.RegisterClusterServiceServer(srv, api.NewClusterServer(api.ClusterDeps{
			Raft: h.Node.Raft(), Service: h.Node.Service(), HSM: b,
			IsOperator: func(p string) bool { return p == "operator" },
		}))
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = srv.Serve(lis); close(done) }()
	t.Cleanup(func() { cancel(); srv.Stop(); <-done; b.Close() })
	return lis.Addr().String()
}

func TestClusterCommands(t *testing.T) {
	clearEnv(t)
	h := nodetest.Start(t)
	addr := clusterAddr(t, h)
	usePrincipal(t, h, "app")
	t.Setenv(custos.EnvAddr, addr)

	t.Run("status table", func(t *testing.T) {
		r := runCLI(t, "", "cluster", "status")
		t.Log("\n" + r.stdout)
		r.want(t, 0, "ADDRESS", "NODE", "DOMAIN KEY", addr, "node1", "LEADER", "healthy", "yes",
			"Cluster "+h.Node.ClusterID(), h.Node.RaftAddr(), "VOTER")
	})

	t.Run("status with an unreachable node", func(t *testing.T) {
		dead := nodetest.RefusedAddr(t)
		r := runCLI(t, "", "--addr", addr+","+dead, "cluster", "status")
		t.Log("\n" + r.stdout)
		r.want(t, 0, addr, dead, "UNREACHABLE", "Notes:")
		r = runCLI(t, "", "--addr", dead, "cluster", "status")
		r.want(t, 1, "no node answered")
	})

	t.Run("status json", func(t *testing.T) {
		r := runCLI(t, "", "cluster", "status", "--json")
		r.want(t, 0)
		var v struct {
			Addr   string `json:"addr"`
			Status struct {
				ClusterID    string `json:"cluster_id"`
				NodeID       string `json:"node_id"`
				RaftState    string `json:"raft_state"`
				HasDomainKey bool   `json:"has_domain_key"`
				Servers      []struct {
					ID string `json:"id"`
				} `json:"servers"`
			} `json:"status"`
		}
		if err := json.Unmarshal([]byte(strings.TrimSpace(r.stdout)), &v); err != nil {
			t.Fatalf("%v: %s", err, r.stdout)
		}
		if v.Addr != addr || v.Status.ClusterID != h.Node.ClusterID() || v.Status.NodeID != "node1" ||
			v.Status.RaftState != "LEADER" || !v.Status.HasDomainKey || len(v.Status.Servers) != 1 {
			t.Errorf("json %+v", v)
		}
	})

	t.Run("changes need an operator", func(t *testing.T) {
		for _, args := range [][]string{
			{"cluster", "add-voter", "node2", "127.0.0.1:7001"},
			{"cluster", "remove", "node2"},
			{"cluster", "transfer-leadership"},
			{"cluster", "snapshot", "save", filepath.Join(t.TempDir(), "snap")},
		} {
			r := runCLI(t, "", args...)
			r.want(t, 1, "PermissionDenied", "operators")
		}
	})

	t.Run("usage", func(t *testing.T) {
		runCLI(t, "", "cluster", "add-voter", "node2").want(t, 2, "too few arguments")
		runCLI(t, "", "cluster", "remove").want(t, 2, "too few arguments")
		runCLI(t, "", "cluster", "transfer-leadership", "a", "b").want(t, 2, "unexpected argument")
		runCLI(t, "", "cluster", "snapshot", "save").want(t, 2, "too few arguments")
		runCLI(t, "", "cluster").want(t, 2, "Usage: custos cluster SUBCOMMAND")
		runCLI(t, "", "cluster", "snapshot", "--help").want(t, 0, "save")
	})

	usePrincipal(t, h, "operator")
	t.Setenv(custos.EnvAddr, addr)

	t.Run("operator changes checked by the leader", func(t *testing.T) {
		runCLI(t, "", "cluster", "remove", "ghost").want(t, 1, "no server \"ghost\"", "NotFound")
		runCLI(t, "", "cluster", "remove", "node1").want(t, 1, "only voter", "FailedPrecondition")
		runCLI(t, "", "cluster", "transfer-leadership").want(t, 1, "no other voter")
		runCLI(t, "", "cluster", "add-voter", "node2", "no-port").want(t, 1, "want host:port", "InvalidArgument")
	})

	t.Run("snapshot save", func(t *testing.T) {
		dir := t.TempDir()
		file := filepath.Join(dir, "custos.snap")
		r := runCLI(t, "", "cluster", "snapshot", "save", file)
		r.want(t, 0, "snapshot of cluster "+h.Node.ClusterID(), "node1", file)
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		hdr, err := custos.VerifySnapshot(f)
		if err != nil || hdr.ClusterID != h.Node.ClusterID() {
			t.Fatalf("VerifySnapshot: %+v, %v", hdr, err)
		}
		if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("mode %v, %v", fi.Mode(), err)
		}
		r = runCLI(t, "", "cluster", "snapshot", "save", "--json", file)
		r.want(t, 0, `"cluster_id":"`+h.Node.ClusterID()+`"`)
		ents, _ := os.ReadDir(dir)
		if len(ents) != 1 {
			t.Errorf("directory holds %d entries, want the snapshot only", len(ents))
		}
		// A failed save leaves FILE as it was and no temporary file.
		usePrincipal(t, h, "app")
		t.Setenv(custos.EnvAddr, addr)
		before, _ := os.ReadFile(file)
		runCLI(t, "", "cluster", "snapshot", "save", file).want(t, 1, "PermissionDenied")
		after, _ := os.ReadFile(file)
		if string(before) != string(after) {
			t.Error("a failed save changed FILE")
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Errorf("temporary file left behind: %d entries", len(ents))
		}
	})
}

// TestClusterCommandsThreeNodes drives a real three-node cluster (Raft over
// mutual TLS, one SoftHSM token per node) with the CLI only: the operator
// adds two joining nodes, looks at every node, moves the leadership, removes
// a node through a follower, and saves a snapshot from a follower.
func TestClusterCommandsThreeNodes(t *testing.T) {
	clearEnv(t)
	c := nodetest.StartClusterOf(t, 3, 1)
	for _, m := range c.Members {
		m.Config.Operators = []string{"operator"}
	}
	// Node 1 started without operators: restart it with them.
	c.Kill(t, 0)
	c.Restart(t, 0)

	c.ClientTLS(t, "operator")
	cert, key := pki.ClientFiles(filepath.Dir(c.CAFile), "operator")
	addrs := []string{c.Members[0].Addr, c.Members[1].Addr, c.Members[2].Addr}
	t.Setenv(custos.EnvAddr, strings.Join(addrs, ","))
	t.Setenv(custos.EnvCA, c.CAFile)
	t.Setenv(custos.EnvCert, cert)
	t.Setenv(custos.EnvKey, key)

	for i := 1; i <= 2; i++ {
		m := c.Members[i]
		ctx, cancel := context.WithTimeout(context.Background(), nodetest.StartTimeout)
		done := make(chan error, 1)
		go func() {
			nd, err := node.Start(ctx, m.Config)
			m.Node = nd
			done <- err
		}()
		runCLI(t, "", "cluster", "add-voter", m.Config.ID, m.Config.RaftAddr).want(t, 0, m.Config.ID, "VOTER")
		err := <-done
		cancel()
		if err != nil {
			t.Fatalf("start %s: %v", m.Config.ID, err)
		}
	}

	r := runCLI(t, "", "cluster", "status")
	t.Log("\n" + r.stdout)
	r.want(t, 0, "Cluster "+c.ClusterID())
	rows := map[string]string{}
	for _, line := range strings.Split(r.stdout, "\n") {
		if f := strings.Fields(line); len(f) == 10 && f[0] != "ADDRESS" {
			rows[f[1]] = f[2] + " " + f[3] + " " + f[8] + " " + f[9]
		}
	}
	want := map[string]string{
		"node1": "LEADER node1 healthy yes",
		"node2": "FOLLOWER node1 healthy NO",
		"node3": "FOLLOWER node1 healthy NO",
	}
	for id, w := range want {
		if rows[id] != w {
			t.Errorf("row of %s: %q, want %q", id, rows[id], w)
		}
	}
	if n := strings.Count(r.stdout, "VOTER"); n != 3 {
		t.Errorf("%d voters listed, want 3", n)
	}

	runCLI(t, "", "cluster", "transfer-leadership", "node2").want(t, 0)
	deadline := time.Now().Add(nodetest.StartTimeout)
	for c.Leader() != 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if l := c.Leader(); l != 1 {
		t.Fatalf("leader is member %d after the transfer, want 1", l)
	}

	// The first address is now a follower: the CLI finds the leader.
	runCLI(t, "", "cluster", "remove", "node3").want(t, 0)
	c.Kill(t, 2)
	r = runCLI(t, "", "--addr", addrs[0], "cluster", "status", "--json")
	r.want(t, 0, `"leader_id":"node2"`)
	if strings.Contains(r.stdout, `"id":"node3"`) {
		t.Errorf("node3 still a member: %s", r.stdout)
	}

	file := filepath.Join(t.TempDir(), "snap")
	runCLI(t, "", "--addr", addrs[0], "cluster", "snapshot", "save", file).want(t, 0, "node1", c.ClusterID())
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if hdr, err := custos.VerifySnapshot(f); err != nil || hdr.ClusterID != c.ClusterID() || hdr.NodeID != "node1" {
		t.Fatalf("snapshot: %+v, %v", hdr, err)
	}
}
