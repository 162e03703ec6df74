package raft_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/custos-kms/custos/raft"
)

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// leaderOf returns the node among open that believes it is the leader.
func leaderOf(open []*raft.Node) *raft.Node {
	for _, n := range open {
		if n.IsLeader() {
			return n
		}
	}
	return nil
}

// clusterApply applies on whichever node leads, retrying while leadership
// moves (under heavy load a leader may step down). A retry after
// ErrLeadershipLost may apply a command twice; callers compare replicas
// with each other rather than with exact counts.
func clusterApply(t *testing.T, open []*raft.Node, p string, v int64) listResult {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if l := leaderOf(open); l != nil {
			res, err := l.Apply(ctx, cmd(p, v))
			if err == nil {
				return res.(listResult)
			}
			if !errors.Is(err, raft.ErrNotLeader) {
				t.Fatalf("Apply(%s) on %s: %v", p, l.ID(), err)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("Apply(%s): no stable leader", p)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// converged waits until every open node's state equals the others' and
// holds every principal in want.
func converged(t *testing.T, open []*raft.Node, sms []*listSM, want []string) listState {
	t.Helper()
	var st listState
	eventually(t, "replicas to converge", func() bool {
		st = sms[0].state()
		for _, sm := range sms[1:] {
			o := sm.state()
			if o.Sum != st.Sum || fmt.Sprint(o.Principals) != fmt.Sprint(st.Principals) {
				return false
			}
		}
		have := make(map[string]bool, len(st.Principals))
		for _, p := range st.Principals {
			have[p] = true
		}
		for _, p := range want {
			if !have[p] {
				return false
			}
		}
		return true
	})
	for i, sm := range sms {
		if dups, _, _ := sm.counters(); dups != 0 {
			t.Fatalf("%s applied %d entries twice", open[i].ID(), dups)
		}
	}
	return st
}

func TestThreeNodeCluster(t *testing.T) {
	ids := []string{"n1", "n2", "n3"}
	nodes := make([]*raft.Node, 3)
	sms := make([]*listSM, 3)
	for i, id := range ids {
		cfg := testConfig(id, t.TempDir())
		cfg.Bootstrap = i == 0
		sms[i] = &listSM{}
		nodes[i] = openNode(t, cfg, sms[i])
	}
	waitLeaderSelf(t, nodes[0])
	ctx := ctxT(t, 60*time.Second)
	for _, n := range nodes[1:] {
		eventually(t, "AddVoter("+n.ID()+")", func() bool {
			l := leaderOf(nodes)
			return l != nil && l.AddVoter(ctx, n.ID(), n.Addr()) == nil
		})
	}

	var applied []string
	for i := range 40 {
		p := fmt.Sprintf("a-%d", i)
		if r := clusterApply(t, nodes, p, int64(i)); r.Principal != p {
			t.Fatalf("Apply(%s) got result for %s", p, r.Principal)
		}
		applied = append(applied, p)
	}
	converged(t, nodes, sms, applied)

	// A follower refuses proposals and names the leader.
	eventually(t, "a follower to report ErrNotLeader naming the leader", func() bool {
		l := leaderOf(nodes)
		if l == nil {
			return false
		}
		for _, n := range nodes {
			if n == l {
				continue
			}
			_, err := n.Apply(ctx, cmd("on-follower", 1))
			var nle *raft.NotLeaderError
			if !errors.Is(err, raft.ErrNotLeader) || !errors.As(err, &nle) {
				t.Fatalf("Apply on follower %s: %v, want ErrNotLeader", n.ID(), err)
			}
			if err := n.Barrier(ctx); !errors.Is(err, raft.ErrNotLeader) {
				t.Fatalf("Barrier on follower: %v, want ErrNotLeader", err)
			}
			return nle.LeaderAddr == l.Addr() && nle.LeaderID == l.ID()
		}
		return false
	})

	// Kill the leader; another node takes over and applies continue.
	var old *raft.Node
	eventually(t, "a leader", func() bool { old = leaderOf(nodes); return old != nil })
	if err := old.Close(); err != nil {
		t.Fatalf("Close leader: %v", err)
	}
	var rest []*raft.Node
	var restSMs []*listSM
	for i, n := range nodes {
		if n != old {
			rest = append(rest, n)
			restSMs = append(restSMs, sms[i])
		}
	}
	eventually(t, "a new leader", func() bool { return leaderOf(rest) != nil })
	if err := rest[0].WaitLeader(ctx); err != nil {
		t.Fatalf("WaitLeader: %v", err)
	}
	for i := range 20 {
		p := fmt.Sprintf("b-%d", i)
		if r := clusterApply(t, rest, p, 1000+int64(i)); r.Principal != p {
			t.Fatalf("Apply(%s) got result for %s", p, r.Principal)
		}
		applied = append(applied, p)
	}
	st := converged(t, rest, restSMs, applied)
	if len(st.Principals) < 60 {
		t.Fatalf("%d commands after failover, want >= 60", len(st.Principals))
	}

	// Membership: drop the dead node.
	eventually(t, "RemoveServer", func() bool {
		l := leaderOf(rest)
		return l != nil && l.RemoveServer(ctx, old.ID()) == nil
	})
	if l := leaderOf(rest); l != nil {
		if st := l.Stats(); st.State != "Leader" || st.Leader != l.Addr() || st.AppliedIndex == 0 {
			t.Fatalf("leader Stats = %+v", st)
		}
	}
}

// Closing a node under load answers every caller: with its result or
// ErrClosed (or ErrNotLeader), never a hang.
func TestCloseUnderLoad(t *testing.T) {
	cfg := testConfig("n1", t.TempDir())
	cfg.Bootstrap = true
	n := openNode(t, cfg, &listSM{})
	waitLeaderSelf(t, n)
	ctx := ctxT(t, 30*time.Second)
	errs := make(chan error, 32)
	for w := range 32 {
		go func() {
			for i := 0; ; i++ {
				_, err := n.Apply(ctx, cmd(fmt.Sprintf("w%d-%d", w, i), 1))
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for range 32 {
		err := <-errs
		if !errors.Is(err, raft.ErrClosed) && !errors.Is(err, raft.ErrNotLeader) {
			t.Fatalf("Apply during Close: %v, want ErrClosed", err)
		}
	}
}
