package kms

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/custos-kms/custos/kms/governance"
	"github.com/custos-kms/custos/kms/ledger"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"github.com/custos-kms/custos/raft"
	"google.golang.org/protobuf/proto"
)

// Snapshot format (docs/raft-log.md):
//
//	"custos-snapshot-v1\n"
//	uvarint n, n bytes: raftlogv1.State (deterministic protobuf)
//	for seq = 1 .. State.ledger_seq: uvarint n, n bytes: the stored record
//
// The records let a node that has no ledger (a new or wiped node) rebuild it
// and check its hash chain; a node whose ledger already holds the snapshot's
// head skips them, so a restart does not rewrite the ledger.
const snapshotMagic = "custos-snapshot-v1\n"

// maxSnapshotItem bounds one length-prefixed item in a snapshot.
const maxSnapshotItem = 64 << 20

type snapshot struct {
	state  []byte
	seq    uint64
	ledger *ledger.Store
}

// Snapshot implements raft.StateMachine: it captures the key state under
// the lock; Persist streams the ledger records up to the captured sequence.
func (s *State) Snapshot() (raft.Snapshot, error) {
	s.mu.RLock()
	st := &raftlogv1.State{
		ClusterId:   s.clusterID,
		DomainKeyId: s.domainKeyID,
		LedgerSeq:   s.seq,
		LedgerHead:  append([]byte(nil), s.head[:]...),
	}
	for _, n := range sortedKeys(s.keys) {
		st.Keys = append(st.Keys, s.keys[n])
	}
	st.Governance = s.gov
	for _, n := range sortedKeys(s.nonces) {
		st.Nonces = append(st.Nonces, &raftlogv1.UsedNonce{Nonce: []byte(n), NotAfterUnix: s.nonces[n]})
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
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(st)
	broken := s.broken
	s.mu.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("kms: marshal snapshot: %w", err)
	}
	if broken != nil {
		return nil, fmt.Errorf("kms: no snapshot while the ledger store is failed: %w", broken)
	}
	return &snapshot{state: data, seq: st.LedgerSeq, ledger: s.ledger}, nil
}

// Persist implements raft.Snapshot.
func (sn *snapshot) Persist(w io.Writer) error {
	// Raft compacts its log after a snapshot: the ledger must be on disk
	// first, since it is written without fsync.
	if err := sn.ledger.Sync(); err != nil {
		return fmt.Errorf("kms: sync ledger before snapshot: %w", err)
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	if _, err := bw.WriteString(snapshotMagic); err != nil {
		return err
	}
	if err := writeItem(bw, sn.state); err != nil {
		return err
	}
	if sn.seq > 0 {
		err := sn.ledger.Scan(1, func(seq uint64, data []byte) error {
			if seq > sn.seq {
				return errStopScan
			}
			return writeItem(bw, data)
		})
		if err != nil && !errors.Is(err, errStopScan) {
			return fmt.Errorf("kms: snapshot ledger: %w", err)
		}
	}
	return bw.Flush()
}

// Release implements raft.Snapshot.
func (sn *snapshot) Release() {}

var errStopScan = errors.New("stop")

// Restore implements raft.StateMachine.
func (s *State) Restore(r io.Reader) error {
	br := bufio.NewReaderSize(r, 256<<10)
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != snapshotMagic {
		return fmt.Errorf("kms: restore: not a custos snapshot")
	}
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

	if !s.ledgerHolds(st.LedgerSeq, head) {
		if err := s.importLedger(br, st.LedgerSeq, head); err != nil {
			return fmt.Errorf("kms: restore: %w", err)
		}
	}

	var officers *governance.OfficerSet
	if st.Governance != nil {
		if officers, err = governance.NewOfficerSetFromGovernance(st.Governance); err != nil {
			return fmt.Errorf("kms: restore: officers: %w", err)
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.reset()
	s.clusterID = st.ClusterId
	s.domainKeyID = st.DomainKeyId
	for _, k := range st.Keys {
		s.keys[k.Name] = k
	}
	s.gov, s.officers = st.Governance, officers
	for _, n := range st.Nonces {
		s.nonces[string(n.Nonce)] = n.NotAfterUnix
	}
	for _, r := range st.Requests {
		s.requests[r.RequestId] = r
	}
	for _, g := range st.Grants {
		s.grants[g.GrantId] = g
	}
	s.nodeKeys = st.NodeKeys
	s.lastCheckpoint, s.lastCheckpointRecord = st.LastCheckpoint, st.LastCheckpointRecord
	for _, c := range st.Counters {
		s.counters[c.Key+"\x00"+c.Principal] = c
	}
	s.seq, s.head = st.LedgerSeq, head
	s.broken = nil
	return nil
}

// ledgerHolds reports whether the local ledger already has the record at seq
// with the given hash (then it holds the whole chain up to it).
func (s *State) ledgerHolds(seq uint64, head [32]byte) bool {
	if seq == 0 {
		return true
	}
	data, err := s.ledger.Get(seq)
	return err == nil && ledger.Hash(data) == head
}

// importLedger replaces the local ledger with the snapshot's records,
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
				return err
			}
			batch = batch[:0]
		}
	}
	if prev != head {
		return fmt.Errorf("ledger head does not match the snapshot")
	}
	if err := s.ledger.PutBatch(batch); err != nil {
		return err
	}
	return s.ledger.Sync()
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
