// Package ceiling holds the raw ceilings custos's benchmarks compare with
// that need more than a few lines: a Raft log apply with nothing above it.
package ceiling

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"github.com/custos-kms/custos/raft"
)

// RaftApply is a single-node custos raft.Node (bbolt log store, custos's group
// commit with its default MaxBatch and MaxInFlight) over a state machine
// that does nothing: Apply measures the commit path a decision record takes
// (queue, marshal, log append with its fsync, FSM dispatch), without
// the ledger, policy, HSM or gRPC.
type RaftApply struct {
	node *raft.Node
	dir  string
	n    atomic.Int64
}

// OpenRaftApply starts the node in a fresh directory under dir ("" for the
// system's temporary directory) and waits until it leads.
func OpenRaftApply(ctx context.Context, dir string) (*RaftApply, error) {
	d, err := os.MkdirTemp(dir, "custos-raft-ceiling-")
	if err != nil {
		return nil, err
	}
	n, err := raft.Open(raft.Config{
		ID: "ceiling", Dir: d, Bootstrap: true,
		Logger: slog.New(slog.DiscardHandler),
	}, nopSM{})
	if err != nil {
		_ = os.RemoveAll(d)
		return nil, err
	}
	r := &RaftApply{node: n, dir: d}
	for !n.IsLeader() {
		select {
		case <-ctx.Done():
			r.Close()
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return r, nil
}

// Apply commits one small command (about the size of a Decide).
func (r *RaftApply) Apply(ctx context.Context) error {
	v := r.n.Add(1)
	res, err := r.node.Apply(ctx, &raftlogv1.Command{Principal: "bench", TimeUnixNano: v, Node: "ceiling",
		Op: &raftlogv1.Command_Decide{Decide: &raftlogv1.Decide{Key: "bench", KeyVersion: 1,
			JustificationText: "custos-bench raft ceiling", RequestId: "0123456789abcdef0123456789abcdef",
			ContextDigest: make([]byte, 32)}}})
	if err != nil {
		return err
	}
	if res != v {
		return fmt.Errorf("raft ceiling: result %v, want %d", res, v)
	}
	return nil
}

// Close stops the node and removes its directory.
func (r *RaftApply) Close() {
	_ = r.node.Close()
	_ = os.RemoveAll(r.dir)
}

// nopSM answers each command with its TimeUnixNano.
type nopSM struct{}

func (nopSM) ApplyBatch(entries []raft.AppliedEntry) [][]any {
	out := make([][]any, len(entries))
	for i, e := range entries {
		res := make([]any, len(e.Commands))
		for j, c := range e.Commands {
			res[j] = c.GetTimeUnixNano()
		}
		out[i] = res
	}
	return out
}

func (nopSM) Snapshot() (raft.Snapshot, error) { return nopSnap{}, nil }
func (nopSM) Restore(io.Reader) error          { return nil }

type nopSnap struct{}

func (nopSnap) Persist(w io.Writer) error { return nil }
func (nopSnap) Release()                  {}
