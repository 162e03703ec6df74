package raft_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"github.com/custos-kms/custos/raft"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testConfig(id, dir string) raft.Config {
	return raft.Config{
		ID:            id,
		Dir:           dir,
		Addr:          "127.0.0.1:0",
		Logger:        quietLogger(),
		LocalTimeouts: true,
		ApplyTimeout:  5 * time.Second,
	}
}

func openNode(t *testing.T, cfg raft.Config, sm raft.StateMachine) *raft.Node {
	t.Helper()
	n, err := raft.Open(cfg, sm)
	if err != nil {
		t.Fatalf("Open(%s): %v", cfg.ID, err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitLeaderSelf waits until n is the leader.
func waitLeaderSelf(t *testing.T, n *raft.Node) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !n.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not become leader: %+v", n.ID(), n.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func cmd(principal string, v int64) *raftlogv1.Command {
	return &raftlogv1.Command{Principal: principal, TimeUnixNano: v, Node: "test"}
}

func applyN(t *testing.T, n *raft.Node, prefix string, from, count int) {
	t.Helper()
	ctx := ctxT(t, 20*time.Second)
	for i := from; i < from+count; i++ {
		p := fmt.Sprintf("%s-%d", prefix, i)
		res, err := n.Apply(ctx, cmd(p, int64(i)))
		if err != nil {
			t.Fatalf("Apply(%s): %v", p, err)
		}
		if got := res.(listResult).Principal; got != p {
			t.Fatalf("Apply(%s) result principal = %q", p, got)
		}
	}
}

func TestSingleNodeBootstrapApply(t *testing.T) {
	sm := &listSM{}
	n := openNode(t, func() raft.Config { c := testConfig("n1", t.TempDir()); c.Bootstrap = true; return c }(), sm)
	waitLeaderSelf(t, n)
	ctx := ctxT(t, 10*time.Second)

	res, err := n.Apply(ctx, cmd("alice", 5))
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if got, want := res, (listResult{Principal: "alice", Pos: 1, Sum: 5}); got != want {
		t.Fatalf("result = %+v, want %+v", got, want)
	}
	if _, err := n.Apply(ctx, cmd("reject", 1)); !errors.Is(err, errRejected) {
		t.Fatalf("Apply(reject) error = %v, want errRejected", err)
	}
	res, err = n.Apply(ctx, cmd("bob", 7))
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if got, want := res, (listResult{Principal: "bob", Pos: 2, Sum: 12}); got != want {
		t.Fatalf("result = %+v, want %+v", got, want)
	}

	st := n.Stats()
	if st.State != "Leader" || st.Leader != n.Addr() || st.AppliedIndex < 3 || st.CommitIndex < st.AppliedIndex-0 || st.LastLogIndex < st.CommitIndex {
		t.Fatalf("Stats = %+v", st)
	}
	if addr, id := n.Leader(); addr != n.Addr() || id != "n1" {
		t.Fatalf("Leader() = %q, %q", addr, id)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := n.Apply(ctx, cmd("late", 1)); !errors.Is(err, raft.ErrClosed) {
		t.Fatalf("Apply after Close error = %v, want ErrClosed", err)
	}
}

func TestApplyContextCanceled(t *testing.T) {
	n := openNode(t, func() raft.Config { c := testConfig("n1", t.TempDir()); c.Bootstrap = true; return c }(), &listSM{})
	waitLeaderSelf(t, n)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := n.Apply(ctx, cmd("x", 1)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Apply with canceled ctx = %v, want context.Canceled", err)
	}
}

func TestGroupCommitConcurrent(t *testing.T) {
	sm := &listSM{}
	n := openNode(t, func() raft.Config { c := testConfig("n1", t.TempDir()); c.Bootstrap = true; return c }(), sm)
	waitLeaderSelf(t, n)
	ctx := ctxT(t, 30*time.Second)

	const workers, total = 64, 2000
	var wg sync.WaitGroup
	errs := make(chan error, total)
	seenPos := make([]bool, total+1)
	var mu sync.Mutex
	var wantSum int64
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += workers {
				p := fmt.Sprintf("w%02d-%04d", w, i)
				res, err := n.Apply(ctx, cmd(p, int64(i)))
				if err != nil {
					errs <- fmt.Errorf("Apply(%s): %w", p, err)
					return
				}
				r := res.(listResult)
				if r.Principal != p || r.Pos < 1 || r.Pos > total {
					errs <- fmt.Errorf("Apply(%s) got result %+v", p, r)
					return
				}
				mu.Lock()
				if seenPos[r.Pos] {
					errs <- fmt.Errorf("position %d handed out twice", r.Pos)
				}
				seenPos[r.Pos] = true
				wantSum += int64(i)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	st := sm.state()
	if len(st.Principals) != total || st.Sum != wantSum {
		t.Fatalf("state has %d commands, sum %d; want %d, %d", len(st.Principals), st.Sum, total, wantSum)
	}
	_, maxPE, _ := sm.counters()
	t.Logf("%d commands in %d entries (max %d per entry)", total, st.Entries, maxPE)
	if st.Entries >= total || maxPE < 2 {
		t.Fatalf("no batching: %d commands in %d entries, max %d per entry", total, st.Entries, maxPE)
	}
}

func TestRestartReplaysLog(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig("n1", dir)
	cfg.Bootstrap = true

	sm1 := &listSM{}
	n1 := openNode(t, cfg, sm1)
	waitLeaderSelf(t, n1)
	applyN(t, n1, "a", 0, 50)
	want := sm1.state()
	if err := n1.Close(); err != nil {
		t.Fatal(err)
	}

	// No snapshot: the whole log is replayed into a fresh state machine.
	sm2 := &listSM{}
	n2 := openNode(t, cfg, sm2)
	waitLeaderSelf(t, n2)
	if err := n2.Barrier(ctxT(t, 10*time.Second)); err != nil {
		t.Fatalf("Barrier: %v", err)
	}
	got := sm2.state()
	if len(got.Principals) != 50 || got.Sum != want.Sum || got.LastIndex != want.LastIndex {
		t.Fatalf("after restart: %d commands sum %d last %d; want 50, %d, %d",
			len(got.Principals), got.Sum, got.LastIndex, want.Sum, want.LastIndex)
	}
	if dups, _, restores := sm2.counters(); dups != 0 || restores != 0 {
		t.Fatalf("dups=%d restores=%d, want 0, 0", dups, restores)
	}
	applyN(t, n2, "b", 50, 5)
	if got := sm2.state(); len(got.Principals) != 55 {
		t.Fatalf("after more applies: %d commands, want 55", len(got.Principals))
	}
}

func TestSnapshotAndRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig("n1", dir)
	cfg.Bootstrap = true
	cfg.TrailingLogs = 5 // the snapshot compacts most of the log

	sm1 := &listSM{}
	n1 := openNode(t, cfg, sm1)
	waitLeaderSelf(t, n1)
	applyN(t, n1, "a", 0, 100)
	if err := n1.Snapshot(); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	snapIndex := sm1.state().LastIndex
	applyN(t, n1, "b", 100, 30)
	want := sm1.state()
	if err := n1.Close(); err != nil {
		t.Fatal(err)
	}

	// Restart: the snapshot is restored inside Open, the 30 later entries
	// are applied once this node is leader again and commits.
	sm2 := &listSM{}
	n2 := openNode(t, cfg, sm2)
	if _, _, restores := sm2.counters(); restores != 1 {
		t.Fatalf("restores after Open = %d, want 1", restores)
	}
	if got := sm2.state(); len(got.Principals) != 100 || got.LastIndex != snapIndex {
		t.Fatalf("right after Open: %d commands, last %d; want 100, %d", len(got.Principals), got.LastIndex, snapIndex)
	}
	waitLeaderSelf(t, n2)
	if err := n2.Barrier(ctxT(t, 10*time.Second)); err != nil {
		t.Fatalf("Barrier: %v", err)
	}
	got := sm2.state()
	if len(got.Principals) != 130 || got.Sum != want.Sum || got.LastIndex != want.LastIndex {
		t.Fatalf("after replay: %d commands sum %d last %d; want 130, %d, %d",
			len(got.Principals), got.Sum, got.LastIndex, want.Sum, want.LastIndex)
	}
	for i, p := range got.Principals {
		if p != want.Principals[i] {
			t.Fatalf("principal %d = %q, want %q", i, p, want.Principals[i])
		}
	}
	if dups, _, _ := sm2.counters(); dups != 0 {
		t.Fatalf("%d entries applied twice", dups)
	}

	// Snapshot again on the restarted node, restart once more.
	if err := n2.Snapshot(); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if err := n2.Close(); err != nil {
		t.Fatal(err)
	}
	sm3 := &listSM{}
	n3 := openNode(t, cfg, sm3)
	waitLeaderSelf(t, n3)
	if err := n3.Barrier(ctxT(t, 10*time.Second)); err != nil {
		t.Fatalf("Barrier: %v", err)
	}
	if got := sm3.state(); len(got.Principals) != 130 || got.Sum != want.Sum {
		t.Fatalf("third start: %d commands sum %d; want 130, %d", len(got.Principals), got.Sum, want.Sum)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := raft.Open(raft.Config{Dir: t.TempDir()}, &listSM{}); err == nil {
		t.Fatal("Open without ID succeeded")
	}
	if _, err := raft.Open(raft.Config{ID: "x"}, &listSM{}); err == nil {
		t.Fatal("Open without Dir succeeded")
	}
	cfg := testConfig("x", t.TempDir())
	cfg.Addr = "0.0.0.0:0" // not advertisable without Advertise
	if _, err := raft.Open(cfg, &listSM{}); err == nil {
		t.Fatal("Open with unadvertisable address succeeded")
	}
}
