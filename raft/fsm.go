package raft

import (
	"fmt"
	"io"

	hraft "github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// fsm adapts a StateMachine to hashicorp's BatchingFSM. Each LogCommand
// log's data is a marshalled raftlogv1.Entry; its response is the []any the
// StateMachine returned for that entry (one result per command). Other log
// types get nil responses.
type fsm struct {
	sm StateMachine
}

var _ hraft.BatchingFSM = (*fsm)(nil)

// decodeEntry decodes one log's payload. A payload that does not decode
// means this replica's log differs from what the proposer wrote, or the
// binary cannot read its own log: continuing would let replicas diverge, so
// it panics (as Consul's FSM does).
func decodeEntry(l *hraft.Log) *raftlogv1.Entry {
	var e raftlogv1.Entry
	if err := proto.Unmarshal(l.Data, &e); err != nil {
		panic(fmt.Sprintf("custos/raft: cannot decode log entry at index %d term %d (%d bytes) as raftlog.v1.Entry: %v; refusing to continue so that replicas never diverge",
			l.Index, l.Term, len(l.Data), err))
	}
	return &e
}

// ApplyBatch implements hraft.BatchingFSM: all command entries of the batch
// go to the StateMachine in one ApplyBatch call.
func (f *fsm) ApplyBatch(logs []*hraft.Log) []any {
	resp := make([]any, len(logs))
	entries := make([]AppliedEntry, 0, len(logs))
	pos := make([]int, 0, len(logs))
	for i, l := range logs {
		if l.Type != hraft.LogCommand {
			continue
		}
		e := decodeEntry(l)
		entries = append(entries, AppliedEntry{Index: l.Index, Commands: e.GetCommands()})
		pos = append(pos, i)
	}
	if len(entries) == 0 {
		return resp
	}
	results := f.sm.ApplyBatch(entries)
	if len(results) != len(entries) {
		panic(fmt.Sprintf("custos/raft: StateMachine.ApplyBatch returned %d results for %d entries (indexes %d..%d)",
			len(results), len(entries), entries[0].Index, entries[len(entries)-1].Index))
	}
	for i, p := range pos {
		resp[p] = results[i]
	}
	return resp
}

// Apply implements hraft.FSM (raft uses ApplyBatch when available).
func (f *fsm) Apply(l *hraft.Log) any {
	return f.ApplyBatch([]*hraft.Log{l})[0]
}

// Snapshot implements hraft.FSM.
func (f *fsm) Snapshot() (hraft.FSMSnapshot, error) {
	s, err := f.sm.Snapshot()
	if err != nil {
		return nil, err
	}
	return fsmSnapshot{s}, nil
}

// Restore implements hraft.FSM.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	return f.sm.Restore(rc)
}

type fsmSnapshot struct{ s Snapshot }

// Persist writes the snapshot and closes the sink, or cancels it on error so
// that a partial snapshot is never kept.
func (s fsmSnapshot) Persist(sink hraft.SnapshotSink) error {
	if err := s.s.Persist(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s fsmSnapshot) Release() { s.s.Release() }
