// Package raft replicates custos state with hashicorp/raft: the node (log
// store, snapshots, transport), the FSM adapter that decodes log entries, and
// group commit of commands proposed concurrently.
//
// The package knows nothing of keys or decisions: it replicates
// raftlogv1.Command values into a StateMachine, which package kms provides.
package raft

import (
	"io"

	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// AppliedEntry is one committed log entry handed to the StateMachine.
type AppliedEntry struct {
	// Index is the Raft log index of the entry.
	Index uint64
	// Commands are the entry's commands, in proposal order.
	Commands []*raftlogv1.Command
	// Configuration is set for a Raft configuration entry (a membership
	// change), which only a ConfigurationObserver receives; such an entry
	// has no Commands.
	Configuration *Configuration
}

// Configuration is the content of a Raft configuration entry: the whole
// configuration it commits. Every replica decodes it from the same log
// entry, so it is the same on all of them, on replay too.
type Configuration struct {
	// Servers are the members, in the entry's order.
	Servers []Server
	// AppendedAtUnixNano is the time the leader appended the entry, by its
	// clock (hashicorp's Log.AppendedAt, replicated and stored with the
	// entry); 0 when the entry has none (the bootstrap configuration).
	AppendedAtUnixNano int64
}

// ConfigurationObserver is a StateMachine that also receives the Raft
// configuration entries in ApplyBatch, in log order among the command
// entries, so that it can record membership changes at their log
// positions. The result it returns for such an entry is discarded.
type ConfigurationObserver interface {
	StateMachine
	// ObservesConfiguration marks the implementation; it is never called.
	ObservesConfiguration()
}

// StateMachine is the deterministic state that the log drives. Apply must be
// a pure function of the entries and the prior state: no clocks, randomness,
// or HSM calls (the proposer puts those into the commands).
type StateMachine interface {
	// ApplyBatch applies consecutive committed entries in order and returns,
	// for each entry, one result per command (a value or an error). A batch
	// may hold many entries so that durable side stores (the ledger) write
	// once per batch.
	ApplyBatch(entries []AppliedEntry) [][]any

	// Snapshot captures the state at the last applied entry. It must be
	// cheap: the returned Snapshot's Persist does the I/O, concurrently with
	// further ApplyBatch calls.
	Snapshot() (Snapshot, error)

	// Restore replaces the state with a snapshot's contents.
	Restore(r io.Reader) error
}

// Snapshot is a point-in-time capture of a StateMachine.
type Snapshot interface {
	// Persist writes the snapshot to w.
	Persist(w io.Writer) error
	// Release is called when raft is done with the snapshot.
	Release()
}
