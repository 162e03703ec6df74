package node_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/ledger"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// TestWipedFollowerBackfillsLedger: a follower whose data directory is
// wiped rejoins through an InstallSnapshot of a snapshot that carries only
// the newest records. It serves at once (decisions, the tail of the
// ledger), answers Unavailable for audit reads of the records it does not
// hold yet, then copies them from its peers; its ledger ends identical to
// the leader's and its chain verifies.
func TestWipedFollowerBackfillsLedger(t *testing.T) {
	defer kms.SetSnapshotTail(5)()
	c := nodetest.StartCluster(t, 3)
	lead := c.Leader()
	if lead < 0 {
		t.Fatal("no leader")
	}
	kc := custosv1.NewKeyServiceClient(c.Conn(t, lead, clusterApp))
	if _, err := kc.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	dk, err := kc.GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	decide := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			if _, err := kc.Decrypt(ctx(t), decryptReq(dk.GetWrappedDataKey())); err != nil {
				t.Fatal(err)
			}
		}
	}
	decide(30)

	f := (lead + 1) % 3
	c.Kill(t, f)
	if err := os.RemoveAll(c.Members[f].Config.DataDir); err != nil {
		t.Fatal(err)
	}
	// The leader compacts its log: the wiped follower can only catch up
	// from a snapshot.
	lr := c.Members[lead].Node.Raft()
	if err := lr.SetSnapshotPolicy(0, 1); err != nil {
		t.Fatal(err)
	}
	decide(10)
	if err := lr.Snapshot(); err != nil {
		t.Fatal(err)
	}
	decide(3)

	node.PauseBackfill(true)
	defer node.PauseBackfill(false)
	c.Restart(t, f)
	waitSameHead(t, c, f, lead)
	st := c.Members[f].Node.Service().State()
	g := st.LedgerGap()
	if g == nil || g.Hi < 30 {
		t.Fatalf("wiped follower's gap = %+v, want records from 1 missing", g)
	}
	t.Logf("wiped follower restored with records 1..%d missing", g.Hi)

	// During the backfill: audit reads of the gap are Unavailable, the
	// tail and later records are served, and decisions go on.
	ac := custosv1.NewAuditServiceClient(c.Conn(t, f, nodetest.Auditor))
	_, err = ac.ListDecisions(ctx(t), &custosv1.ListDecisionsRequest{FromSeq: 1})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "not on this node yet") {
		t.Fatalf("ListDecisions of the gap on the wiped follower: %v, want Unavailable", err)
	}
	if _, err := ac.ListDecisions(ctx(t), &custosv1.ListDecisionsRequest{FromSeq: g.Hi + 1}); err != nil {
		t.Fatalf("ListDecisions above the gap: %v", err)
	}
	decide(5)
	waitSameHead(t, c, f, lead)
	if err := st.Health(); err != nil {
		t.Fatalf("wiped follower unhealthy: %v", err)
	}
	// ReadRecords: members only; the follower itself does not serve its gap.
	other := 3 - lead - f
	asApp := raftlogv1.NewReplicationClient(c.Conn(t, other, clusterApp))
	if _, err := asApp.ReadRecords(ctx(t), &raftlogv1.ReadRecordsRequest{FromSeq: 1, ToSeq: 3}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("ReadRecords as a client: %v, want PermissionDenied", err)
	}
	asNode := raftlogv1.NewReplicationClient(nodeConn(t, c, f, other))
	got, err := asNode.ReadRecords(ctx(t), &raftlogv1.ReadRecordsRequest{FromSeq: 1, ToSeq: 3})
	if err != nil || len(got.GetRecords()) != 3 {
		t.Fatalf("ReadRecords as a member: %d records, %v", len(got.GetRecords()), err)
	}
	fromGap := raftlogv1.NewReplicationClient(nodeConn(t, c, other, f))
	if _, err := fromGap.ReadRecords(ctx(t), &raftlogv1.ReadRecordsRequest{FromSeq: 1, ToSeq: 3}); status.Code(err) != codes.Unavailable {
		t.Fatalf("ReadRecords of the gap from the wiped follower: %v, want Unavailable", err)
	}

	node.PauseBackfill(false)
	deadline := time.Now().Add(30 * time.Second)
	for st.LedgerGap() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("backfill not done: gap %+v", st.LedgerGap())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The leader's checkpointer may append a record at any moment: compare
	// the two ledgers up to a head both held, never up to "now" (records
	// only ever append, so both still hold 1..head unchanged).
	head, hash := waitSameHead(t, c, f, lead)
	export := func(i int) []byte {
		t.Helper()
		stream, err := custosv1.NewAuditServiceClient(c.Conn(t, i, nodetest.Auditor)).Export(ctx(t), &custosv1.ExportRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var out []byte
		for n := uint64(0); n < head; {
			item, err := stream.Recv()
			if err != nil {
				t.Fatalf("export of %s after %d of %d records: %v", c.Members[i].Config.ID, n, head, err)
			}
			if r := item.GetRecord(); r != nil {
				out = append(out, r...)
				n++
			}
		}
		return out
	}
	if a, b := export(f), export(lead); len(a) == 0 || !bytes.Equal(a, b) {
		t.Fatalf("the wiped follower's records 1..%d (%d bytes) differ from the leader's (%d bytes)", head, len(a), len(b))
	}
	prev := ledger.ZeroHash
	err = st.ScanRecords(1, func(seq uint64, data []byte) error {
		if seq > head {
			return errScanDone
		}
		r, err := st.DecisionRecord(seq)
		if err != nil || !bytes.Equal(r.PrevHash, prev[:]) {
			t.Fatalf("record %d: broken link (%v)", seq, err)
		}
		prev = ledger.Hash(data)
		return nil
	})
	if errors.Is(err, errScanDone) {
		err = nil
	}
	if err != nil || prev != hash {
		t.Fatalf("chain of the wiped follower up to %d does not verify: %v", head, err)
	}
}

// errScanDone stops a ScanRecords at the sequence number a test compares up to.
var errScanDone = errors.New("scan done")

// nodeConn connects to member to with member from's node certificate.
func nodeConn(t *testing.T, c *nodetest.Cluster, from, to int) *grpc.ClientConn {
	t.Helper()
	cfg := c.Members[from].Config
	cert, err := tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(cfg.TLS.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cc, err := grpc.NewClient(c.Members[to].Addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// TestBehindFollowerKeepsItsRecords: a follower that was down while the
// leader compacted its log installs a snapshot, keeps its own records and
// copies only those between them and the snapshot's tail.
func TestBehindFollowerKeepsItsRecords(t *testing.T) {
	defer kms.SetSnapshotTail(5)()
	c := nodetest.StartCluster(t, 3)
	lead := c.Leader()
	if lead < 0 {
		t.Fatal("no leader")
	}
	kc := custosv1.NewKeyServiceClient(c.Conn(t, lead, clusterApp))
	if _, err := kc.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	dk, err := kc.GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	decide := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			if _, err := kc.Decrypt(ctx(t), decryptReq(dk.GetWrappedDataKey())); err != nil {
				t.Fatal(err)
			}
		}
	}
	decide(15)
	f := (lead + 1) % 3
	waitSameHead(t, c, f, lead)
	fst := c.Members[f].Node.Service().State()
	c.Kill(t, f)
	// Read after the kill: a record (a checkpoint) may still have been
	// applied between waitSameHead and the kill.
	own, _ := fst.LedgerHead()
	lr := c.Members[lead].Node.Raft()
	if err := lr.SetSnapshotPolicy(0, 1); err != nil {
		t.Fatal(err)
	}
	decide(30)
	if err := lr.Snapshot(); err != nil {
		t.Fatal(err)
	}
	decide(2)

	node.PauseBackfill(true)
	defer node.PauseBackfill(false)
	c.Restart(t, f)
	waitSameHead(t, c, f, lead)
	st := c.Members[f].Node.Service().State()
	g := st.LedgerGap()
	if g == nil || g.Lo != own+1 {
		t.Fatalf("behind follower's gap = %+v, want one from %d (it held 1..%d)", g, own+1, own)
	}
	t.Logf("behind follower kept 1..%d, missing %d..%d", own, g.Lo, g.Hi)
	node.PauseBackfill(false)
	deadline := time.Now().Add(30 * time.Second)
	for st.LedgerGap() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("backfill not done: gap %+v", st.LedgerGap())
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitSameHead(t, c, f, lead)
	leader := c.Members[lead].Node.Service().State()
	head, _ := st.LedgerHead()
	for seq := uint64(1); seq <= head; seq++ {
		a, err1 := leader.PeerRecords(seq, seq)
		b, err2 := st.PeerRecords(seq, seq)
		if err1 != nil || err2 != nil || !bytes.Equal(a[0], b[0]) {
			t.Fatalf("record %d differs between the leader and the follower (%v, %v)", seq, err1, err2)
		}
	}
	if err := st.Health(); err != nil {
		t.Fatal(err)
	}
}
