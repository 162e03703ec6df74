package node_test

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// findRecord returns the seq of the first record on st with the matched
// rule and a detail starting with detail, or 0.
func findRecord(t *testing.T, st *kms.State, rule, detail string) uint64 {
	t.Helper()
	var found uint64
	err := st.ScanRecords(1, func(seq uint64, data []byte) error {
		rec := &custosv1.DecisionRecord{}
		if err := proto.Unmarshal(data, rec); err != nil {
			return err
		}
		if found == 0 && rec.MatchedRule == rule && strings.HasPrefix(rec.Detail, detail) {
			found = seq
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// waitRecord waits until st holds a record findRecord finds, and returns
// its seq. (A configuration change's future resolves once the entry is
// committed, possibly before the state machine applied it.)
func waitRecord(t *testing.T, st *kms.State, rule, detail string) uint64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		head, _ := st.LedgerHead()
		if seq := findRecord(t, st, rule, detail); seq != 0 {
			return seq
		}
		if time.Now().After(deadline) {
			t.Fatalf("no record %s %q", rule, detail)
		}
		wctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_ = st.WaitBeyond(wctx, head)
		cancel()
	}
}

// waitApplied waits until member i's ledger holds record seq.
func waitApplied(t *testing.T, c *nodetest.Cluster, i int, seq uint64) {
	t.Helper()
	st := c.Members[i].Node.Service().State()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if head, _ := st.LedgerHead(); head >= seq {
			return
		}
		if time.Now().After(deadline) {
			head, _ := st.LedgerHead()
			t.Fatalf("%s has applied records up to %d, not %d", c.Members[i].Config.ID, head, seq)
		}
		// A follower learns that the last entry committed only with the
		// next append: a barrier on the leader makes one.
		if l := c.Leader(); l >= 0 {
			_ = c.Members[l].Node.Raft().Barrier(context.Background())
		}
		wctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_ = st.WaitBeyond(wctx, seq-1)
		cancel()
	}
}

// sameRecords checks that members i and j hold the same bytes for records
// 1..upTo (a fixed prefix: background checkpoints may append after it).
func sameRecords(t *testing.T, c *nodetest.Cluster, i, j int, upTo uint64) {
	t.Helper()
	read := func(k int) [][]byte {
		var out [][]byte
		if err := c.Members[k].Node.Service().State().ScanRecords(1, func(seq uint64, data []byte) error {
			if seq <= upTo {
				out = append(out, bytes.Clone(data))
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	a, b := read(i), read(j)
	if uint64(len(a)) != upTo || uint64(len(b)) != upTo {
		t.Fatalf("%s has %d of records 1..%d, %s %d", c.Members[i].Config.ID, len(a), upTo, c.Members[j].Config.ID, len(b))
	}
	for k := range a {
		if !bytes.Equal(a[k], b[k]) {
			t.Fatalf("record %d differs between %s and %s", k+1, c.Members[i].Config.ID, c.Members[j].Config.ID)
		}
	}
}

// TestMembershipRecordsOnEveryReplica: every Raft membership change is a
// ledger record at the position of its configuration entry, identical on
// every replica, after a restart from a snapshot too
// (docs/architecture.md, invariant 5).
func TestMembershipRecordsOnEveryReplica(t *testing.T) {
	c := nodetest.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lead := c.Leader()
	if lead != 0 {
		t.Fatalf("leader is member %d, want the bootstrapping node", lead)
	}
	lr := c.Members[lead].Node.Raft()
	st := c.Members[lead].Node.Service().State()

	// The two joins after initialisation are recorded on the leader.
	add2 := waitRecord(t, st, "raft-configuration:add-voter", "server node2 at "+c.Members[1].Config.RaftAddr+" added as Voter")
	add3 := waitRecord(t, st, "raft-configuration:add-voter", "server node3 at "+c.Members[2].Config.RaftAddr+" added as Voter")
	if add3 < add2 {
		t.Fatalf("join records at %d and %d", add2, add3)
	}
	rec, err := st.DecisionRecord(add3)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Operation != custosv1.Operation_OPERATION_MEMBERSHIP || rec.Outcome != custosv1.Outcome_OUTCOME_ALLOW ||
		rec.RaftIndex == 0 || rec.TimeUnixNano == 0 || !rec.Notify ||
		!strings.Contains(rec.Detail, "configuration now: node1 Voter "+c.Members[0].Config.RaftAddr) {
		t.Fatalf("join record %v", rec)
	}

	// A removal, then the remaining replicas agree byte for byte; node3
	// agrees on everything up to its own join.
	if err := lr.RemoveServer(ctx, "node3"); err != nil {
		t.Fatal(err)
	}
	rm3 := waitRecord(t, st, "raft-configuration:remove", "server node3 ")
	if rm3 <= add3 {
		t.Fatalf("removal recorded at %d (join at %d)", rm3, add3)
	}
	waitApplied(t, c, 1, rm3)
	sameRecords(t, c, 0, 1, rm3)
	waitApplied(t, c, 2, add3)
	sameRecords(t, c, 0, 2, add3)
	c.Kill(t, 2)

	// node2 restarts from a snapshot taken after the removal: the previous
	// configuration comes from the snapshot, and the next changes (a voter
	// added at an address where nothing listens, then removed) are
	// recorded on it exactly as on the leader.
	if err := c.Members[1].Node.Raft().Snapshot(); err != nil {
		t.Fatal(err)
	}
	c.Kill(t, 1)
	c.Restart(t, 1)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	if err := lr.AddVoter(ctx, "node9", dead); err != nil {
		t.Fatal(err)
	}
	if err := lr.RemoveServer(ctx, "node9"); err != nil {
		t.Fatal(err)
	}
	add9 := waitRecord(t, st, "raft-configuration:add-voter", "server node9 at "+dead)
	rm9 := waitRecord(t, st, "raft-configuration:remove", "server node9 ")
	if add9 <= rm3 || rm9 <= add9 {
		t.Fatalf("node9 recorded added at %d and removed at %d (node3 removed at %d)", add9, rm9, rm3)
	}
	waitApplied(t, c, 1, rm9)
	sameRecords(t, c, 0, 1, rm9)
	for _, i := range []int{0, 1} {
		if err := c.Members[i].Node.Service().State().Health(); err != nil {
			t.Fatalf("%s: %v", c.Members[i].Config.ID, err)
		}
	}
}
