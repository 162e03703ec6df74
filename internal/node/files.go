package node

import (
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
)

// tightenDataDir makes every directory under dir 0700 and every file
// 0600 (docs/operations.md, *Files*): the Raft snapshots and log hold
// wrapped KEKs and sink secrets, the ledger every decision. custosd also
// runs with umask 077; this repairs a data directory written before, or
// copied with looser modes. It reports how many modes it changed.
func tightenDataDir(dir string, log *slog.Logger) int {
	changed := 0
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // a racing removal; what remains is tightened
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		if perm := info.Mode().Perm(); perm&0o077 != 0 {
			if err := os.Chmod(path, perm&^0o077|want&0o700); err != nil {
				log.Warn("could not restrict a data file's mode", "path", path, "err", err)
				return nil
			}
			changed++
		}
		return nil
	})
	if changed > 0 {
		log.Warn("data directory: removed group and other permissions", "dir", dir, "files_and_dirs", changed)
	}
	return changed
}
