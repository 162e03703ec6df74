package node

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// LockFileName is the lock file in a node's data directory: whoever holds
// an exclusive lock on it (flock) uses the directory. custosd serve,
// custosd dev and custosd restore take it before anything else, so that a
// second process on the same data directory stops at once, naming the
// directory, instead of failing later on a file another process holds
// (the ledger's bbolt lock, after a timeout). The kernel drops the lock
// when its process ends, however it ends (a crash, SIGKILL): the file
// itself stays and locks nothing.
const LockFileName = "custosd.lock"

// ErrDataDirInUse reports a data directory that another process holds.
var ErrDataDirInUse = errors.New("data directory in use")

// DataDirLock is a held lock on a data directory (LockDataDir).
type DataDirLock struct {
	f    *os.File
	path string
}

// LockDataDir creates dir (0700) and dir/custosd.lock if missing, takes an
// exclusive lock on the file without waiting, and writes this process's
// id into it. If another process holds the lock it returns an error
// wrapping ErrDataDirInUse that names the directory, the lock file and,
// when the file tells, that process's id. Within one process the lock is
// taken once: a second LockDataDir on the same directory fails too.
func LockDataDir(dir string) (*DataDirLock, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("node: data dir: %w", err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("node: data dir: %w", err)
	}
	path := filepath.Join(abs, LockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("node: data dir lock: %w", err)
	}
	if err := flockExclusive(f); err != nil {
		holder := ""
		if b, rerr := os.ReadFile(path); rerr == nil {
			if pid, perr := strconv.Atoi(string(bytes.TrimSpace(b))); perr == nil && pid > 0 {
				holder = fmt.Sprintf(" (pid %d)", pid)
			}
		}
		f.Close()
		if errors.Is(err, errWouldBlock) {
			return nil, fmt.Errorf("%w: %s is used by another custos node%s, which holds %s: stop it first, or give this one another data directory",
				ErrDataDirInUse, abs, holder, path)
		}
		return nil, fmt.Errorf("node: data dir lock %s: %w", path, err)
	}
	// The holder's id, for the message above (informational only: the
	// lock is the flock, not the file's contents).
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &DataDirLock{f: f, path: path}, nil
}

// Path returns the lock file's path.
func (l *DataDirLock) Path() string { return l.path }

// Release gives the lock up. It is idempotent and safe on nil.
func (l *DataDirLock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	f := l.f
	l.f = nil
	// Closing the file drops the lock; the id goes first, so a later
	// message does not name a process that no longer holds it.
	_ = f.Truncate(0)
	return f.Close()
}
