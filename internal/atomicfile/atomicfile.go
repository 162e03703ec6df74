// Package atomicfile writes files all at once: a reader sees the old file
// or none, or the whole new one, never a part (a temporary file next to it,
// synced, then moved into place).
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Write writes data to a temporary file next to path, syncs it, and
// moves it to path: with a hard link (never replacing path) unless overwrite,
// with rename if overwrite.
func Write(path string, data []byte, mode fs.FileMode, overwrite bool) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if f != nil {
			f.Close()
		}
		os.Remove(tmp)
	}()
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		f = nil
		return fmt.Errorf("writing %s: %w", path, err)
	}
	f = nil
	return Place(tmp, path, overwrite)
}

// Place moves tmp, a complete and synced temporary file in path's
// directory, to path, and syncs the directory: with rename if overwrite;
// else with a hard link that never replaces path (then tmp is removed),
// or, on a file system without hard links, with rename after checking
// again that path does not exist. An existing path gives an error that
// wraps fs.ErrExist. On error tmp is left for the caller to remove.
func Place(tmp, path string, overwrite bool) (err error) {
	if overwrite {
		err = os.Rename(tmp, path)
	} else {
		err = os.Link(tmp, path)
		if err == nil {
			os.Remove(tmp)
		} else if !errors.Is(err, fs.ErrExist) {
			// No hard links here (some file systems): fall back to rename
			// after checking again.
			if _, serr := os.Lstat(path); serr == nil {
				err = fs.ErrExist
			} else {
				err = os.Rename(tmp, path)
			}
		}
	}
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s exists; not overwriting: %w", path, fs.ErrExist)
		}
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
