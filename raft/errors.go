package raft

import (
	"errors"
	"fmt"

	hraft "github.com/hashicorp/raft"
)

var (
	// ErrNotLeader reports that this node cannot accept the proposal because
	// it is not (or stopped being) the leader. The returned error is a
	// *NotLeaderError carrying the leader's address when known.
	ErrNotLeader = errors.New("raft: not the leader")
	// ErrClosed reports that the node is shut down.
	ErrClosed = errors.New("raft: node closed")
	// ErrTimeout reports that raft did not accept the operation in time.
	ErrTimeout = errors.New("raft: timed out")
)

// NotLeaderError is returned (wrapped) when a proposal reaches a node that
// is not the leader. errors.Is(err, ErrNotLeader) matches it.
type NotLeaderError struct {
	// LeaderAddr and LeaderID name the current leader, empty if unknown.
	LeaderAddr string
	LeaderID   string
	// Err is hashicorp's error (ErrNotLeader, ErrLeadershipLost, or
	// ErrLeadershipTransferInProgress). After ErrLeadershipLost the command
	// may still commit.
	Err error
}

func (e *NotLeaderError) Error() string {
	if e.LeaderAddr == "" {
		return fmt.Sprintf("raft: not the leader (leader unknown): %v", e.Err)
	}
	return fmt.Sprintf("raft: not the leader (leader %s at %s): %v", e.LeaderID, e.LeaderAddr, e.Err)
}

// Is makes errors.Is(err, ErrNotLeader) true.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

// Unwrap returns hashicorp's error.
func (e *NotLeaderError) Unwrap() error { return e.Err }

// translate maps hashicorp/raft errors to this package's errors.
func (n *Node) translate(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrClosed):
		return err
	case errors.Is(err, hraft.ErrNotLeader),
		errors.Is(err, hraft.ErrLeadershipLost),
		errors.Is(err, hraft.ErrLeadershipTransferInProgress):
		addr, id := n.raft.LeaderWithID()
		return &NotLeaderError{LeaderAddr: string(addr), LeaderID: string(id), Err: err}
	case errors.Is(err, hraft.ErrRaftShutdown):
		return fmt.Errorf("%w: %w", ErrClosed, err)
	case errors.Is(err, hraft.ErrEnqueueTimeout):
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	default:
		return fmt.Errorf("raft: %w", err)
	}
}
