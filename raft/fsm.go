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
// go to the StateMachine in one ApplyBatch call, and so do the
// configuration entries if it is a ConfigurationObserver (their response
// stays nil).
func (f *fsm) ApplyBatch(logs []*hraft.Log) []any {
	resp := make([]any, len(logs))
	entries := make([]AppliedEntry, 0, len(logs))
	pos := make([]int, 0, len(logs))
	_, observer := f.sm.(ConfigurationObserver)
	for i, l := range logs {
		switch {
		case l.Type == hraft.LogCommand:
			e := decodeEntry(l)
			entries = append(entries, AppliedEntry{Index: l.Index, Commands: e.GetCommands()})
		case l.Type == hraft.LogConfiguration && observer:
			entries = append(entries, AppliedEntry{Index: l.Index, Configuration: decodeConfiguration(l)})
		default:
			continue
		}
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
		if entries[i].Configuration == nil {
			resp[p] = results[i]
		}
	}
	return resp
}

// decodeConfiguration decodes a configuration entry. hashicorp/raft decoded
// (and panicked on) the same bytes before committing them.
func decodeConfiguration(l *hraft.Log) *Configuration {
	c := hraft.DecodeConfiguration(l.Data)
	out := &Configuration{Servers: make([]Server, 0, len(c.Servers))}
	for _, s := range c.Servers {
		out.Servers = append(out.Servers, Server{ID: string(s.ID), Addr: string(s.Address), Suffrage: s.Suffrage.String()})
	}
	if !l.AppendedAt.IsZero() {
		out.AppendedAtUnixNano = l.AppendedAt.UnixNano()
	}
	return out
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
