package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDevDataDirInUse: a second custosd on the data directory of a
// running one stops at once (exit 1) with one line naming the directory,
// the lock file and the running process, and a hint; once that process
// has exited the directory starts again. The first custosd runs as its
// own process, with --log-level debug, which its log shows.
func TestDevDataDirInUse(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	first := exec.Command(os.Args[0], "-test.run=^TestHelperServe$")
	first.Env = append(os.Environ(), helperArgsEnv+"="+strings.Join([]string{"dev", "--data-dir", dir, "--listen", "127.0.0.1:0", "--log-level", "debug"}, "\n"))
	var stderr syncBuffer
	first.Stderr = &stderr
	stdout, err := first.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if first.ProcessState == nil {
			first.Process.Kill()
			first.Wait()
		}
	}()
	// The banner comes once the node serves.
	out := bufio.NewReader(stdout)
	var banner strings.Builder
	for !strings.Contains(banner.String(), "Stop with Ctrl-C") {
		line, err := out.ReadString('\n')
		banner.WriteString(line)
		if err != nil {
			t.Fatalf("custosd dev ended before its banner (%v):\n%s\n%s", err, banner.String(), stderr.String())
		}
	}
	go io.Copy(io.Discard, out)
	if !strings.Contains(banner.String(), "export PATH=") {
		t.Errorf("banner without the PATH step:\n%s", banner.String())
	}

	start := time.Now()
	var o, e bytes.Buffer
	code := run([]string{"dev", "--data-dir", dir, "--listen", "127.0.0.1:0"}, &o, &e)
	msg := e.String()
	if code != 1 || strings.Count(msg, "\n") != 1 {
		t.Fatalf("second custosd dev: exit %d, stderr %q; want 1 and one line", code, msg)
	}
	for _, want := range []string{dir + " is used by another custos node", fmt.Sprintf("(pid %d)", first.Process.Pid),
		filepath.Join(dir, "custosd.lock"), "stop it first, or give this one another data directory"} {
		if !strings.Contains(msg, want) {
			t.Errorf("second custosd dev: %q lacks %q", msg, want)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the second custosd dev took %v to fail", d)
	}
	if !strings.Contains(stderr.String(), "level=DEBUG") {
		t.Errorf("custosd dev --log-level debug logged nothing at debug:\n%s", stderr.String())
	}

	if err := first.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := first.Wait(); err != nil {
		t.Fatalf("custosd dev did not stop cleanly: %v\n%s", err, stderr.String())
	}
	// The lock went with its process: the directory starts again.
	_, stop := startDev(t, dir)
	stop()
}
