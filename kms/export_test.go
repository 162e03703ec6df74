package kms

import (
	"context"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// SignCheckpointForTest signs (seq, head) with this node's HSM checkpoint
// key without proposing it, so a test can apply the same command to two
// replicas.
func (s *Service) SignCheckpointForTest(ctx context.Context, seq uint64, head []byte) (*custosv1.Checkpoint, error) {
	return s.signCheckpoint(ctx, seq, head)
}

// EditKeyForTest changes a key in the state outside the log, as an
// operator who edits a snapshot file and restarts the node does.
func (s *State) EditKeyForTest(name string, edit func(enabled, revoked *bool)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.keys[name]
	edit(&k.Enabled, &k.Revoked)
}

// SetRestoreForTest sets the state's restore outside the log.
func (s *State) SetRestoreForTest(r *custosv1.ClusterRestore) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.restore = r
}
