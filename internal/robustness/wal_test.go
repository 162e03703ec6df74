package robustness

import (
	"fmt"
	"path/filepath"

	hraft "github.com/hashicorp/raft"

	"github.com/custos-kms/custos/raft"
)

// walUnreadable opens a stopped node's Raft log (DataDir/raft/raft.db) the
// way raft.Open does and reads every entry, as hashicorp/raft.NewRaft does
// on start. It returns the first read error: a node with one could not
// start again. (With raft-wal v0.4.0 this caught KI-1 of docs/robustness.md; the bbolt log store
// that replaced it is checked the same way.)
func walUnreadable(dataDir string) error {
	s, err := raft.OpenLogStore(filepath.Join(dataDir, "raft", "raft.db"))
	if err != nil {
		return fmt.Errorf("open log store: %w", err)
	}
	defer s.Close()
	first, err := s.FirstIndex()
	if err != nil {
		return err
	}
	last, err := s.LastIndex()
	if err != nil {
		return err
	}
	for idx := first; idx <= last && idx > 0; idx++ {
		var l hraft.Log
		if err := s.GetLog(idx, &l); err != nil {
			return fmt.Errorf("raft log entry %d of [%d, %d]: %w", idx, first, last, err)
		}
	}
	return nil
}
