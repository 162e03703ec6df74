package kms_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/ledger"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// verifyChain walks the ledger and checks every link of the hash chain.
func verifyChain(t *testing.T, s *kms.State, l *ledger.Store) uint64 {
	t.Helper()
	seq, head := s.LedgerHead()
	prev := ledger.ZeroHash
	for i := uint64(1); i <= seq; i++ {
		rec, err := s.DecisionRecord(i)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if rec.Seq != i || !bytes.Equal(rec.PrevHash, prev[:]) {
			t.Fatalf("record %d: broken link", i)
		}
		data, _ := l.Get(i)
		prev = ledger.Hash(data)
	}
	if prev != head {
		t.Fatalf("chain head does not match the state's head")
	}
	return seq
}

func TestRestartKeepsKeysAndLedger(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "payroll")
	dk := dataKey(t, e, "payroll", map[string]string{"a": "b"})
	for i := 0; i < 20; i++ {
		if _, err := decrypt(e, dk.WrappedDataKey, map[string]string{"a": "b"}); err != nil {
			t.Fatal(err)
		}
	}
	// A snapshot, then more log entries after it: a restart restores the
	// snapshot (skipping the ledger it already has) and replays the rest.
	if err := e.node.Snapshot(); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if _, err := e.svc.RotateKey(bg, app, &custosv1.RotateKeyRequest{Name: "payroll"}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := decrypt(e, dk.WrappedDataKey, map[string]string{"a": "b"}); err != nil {
			t.Fatal(err)
		}
	}
	seqBefore, headBefore := e.state.LedgerHead()
	cluster := e.state.ClusterID()

	e.restart()

	if e.state.ClusterID() != cluster {
		t.Fatalf("cluster id changed across restart")
	}
	seq, head := e.state.LedgerHead()
	if seq != seqBefore || head != headBefore {
		t.Fatalf("ledger head after restart = %d, want %d (and the same hash)", seq, seqBefore)
	}
	k, err := e.svc.GetKey(bg, app, &custosv1.GetKeyRequest{Name: "payroll"})
	if err != nil || k.PrimaryVersion != 2 {
		t.Fatalf("key after restart = %v, %v", k, err)
	}
	resp, err := decrypt(e, dk.WrappedDataKey, map[string]string{"a": "b"})
	if err != nil || !bytes.Equal(resp.Plaintext, dk.Plaintext) {
		t.Fatalf("decrypt after restart: %v", err)
	}
	if resp.DecisionSeq != seqBefore+1 {
		t.Fatalf("decision seq after restart = %d, want %d", resp.DecisionSeq, seqBefore+1)
	}
	verifyChain(t, e.state, e.led)
}

func TestSnapshotRestoreIntoEmptyNode(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	dk := dataKey(t, e, "k", nil)
	for i := 0; i < 30; i++ {
		if _, err := decrypt(e, dk.WrappedDataKey, nil); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := e.state.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := snap.Persist(&buf); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	snap.Release()

	restore := func(data []byte) (*kms.State, *ledger.Store, error) {
		l, err := ledger.Open(filepath.Join(t.TempDir(), "l.db"), ledger.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		s := kms.NewState(l)
		return s, l, s.Restore(bytes.NewReader(data))
	}
	s, l, err := restore(buf.Bytes())
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	wantSeq, wantHead := e.state.LedgerHead()
	if seq, head := s.LedgerHead(); seq != wantSeq || head != wantHead {
		t.Fatalf("restored head = %d, want %d", seq, wantSeq)
	}
	if s.ClusterID() != e.state.ClusterID() {
		t.Fatalf("restored cluster id differs")
	}
	if _, err := s.Key("k"); err != nil {
		t.Fatalf("restored key: %v", err)
	}
	verifyChain(t, s, l)

	// Any altered byte in the ledger part of a snapshot is refused.
	data := buf.Bytes()
	for _, off := range []int{len(data) - 1, len(data) - 40, len(data) / 2} {
		bad := bytes.Clone(data)
		bad[off] ^= 0x40
		if _, _, err := restore(bad); err == nil {
			t.Fatalf("restore accepted a snapshot altered at byte %d", off)
		}
	}
	if _, _, err := restore(data[:len(data)-10]); err == nil {
		t.Fatalf("restore accepted a truncated snapshot")
	}
	if _, _, err := restore([]byte("not a snapshot")); err == nil {
		t.Fatalf("restore accepted garbage")
	}
}

// A replica that rebuilds its ledger purely from the log applies many
// entries per batch, so a checkpoint can share a batch with the records it
// covers. It must reach the same ledger as the leader did (a regression:
// the checkpoint once read the covered record only from the store and was
// refused there, so the replica's ledger diverged).
func TestReplayRebuildsLedgerWithCheckpoints(t *testing.T) {
	e := newEnv(t)
	if err := e.svc.EnsureCheckpointKey(bg); err != nil {
		t.Fatal(err)
	}
	createKey(t, e, "k")
	dk := dataKey(t, e, "k", nil)
	for round := 0; round < 3; round++ {
		for i := 0; i < 7; i++ {
			if _, err := decrypt(e, dk.WrappedDataKey, nil); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := e.svc.Checkpoint(bg); err != nil {
			t.Fatal(err)
		}
	}
	seq, head := e.state.LedgerHead()
	e.close()
	// Lose the ledger store: the restart replays the whole log into it.
	if err := os.Remove(filepath.Join(e.dir, "ledger.db")); err != nil {
		t.Fatal(err)
	}
	e.restart()
	if s2, h2 := e.state.LedgerHead(); s2 != seq || h2 != head {
		t.Fatalf("ledger rebuilt from the log ends at %d, want %d with the same head", s2, seq)
	}
	if err := e.state.Health(); err != nil {
		t.Fatalf("health after replay: %v", err)
	}
	verifyChain(t, e.state, e.led)
}
