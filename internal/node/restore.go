package node

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/ledger"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"github.com/custos-kms/custos/raft"
)

// ErrRestore reports a restore refused before anything was written: a bad
// or foreign snapshot file, a data directory that is not empty, or an HSM
// without the domain key.
var ErrRestore = errors.New("node: restore refused")

// Restore prepares cfg's empty data directory so that the node starts
// (Start, `custosd serve`) as a new single-node cluster from the snapshot
// file at path (`custos cluster snapshot`; docs/operations.md, *Restore*).
// It checks the file (length, SHA-256 trailer, a cluster id other than a
// configured cfg.ClusterID is refused) and that the node's HSM holds the
// cluster's domain key, then writes the Raft state: the file's state marked
// as restored (kms.PrepareRestore), which serves no key crypto until the
// officers accept the restore. On any error the data directory is left as
// it was (but for its lock file, LockDataDir). It returns the restore's record.
func Restore(ctx context.Context, cfg Config, path string) (*custosv1.ClusterRestore, error) {
	if cfg.ID == "" || cfg.DataDir == "" {
		return nil, fmt.Errorf("%w: the configuration needs the node id and data_dir", ErrRestore)
	}
	if cfg.DataDirLock == nil {
		lock, err := LockDataDir(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		defer lock.Release()
	}
	raftDir := filepath.Join(cfg.DataDir, "raft")
	for _, d := range []string{raftDir, filepath.Join(cfg.DataDir, "ledger")} {
		if ents, err := os.ReadDir(d); err == nil && len(ents) > 0 {
			return nil, fmt.Errorf("%w: %s is not empty: a restore starts from an empty data directory (move the old one aside)", ErrRestore, d)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRestore, err)
	}
	defer f.Close()
	hdr, err := custos.VerifySnapshot(f)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrRestore, path, err)
	}
	if cfg.ClusterID != "" && hdr.ClusterID != cfg.ClusterID {
		return nil, fmt.Errorf("%w: the snapshot is of cluster %s, the configuration names cluster %s", ErrRestore, hdr.ClusterID, cfg.ClusterID)
	}
	payloadAt, digest, err := snapshotLayout(f)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrRestore, path, err)
	}
	addr := cfg.RaftAdvertise
	if addr == "" {
		addr = cfg.RaftAddr
	}
	if addr == "" {
		addr = DefaultRaftAddr
	}

	b, err := openHSM(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	rid, err := b.Random(ctx, 16)
	if err != nil {
		return nil, fmt.Errorf("node: restore id from the HSM: %w", err)
	}

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("node: data dir: %w", err)
	}
	tmp, err := os.CreateTemp(cfg.DataDir, ".restore-payload-*")
	if err != nil {
		return nil, fmt.Errorf("node: restore: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	info, err := kms.PrepareRestore(io.NewSectionReader(f, payloadAt, hdr.PayloadSize), tmp,
		kms.SnapshotSource{SHA256: digest, ClusterID: hdr.ClusterID, Node: hdr.NodeID, Index: hdr.RaftIndex, Term: hdr.RaftTerm, Created: hdr.Created},
		kms.RestoreTarget{Node: cfg.ID, RaftAddr: addr, ID: hex.EncodeToString(rid), Now: time.Now(), VerifyDomainKey: func(k hsm.KeyRef) error {
			return b.VerifyKey(ctx, k, hsm.UsageWrap)
		}})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRestore, err)
	}
	// The node must be able to start from it: load it into a scratch
	// state, as Raft will (the ledger tail's chain up to the head, every
	// record), before anything is written where the node looks.
	if err := checkPayload(cfg.DataDir, tmp); err != nil {
		return nil, fmt.Errorf("%w: the snapshot's state does not load: %w", ErrRestore, err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("node: restore: %w", err)
	}
	// Seeded next to raft/ and renamed over it: a failure half way leaves
	// no Raft state that Start would take for a node's.
	staging, err := os.MkdirTemp(cfg.DataDir, ".restore-raft-*")
	if err != nil {
		return nil, fmt.Errorf("node: restore: %w", err)
	}
	defer os.RemoveAll(staging)
	if err := raft.Seed(staging, cfg.ID, addr, hdr.RaftIndex, hdr.RaftTerm, tmp); err != nil {
		return nil, fmt.Errorf("node: restore: %w", err)
	}
	_ = os.Remove(raftDir) // empty (checked above), if it exists
	if err := os.Rename(staging, raftDir); err != nil {
		return nil, fmt.Errorf("node: restore: %w", err)
	}
	return info, nil
}

// checkPayload restores the payload in f into a scratch state whose
// ledger lives in a temporary directory under dir.
func checkPayload(dir string, f *os.File) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	scratch, err := os.MkdirTemp(dir, ".restore-check-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	l, err := ledger.Open(filepath.Join(scratch, "ledger.db"), ledger.Options{NoSync: true})
	if err != nil {
		return err
	}
	defer l.Close()
	return kms.NewState(l).Restore(f)
}

// snapshotLayout returns where a verified snapshot file's payload starts
// and its SHA-256 trailer in hex.
func snapshotLayout(f *os.File) (int64, string, error) {
	head := make([]byte, len(custos.SnapshotMagic)+4)
	if _, err := f.ReadAt(head, 0); err != nil {
		return 0, "", err
	}
	at := int64(len(head)) + int64(binary.BigEndian.Uint32(head[len(custos.SnapshotMagic):]))
	st, err := f.Stat()
	if err != nil {
		return 0, "", err
	}
	trailer := make([]byte, 32)
	if _, err := f.ReadAt(trailer, st.Size()-32); err != nil {
		return 0, "", err
	}
	return at, hex.EncodeToString(trailer), nil
}
