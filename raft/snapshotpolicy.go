package raft

import "fmt"

// SetSnapshotPolicy changes the running node's SnapshotThreshold and
// TrailingLogs (hashicorp's ReloadConfig); a zero argument keeps the
// current value. Tests use it to make a leader compact its log so that a
// follower must install a snapshot.
func (n *Node) SetSnapshotPolicy(threshold, trailingLogs uint64) error {
	rc := n.raft.ReloadableConfig()
	if threshold > 0 {
		rc.SnapshotThreshold = threshold
	}
	if trailingLogs > 0 {
		rc.TrailingLogs = trailingLogs
	}
	if err := n.raft.ReloadConfig(rc); err != nil {
		return fmt.Errorf("raft: reload config: %w", err)
	}
	return nil
}
