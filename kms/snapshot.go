package kms

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/custos-kms/custos/kms/governance"
	"github.com/custos-kms/custos/kms/ledger"
	"github.com/custos-kms/custos/kms/requestsig"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"github.com/custos-kms/custos/raft"
	"google.golang.org/protobuf/proto"
)

// Snapshot formats (docs/raft-log.md, "Snapshots and restart"):
//
//	v2 (written): "custos-snapshot-v2\n"
//	  uvarint n, n bytes: raftlogv1.State (deterministic protobuf), which
//	    carries the ledger head (ledger_seq, ledger_head)
//	  uvarint t: the number of tail records (t <= snapshotTail, t <= ledger_seq)
//	  for seq = ledger_seq-t+1 .. ledger_seq: uvarint n, n bytes: the record
//
//	v1 (still restored): "custos-snapshot-v1\n"
//	  uvarint n, n bytes: raftlogv1.State
//	  for seq = 1 .. State.ledger_seq: uvarint n, n bytes: the stored record
//
// A v2 snapshot carries only the newest records (the tail), not the whole
// ledger: its size does not grow with the number of decisions. The records
// are on every node's own ledger, fsynced up to the head before the
// snapshot completes (Persist). A node without them (a new or wiped node
// that installs the snapshot) stores the tail, checked link by link
// against the head, records the gap below it, and copies the gap's records
// from its peers, checking each against the chain (backfill.go). The tail
// lets such a node check at once a checkpoint that covers a record just
// before the snapshot (one signed before the snapshot, applied after it).
const (
	snapshotMagic   = "custos-snapshot-v2\n"
	snapshotMagicV1 = "custos-snapshot-v1\n"
)

// maxSnapshotItem bounds one length-prefixed item in a snapshot, and
// maxTailBytes the records of a v2 snapshot's tail together.
const (
	maxSnapshotItem = 64 << 20
	maxTailBytes    = 64 << 20
)

// defaultSnapshotTail is how many of the newest records a v2 snapshot
// carries (about 16 MiB of ~250-byte records). Checkpoints of older
// records are refused (applyCheckpoint), so it also bounds how far behind
// the head a checkpoint may be when it is applied: 65536 records is ~1.5 s
// of the fastest BatchDecrypt load measured. Tests lower snapshotTail.
const defaultSnapshotTail = 65536

var snapshotTail atomic.Uint64

func init() { snapshotTail.Store(defaultSnapshotTail) }

type snapshot struct {
	state  []byte
	seq    uint64
	head   [32]byte
	ledger *ledger.Store
}

// Snapshot implements raft.StateMachine: it captures the key state under
// the lock; Persist syncs the ledger and writes the state and the tail.
func (s *State) Snapshot() (raft.Snapshot, error) {
	s.mu.RLock()
	st := &raftlogv1.State{
		ClusterId:           s.clusterID,
		DomainKeyId:         s.domainKeyID,
		DomainKeyCheckValue: s.domainKCV,
		LedgerSeq:           s.seq,
		LedgerHead:          append([]byte(nil), s.head[:]...),
		// The clock is replicated state: a restored replica must clamp
		// commands as the others do, and keeps exactly the nonces whose
		// not_after is not behind it (clock.go).
		TimeUnixNano: s.clock,
	}
	for _, n := range sortedKeys(s.keys) {
		st.Keys = append(st.Keys, s.keys[n])
	}
	st.Governance = s.gov
	for _, n := range sortedKeys(s.nonces) {
		st.Nonces = append(st.Nonces, &raftlogv1.UsedNonce{Nonce: []byte(n), NotAfterUnix: s.nonces[n]})
	}
	for _, n := range s.requestNonceOrder[s.requestNonceHead:] {
		// The nonce followed by its principal.
		st.RequestNonces = append(st.RequestNonces, &raftlogv1.UsedNonce{Nonce: []byte(n), NotAfterUnix: s.requestNonces[n[:requestsig.NonceSize]]})
	}
	for _, id := range sortedKeys(s.requests) {
		st.Requests = append(st.Requests, s.requests[id])
	}
	for _, id := range sortedKeys(s.grants) {
		st.Grants = append(st.Grants, s.grants[id])
	}
	for _, id := range sortedKeys(s.counters) {
		st.Counters = append(st.Counters, s.counters[id])
	}
	st.NodeKeys = s.nodeKeys
	st.LastCheckpoint, st.LastCheckpointRecord = s.lastCheckpoint, s.lastCheckpointRecord
	st.Members = s.members
	st.Restore = s.restore
	st.DomainKeyEpoch, st.Rotation, st.RetiredDomainKeyIds = s.epoch, s.rotation, s.retired
	st.GenesisSha256 = s.genesis
	st.StateMachineVersion = s.smVersion
	st.CheckpointMismatches = s.cpMismatches
	for _, id := range sortedKeys(s.proposals) {
		st.Proposals = append(st.Proposals, s.proposals[id])
	}
	for _, id := range sortedKeys(s.credCounters) {
		st.CredentialCounters = append(st.CredentialCounters, &raftlogv1.CredentialCounter{CredentialId: []byte(id), SignCount: s.credCounters[id]})
	}
	for _, n := range sortedKeys(s.admissions) {
		st.Admissions = append(st.Admissions, s.admissions[n])
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(st)
	broken := s.broken
	sn := &snapshot{state: data, seq: s.seq, head: s.head, ledger: s.ledger}
	s.mu.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("kms: marshal snapshot: %w", err)
	}
	if broken != nil {
		return nil, fmt.Errorf("kms: no snapshot while the ledger store is failed: %w", broken)
	}
	return sn, nil
}

// Persist implements raft.Snapshot.
func (sn *snapshot) Persist(w io.Writer) error {
	// Raft compacts its log after a snapshot, and the snapshot does not
	// carry the whole ledger: the ledger must be on disk up to the head
	// first, since it is written without fsync.
	if err := sn.ledger.Sync(); err != nil {
		return fmt.Errorf("kms: sync ledger before snapshot: %w", err)
	}
	tail, err := sn.tail()
	if err != nil {
		return fmt.Errorf("kms: snapshot ledger tail: %w", err)
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	if _, err := bw.WriteString(snapshotMagic); err != nil {
		return fmt.Errorf("kms: write snapshot: %w", err)
	}
	if err := writeItem(bw, sn.state); err != nil {
		return fmt.Errorf("kms: write snapshot: %w", err)
	}
	var n [binary.MaxVarintLen64]byte
	if _, err := bw.Write(n[:binary.PutUvarint(n[:], uint64(len(tail)))]); err != nil {
		return fmt.Errorf("kms: write snapshot: %w", err)
	}
	for _, rec := range tail {
		if err := writeItem(bw, rec); err != nil {
			return fmt.Errorf("kms: write snapshot: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("kms: write snapshot: %w", err)
	}
	return nil
}

// tail returns the newest records up to the snapshot's head, snapshotTail
// of them (all, below that many), or an error if the ledger lacks any.
func (sn *snapshot) tail() ([][]byte, error) {
	if sn.seq == 0 {
		return nil, nil
	}
	first := uint64(1)
	if n := snapshotTail.Load(); sn.seq > n {
		first = sn.seq - n + 1
	}
	if g := sn.ledger.Missing(); g != nil && g.Hi >= first {
		first = g.Hi + 1
	}
	var out [][]byte
	err := sn.ledger.Scan(first, func(seq uint64, data []byte) error {
		if seq > sn.seq {
			return errStopScan
		}
		if seq != first+uint64(len(out)) {
			out = out[:0] // a hole: keep only what follows it
			first = seq
		}
		out = append(out, bytes.Clone(data))
		return nil
	})
	if err != nil && !errors.Is(err, errStopScan) {
		return nil, err
	}
	want := min(snapshotTail.Load(), sn.seq)
	if uint64(len(out)) != want || first+uint64(len(out))-1 != sn.seq || ledger.Hash(out[len(out)-1]) != sn.head {
		// Every node holds the newest snapshotTail records (checkpoints
		// of older ones are refused, applyCheckpoint), and a snapshot
		// must carry all of them: a ledger that does not is broken, and
		// no snapshot is better than one a restoring node would be stuck
		// with.
		return nil, fmt.Errorf("kms: snapshot: the ledger holds %d of the newest %d records up to the head %d", len(out), want, sn.seq)
	}
	return out, nil
}

// Release implements raft.Snapshot.
func (sn *snapshot) Release() {}

var errStopScan = errors.New("stop")

// Restore implements raft.StateMachine. It reads both formats.
func (s *State) Restore(r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(br, magic); err != nil || (string(magic) != snapshotMagic && string(magic) != snapshotMagicV1) {
		return fmt.Errorf("kms: restore: not a custos snapshot")
	}
	v1 := string(magic) == snapshotMagicV1
	data, err := readItem(br)
	if err != nil {
		return fmt.Errorf("kms: restore: state: %w", err)
	}
	st := &raftlogv1.State{}
	if err := proto.Unmarshal(data, st); err != nil {
		return fmt.Errorf("kms: restore: decode state: %w", err)
	}
	if len(st.LedgerHead) != 32 {
		return fmt.Errorf("kms: restore: bad ledger head")
	}
	var head [32]byte
	copy(head[:], st.LedgerHead)
	var tail []ledger.Record
	var below [32]byte // the prev_hash of the tail's first record
	if !v1 {
		if tail, below, err = readTail(br, st.LedgerSeq, head); err != nil {
			return fmt.Errorf("kms: restore: %w", err)
		}
	}

	// A snapshot carries the newest min(snapshotTail, head) records, which
	// hold a state digest to check it against (the leader checkpoints at
	// least every 1000 records): a tail cut short — to leave nothing to
	// check the state against — is refused.
	if need := min(snapshotTail.Load(), st.LedgerSeq, minRestoreTail); !v1 && st.ClusterId != "" && uint64(len(tail)) < need && restoreDigestCheck.Load() {
		return fmt.Errorf("kms: restore: the snapshot carries %d ledger records up to its head %d, fewer than the %d every snapshot holds: it was cut (docs/ledger.md, State digest)",
			len(tail), st.LedgerSeq, need)
	}

	var officers *governance.OfficerSet
	if st.Governance != nil {
		if officers, err = governance.NewOfficerSetFromGovernance(st.Governance); err != nil {
			return fmt.Errorf("kms: restore: officers: %w", err)
		}
	}

	switch {
	case s.ledgerHolds(st.LedgerSeq, head):
		// A restart, or a node that already has the chain up to the head
		// (or is filling a recorded gap below it): keep the ledger.
		// Records after the head come from entries after the snapshot,
		// which the log replays with identical bytes (PutBatch refuses
		// different ones).
	case v1:
		if err := s.importLedger(br, st.LedgerSeq, head); err != nil {
			return fmt.Errorf("kms: restore: %w", err)
		}
	default:
		// A new, wiped or far-behind node: store the tail and record the
		// gap below it (it survives restarts); the node serves at once and
		// backfill copies the gap's records from the other nodes.
		if err := s.installTail(st.LedgerSeq, tail, below); err != nil {
			return fmt.Errorf("kms: restore: %w", err)
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.reset()
	s.clusterID = st.ClusterId
	s.domainKeyID = st.DomainKeyId
	s.domainKCV = st.DomainKeyCheckValue
	for _, k := range st.Keys {
		s.keys[k.Name] = k
	}
	s.gov, s.officers = st.Governance, officers
	for _, n := range st.Nonces {
		s.nonces[string(n.Nonce)] = n.NotAfterUnix
	}
	for _, n := range st.RequestNonces {
		if len(n.Nonce) < requestsig.NonceSize {
			continue
		}
		e := string(n.Nonce)
		s.requestNonces[e[:requestsig.NonceSize]] = n.NotAfterUnix
		s.requestNonceOrder = append(s.requestNonceOrder, e)
		s.requestNoncesBy[e[requestsig.NonceSize:]]++
	}
	for _, r := range st.Requests {
		s.requests[r.RequestId] = r
	}
	for _, g := range st.Grants {
		s.grants[g.GrantId] = g
	}
	s.nodeKeys = st.NodeKeys
	s.lastCheckpoint, s.lastCheckpointRecord = st.LastCheckpoint, st.LastCheckpointRecord
	s.members = st.Members
	s.restore = st.Restore
	s.epoch, s.rotation, s.retired = st.DomainKeyEpoch, st.Rotation, st.RetiredDomainKeyIds
	s.genesis = st.GenesisSha256
	s.smVersion = st.StateMachineVersion
	s.cpMismatches = st.CheckpointMismatches
	for _, p := range st.Proposals {
		s.proposals[p.Id] = p
	}
	for _, c := range st.CredentialCounters {
		s.credCounters[string(c.CredentialId)] = c.SignCount
	}
	for _, a := range st.Admissions {
		s.admissions[a.Node] = a
	}
	for _, c := range st.Counters {
		s.counters[c.Key+"\x00"+c.Principal] = c
	}
	s.seq, s.head = st.LedgerSeq, head
	// A snapshot written before the state had a clock restores it as 0:
	// the first command applied after it sets it.
	s.clock = st.TimeUnixNano
	s.broken = nil
	s.lastDigest = nil
	if s.clusterID != "" {
		// The state as loaded: the next state-changing record names it as
		// the state before it, so an edit to this snapshot shows there.
		s.lastDigest = s.stateDigest()
		// And checked now, before the log replays entries after the
		// snapshot (which would rebuild records from an edited state, had
		// the operator deleted the ones on disk): against the newest
		// digest the ledger holds at or below the snapshot's head
		// (docs/ledger.md, State digest). Not for a restore not yet
		// recorded (VerifyStateDigest decides, at start).
		if restoreDigestCheck.Load() && (s.restore == nil || s.restore.Reported) {
			_, _, err := verifyDigest(s.stateDigest, s.digestVersion(), func(seq uint64) ([]byte, bool) {
				data, err := s.ledger.Get(seq)
				return data, err == nil
			}, s.seq)
			if errors.Is(err, ErrStateMismatch) {
				// Refused; and should Raft carry on (a snapshot a leader
				// sent), nothing is decided on the state loaded.
				s.broken = err
				return fmt.Errorf("kms: restore: %w", err)
			}
		}
	}
	return nil
}

// minRestoreTail is the fewest newest records a snapshot must carry (when
// its head and snapshotTail allow): more than the checkpointer's longest
// spacing (internal/node MaxCheckpointEvery).
const minRestoreTail = 4096

// restoreDigestCheck is whether Restore checks the state it loads against
// the ledger (always, but for tests that play a node whose check could not
// run).
var restoreDigestCheck = func() *atomic.Bool { var b atomic.Bool; b.Store(true); return &b }()

// readTail reads a v2 snapshot's tail records and checks that they chain
// up to the head. It returns them and the prev_hash of the first.
func readTail(r *bufio.Reader, seq uint64, head [32]byte) ([]ledger.Record, [32]byte, error) {
	var below [32]byte
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, below, fmt.Errorf("ledger tail: %w", err)
	}
	if n > max(snapshotTail.Load(), defaultSnapshotTail) || n > seq {
		return nil, below, fmt.Errorf("ledger tail of %d records for a head at %d", n, seq)
	}
	tail := make([]ledger.Record, n)
	first := seq - n + 1
	size := 0
	for i := range tail {
		data, err := readItem(r)
		if err != nil {
			return nil, below, fmt.Errorf("ledger record %d: %w", first+uint64(i), err)
		}
		if size += len(data); size > maxTailBytes {
			return nil, below, fmt.Errorf("ledger tail exceeds %d bytes", maxTailBytes)
		}
		tail[i] = ledger.Record{Seq: first + uint64(i), Data: data}
	}
	anchor := head
	for i := len(tail) - 1; i >= 0; i-- {
		if ledger.Hash(tail[i].Data) != anchor {
			return nil, below, fmt.Errorf("ledger record %d: broken hash chain", tail[i].Seq)
		}
		rec := &custosv1.DecisionRecord{}
		if err := proto.Unmarshal(tail[i].Data, rec); err != nil {
			return nil, below, fmt.Errorf("ledger record %d: %w", tail[i].Seq, err)
		}
		if rec.Seq != tail[i].Seq || len(rec.PrevHash) != 32 {
			return nil, below, fmt.Errorf("ledger record %d: broken hash chain", tail[i].Seq)
		}
		copy(anchor[:], rec.PrevHash)
	}
	if n > 0 && first == 1 && anchor != ledger.ZeroHash {
		return nil, below, fmt.Errorf("ledger record 1: broken hash chain")
	}
	return tail, anchor, nil
}

// installTail installs a v2 snapshot's tail on a ledger that does not
// hold the head, and records what is missing below the tail. A ledger
// whose own records end just below the tail, or overlap it with the same
// records, is kept (a follower that fell behind); one whose records end
// further below keeps them and records only the range between as missing
// (backfill checks at the end that they link to it); anything else (a new
// or wiped node, a ledger already filling a gap, records that do not
// match the tail) is replaced by the tail, with [1, below the tail]
// missing.
func (s *State) installTail(seq uint64, tail []ledger.Record, below [32]byte) error {
	if seq == 0 {
		return s.ledger.Reset()
	}
	first := seq - uint64(len(tail)) + 1 // first > seq: no tail
	last, lastData, err := s.ledger.Last()
	if err != nil {
		return fmt.Errorf("read ledger: %w", err)
	}
	if s.ledger.Missing() == nil && last > 0 && last < seq {
		lastHash := ledger.Hash(lastData)
		switch {
		case last >= first:
			// Overlap: the tail must hold the same record at last.
			if ledger.Hash(tail[last-first].Data) == lastHash {
				if err := s.ledger.Extend(tail[last-first+1:], nil); err != nil {
					return fmt.Errorf("install ledger tail: %w", err)
				}
				return nil
			}
		case last == first-1:
			if below == lastHash {
				if err := s.ledger.Extend(tail, nil); err != nil {
					return fmt.Errorf("install ledger tail: %w", err)
				}
				return nil
			}
		default:
			gap := &ledger.Gap{Lo: last + 1, Hi: first - 1, Anchor: below}
			if err := s.ledger.Extend(tail, gap); err != nil {
				return fmt.Errorf("install ledger tail: %w", err)
			}
			return nil
		}
	}
	var gap *ledger.Gap
	if first > 1 {
		gap = &ledger.Gap{Lo: 1, Hi: first - 1, Anchor: below}
	}
	if err := s.ledger.Replace(tail, gap); err != nil {
		return fmt.Errorf("install ledger tail: %w", err)
	}
	return nil
}

// ledgerHolds reports whether the local ledger already has the record at seq
// with the given hash (then it holds the whole chain up to it, or is filling
// in a recorded gap below it).
func (s *State) ledgerHolds(seq uint64, head [32]byte) bool {
	if seq == 0 {
		return true
	}
	data, err := s.ledger.Get(seq)
	return err == nil && ledger.Hash(data) == head
}

// importLedger replaces the local ledger with a v1 snapshot's records,
// checking the hash chain as it goes.
func (s *State) importLedger(r *bufio.Reader, seq uint64, head [32]byte) error {
	if err := s.ledger.Reset(); err != nil {
		return fmt.Errorf("reset ledger: %w", err)
	}
	prev := ledger.ZeroHash
	batch := make([]ledger.Record, 0, 1024)
	for i := uint64(1); i <= seq; i++ {
		data, err := readItem(r)
		if err != nil {
			return fmt.Errorf("ledger record %d: %w", i, err)
		}
		rec := &custosv1.DecisionRecord{}
		if err := proto.Unmarshal(data, rec); err != nil {
			return fmt.Errorf("ledger record %d: %w", i, err)
		}
		if rec.Seq != i || !bytes.Equal(rec.PrevHash, prev[:]) {
			return fmt.Errorf("ledger record %d: broken hash chain", i)
		}
		prev = ledger.Hash(data)
		batch = append(batch, ledger.Record{Seq: i, Data: data})
		if len(batch) == cap(batch) {
			if err := s.ledger.PutBatch(batch); err != nil {
				return fmt.Errorf("store ledger records: %w", err)
			}
			batch = batch[:0]
		}
	}
	if prev != head {
		return fmt.Errorf("ledger head does not match the snapshot")
	}
	if err := s.ledger.PutBatch(batch); err != nil {
		return fmt.Errorf("store ledger records: %w", err)
	}
	if err := s.ledger.Sync(); err != nil {
		return fmt.Errorf("sync ledger: %w", err)
	}
	return nil
}

func writeItem(w *bufio.Writer, b []byte) error {
	var n [binary.MaxVarintLen64]byte
	if _, err := w.Write(n[:binary.PutUvarint(n[:], uint64(len(b)))]); err != nil {
		return err
	}
	_, err := w.Write(b)
	return err
}

func readItem(r *bufio.Reader) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, err
	}
	if n > maxSnapshotItem {
		return nil, fmt.Errorf("item of %d bytes exceeds %d", n, maxSnapshotItem)
	}
	b := make([]byte, n)
	_, err = io.ReadFull(r, b)
	return b, err
}

func sortedKeys[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sortStrings(names)
	return names
}
