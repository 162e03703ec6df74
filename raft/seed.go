package raft

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	hraft "github.com/hashicorp/raft"
)

// Seed writes the Raft state a restored node starts from into dir, which
// must hold no Raft state: one snapshot at index and term whose payload is
// read from payload, with a configuration of a single voter, id at addr,
// and a current term of term. Open on dir then restores the state machine
// from it and, being the only voter, elects itself (the next term) and
// carries on from index+1. A failed Seed leaves no Raft state in dir.
func Seed(dir, id, addr string, index, term uint64, payload io.Reader) (err error) {
	if id == "" || addr == "" || index == 0 || term == 0 {
		return errors.New("raft: seed needs a server id, an address, an index and a term")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("raft: create dir: %w", err)
	}
	dbPath := filepath.Join(dir, "raft.db")
	if _, err := os.Stat(dbPath); err == nil {
		return fmt.Errorf("raft: %s already holds Raft state", dir)
	}
	snapDir := filepath.Join(dir, "snapshots")
	if ents, err := os.ReadDir(snapDir); err == nil && len(ents) > 0 {
		return fmt.Errorf("raft: %s already holds snapshots", snapDir)
	}
	store, err := OpenLogStore(dbPath)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := store.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("raft: close log store: %w", cerr)
		}
		if err != nil {
			_ = os.Remove(dbPath)
			_ = os.RemoveAll(snapDir)
		}
	}()
	snaps, err := hraft.NewFileSnapshotStore(dir, 2, io.Discard)
	if err != nil {
		return fmt.Errorf("raft: open snapshot store: %w", err)
	}
	conf := hraft.Configuration{Servers: []hraft.Server{{Suffrage: hraft.Voter, ID: hraft.ServerID(id), Address: hraft.ServerAddress(addr)}}}
	// The store encodes the peers of old snapshot formats through a
	// transport; an in-memory one encodes an address as itself.
	_, trans := hraft.NewInmemTransport(hraft.ServerAddress(addr))
	defer trans.Close()
	sink, err := snaps.Create(hraft.SnapshotVersionMax, index, term, conf, index, trans)
	if err != nil {
		return fmt.Errorf("raft: create snapshot: %w", err)
	}
	if _, err := io.Copy(sink, payload); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("raft: write snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("raft: finish snapshot: %w", err)
	}
	// hashicorp/raft keeps the current term under this key: starting at
	// the snapshot's term, the first election is a later one.
	if err := store.SetUint64([]byte("CurrentTerm"), term); err != nil {
		return fmt.Errorf("raft: set term: %w", err)
	}
	return nil
}
