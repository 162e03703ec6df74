package raft_test

import (
	"encoding/json"
	"errors"
	"io"
	"sync"

	"github.com/custos-kms/custos/raft"
)

// listSM is a tiny StateMachine: an append-only list of command principals
// with a running sum of their TimeUnixNano fields. It counts entries and
// commands (to prove batching) and detects entries applied twice.
type listSM struct {
	mu       sync.Mutex
	st       listState
	dups     int // entries whose index was <= the last applied index
	maxPE    int // most commands seen in one entry
	calls    int // ApplyBatch calls
	restores int
}

type listState struct {
	Principals []string
	Sum        int64
	Entries    int
	LastIndex  uint64
}

// listResult is the per-command result.
type listResult struct {
	Principal string
	Pos       int // 1-based position in the list
	Sum       int64
}

var errRejected = errors.New("rejected by test state machine")

func (s *listSM) ApplyBatch(entries []raft.AppliedEntry) [][]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	out := make([][]any, len(entries))
	for i, e := range entries {
		if e.Index <= s.st.LastIndex {
			s.dups++
		}
		s.st.LastIndex = e.Index
		s.st.Entries++
		s.maxPE = max(s.maxPE, len(e.Commands))
		res := make([]any, len(e.Commands))
		for j, c := range e.Commands {
			if c.GetPrincipal() == "reject" {
				res[j] = errRejected
				continue
			}
			s.st.Principals = append(s.st.Principals, c.GetPrincipal())
			s.st.Sum += c.GetTimeUnixNano()
			res[j] = listResult{Principal: c.GetPrincipal(), Pos: len(s.st.Principals), Sum: s.st.Sum}
		}
		out[i] = res
	}
	return out
}

func (s *listSM) Snapshot() (raft.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cp := s.st
	cp.Principals = append([]string(nil), s.st.Principals...)
	return listSnap{cp}, nil
}

func (s *listSM) Restore(r io.Reader) error {
	var st listState
	if err := json.NewDecoder(r).Decode(&st); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st = st
	s.restores++
	return nil
}

func (s *listSM) state() listState {
	s.mu.Lock()
	defer s.mu.Unlock()
	cp := s.st
	cp.Principals = append([]string(nil), s.st.Principals...)
	return cp
}

func (s *listSM) counters() (dups, maxPerEntry, restores int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dups, s.maxPE, s.restores
}

type listSnap struct{ st listState }

func (l listSnap) Persist(w io.Writer) error { return json.NewEncoder(w).Encode(l.st) }
func (l listSnap) Release()                  {}
