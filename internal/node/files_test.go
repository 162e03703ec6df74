package node_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// TestDataDirIsPrivate: a node's data directory — Raft log and snapshots
// (wrapped KEKs, sink secrets), ledger — holds only files 0600 and
// directories 0700 once the node has started, even if something loosened
// them meanwhile (a copy, a restore by hand, files written under another
// umask).
func TestDataDirIsPrivate(t *testing.T) {
	h := nodetest.Start(t)
	kc := custosv1.NewKeyServiceClient(h.Conn(t, "app"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := kc.CreateKey(ctx, &custosv1.CreateKeyRequest{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	if err := h.Node.Raft().Snapshot(); err != nil {
		t.Fatal(err)
	}
	dir := h.Config.DataDir
	h.RestartWith(t, func(_ *node.Config) {
		// Loosen everything, as a careless copy would.
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil {
				_ = os.Chmod(p, 0o755)
			}
			return nil
		})
	})
	n := 0
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		info, err := d.Info()
		if err != nil {
			return nil // removed meanwhile (a temporary file)
		}
		n++
		if perm := info.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s: mode %04o, want no group or other permission", p, perm)
		}
		return nil
	})
	if n < 4 {
		t.Fatalf("only %d entries in the data directory", n)
	}
}
