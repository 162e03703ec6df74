package node_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custos-kms/custos/api"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/internal/pki"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

const clusterApp = "app"

func decryptReq(ct []byte) *custosv1.DecryptRequest {
	return &custosv1.DecryptRequest{Ciphertext: ct,
		Justification: &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Text: "cluster test"}}
}

// waitSameHead waits until members i and j hold the same ledger head and
// returns it: both hold records 1..seq from then on, whatever is appended.
func waitSameHead(t *testing.T, c *nodetest.Cluster, i, j int) (seq uint64, hash [32]byte) {
	t.Helper()
	// hashicorp/raft backs off replication to an unreachable follower
	// exponentially (up to ~40s), so healing may take a while.
	deadline := time.Now().Add(60 * time.Second)
	for {
		si, hi := c.Members[i].Node.Service().State().LedgerHead()
		sj, hj := c.Members[j].Node.Service().State().LedgerHead()
		if si == sj && hi == hj {
			return si, hi
		}
		// hashicorp heartbeats carry no commit index: a follower learns
		// that the last entry committed only with the next append.
		if l := c.Leader(); l >= 0 {
			_ = c.Members[l].Node.Raft().Barrier(context.Background())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s ledger head %d (raft %+v), %s %d (raft %+v): not caught up", c.Members[i].Config.ID, si,
				c.Members[i].Node.Raft().Stats(), c.Members[j].Config.ID, sj, c.Members[j].Node.Raft().Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestClusterFaults(t *testing.T) {
	c := nodetest.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if l := c.Leader(); l != 0 {
		t.Fatalf("leader is member %d, want the bootstrapping node", l)
	}
	// Every member learns, through the log, where the others serve gRPC.
	for i := range c.Members {
		st := c.Members[i].Node.Service().State()
		waitFor := time.Now().Add(30 * time.Second)
		for st.NodeAPIAddr(c.Members[0].Config.ID) != c.Members[0].Node.Addr() {
			if time.Now().After(waitFor) {
				t.Fatalf("member %d does not know node1's gRPC address (%q)", i, st.NodeAPIAddr(c.Members[0].Config.ID))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	keys := make([]custosv1.KeyServiceClient, 3)
	for i := range keys {
		keys[i] = custosv1.NewKeyServiceClient(c.Conn(t, i, clusterApp))
	}
	if _, err := keys[0].CreateKey(ctx, &custosv1.CreateKeyRequest{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	dk, err := keys[0].GenerateDataKey(ctx, &custosv1.GenerateDataKeyRequest{Key: "k"})
	if err != nil {
		t.Fatal(err)
	}

	// Joined nodes have no domain key: crypto fails closed, clearly.
	for _, i := range []int{1, 2} {
		_, err := keys[i].Decrypt(ctx, decryptReq(dk.WrappedDataKey))
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), api.ErrNotAdmitted) {
			t.Fatalf("decrypt on %d: %v, want FailedPrecondition %q", i, err, api.ErrNotAdmitted)
		}
		if _, err := keys[i].CreateKey(ctx, &custosv1.CreateKeyRequest{Name: "x"}); status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("create key on %d: %v", i, err)
		}
	}

	var released []uint64 // decision seqs of decrypts that returned the data key
	var mu sync.Mutex
	load := func(n int) {
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := 0; k < n; k++ {
					out, err := keys[0].Decrypt(ctx, decryptReq(dk.WrappedDataKey))
					if err == nil {
						if !bytes.Equal(out.Plaintext, dk.Plaintext) {
							t.Error("wrong data key")
						}
						mu.Lock()
						released = append(released, out.DecisionSeq)
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
	}
	load(5)

	// Partition node3: it serves no decisions, the majority goes on, and
	// after healing node3 has the same ledger.
	m3 := c.Members[2]
	m3.Isolated.Store(true)
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, id := m3.Node.Raft().Leader(); id == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("isolated node still knows a leader")
		}
		time.Sleep(20 * time.Millisecond)
	}
	dctx, dcancel := context.WithTimeout(ctx, 3*time.Second)
	_, err = keys[2].Decrypt(dctx, decryptReq(dk.WrappedDataKey))
	dcancel()
	if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
		t.Fatalf("decrypt on the isolated node: %v, want Unavailable", err)
	}
	load(5)
	m3.Isolated.Store(false)
	waitSameHead(t, c, 2, 0)

	// Restart from snapshot + log.
	c.Kill(t, 1)
	load(3)
	if err := c.Members[0].Node.Raft().Snapshot(); err != nil {
		t.Fatal(err)
	}
	load(3)
	c.Restart(t, 1)
	waitSameHead(t, c, 1, 0)

	// A revoke acknowledged just before the leader dies stays in force.
	gov := custosv1.NewGovernanceServiceClient(c.Conn(t, 0, "officer-cli"))
	revoke := nodetest.SignStatement(t, c.ClusterID(), c.Officers, func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_RevokeKey{RevokeKey: &custosv1.RevokeKey{Key: "k"}}
	}, 0)
	if _, err := gov.Submit(ctx, revoke); err != nil {
		t.Fatal(err)
	}
	c.Kill(t, 0)
	if l := c.Leader(); l != 1 && l != 2 {
		t.Fatalf("no new leader: %d", l)
	}
	for _, i := range []int{1, 2} {
		st := c.Members[i].Node.Service().State()
		before, _ := st.LedgerHead()
		_, err := keys[i].Decrypt(ctx, decryptReq(dk.WrappedDataKey))
		if err == nil || strings.Contains(err.Error(), api.ErrNotAdmitted) {
			t.Fatalf("decrypt of a revoked key on %d: %v, want a DENY", i, err)
		}
		head, _ := st.LedgerHead()
		if head <= before {
			t.Fatalf("no decision recorded on %d", i)
		}
		rec, err := st.DecisionRecord(head)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Outcome != custosv1.Outcome_OUTCOME_DENY {
			t.Fatalf("decision on %d after failover: %v", i, rec.Outcome)
		}
	}
	// Every released data key has its ALLOW record on the survivors.
	for _, i := range []int{1, 2} {
		st := c.Members[i].Node.Service().State()
		for _, seq := range released {
			rec, err := st.DecisionRecord(seq)
			if err != nil || rec.Outcome != custosv1.Outcome_OUTCOME_ALLOW {
				t.Fatalf("released decrypt %d on %s: %v %v", seq, c.Members[i].Config.ID, rec, err)
			}
		}
	}
	if len(released) == 0 {
		t.Fatal("nothing was released")
	}
}

func TestClusterRefusesForeignNodes(t *testing.T) {
	c := nodetest.StartClusterOf(t, 3, 1)
	// Node 2 configured for another cluster refuses to join.
	c.Members[1].Config.ClusterID = "0123456789abcdef0123456789abcdef"
	err := c.TryJoinWithin(1, 30*time.Second)
	if err == nil || !strings.Contains(err.Error(), "configured for cluster") {
		t.Fatalf("join with another cluster id: %v", err)
	}
	if err := c.Members[0].Node.Raft().RemoveServer(context.Background(), "node2"); err != nil {
		t.Fatal(err)
	}
	// Node 3 with a certificate of another CA cannot join.
	other := t.TempDir()
	cert, key, err := pki.IssueNodeCert(other, "node3", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	c.Members[2].Config.TLS.Cert, c.Members[2].Config.TLS.Key = cert, key
	c.Members[2].Config.TLS.CA = other + "/" + pki.CAFile
	if err := c.TryJoinWithin(2, 5*time.Second); err == nil {
		t.Fatal("a node with another CA's certificate joined")
	}
}
