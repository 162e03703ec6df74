package node_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/softhsm"
)

// lockHelperEnv makes TestHelperLockDataDir hold the lock on this
// directory in a child process of the test binary.
const lockHelperEnv = "CUSTOS_TEST_LOCK_DIR"

// TestHelperLockDataDir is the child process of TestLockDataDir: it locks
// the directory, says so, and waits to be killed.
func TestHelperLockDataDir(t *testing.T) {
	dir := os.Getenv(lockHelperEnv)
	if dir == "" {
		t.Skip("the child process of TestLockDataDir")
	}
	if _, err := node.LockDataDir(dir); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("locked")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until killed
	os.Exit(0)
}

// TestLockDataDir: one holder at a time, in this process or another; the
// second is refused at once, naming the directory, the lock file and the
// holder's pid; the lock ends with Release, and with its process however
// it ends (SIGKILL here), though the file stays.
func TestLockDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	l, err := node.LockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir: %v, mode %v; want 0700", err, fi.Mode().Perm())
	}
	_, err = node.LockDataDir(dir)
	if !errors.Is(err, node.ErrDataDirInUse) || !strings.Contains(err.Error(), dir+" is used by another custos node") ||
		!strings.Contains(err.Error(), fmt.Sprintf("(pid %d)", os.Getpid())) || !strings.Contains(err.Error(), l.Path()) {
		t.Fatalf("second lock in this process: %v", err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(); err != nil {
		t.Errorf("second Release: %v", err)
	}

	// Another process holds it, then dies without releasing it.
	child := exec.Command(os.Args[0], "-test.run=^TestHelperLockDataDir$")
	child.Env = append(os.Environ(), lockHelperEnv+"="+dir)
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "locked\n" {
		child.Process.Kill()
		child.Wait()
		t.Fatalf("child: %q, %v", line, err)
	}
	_, err = node.LockDataDir(dir)
	if !errors.Is(err, node.ErrDataDirInUse) || !strings.Contains(err.Error(), fmt.Sprintf("(pid %d)", child.Process.Pid)) {
		t.Errorf("lock held by process %d: %v", child.Process.Pid, err)
	}
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	l, err = node.LockDataDir(dir)
	if err != nil {
		t.Fatalf("after the holder was killed: %v", err)
	}
	defer l.Release()
	if _, err := os.Stat(filepath.Join(dir, node.LockFileName)); err != nil {
		t.Errorf("lock file: %v", err)
	}
}

// TestStartRefusesDataDirInUse: a second node.Start (and node.Restore) on
// a running node's data directory stops at once with ErrDataDirInUse,
// before the HSM, the ledger or Raft; after Close the directory is free.
func TestStartRefusesDataDirInUse(t *testing.T) {
	dir := t.TempDir()
	cfg := nodetest.Config(t, dir, softhsm.TestToken(t))
	nodetest.SetOfficers(t, &cfg, dir)
	n, err := node.Start(ctx(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	second, err := node.Start(ctx(t), cfg)
	if err == nil {
		second.Close()
		n.Close()
		t.Fatal("a second node started on the same data directory")
	}
	if !errors.Is(err, node.ErrDataDirInUse) || !strings.Contains(err.Error(), cfg.DataDir) {
		t.Errorf("second Start: %v; want ErrDataDirInUse naming %s", err, cfg.DataDir)
	}
	// Well before the ledger's 5 s wait for its file lock.
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("second Start took %v to fail", d)
	}
	if _, err := node.Restore(ctx(t), cfg, filepath.Join(dir, "none.snap")); !errors.Is(err, node.ErrDataDirInUse) {
		t.Errorf("Restore on a running node's data directory: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n, err = node.Start(ctx(t), cfg)
	if err != nil {
		t.Fatalf("Start after Close: %v", err)
	}
	n.Close()
}
