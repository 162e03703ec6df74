package kms

import (
	"context"
	"errors"
	"fmt"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"google.golang.org/protobuf/proto"
)

// errStop ends a ledger scan early.
var errStop = errors.New("stop")

// Bounds of one page of ScanRecords: records read in one ledger read
// transaction before fn sees them.
const (
	scanPageRecords = 256
	scanPageBytes   = 1 << 20
)

// ScanRecords calls fn with the stored bytes of every record from `from` up
// to the ledger head at the time of the call, in order, until fn returns an
// error (errStop-like sentinels are the caller's). data is fn's to keep.
//
// fn runs outside any ledger transaction: records are read in pages
// (scanPageRecords, scanPageBytes) and copied first. fn is often a gRPC
// Send to an audit client, which blocks when that client stops reading; a
// bbolt read transaction held that long would stop every writer the next
// time the file must grow (bbolt remaps only with no reader), so one stuck
// auditor stream would stall every decision of the node
// (TestStuckClientsCannotStarveOthers).
func (s *State) ScanRecords(from uint64, fn func(seq uint64, data []byte) error) error {
	if from == 0 {
		from = 1
	}
	head, _ := s.LedgerHead()
	if from > head {
		return nil
	}
	if err := s.ledgerHeld(from); err != nil {
		return err
	}
	type record struct {
		seq  uint64
		data []byte
	}
	page := make([]record, 0, scanPageRecords)
	for from <= head {
		page = page[:0]
		size := 0
		err := s.ledger.Scan(from, func(seq uint64, data []byte) error {
			if seq > head || len(page) == scanPageRecords || size >= scanPageBytes {
				return errStop
			}
			page = append(page, record{seq, append([]byte(nil), data...)})
			size += len(data)
			return nil
		})
		if err != nil && !errors.Is(err, errStop) {
			return err
		}
		// Records are never removed below the head except by a snapshot
		// restore replacing the ledger: a hole or an early end means that
		// happened during the scan, and a caller must not take what it got
		// for the whole range.
		if len(page) == 0 {
			return fmt.Errorf("%w: the ledger changed during the read (a snapshot was installed): record %d is missing; retry", ErrUnavailable, from)
		}
		for i, r := range page {
			if r.seq != from+uint64(i) {
				return fmt.Errorf("%w: the ledger changed during the read (a snapshot was installed): record %d is missing; retry", ErrUnavailable, from+uint64(i))
			}
		}
		for _, r := range page {
			if err := fn(r.seq, r.data); err != nil {
				return err
			}
		}
		from = page[len(page)-1].seq + 1
	}
	return nil
}

// WaitBeyond blocks until the ledger head passes seq or ctx ends.
func (s *State) WaitBeyond(ctx context.Context, seq uint64) error {
	for {
		s.mu.RLock()
		head, ch := s.seq, s.grown
		s.mu.RUnlock()
		if head > seq {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// WaitApplied blocks until this node's state has applied the log up to
// index, or ctx ends. A follower acting on a decision the leader committed
// waits here, so it never reads state older than the decision.
func (s *State) WaitApplied(ctx context.Context, index uint64) error {
	for {
		s.mu.RLock()
		applied, ch := s.applied, s.advanced
		s.mu.RUnlock()
		if applied >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Checkpoint returns the newest checkpoint (nil before the first), the
// ledger position of its record, and the registered signing keys.
func (s *State) Checkpoint() (*custosv1.Checkpoint, uint64, []*raftlogv1.NodeKey) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var cp *custosv1.Checkpoint
	if s.lastCheckpoint != nil {
		cp = proto.Clone(s.lastCheckpoint).(*custosv1.Checkpoint)
	}
	keys := make([]*raftlogv1.NodeKey, len(s.nodeKeys))
	for i, k := range s.nodeKeys {
		keys[i] = proto.Clone(k).(*raftlogv1.NodeKey)
	}
	return cp, s.lastCheckpointRecord, keys
}

// Sinks returns the notification sinks with their secrets, for the
// notifier on this node. Never expose them through an API.
func (s *State) Sinks() []*custosv1.Sink {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*custosv1.Sink, len(s.gov.GetSinks()))
	for i, sk := range s.gov.GetSinks() {
		out[i] = proto.Clone(sk).(*custosv1.Sink)
	}
	return out
}

// Matches reports whether a record passes a filter.
func Matches(f *custosv1.DecisionFilter, r *custosv1.DecisionRecord) bool {
	if f == nil {
		return true
	}
	has := func(n int, ok bool) bool { return n == 0 || ok }
	return (f.Key == "" || f.Key == r.Key) &&
		(f.Principal == "" || f.Principal == r.Principal) &&
		has(len(f.Reasons), containsReason(f.Reasons, r.Reason) && (r.Reason != custosv1.Reason_REASON_UNSPECIFIED || isKeyUse(r.Operation))) &&
		has(len(f.Outcomes), containsOutcome(f.Outcomes, r.Outcome)) &&
		has(len(f.Operations), containsOperation(f.Operations, r.Operation)) &&
		(f.SinceUnixNano == 0 || r.TimeUnixNano >= f.SinceUnixNano) &&
		(f.UntilUnixNano == 0 || r.TimeUnixNano < f.UntilUnixNano) &&
		(!f.NotifyOnly || r.Notify)
}

// isKeyUse reports whether op is a key use, whose record carries the
// caller's justification: a reason filter's UNSPECIFIED selects the key
// uses that gave no reason, not the records that have none (governance,
// key administration, membership, checkpoints).
func isKeyUse(op custosv1.Operation) bool {
	switch op {
	case custosv1.Operation_OPERATION_DECRYPT, custosv1.Operation_OPERATION_DECRYPT_DATA_KEY, custosv1.Operation_OPERATION_REENCRYPT:
		return true
	}
	return false
}

func containsReason(l []custosv1.Reason, x custosv1.Reason) bool {
	for _, v := range l {
		if v == x {
			return true
		}
	}
	return false
}

func containsOutcome(l []custosv1.Outcome, x custosv1.Outcome) bool {
	for _, v := range l {
		if v == x {
			return true
		}
	}
	return false
}

func containsOperation(l []custosv1.Operation, x custosv1.Operation) bool {
	for _, v := range l {
		if v == x {
			return true
		}
	}
	return false
}

// decodeRecord parses a stored record.
func decodeRecord(seq uint64, data []byte) (*custosv1.DecisionRecord, error) {
	r := &custosv1.DecisionRecord{}
	if err := proto.Unmarshal(data, r); err != nil {
		return nil, fmt.Errorf("%w: decode ledger record %d: %v", ErrInternal, seq, err)
	}
	return r, nil
}
