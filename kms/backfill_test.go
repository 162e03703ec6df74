package kms_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/ledger"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"github.com/custos-kms/custos/raft"
)

// snapshotBytes persists a snapshot of s.
func snapshotBytes(t *testing.T, s *kms.State) []byte {
	t.Helper()
	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var buf bytes.Buffer
	if err := snap.Persist(&buf); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	return buf.Bytes()
}

// emptyState opens a fresh ledger and a State on it.
func emptyState(t *testing.T) (*kms.State, *ledger.Store) {
	t.Helper()
	l, err := ledger.Open(filepath.Join(t.TempDir(), "l.db"), ledger.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return kms.NewState(l), l
}

// decisions makes n decrypt decisions on e's key k.
func decisions(t *testing.T, e *env, wrapped []byte, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := decrypt(e, wrapped, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// A restart restores a snapshot whose head the ledger holds: the ledger is
// kept as is (records after the head included, the log replays them) and
// nothing is missing.
func TestRestoreKeepsMatchingLedger(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	dk := dataKey(t, e, "k", nil)
	decisions(t, e, dk.WrappedDataKey, 10)
	data := snapshotBytes(t, e.state)
	if !bytes.HasPrefix(data, []byte("custos-snapshot-v2\n")) {
		t.Fatalf("snapshot starts %q, want the v2 magic", data[:20])
	}
	snapSeq, _ := e.state.LedgerHead()
	decisions(t, e, dk.WrappedDataKey, 5)
	n, _ := e.led.Count()

	s := kms.NewState(e.led)
	if err := s.Restore(bytes.NewReader(data)); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if seq, _ := s.LedgerHead(); seq != snapSeq {
		t.Fatalf("restored head %d, want %d", seq, snapSeq)
	}
	if g := s.LedgerGap(); g != nil {
		t.Fatalf("gap %+v after restoring onto a ledger that holds the head", g)
	}
	if m, _ := e.led.Count(); m != n {
		t.Fatalf("restore changed the ledger from %d to %d records", n, m)
	}
	verifyChain(t, s, e.led)
}

// A node without the records restores the snapshot's tail, records the gap
// below it, decides at once, answers Unavailable for audit reads of the
// gap, and fills the gap from a peer's records, checking the chain.
func TestRestoreWithoutRecordsThenBackfill(t *testing.T) {
	defer kms.SetSnapshotTail(4)()
	e := newEnv(t)
	createKey(t, e, "k")
	dk := dataKey(t, e, "k", nil)
	decisions(t, e, dk.WrappedDataKey, 40)
	data := snapshotBytes(t, e.state)
	head, headHash := e.state.LedgerHead()

	s, l := emptyState(t)
	if err := s.Restore(bytes.NewReader(data)); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	g := s.LedgerGap()
	if g == nil || g.Hi != head-4 {
		t.Fatalf("gap %+v, want [1, %d]", g, head-4)
	}
	if seq, h := s.LedgerHead(); seq != head || h != headHash {
		t.Fatalf("restored head %d, want %d", seq, head)
	}
	// The tail is there; the gap answers Unavailable.
	if err := s.ScanRecords(head-3, func(uint64, []byte) error { return nil }); err != nil {
		t.Fatalf("scan of the tail: %v", err)
	}
	err := s.ScanRecords(1, func(uint64, []byte) error { return nil })
	if !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("scan of the gap: %v, want Unavailable", err)
	}
	if _, err := s.PeerRecords(1, 10); !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("PeerRecords of the gap: %v, want Unavailable", err)
	}

	// The restored node decides at once: the next record links to the head.
	cmd := &raftlogv1.Command{TimeUnixNano: time.Now().UnixNano(), Node: "n2", Principal: app.Name,
		Op: &raftlogv1.Command_Decide{Decide: &raftlogv1.Decide{Key: "k", KeyVersion: 1,
			Operation: custosv1.Operation_OPERATION_DECRYPT, Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED}}}
	res := s.ApplyBatch([]raft.AppliedEntry{{Index: 1 << 40, Commands: []*raftlogv1.Command{cmd}}})
	d, ok := res[0][0].(*kms.Decision)
	if !ok || d.Err != nil || d.Record.Seq != head+1 || !bytes.Equal(d.Record.PrevHash, headHash[:]) {
		t.Fatalf("decision after restore: %#v", res[0][0])
	}
	if err := s.Health(); err != nil {
		t.Fatal(err)
	}

	// Backfill in windows of 7, from the top down.
	for rounds := 0; s.LedgerGap() != nil; rounds++ {
		if rounds > 20 {
			t.Fatal("backfill does not finish")
		}
		g := s.LedgerGap()
		from := g.Hi - min(7, g.Hi) + 1
		recs, err := e.state.PeerRecords(from, g.Hi)
		if err != nil {
			t.Fatalf("PeerRecords(%d, %d): %v", from, g.Hi, err)
		}
		if _, err := s.FillLedgerGap(from, recs); err != nil {
			t.Fatalf("FillLedgerGap(%d): %v", from, err)
		}
	}
	for i := uint64(1); i <= head; i++ {
		a, _ := e.led.Get(i)
		b, err := l.Get(i)
		if err != nil || !bytes.Equal(a, b) {
			t.Fatalf("record %d after backfill differs: %v", i, err)
		}
	}
	verifyChain(t, s, l)
	if err := s.ScanRecords(1, func(uint64, []byte) error { return nil }); err != nil {
		t.Fatalf("scan after backfill: %v", err)
	}
	// The gap stays closed across a reopen of the store.
	if g := l.Missing(); g != nil {
		t.Fatalf("gap %+v after backfill", g)
	}
}

// A peer that serves a record that does not verify is refused: nothing is
// stored and the gap is unchanged.
func TestBackfillRefusesBadRecords(t *testing.T) {
	defer kms.SetSnapshotTail(2)()
	e := newEnv(t)
	createKey(t, e, "k")
	dk := dataKey(t, e, "k", nil)
	decisions(t, e, dk.WrappedDataKey, 12)
	data := snapshotBytes(t, e.state)
	s, l := emptyState(t)
	if err := s.Restore(bytes.NewReader(data)); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	g := s.LedgerGap()
	from := g.Hi - 5
	good, err := e.state.PeerRecords(from, g.Hi)
	if err != nil {
		t.Fatal(err)
	}
	clone := func() [][]byte {
		out := make([][]byte, len(good))
		for i := range good {
			out[i] = bytes.Clone(good[i])
		}
		return out
	}
	forged := clone()
	forged[2][len(forged[2])/2] ^= 1 // one altered byte in the middle
	swapped := clone()
	swapped[1], swapped[2] = swapped[2], swapped[1]
	dropped := append(clone()[:2], clone()[3:]...)
	// A valid chain of records from another history: the other node's
	// own records do not end at this gap's anchor.
	other := newEnv(t)
	createKey(t, other, "k")
	odk := dataKey(t, other, "k", nil)
	decisions(t, other, odk.WrappedDataKey, 12)
	foreign, err := other.state.PeerRecords(from, g.Hi)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		from uint64
		recs [][]byte
	}{
		{"altered byte", from, forged},
		{"reordered", from, swapped},
		{"missing record", from + 1, dropped},
		{"another cluster's chain", from, foreign},
		{"not ending at the gap", from - 1, clone()},
		{"garbage", g.Hi, [][]byte{[]byte("not a record")}},
		{"empty", g.Hi, nil},
	}
	for _, c := range cases {
		if _, err := s.FillLedgerGap(c.from, c.recs); !errors.Is(err, kms.ErrInvalidArgument) {
			t.Errorf("%s: FillLedgerGap = %v, want InvalidArgument", c.name, err)
		}
		if g2 := s.LedgerGap(); g2 == nil || *g2 != *g {
			t.Fatalf("%s: gap changed to %+v", c.name, g2)
		}
		if _, err := l.Get(g.Hi); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("%s: a refused record was stored (%v)", c.name, err)
		}
	}
	// The good answer is taken.
	if _, err := s.FillLedgerGap(from, good); err != nil {
		t.Fatalf("good records: %v", err)
	}
	if g2 := s.LedgerGap(); g2 == nil || g2.Hi != from-1 {
		t.Fatalf("gap after good records: %+v, want [1, %d]", g2, from-1)
	}
}

// A v1 snapshot (the whole ledger, written by older versions) still
// restores: into an empty node it rebuilds the whole ledger, checking the
// chain; onto a node that holds the head it is skipped.
func TestRestoreV1Snapshot(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	dk := dataKey(t, e, "k", nil)
	decisions(t, e, dk.WrappedDataKey, 25)
	v2 := snapshotBytes(t, e.state)
	// The state item follows the magic in both formats.
	rest := v2[len("custos-snapshot-v2\n"):]
	n, k := binary.Uvarint(rest)
	state := rest[k : k+int(n)]
	head, headHash := e.state.LedgerHead()
	v1 := append([]byte("custos-snapshot-v1\n"), binary.AppendUvarint(nil, uint64(len(state)))...)
	v1 = append(v1, state...)
	for i := uint64(1); i <= head; i++ {
		rec, err := e.led.Get(i)
		if err != nil {
			t.Fatal(err)
		}
		v1 = append(binary.AppendUvarint(v1, uint64(len(rec))), rec...)
	}

	s, l := emptyState(t)
	if err := s.Restore(bytes.NewReader(v1)); err != nil {
		t.Fatalf("Restore v1: %v", err)
	}
	if seq, h := s.LedgerHead(); seq != head || h != headHash {
		t.Fatalf("head %d after v1 restore, want %d", seq, head)
	}
	if g := s.LedgerGap(); g != nil {
		t.Fatalf("gap %+v after a v1 restore", g)
	}
	verifyChain(t, s, l)
	// Again onto the same ledger: kept.
	if err := s.Restore(bytes.NewReader(v1)); err != nil {
		t.Fatalf("Restore v1 again: %v", err)
	}
	verifyChain(t, s, l)
	// A v1 snapshot with a broken chain is refused.
	bad := bytes.Clone(v1)
	bad[len(bad)-5] ^= 1
	s2, _ := emptyState(t)
	if err := s2.Restore(bytes.NewReader(bad)); err == nil {
		t.Fatal("a v1 snapshot with an altered record was restored")
	}
}

// A v2 snapshot whose tail does not chain to its head is refused.
func TestRestoreRefusesBadTail(t *testing.T) {
	defer kms.SetSnapshotTail(3)()
	e := newEnv(t)
	createKey(t, e, "k")
	dk := dataKey(t, e, "k", nil)
	decisions(t, e, dk.WrappedDataKey, 10)
	data := snapshotBytes(t, e.state)
	for _, off := range []int{len(data) - 1, len(data) - 60, len(data) - 300} {
		bad := bytes.Clone(data)
		bad[off] ^= 0x40
		s, _ := emptyState(t)
		if err := s.Restore(bytes.NewReader(bad)); err == nil {
			t.Errorf("restore accepted a snapshot altered at byte %d of %d", off, len(data))
		}
	}
	s, _ := emptyState(t)
	if err := s.Restore(bytes.NewReader(data[:len(data)-3])); err == nil {
		t.Error("restore accepted a truncated snapshot")
	}
}

// fillGap backfills s's gap from peer in windows of w records.
func fillGap(t *testing.T, s, peer *kms.State, w uint64) {
	t.Helper()
	for rounds := 0; s.LedgerGap() != nil; rounds++ {
		if rounds > 100 {
			t.Fatal("backfill does not finish")
		}
		g := s.LedgerGap()
		from := g.Hi - min(w, g.Hi-g.Lo+1) + 1
		recs, err := peer.PeerRecords(from, g.Hi)
		if err != nil {
			t.Fatalf("PeerRecords(%d, %d): %v", from, g.Hi, err)
		}
		if _, err := s.FillLedgerGap(from, recs); err != nil {
			t.Fatalf("FillLedgerGap(%d): %v", from, err)
		}
	}
}

// ledgerWith opens a fresh ledger holding records 1..n of src.
func ledgerWith(t *testing.T, src *ledger.Store, n uint64) (*kms.State, *ledger.Store) {
	t.Helper()
	s, l := emptyState(t)
	var recs []ledger.Record
	for i := uint64(1); i <= n; i++ {
		data, err := src.Get(i)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, ledger.Record{Seq: i, Data: data})
	}
	if err := l.PutBatch(recs); err != nil {
		t.Fatal(err)
	}
	return s, l
}

// A follower that fell behind keeps its own records: with the tail
// overlapping them nothing is missing; further behind, only the range
// between its records and the tail is; records of another chain below the
// gap are found out when the gap is filled down to them, dropped and
// fetched too.
func TestRestoreBehindKeepsOwnRecords(t *testing.T) {
	defer kms.SetSnapshotTail(4)()
	e := newEnv(t)
	createKey(t, e, "k")
	dk := dataKey(t, e, "k", nil)
	decisions(t, e, dk.WrappedDataKey, 20)
	own, _ := e.state.LedgerHead()
	decisions(t, e, dk.WrappedDataKey, 30)
	data := snapshotBytes(t, e.state)
	head, _ := e.state.LedgerHead()
	same := func(t *testing.T, l *ledger.Store) {
		t.Helper()
		for i := uint64(1); i <= head; i++ {
			a, _ := e.led.Get(i)
			b, err := l.Get(i)
			if err != nil || !bytes.Equal(a, b) {
				t.Fatalf("record %d differs from the leader's: %v", i, err)
			}
		}
	}

	t.Run("overlapping the tail", func(t *testing.T) {
		s, l := ledgerWith(t, e.led, head-2)
		if err := s.Restore(bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		if g := s.LedgerGap(); g != nil {
			t.Fatalf("gap %+v", g)
		}
		same(t, l)
		verifyChain(t, s, l)
	})
	t.Run("just below the tail", func(t *testing.T) {
		s, l := ledgerWith(t, e.led, head-4)
		if err := s.Restore(bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		if g := s.LedgerGap(); g != nil {
			t.Fatalf("gap %+v", g)
		}
		verifyChain(t, s, l)
	})
	t.Run("far behind", func(t *testing.T) {
		s, l := ledgerWith(t, e.led, own)
		if err := s.Restore(bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		g := s.LedgerGap()
		if g == nil || g.Lo != own+1 || g.Hi != head-4 {
			t.Fatalf("gap %+v, want [%d, %d]", g, own+1, head-4)
		}
		// Its own records are served to peers; the gap is not.
		if recs, err := s.PeerRecords(1, own+5); err != nil || uint64(len(recs)) != own {
			t.Fatalf("PeerRecords below the gap: %d records, %v", len(recs), err)
		}
		if _, err := s.PeerRecords(own+1, own+5); !errors.Is(err, kms.ErrUnavailable) {
			t.Fatalf("PeerRecords of the gap: %v", err)
		}
		fillGap(t, s, e.state, 7)
		same(t, l)
		verifyChain(t, s, l)
	})
	t.Run("far behind on another chain", func(t *testing.T) {
		other := newEnv(t)
		createKey(t, other, "k")
		odk := dataKey(t, other, "k", nil)
		decisions(t, other, odk.WrappedDataKey, 20)
		s, l := ledgerWith(t, other.led, own)
		if err := s.Restore(bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		if g := s.LedgerGap(); g == nil || g.Lo != own+1 {
			t.Fatalf("gap %+v", g)
		}
		fillGap(t, s, e.state, 1000)
		same(t, l)
		verifyChain(t, s, l)
	})
}

// TestCheckpointVerdictIndependentOfBackfill: a checkpoint of a record
// older than the snapshot tail is refused by every replica alike, before
// any looks for the record — a node restored from a snapshot, still
// missing that record, does not break or diverge (it used to stop deciding
// for good) — and a checkpoint of a recent record is applied by both.
func TestCheckpointVerdictIndependentOfBackfill(t *testing.T) {
	defer kms.SetSnapshotTail(4)()
	e := newEnv(t)
	if err := e.svc.EnsureCheckpointKey(bg); err != nil {
		t.Fatal(err)
	}
	createKey(t, e, "k")
	dk := dataKey(t, e, "k", nil)
	decisions(t, e, dk.WrappedDataKey, 40)
	s, _ := emptyState(t)
	if err := s.Restore(bytes.NewReader(snapshotBytes(t, e.state))); err != nil {
		t.Fatal(err)
	}
	applyBoth := func(cp *custosv1.Checkpoint) (full, restored any) {
		cmd := &raftlogv1.Command{TimeUnixNano: time.Now().UnixNano(), Node: "node-1", Principal: "custosd",
			Op: &raftlogv1.Command_RecordCheckpoint{RecordCheckpoint: &raftlogv1.RecordCheckpoint{Checkpoint: cp}}}
		full, err := e.log.Apply(bg, cmd)
		if err != nil {
			full = err
		}
		// The same entry, at the same index, on the restored replica.
		res := s.ApplyBatch([]raft.AppliedEntry{{Index: e.state.AppliedIndex(), Commands: []*raftlogv1.Command{cmd}}})
		return full, res[0][0]
	}

	data, err := e.led.Get(20)
	if err != nil {
		t.Fatal(err)
	}
	h := ledger.Hash(data)
	old := &custosv1.Checkpoint{ClusterId: e.state.ClusterID(), Seq: 20, Head: h[:], KeyId: []byte("k"), Signature: []byte("s")}
	full, restored := applyBoth(old)
	rerr, _ := restored.(error)
	ferr, _ := full.(error)
	if !errors.Is(ferr, kms.ErrFailedPrecondition) || !errors.Is(rerr, kms.ErrFailedPrecondition) {
		t.Fatalf("checkpoint below the tail: full replica %v, restored replica %v; want FailedPrecondition on both", full, restored)
	}
	if err := s.Health(); err != nil {
		t.Fatalf("the restored replica broke on a checkpoint below its tail: %v", err)
	}

	head, hash := e.state.LedgerHead()
	cp, err := e.svc.SignCheckpointForTest(bg, head, hash[:])
	if err != nil {
		t.Fatal(err)
	}
	full, restored = applyBoth(cp)
	if d, ok := full.(*kms.Decision); !ok || d.Err != nil {
		t.Fatalf("recent checkpoint on the full replica: %#v", full)
	}
	if d, ok := restored.(*kms.Decision); !ok || d.Err != nil {
		t.Fatalf("recent checkpoint on the restored replica: %#v", restored)
	}
	fullHead, fullHash := e.state.LedgerHead()
	if head, hash := s.LedgerHead(); head != fullHead || hash != fullHash {
		t.Fatalf("restored replica head %d, full replica %d: the chains differ", head, fullHead)
	}
}
