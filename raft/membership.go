package raft

import (
	"context"
	"errors"
	"fmt"
	"io"

	hraft "github.com/hashicorp/raft"
)

// Server is a member of the Raft configuration.
type Server struct {
	ID       string
	Addr     string
	Suffrage string // "Voter", "Nonvoter" or "Staging"
}

// Servers returns the current Raft configuration.
func (n *Node) Servers() ([]Server, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, n.translate(err)
	}
	var out []Server
	for _, s := range f.Configuration().Servers {
		out = append(out, Server{ID: string(s.ID), Addr: string(s.Address), Suffrage: s.Suffrage.String()})
	}
	return out, nil
}

// HasServer reports whether id is in the current Raft configuration.
func (n *Node) HasServer(id string) bool {
	servers, err := n.Servers()
	if err != nil {
		return false
	}
	for _, s := range servers {
		if s.ID == id {
			return true
		}
	}
	return false
}

// TransferLeadership hands leadership to id, or to any other voter when id
// is empty. Leader only.
func (n *Node) TransferLeadership(ctx context.Context, id string) error {
	if id == "" {
		return n.wait(ctx, n.raft.LeadershipTransfer())
	}
	servers, err := n.Servers()
	if err != nil {
		return err
	}
	for _, s := range servers {
		if s.ID == id {
			return n.wait(ctx, n.raft.LeadershipTransferToServer(hraft.ServerID(s.ID), hraft.ServerAddress(s.Addr)))
		}
	}
	return fmt.Errorf("raft: no server %q in the configuration", id)
}

// SnapshotMeta describes a snapshot opened with OpenSnapshot.
type SnapshotMeta struct {
	Index, Term uint64
	Size        int64
}

// OpenSnapshot takes a snapshot now (or reuses the latest when nothing is
// new) and opens it for reading. The caller closes the reader.
func (n *Node) OpenSnapshot(ctx context.Context) (SnapshotMeta, io.ReadCloser, error) {
	if err := n.wait(ctx, n.raft.Snapshot()); err != nil && !errors.Is(err, hraft.ErrNothingNewToSnapshot) {
		return SnapshotMeta{}, nil, err
	}
	snaps, err := n.snaps.List()
	if err != nil || len(snaps) == 0 {
		return SnapshotMeta{}, nil, fmt.Errorf("raft: no snapshot available: %v", err)
	}
	meta, rc, err := n.snaps.Open(snaps[0].ID)
	if err != nil {
		return SnapshotMeta{}, nil, fmt.Errorf("raft: open snapshot: %w", err)
	}
	return SnapshotMeta{Index: meta.Index, Term: meta.Term, Size: meta.Size}, rc, nil
}
