package kms

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/custos-kms/custos/kms/ledger"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"github.com/custos-kms/custos/raft"
	"google.golang.org/protobuf/proto"
)

// State is the replicated key state: the cluster identity, every key with its
// versions and lifecycle, and the head of the decision ledger. The Raft log
// drives it through ApplyBatch; everything in it is a function of the log.
//
// Keys live in memory (they are few); decision records go to the on-disk
// ledger store, so memory stays bounded whatever the number of decisions.
type State struct {
	mu          sync.RWMutex
	clusterID   string
	domainKeyID []byte
	keys        map[string]*raftlogv1.KeyRecord
	ledger      *ledger.Store
	seq         uint64   // last ledger sequence number
	head        [32]byte // hash of the record at seq
	applied     uint64   // last applied Raft index
	broken      error    // set when the ledger store failed: fail closed
}

var _ raft.StateMachine = (*State)(nil)

// NewState returns an empty State writing decision records to l.
func NewState(l *ledger.Store) *State {
	return &State{keys: map[string]*raftlogv1.KeyRecord{}, ledger: l}
}

// Decision is the result of a Decide command.
type Decision struct {
	// Record is the committed decision record.
	Record *custosv1.DecisionRecord
	// Err is nil for ALLOW and the domain error to return for DENY.
	Err error
}

// ApplyBatch implements raft.StateMachine.
func (s *State) ApplyBatch(entries []raft.AppliedEntry) [][]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([][]any, len(entries))
	var recs []ledger.Record
	var decisions []*Decision
	for i, e := range entries {
		res := make([]any, len(e.Commands))
		for j, c := range e.Commands {
			r := s.apply(e.Index, c)
			if d, ok := r.(*Decision); ok && d.Record != nil {
				data, err := proto.MarshalOptions{Deterministic: true}.Marshal(d.Record)
				if err != nil {
					panic(fmt.Sprintf("kms: marshal decision record: %v", err))
				}
				recs = append(recs, ledger.Record{Seq: d.Record.Seq, Data: data})
				s.head = ledger.Hash(data)
				decisions = append(decisions, d)
			}
			res[j] = r
		}
		out[i] = res
		s.applied = e.Index
	}
	if len(recs) > 0 && s.broken == nil {
		if err := s.ledger.PutBatch(recs); err != nil {
			s.broken = fmt.Errorf("ledger store failed at seq %d: %w", recs[0].Seq, err)
		}
	}
	if s.broken != nil {
		// Nothing may be released on a decision that is not on disk.
		for _, d := range decisions {
			d.Err = fmt.Errorf("%w: decision not recorded: %v", ErrUnavailable, s.broken)
		}
	}
	return out
}

// apply dispatches one command. It returns a *Decision, a key record clone,
// nil, or an error; it never fails the node.
func (s *State) apply(index uint64, c *raftlogv1.Command) any {
	switch op := c.Op.(type) {
	case *raftlogv1.Command_InitCluster:
		return s.applyInit(op.InitCluster)
	case *raftlogv1.Command_CreateKey:
		return s.applyCreateKey(c, op.CreateKey)
	case *raftlogv1.Command_AddKeyVersion:
		return s.applyAddVersion(c, op.AddKeyVersion)
	case *raftlogv1.Command_SetKeyState:
		return s.applySetState(c, op.SetKeyState)
	case *raftlogv1.Command_SetMinDecryptionVersion:
		return s.applySetMin(c, op.SetMinDecryptionVersion)
	case *raftlogv1.Command_Decide:
		return s.applyDecide(index, c, op.Decide)
	default:
		// A command this version does not know: refuse it the same way on
		// every replica.
		return fmt.Errorf("%w: unknown command %T", ErrInternal, c.Op)
	}
}

func (s *State) applyInit(op *raftlogv1.InitCluster) any {
	if s.clusterID != "" {
		return fmt.Errorf("%w: cluster already initialised as %s", ErrFailedPrecondition, s.clusterID)
	}
	s.clusterID = op.ClusterId
	s.domainKeyID = append([]byte(nil), op.DomainKeyId...)
	return nil
}

func (s *State) applyCreateKey(c *raftlogv1.Command, op *raftlogv1.CreateKey) any {
	if s.clusterID == "" {
		return fmt.Errorf("%w: cluster not initialised", ErrFailedPrecondition)
	}
	if _, ok := s.keys[op.Name]; ok {
		return fmt.Errorf("%w: key %q", ErrAlreadyExists, op.Name)
	}
	k := &raftlogv1.KeyRecord{
		Name:                 op.Name,
		Description:          op.Description,
		Enabled:              true,
		PrimaryVersion:       1,
		MinDecryptionVersion: 1,
		Versions: []*raftlogv1.KeyVersionRecord{{
			Version: 1, WrappedKek: op.WrappedKek, CreateTimeUnixNano: c.TimeUnixNano,
		}},
		CreateTimeUnixNano: c.TimeUnixNano,
		UpdateTimeUnixNano: c.TimeUnixNano,
	}
	s.keys[op.Name] = k
	return proto.Clone(k)
}

func (s *State) applyAddVersion(c *raftlogv1.Command, op *raftlogv1.AddKeyVersion) any {
	k, ok := s.keys[op.Name]
	if !ok {
		return fmt.Errorf("%w: key %q", ErrNotFound, op.Name)
	}
	if want := uint32(len(k.Versions)) + 1; op.Version != want {
		return fmt.Errorf("%w: key %q: a concurrent rotation created version %d first", ErrFailedPrecondition, op.Name, want-1)
	}
	k.Versions = append(k.Versions, &raftlogv1.KeyVersionRecord{
		Version: op.Version, WrappedKek: op.WrappedKek, CreateTimeUnixNano: c.TimeUnixNano,
	})
	k.PrimaryVersion = op.Version
	k.UpdateTimeUnixNano = c.TimeUnixNano
	return proto.Clone(k)
}

func (s *State) applySetState(c *raftlogv1.Command, op *raftlogv1.SetKeyState) any {
	k, ok := s.keys[op.Name]
	if !ok {
		return fmt.Errorf("%w: key %q", ErrNotFound, op.Name)
	}
	k.Enabled = op.Enabled
	k.UpdateTimeUnixNano = c.TimeUnixNano
	return proto.Clone(k)
}

func (s *State) applySetMin(c *raftlogv1.Command, op *raftlogv1.SetMinDecryptionVersion) any {
	k, ok := s.keys[op.Name]
	if !ok {
		return fmt.Errorf("%w: key %q", ErrNotFound, op.Name)
	}
	if op.MinDecryptionVersion < 1 || op.MinDecryptionVersion > k.PrimaryVersion {
		return fmt.Errorf("%w: min_decryption_version %d: must be between 1 and the primary version %d",
			ErrInvalidArgument, op.MinDecryptionVersion, k.PrimaryVersion)
	}
	k.MinDecryptionVersion = op.MinDecryptionVersion
	k.UpdateTimeUnixNano = c.TimeUnixNano
	return proto.Clone(k)
}

// applyDecide evaluates a key use against the state at this log position
// and builds the decision record. The caller (ApplyBatch) persists it.
func (s *State) applyDecide(index uint64, c *raftlogv1.Command, op *raftlogv1.Decide) any {
	if s.broken != nil {
		return &Decision{Err: fmt.Errorf("%w: ledger store failed; restart the node", ErrUnavailable)}
	}
	outcome, rule, derr := s.evaluate(op)
	rec := &custosv1.DecisionRecord{
		Seq:               s.seq + 1,
		TimeUnixNano:      c.TimeUnixNano,
		Node:              c.Node,
		Principal:         c.Principal,
		Key:               op.Key,
		KeyVersion:        op.KeyVersion,
		Operation:         op.Operation,
		Reason:            op.Reason,
		JustificationText: op.JustificationText,
		Ticket:            op.Ticket,
		ContextDigest:     op.ContextDigest,
		Outcome:           outcome,
		MatchedRule:       rule,
		RequestId:         op.RequestId,
		PrevHash:          append([]byte(nil), s.head[:]...),
		RaftIndex:         index,
	}
	s.seq++
	if derr != nil {
		derr = fmt.Errorf("%w (decision %d: DENY by %s)", derr, rec.Seq, rule)
	}
	return &Decision{Record: rec, Err: derr}
}

// evaluate applies the key's lifecycle rules, in a fixed order.
func (s *State) evaluate(op *raftlogv1.Decide) (custosv1.Outcome, string, error) {
	deny := custosv1.Outcome_OUTCOME_DENY
	k, ok := s.keys[op.Key]
	switch {
	case !ok:
		return deny, "key:not-found", fmt.Errorf("%w: key %q", ErrNotFound, op.Key)
	case !k.Enabled:
		return deny, "key-state:disabled", fmt.Errorf("%w: key %q is disabled", ErrFailedPrecondition, op.Key)
	case op.KeyVersion == 0 || op.KeyVersion > uint32(len(k.Versions)):
		return deny, "key-version:not-found", fmt.Errorf("%w: key %q has no version %d", ErrNotFound, op.Key, op.KeyVersion)
	case op.KeyVersion < k.MinDecryptionVersion:
		return deny, "key-version:below-minimum", fmt.Errorf("%w: key %q version %d is below the minimum decryption version %d",
			ErrFailedPrecondition, op.Key, op.KeyVersion, k.MinDecryptionVersion)
	}
	return custosv1.Outcome_OUTCOME_ALLOW, "key-state:enabled", nil
}

// ClusterID returns the cluster id, "" before initialisation.
func (s *State) ClusterID() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.clusterID
}

// DomainKeyID returns the CKA_ID of the cluster's domain key.
func (s *State) DomainKeyID() []byte {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]byte(nil), s.domainKeyID...)
}

// Key returns a copy of a key's record.
func (s *State) Key(name string) (*raftlogv1.KeyRecord, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, ok := s.keys[name]
	if !ok {
		return nil, fmt.Errorf("%w: key %q", ErrNotFound, name)
	}
	return proto.Clone(k).(*raftlogv1.KeyRecord), nil
}

// KeyNames returns the key names after `after`, in order, at most limit.
func (s *State) KeyNames(after string, limit int) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	names := make([]string, 0, len(s.keys))
	for n := range s.keys {
		if n > after {
			names = append(names, n)
		}
	}
	sortStrings(names)
	if len(names) > limit {
		names = names[:limit]
	}
	return names
}

// LedgerHead returns the last decision sequence number and its hash.
func (s *State) LedgerHead() (uint64, [32]byte) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.seq, s.head
}

// AppliedIndex returns the last applied Raft log index.
func (s *State) AppliedIndex() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.applied
}

// Health returns an error when the state can no longer record decisions.
func (s *State) Health() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.broken != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, s.broken)
	}
	return nil
}

// DecisionRecord reads a committed decision record from the ledger.
func (s *State) DecisionRecord(seq uint64) (*custosv1.DecisionRecord, error) {
	data, err := s.ledger.Get(seq)
	if errors.Is(err, ledger.ErrNotFound) {
		return nil, fmt.Errorf("%w: decision %d", ErrNotFound, seq)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: read decision %d: %v", ErrInternal, seq, err)
	}
	rec := &custosv1.DecisionRecord{}
	if err := proto.Unmarshal(data, rec); err != nil {
		return nil, fmt.Errorf("%w: decode decision %d: %v", ErrInternal, seq, err)
	}
	return rec, nil
}

func sortStrings(s []string) { slices.Sort(s) }
