package kms

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/custos-kms/custos/kms/ledger"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"google.golang.org/protobuf/proto"
)

// Backfill: a node that restored a snapshot without the ledger records (a
// new, wiped or far-behind node, snapshot.go) holds the chain head and the
// snapshot's tail but not a range of records below it (ledger.Gap). It decides, records and checkpoints at once (appending needs
// only the head hash) and copies the missing records from its peers, from
// the top of the gap down: each record must hash to the value the chain
// already names for it (the head, then the prev_hash of the record above),
// so a peer can neither forge nor reorder a record; only verified records
// are stored, and the gap shrinks in the same transaction. Until the gap
// is closed, audit reads that reach into it answer Unavailable.

// Limits of one ReadRecords answer (PeerRecords).
const (
	// MaxPeerRecords is the most records one answer carries.
	MaxPeerRecords = 1024
	// maxPeerBytes bounds the record bytes of one answer (below gRPC's
	// default 4 MiB message limit).
	maxPeerBytes = 3 << 20
)

// LedgerGap returns the range of records this node does not hold yet, or
// nil when it holds its whole ledger.
func (s *State) LedgerGap() *ledger.Gap { return s.ledger.Missing() }

// ledgerHeld returns an Unavailable error if records from seq on are not
// all on this node yet.
func (s *State) ledgerHeld(from uint64) error {
	if g := s.ledger.Missing(); g != nil && from <= g.Hi {
		return fmt.Errorf("%w: ledger records %d to %d are not on this node yet: it was restored from a snapshot without them and is copying them from the other nodes; ask another node, or retry later (from_seq %d or above is served now)",
			ErrUnavailable, g.Lo, g.Hi, g.Hi+1)
	}
	return nil
}

// PeerRecords returns the stored records from, from+1, ... up to at most
// to, for a peer filling its gap: never beyond this node's ledger head, at
// most MaxPeerRecords and about 3 MiB. It answers Unavailable when this
// node does not hold record from, InvalidArgument for a bad range.
func (s *State) PeerRecords(from, to uint64) ([][]byte, error) {
	if from == 0 || to < from {
		return nil, fmt.Errorf("%w: read records %d to %d: need 1 <= from_seq <= to_seq", ErrInvalidArgument, from, to)
	}
	head, _ := s.LedgerHead()
	if from > head {
		return nil, fmt.Errorf("%w: record %d is beyond this node's ledger head %d", ErrUnavailable, from, head)
	}
	if g := s.ledger.Missing(); g != nil && from <= g.Hi {
		if from >= g.Lo {
			return nil, s.ledgerHeld(from)
		}
		to = min(to, g.Lo-1) // this node's own records below its gap
	}
	to = min(to, head, from+MaxPeerRecords-1)
	var out [][]byte
	size := 0
	err := s.ledger.Scan(from, func(seq uint64, data []byte) error {
		if seq > to || (len(out) > 0 && size+len(data) > maxPeerBytes) {
			return errStop
		}
		if seq != from+uint64(len(out)) {
			return fmt.Errorf("%w: record %d is not on this node", ErrUnavailable, from+uint64(len(out)))
		}
		out = append(out, bytes.Clone(data))
		size += len(data)
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		if errors.Is(err, ErrUnavailable) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: read ledger: %v", ErrInternal, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: record %d is not on this node", ErrUnavailable, from)
	}
	return out, nil
}

// FillLedgerGap checks records from, from+1, ... (as a peer answered
// PeerRecords) against the hash chain and stores them. They must end at
// the top of the gap; any record that does not hash to what the chain
// names for it, or that does not decode with its own sequence number,
// fails the whole call and nothing is stored. It returns the gap that
// remains (nil when the ledger is complete).
func (s *State) FillLedgerGap(from uint64, records [][]byte) (*ledger.Gap, error) {
	g := s.ledger.Missing()
	if g == nil {
		return nil, nil
	}
	n := uint64(len(records))
	if n == 0 || from < g.Lo || from+n-1 != g.Hi {
		return g, fmt.Errorf("%w: records %d to %d do not end at the top of the gap (%d)", ErrInvalidArgument, from, from+n-1, g.Hi)
	}
	anchor := g.Anchor
	recs := make([]ledger.Record, n)
	for i := int(n) - 1; i >= 0; i-- {
		seq := from + uint64(i)
		data := records[i]
		if ledger.Hash(data) != anchor {
			return g, fmt.Errorf("%w: record %d does not match the hash chain", ErrInvalidArgument, seq)
		}
		rec := &custosv1.DecisionRecord{}
		if err := proto.Unmarshal(data, rec); err != nil {
			return g, fmt.Errorf("%w: record %d does not decode: %v", ErrInvalidArgument, seq, err)
		}
		if rec.Seq != seq || len(rec.PrevHash) != 32 {
			return g, fmt.Errorf("%w: record %d names sequence number %d", ErrInvalidArgument, seq, rec.Seq)
		}
		copy(anchor[:], rec.PrevHash)
		recs[i] = ledger.Record{Seq: seq, Data: bytes.Clone(data)}
	}
	next := &ledger.Gap{Lo: g.Lo, Hi: from - 1, Anchor: anchor}
	dropBelow := false
	switch {
	case from > g.Lo:
	case from == 1:
		if anchor != ledger.ZeroHash {
			return g, fmt.Errorf("%w: record 1 does not start the chain", ErrInvalidArgument)
		}
		next = nil
	default:
		// The gap is filled down to its bottom: the node's own record
		// below it must be the one the chain names. If it is not (its
		// records are not this chain's), they are dropped and fetched too.
		next = nil
		own, err := s.ledger.Get(from - 1)
		if err != nil && !errors.Is(err, ledger.ErrNotFound) {
			// A read failure says nothing about whose records they are:
			// drop nothing, try again later.
			return g, fmt.Errorf("%w: read record %d: %v", ErrUnavailable, from-1, err)
		}
		if err != nil || ledger.Hash(own) != anchor {
			next, dropBelow = &ledger.Gap{Lo: 1, Hi: from - 1, Anchor: anchor}, true
		}
	}
	if err := s.ledger.FillGap(g, recs, next, dropBelow); err != nil {
		if errors.Is(err, ledger.ErrGapChanged) {
			return s.ledger.Missing(), err
		}
		return s.ledger.Missing(), fmt.Errorf("%w: store backfilled records: %v", ErrUnavailable, err)
	}
	return next, nil
}

// SetSnapshotTail changes how many of the newest records a snapshot
// carries (default 65536) and returns a function that restores the old
// value. For tests that need a gap below the tail with few records;
// production code never calls it.
func SetSnapshotTail(n uint64) (restore func()) {
	old := snapshotTail.Swap(n)
	return func() { snapshotTail.Store(old) }
}
