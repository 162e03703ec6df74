package raft_test

import (
	"path/filepath"
	"testing"

	"github.com/custos-kms/custos/raft"
)

// TestSetSnapshotPolicy: lowering TrailingLogs on a running node makes the
// next snapshot compact the log down to it.
func TestSetSnapshotPolicy(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig("n1", dir)
	cfg.Bootstrap = true
	n := openNode(t, cfg, &listSM{})
	waitLeaderSelf(t, n)
	if err := n.SetSnapshotPolicy(0, 5); err != nil {
		t.Fatalf("SetSnapshotPolicy: %v", err)
	}
	applyN(t, n, "a", 0, 100)
	if err := n.Snapshot(); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := raft.OpenLogStore(filepath.Join(dir, "raft.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	first, err := s.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	if first < 50 {
		t.Fatalf("first log index after the snapshot = %d: the log was not compacted to 5 trailing entries", first)
	}
}
