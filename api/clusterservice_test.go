package api_test

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

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/custos-kms/custos/api"
	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/hsm/pkcs11"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/internal/pki"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"github.com/custos-kms/custos/raft"
)

// Operator is the principal the test servers treat as an operator.
const operator = "operator"

// serveCluster serves the ClusterService over deps behind the real api
// server (mutual TLS, authentication) on loopback, with the harness's
// PKI, and returns a client for principal cn.
func serveCluster(t *testing.T, h *nodetest.Harness, deps api.ClusterDeps) func(cn string) custosv1.ClusterServiceClient {
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
		t.Fatal("api.NewServer registers a ClusterService of its own; this test needs one over its own deps")
	}
	custosv1.RegisterClusterServiceServer(srv, api.NewClusterServer(deps))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = srv.Serve(lis); close(done) }()
	var mu sync.Mutex
	var conns []*grpc.ClientConn
	t.Cleanup(func() {
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		cancel()
		srv.Stop()
		<-done
	})
	return func(cn string) custosv1.ClusterServiceClient {
		cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(h.ClientTLS(t, cn))))
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		conns = append(conns, cc)
		mu.Unlock()
		return custosv1.NewClusterServiceClient(cc)
	}
}

// openHSM opens a second session set on the harness's token: the node
// does not hand its backend out.
func openHSM(t *testing.T, h *nodetest.Harness) hsm.Backend {
	t.Helper()
	b, err := pkcs11.Open(ctx(t), pkcs11.Config{Module: h.Token.Module, TokenLabel: h.Token.Label, PIN: h.Token.PIN})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func isOperator(p string) bool { return p == operator }

func readSnapshot(t *testing.T, c custosv1.ClusterServiceClient) ([]byte, []int, error) {
	t.Helper()
	s, err := c.SaveSnapshot(ctx(t), &custosv1.SaveSnapshotRequest{})
	if err != nil {
		return nil, nil, err
	}
	var buf bytes.Buffer
	var sizes []int
	for {
		ch, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return buf.Bytes(), sizes, nil
		}
		if err != nil {
			return nil, nil, err
		}
		sizes = append(sizes, len(ch.GetData()))
		buf.Write(ch.GetData())
	}
}

// TestClusterServiceRealNode serves the ClusterService over a real single
// node: its Raft member, kms service and SoftHSM token.
func TestClusterServiceRealNode(t *testing.T) {
	h := nodetest.Start(t)
	dial := serveCluster(t, h, api.ClusterDeps{
		Raft:       h.Node.Raft(),
		Service:    h.Node.Service(),
		HSM:        openHSM(t, h),
		IsOperator: isOperator,
	})
	app, op := dial("app"), dial(operator)

	t.Run("status for any authenticated principal", func(t *testing.T) {
		st, err := app.Status(ctx(t), &custosv1.ClusterStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		seq, _ := h.Node.Service().State().LedgerHead()
		switch {
		case st.GetClusterId() != h.Node.ClusterID() || st.GetClusterId() == "":
			t.Errorf("cluster id %q, want %q", st.GetClusterId(), h.Node.ClusterID())
		case st.GetNodeId() != "node1" || st.GetRaftState() != "LEADER" || st.GetLeaderId() != "node1":
			t.Errorf("node %q state %q leader %q", st.GetNodeId(), st.GetRaftState(), st.GetLeaderId())
		case st.GetLeaderRaftAddr() != h.Node.RaftAddr():
			t.Errorf("leader raft addr %q, want %q", st.GetLeaderRaftAddr(), h.Node.RaftAddr())
		case st.GetTerm() == 0 || st.GetCommitIndex() == 0 || st.GetAppliedIndex() == 0 || st.GetLastLogIndex() < st.GetCommitIndex():
			t.Errorf("indexes: term %d commit %d applied %d last %d", st.GetTerm(), st.GetCommitIndex(), st.GetAppliedIndex(), st.GetLastLogIndex())
		case !st.GetHsmHealthy() || !st.GetHasDomainKey() || st.GetHsmDetail() != "":
			t.Errorf("hsm healthy %v domain key %v detail %q", st.GetHsmHealthy(), st.GetHasDomainKey(), st.GetHsmDetail())
		case st.GetLedgerSeq() < seq:
			t.Errorf("ledger seq %d, state says %d", st.GetLedgerSeq(), seq)
		}
		if len(st.GetServers()) != 1 {
			t.Fatalf("servers %v", st.GetServers())
		}
		sv := st.GetServers()[0]
		if sv.GetId() != "node1" || sv.GetRaftAddr() != h.Node.RaftAddr() || sv.GetSuffrage() != "VOTER" || !sv.GetLeader() {
			t.Errorf("server %v", sv)
		}
	})

	t.Run("no certificate is Unauthenticated", func(t *testing.T) {
		_, err := dial("").Status(ctx(t), &custosv1.ClusterStatusRequest{})
		wantCode(t, "Status", err, codes.Unauthenticated)
	})

	t.Run("only operators change anything", func(t *testing.T) {
		_, err := app.AddVoter(ctx(t), &custosv1.AddVoterRequest{Id: "node2", RaftAddr: "127.0.0.1:1"})
		wantCode(t, "AddVoter", err, codes.PermissionDenied)
		_, err = app.RemoveServer(ctx(t), &custosv1.RemoveServerRequest{Id: "node1"})
		wantCode(t, "RemoveServer", err, codes.PermissionDenied)
		_, err = app.TransferLeadership(ctx(t), &custosv1.TransferLeadershipRequest{})
		wantCode(t, "TransferLeadership", err, codes.PermissionDenied)
		_, _, err = readSnapshot(t, app)
		wantCode(t, "SaveSnapshot", err, codes.PermissionDenied)
		// An auditor is no operator either.
		_, _, err = readSnapshot(t, dial(nodetest.Auditor))
		wantCode(t, "SaveSnapshot as auditor", err, codes.PermissionDenied)
	})

	t.Run("membership checks", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			call func() error
			code codes.Code
		}{
			{"add without id", func() error {
				_, err := op.AddVoter(ctx(t), &custosv1.AddVoterRequest{RaftAddr: "127.0.0.1:7000"})
				return err
			}, codes.InvalidArgument},
			{"add with a bad address", func() error {
				_, err := op.AddVoter(ctx(t), &custosv1.AddVoterRequest{Id: "node2", RaftAddr: "nowhere"})
				return err
			}, codes.InvalidArgument},
			{"add with a bad id", func() error {
				_, err := op.AddVoter(ctx(t), &custosv1.AddVoterRequest{Id: "node 2", RaftAddr: "127.0.0.1:7000"})
				return err
			}, codes.InvalidArgument},
			{"remove a stranger", func() error {
				_, err := op.RemoveServer(ctx(t), &custosv1.RemoveServerRequest{Id: "ghost"})
				return err
			}, codes.NotFound},
			{"remove the only voter", func() error {
				_, err := op.RemoveServer(ctx(t), &custosv1.RemoveServerRequest{Id: "node1"})
				return err
			}, codes.FailedPrecondition},
			{"transfer with nobody to take over", func() error {
				_, err := op.TransferLeadership(ctx(t), &custosv1.TransferLeadershipRequest{})
				return err
			}, codes.FailedPrecondition},
			{"transfer to itself", func() error {
				_, err := op.TransferLeadership(ctx(t), &custosv1.TransferLeadershipRequest{Id: "node1"})
				return err
			}, codes.FailedPrecondition},
			{"transfer to a stranger", func() error {
				_, err := op.TransferLeadership(ctx(t), &custosv1.TransferLeadershipRequest{Id: "ghost"})
				return err
			}, codes.NotFound},
		} {
			wantCode(t, tc.name, tc.call(), tc.code)
		}
		st, err := op.Status(ctx(t), &custosv1.ClusterStatusRequest{})
		if err != nil || len(st.GetServers()) != 1 || st.GetRaftState() != "LEADER" {
			t.Fatalf("after refused changes: %v, %v", st, err)
		}
	})

	t.Run("snapshot", func(t *testing.T) {
		data, sizes, err := readSnapshot(t, op)
		if err != nil {
			t.Fatal(err)
		}
		for i, n := range sizes {
			if n == 0 || n > api.SnapshotChunkSize || (i < len(sizes)-1 && n != api.SnapshotChunkSize) {
				t.Fatalf("chunk sizes %v", sizes)
			}
		}
		hdr, err := custos.VerifySnapshot(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if hdr.ClusterID != h.Node.ClusterID() || hdr.NodeID != "node1" || hdr.RaftIndex == 0 || hdr.RaftTerm == 0 || hdr.Created.IsZero() {
			t.Errorf("header %+v", hdr)
		}
		payload := data[len(data)-32-int(hdr.PayloadSize) : len(data)-32]
		if !bytes.HasPrefix(payload, []byte("custos-snapshot-v2\n")) {
			t.Errorf("payload starts %q, want the kms snapshot magic", payload[:min(len(payload), 20)])
		}
		// One flipped bit anywhere is detected.
		bad := bytes.Clone(data)
		bad[len(bad)/2] ^= 1
		if _, err := custos.VerifySnapshot(bytes.NewReader(bad)); !errors.Is(err, custos.ErrBadSnapshot) {
			t.Errorf("altered snapshot: %v", err)
		}
		if _, err := custos.VerifySnapshot(bytes.NewReader(data[:len(data)-1])); !errors.Is(err, custos.ErrBadSnapshot) {
			t.Errorf("truncated snapshot: %v", err)
		}
	})
}

// fakeRaft is a scriptable ClusterRaft for the paths a single node cannot
// reach: following, a bigger configuration, Raft errors.
type fakeRaft struct {
	mu       sync.Mutex
	state    string
	leader   [2]string // addr, id
	servers  []raft.Server
	err      error // returned by the next change
	calls    []string
	payload  []byte
	snapMeta raft.SnapshotMeta
}

func (f *fakeRaft) ID() string { return "n1" }
func (f *fakeRaft) Stats() raft.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return raft.Stats{State: f.state, Term: 7, CommitIndex: 42, AppliedIndex: 41, LastLogIndex: 43, Leader: f.leader[0]}
}
func (f *fakeRaft) Leader() (string, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leader[0], f.leader[1]
}
func (f *fakeRaft) Servers() ([]raft.Server, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]raft.Server(nil), f.servers...), nil
}
func (f *fakeRaft) change(call string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	err := f.err
	f.err = nil
	return err
}
func (f *fakeRaft) AddVoter(_ context.Context, id, addr string) error {
	return f.change("add " + id + " " + addr)
}
func (f *fakeRaft) RemoveServer(_ context.Context, id string) error {
	return f.change("remove " + id)
}
func (f *fakeRaft) TransferLeadership(_ context.Context, id string) error {
	return f.change("transfer " + id)
}
func (f *fakeRaft) OpenSnapshot(context.Context) (raft.SnapshotMeta, io.ReadCloser, error) {
	if err := f.change("snapshot"); err != nil {
		return raft.SnapshotMeta{}, nil, err
	}
	return f.snapMeta, io.NopCloser(bytes.NewReader(f.payload)), nil
}

// fakeHSM answers Health and VerifyKey; nothing else is called.
type fakeHSM struct {
	hsm.Backend
	health error
	has    bool
}

func (f *fakeHSM) Health(context.Context) error { return f.health }
func (f *fakeHSM) VerifyKey(context.Context, hsm.KeyRef, hsm.KeyUsage) error {
	if f.has {
		return nil
	}
	return hsm.ErrKeyNotFound
}

func TestClusterServiceFakes(t *testing.T) {
	h := nodetest.Start(t)
	fr := &fakeRaft{
		state:  "Leader",
		leader: [2]string{"10.0.0.1:7001", "n1"},
		servers: []raft.Server{
			{ID: "n1", Addr: "10.0.0.1:7001", Suffrage: "Voter"},
			{ID: "n2", Addr: "10.0.0.2:7001", Suffrage: "Voter"},
			{ID: "n3", Addr: "10.0.0.3:7001", Suffrage: "Nonvoter"},
		},
	}
	fh := &fakeHSM{has: false}
	dial := serveCluster(t, h, api.ClusterDeps{Raft: fr, Service: h.Node.Service(), HSM: fh, IsOperator: isOperator})
	op := dial(operator)

	t.Run("status of a node without the domain key", func(t *testing.T) {
		st, err := dial("app").Status(ctx(t), &custosv1.ClusterStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if !st.GetHsmHealthy() || st.GetHasDomainKey() || !strings.Contains(st.GetHsmDetail(), "domain key") {
			t.Errorf("hsm healthy %v domain key %v detail %q", st.GetHsmHealthy(), st.GetHasDomainKey(), st.GetHsmDetail())
		}
		if st.GetTerm() != 7 || st.GetCommitIndex() != 42 || st.GetAppliedIndex() != 41 || st.GetLastLogIndex() != 43 {
			t.Errorf("indexes %v", st)
		}
		var got []string
		for _, s := range st.GetServers() {
			got = append(got, s.GetId()+"/"+s.GetSuffrage()+"/"+map[bool]string{true: "L", false: "-"}[s.GetLeader()])
		}
		if strings.Join(got, " ") != "n1/VOTER/L n2/VOTER/- n3/NONVOTER/-" {
			t.Errorf("servers %v", got)
		}
		fh.health = errors.New("token gone")
		defer func() { fh.health = nil }()
		st, err = dial("app").Status(ctx(t), &custosv1.ClusterStatusRequest{})
		if err != nil || st.GetHsmHealthy() || st.GetHasDomainKey() || !strings.Contains(st.GetHsmDetail(), "token gone") {
			t.Errorf("unhealthy HSM: %v, %v", st, err)
		}
	})

	t.Run("leader applies changes", func(t *testing.T) {
		if _, err := op.AddVoter(ctx(t), &custosv1.AddVoterRequest{Id: "n4", RaftAddr: "10.0.0.4:7001"}); err != nil {
			t.Fatal(err)
		}
		if _, err := op.RemoveServer(ctx(t), &custosv1.RemoveServerRequest{Id: "n3"}); err != nil {
			t.Fatal(err)
		}
		if _, err := op.TransferLeadership(ctx(t), &custosv1.TransferLeadershipRequest{Id: "n2"}); err != nil {
			t.Fatal(err)
		}
		if _, err := op.TransferLeadership(ctx(t), &custosv1.TransferLeadershipRequest{}); err != nil {
			t.Fatal(err)
		}
		_, err := op.TransferLeadership(ctx(t), &custosv1.TransferLeadershipRequest{Id: "n3"})
		wantCode(t, "transfer to a nonvoter", err, codes.FailedPrecondition)
		want := "add n4 10.0.0.4:7001|remove n3|transfer n2|transfer "
		if got := strings.Join(fr.calls, "|"); got != want {
			t.Errorf("raft calls %q, want %q", got, want)
		}
	})

	t.Run("raft errors", func(t *testing.T) {
		for _, tc := range []struct {
			err  error
			code codes.Code
			msg  string
		}{
			{&raft.NotLeaderError{LeaderAddr: "10.0.0.2:7001", LeaderID: "n2", Err: errors.New("lost")}, codes.FailedPrecondition, "n2"},
			{raft.ErrClosed, codes.Unavailable, "shutting down"},
			{raft.ErrTimeout, codes.Unavailable, "in time"},
			{errors.New("raft: secret internals"), codes.Internal, "internal error"},
		} {
			fr.err = tc.err
			_, err := op.AddVoter(ctx(t), &custosv1.AddVoterRequest{Id: "n5", RaftAddr: "10.0.0.5:7001"})
			wantCode(t, tc.err.Error(), err, tc.code)
			if msg := status.Convert(err).Message(); !strings.Contains(msg, tc.msg) || strings.Contains(msg, "secret") {
				t.Errorf("%v: message %q", tc.err, msg)
			}
		}
	})

	t.Run("a follower refuses changes and names the leader", func(t *testing.T) {
		fr.mu.Lock()
		fr.state, fr.leader = "Follower", [2]string{"10.0.0.2:7001", "n2"}
		fr.mu.Unlock()
		defer func() {
			fr.mu.Lock()
			fr.state, fr.leader = "Leader", [2]string{"10.0.0.1:7001", "n1"}
			fr.mu.Unlock()
		}()
		n := len(fr.calls)
		_, err := op.RemoveServer(ctx(t), &custosv1.RemoveServerRequest{Id: "n3"})
		wantCode(t, "RemoveServer on a follower", err, codes.FailedPrecondition)
		id, addr, ok := custos.NotLeader(err)
		if !ok || id != "n2" || addr != "10.0.0.2:7001" {
			t.Errorf("NotLeader(%v) = %q %q %v", err, id, addr, ok)
		}
		if len(fr.calls) != n {
			t.Errorf("the follower called raft: %v", fr.calls[n:])
		}
		// Status still answers on a follower.
		st, err := op.Status(ctx(t), &custosv1.ClusterStatusRequest{})
		if err != nil || st.GetRaftState() != "FOLLOWER" || st.GetLeaderId() != "n2" {
			t.Errorf("follower status %v, %v", st, err)
		}
	})

	t.Run("snapshot in chunks", func(t *testing.T) {
		payload := bytes.Repeat([]byte("0123456789abcdef"), 40000) // 640000 bytes
		fr.payload, fr.snapMeta = payload, raft.SnapshotMeta{Index: 99, Term: 7, Size: int64(len(payload))}
		data, sizes, err := readSnapshot(t, op)
		if err != nil {
			t.Fatal(err)
		}
		if len(sizes) != 3 || sizes[0] != api.SnapshotChunkSize || sizes[1] != api.SnapshotChunkSize {
			t.Errorf("chunk sizes %v", sizes)
		}
		hdr, err := custos.VerifySnapshot(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if hdr.RaftIndex != 99 || hdr.RaftTerm != 7 || hdr.PayloadSize != int64(len(payload)) || hdr.NodeID != "n1" {
			t.Errorf("header %+v", hdr)
		}
		if !bytes.Equal(data[len(data)-32-len(payload):len(data)-32], payload) {
			t.Error("payload differs")
		}
		// A payload that does not match its recorded size fails the stream.
		fr.snapMeta.Size++
		_, _, err = readSnapshot(t, op)
		wantCode(t, "short payload", err, codes.Internal)
		fr.snapMeta.Size -= 2
		_, _, err = readSnapshot(t, op)
		wantCode(t, "long payload", err, codes.Internal)
		fr.err = raft.ErrClosed
		_, _, err = readSnapshot(t, op)
		wantCode(t, "raft closed", err, codes.Unavailable)
	})
}

func TestWriteSnapshotFile(t *testing.T) {
	var buf bytes.Buffer
	hdr := api.SnapshotFileHeader{Format: 1, ClusterID: "c1", NodeID: "n1", RaftIndex: 5, RaftTerm: 2, PayloadSize: 3}
	if err := api.WriteSnapshotFile(&buf, hdr, strings.NewReader("abc")); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(buf.String(), api.SnapshotFileMagic) {
		t.Fatalf("file starts %q", buf.String()[:20])
	}
	got, err := custos.VerifySnapshot(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if got.ClusterID != "c1" || got.RaftIndex != 5 || got.PayloadSize != 3 {
		t.Errorf("header %+v", got)
	}
}
