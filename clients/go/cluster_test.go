package custos_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/custos-kms/custos/api"
	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/hsm/pkcs11"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/internal/pki"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"github.com/custos-kms/custos/raft"
)

const clusterOperator = "operator"

// serveCluster serves the ClusterService over deps behind the real api
// server (mutual TLS, authentication) with the harness's PKI on loopback,
// and returns its address. (The node's own server may not register the
// ClusterService; this one always does, with the operator "operator".)
func serveCluster(t *testing.T, h *nodetest.Harness, deps api.ClusterDeps) string {
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
	if _, ok := srv.GetServiceInfo()[custosv1.ClusterService_ServiceDesc.ServiceName]; ok {
		t.Fatal("api.NewServer registers a ClusterService of its own")
	}
	deps.IsOperator = func(p string) bool { return p == clusterOperator }
	custosv1.RegisterClusterServiceServer(srv, api.NewClusterServer(deps))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = srv.Serve(lis); close(done) }()
	t.Cleanup(func() { cancel(); srv.Stop(); <-done })
	return lis.Addr().String()
}

func tokenHSM(t *testing.T, h *nodetest.Harness) hsm.Backend {
	t.Helper()
	b, err := pkcs11.Open(testCtx(t), pkcs11.Config{Module: h.Token.Module, TokenLabel: h.Token.Label, PIN: h.Token.PIN})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// fakeRaft plays one member of a three-node configuration.
type fakeRaft struct {
	id, state string
	mu        sync.Mutex
	calls     []string
}

func (f *fakeRaft) ID() string { return f.id }
func (f *fakeRaft) Stats() raft.Stats {
	return raft.Stats{State: f.state, Term: 3, Leader: "10.0.0.2:7001"}
}
func (f *fakeRaft) Leader() (string, string) {
	return "10.0.0.2:7001", "n2"
}
func (f *fakeRaft) Servers() ([]raft.Server, error) {
	return []raft.Server{
		{ID: "n1", Addr: "10.0.0.1:7001", Suffrage: "Voter"},
		{ID: "n2", Addr: "10.0.0.2:7001", Suffrage: "Voter"},
		{ID: "n3", Addr: "10.0.0.3:7001", Suffrage: "Voter"},
	}, nil
}
func (f *fakeRaft) record(c string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
	return nil
}
func (f *fakeRaft) AddVoter(_ context.Context, id, addr string) error {
	return f.record("add " + id + " " + addr)
}
func (f *fakeRaft) RemoveServer(_ context.Context, id string) error { return f.record("remove " + id) }
func (f *fakeRaft) TransferLeadership(_ context.Context, id string) error {
	return f.record("transfer " + id)
}
func (f *fakeRaft) OpenSnapshot(context.Context) (raft.SnapshotMeta, io.ReadCloser, error) {
	return raft.SnapshotMeta{}, nil, errors.New("no snapshots here")
}

func TestCluster(t *testing.T) {
	h := nodetest.Start(t)
	real := serveCluster(t, h, api.ClusterDeps{Raft: h.Node.Raft(), Service: h.Node.Service(), HSM: tokenHSM(t, h)})
	dialCN := func(cn string, addrs ...string) *custos.Client {
		c, err := custos.Dial(context.Background(), custos.Config{Addrs: addrs, TLS: h.ClientTLS(t, cn)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	t.Run("status from every address", func(t *testing.T) {
		dead := nodetest.RefusedAddr(t)
		c := dialCN("app", dead, real)
		sts, errs := c.ClusterStatusAll(testCtx(t))
		if len(sts) != 2 || len(errs) != 2 {
			t.Fatalf("%d statuses, %d errors", len(sts), len(errs))
		}
		if sts[0] != nil || errs[0] == nil || !strings.Contains(errs[0].Error(), dead) {
			t.Errorf("dead address: %v, %v", sts[0], errs[0])
		}
		if errs[1] != nil || sts[1].GetNodeId() != "node1" || sts[1].GetClusterId() != h.Node.ClusterID() || !sts[1].GetHasDomainKey() {
			t.Errorf("live address: %v, %v", sts[1], errs[1])
		}
		st, err := c.ClusterStatus(testCtx(t))
		if err != nil || st.GetRaftState() != "LEADER" {
			t.Errorf("ClusterStatus: %v, %v", st, err)
		}
	})

	t.Run("snapshot", func(t *testing.T) {
		var buf bytes.Buffer
		err := dialCN("app", real).SaveSnapshot(testCtx(t), &buf)
		wantCode(t, "SaveSnapshot as app", err, codes.PermissionDenied)
		buf.Reset()
		hdr, err := dialCN(clusterOperator, real).SaveSnapshotHeader(testCtx(t), &buf)
		if err != nil {
			t.Fatal(err)
		}
		if hdr.ClusterID != h.Node.ClusterID() || hdr.RaftIndex == 0 {
			t.Errorf("header %+v", hdr)
		}
		again, err := custos.VerifySnapshot(bytes.NewReader(buf.Bytes()))
		if err != nil || *again != *hdr {
			t.Errorf("VerifySnapshot: %+v, %v", again, err)
		}
	})

	t.Run("membership changes find the leader", func(t *testing.T) {
		hb := tokenHSM(t, h)
		follower := &fakeRaft{id: "n1", state: "Follower"}
		leader := &fakeRaft{id: "n2", state: "Leader"}
		fAddr := serveCluster(t, h, api.ClusterDeps{Raft: follower, Service: h.Node.Service(), HSM: hb})
		lAddr := serveCluster(t, h, api.ClusterDeps{Raft: leader, Service: h.Node.Service(), HSM: hb})
		c := dialCN(clusterOperator, fAddr, lAddr)
		if _, err := c.AddVoter(testCtx(t), "n4", "10.0.0.4:7001"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.RemoveServer(testCtx(t), "n3"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.TransferLeadership(testCtx(t), ""); err != nil {
			t.Fatal(err)
		}
		if len(follower.calls) != 0 {
			t.Errorf("the follower was asked to change: %v", follower.calls)
		}
		if got := strings.Join(leader.calls, "|"); got != "add n4 10.0.0.4:7001|remove n3|transfer " {
			t.Errorf("leader calls %q", got)
		}
		// With only the follower configured, the error names the leader.
		_, err := dialCN(clusterOperator, fAddr).RemoveServer(testCtx(t), "n3")
		if id, addr, ok := custos.NotLeader(err); !ok || id != "n2" || addr != "10.0.0.2:7001" {
			t.Errorf("NotLeader(%v) = %q %q %v", err, id, addr, ok)
		}
		_, err = dialCN("app", lAddr).RemoveServer(testCtx(t), "n3")
		wantCode(t, "RemoveServer as app", err, codes.PermissionDenied)
	})
}

func TestSnapshotVerifier(t *testing.T) {
	var file bytes.Buffer
	payload := bytes.Repeat([]byte{7}, 100000)
	hdr := api.SnapshotFileHeader{Format: 1, ClusterID: "c", NodeID: "n", RaftIndex: 1, RaftTerm: 1, PayloadSize: int64(len(payload))}
	if err := api.WriteSnapshotFile(&file, hdr, bytes.NewReader(payload)); err != nil {
		t.Fatal(err)
	}
	data := file.Bytes()
	// Written in odd pieces, it verifies.
	v := custos.NewSnapshotVerifier()
	for i := 0; i < len(data); i += 333 {
		if _, err := v.Write(data[i:min(i+333, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := v.Finish(); err != nil || got.ClusterID != "c" {
		t.Fatalf("Finish: %+v, %v", got, err)
	}
	for name, bad := range map[string][]byte{
		"empty":         nil,
		"wrong magic":   append([]byte("custos-cluster-snapshot-v2\n"), data[len(custos.SnapshotMagic):]...),
		"truncated":     data[:len(data)-10],
		"extended":      append(bytes.Clone(data), 0),
		"altered":       func() []byte { b := bytes.Clone(data); b[len(b)-100] ^= 0x80; return b }(),
		"altered trail": func() []byte { b := bytes.Clone(data); b[len(b)-1] ^= 1; return b }(),
	} {
		if _, err := custos.VerifySnapshot(bytes.NewReader(bad)); !errors.Is(err, custos.ErrBadSnapshot) {
			t.Errorf("%s: %v, want ErrBadSnapshot", name, err)
		}
	}
}
