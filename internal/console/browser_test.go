package console_test

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

var (
	browserTest = flag.Bool("browser", false, "run the officer console's end-to-end test in Chromium (make test-console)")
	screenshots = flag.String("screenshots", "", "write the console's screenshots to this directory (docs/console: make console-screenshots)")
)

// repoRoot is the repository's root (this file is internal/console/).
func repoRoot(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	root, err := filepath.Abs(filepath.Join(filepath.Dir(file), "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// TestConsoleInBrowser is the console's end-to-end test: Debian's Chromium,
// driven headless by playwright-core (e2e/console/run.mjs) with the Chrome
// DevTools Protocol's virtual authenticators, against a three-node
// `custosd dev --nodes 3` cluster of real processes, SoftHSM tokens and
// the custos CLI. Two officers register security keys, approve a
// third-party request 2 of 3 (a client's `custos decrypt --wait`
// completes), deny another, revoke the key (the next decrypt is denied) and
// open the report; `custos audit verify` then accepts the exported ledger.
// It runs with -browser (make test-console, a step of .ci/run).
func TestConsoleInBrowser(t *testing.T) {
	if !*browserTest {
		t.Skip("the browser test runs with -browser: make test-console")
	}
	root := repoRoot(t)
	script := filepath.Join(root, "e2e", "console", "run.mjs")
	if _, err := os.Stat(filepath.Join(root, "e2e", "console", "node_modules", "playwright-core")); err != nil {
		t.Fatalf("playwright-core is not installed in e2e/console: run make test-console (%v)", err)
	}
	work := t.TempDir()
	bin := filepath.Join(work, "bin")
	for _, cmd := range []string{"custosd", "custos"} {
		b := exec.Command("go", "build", "-o", filepath.Join(bin, cmd), "./cmd/"+cmd)
		b.Dir = root
		if out, err := b.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", cmd, err, out)
		}
	}

	// The cluster: custosd dev --nodes 3, until the banner says it runs.
	dir := filepath.Join(work, "cluster")
	dev := exec.Command(filepath.Join(bin, "custosd"), "dev", "--nodes", "3", "--base-port", "0", "--data-dir", dir)
	dev.Dir = work
	logFile, err := os.Create(filepath.Join(work, "cluster.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	dev.Stdout, dev.Stderr = pw, pw
	dev.WaitDelay = 30 * time.Second
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	exited := make(chan error, 1)
	go func() { exited <- dev.Wait() }()
	t.Cleanup(func() {
		_ = dev.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			_ = dev.Process.Kill()
			<-exited
		}
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(work, "cluster.log")); err == nil {
				t.Logf("cluster log (last 8 KiB):\n%s", tail(b, 8<<10))
			}
		}
	})
	consoleRE := regexp.MustCompile(`^\s+(node\d)\s+officer console (https://localhost:\d+/)`)
	urls := map[string]string{}
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logFile, line)
			if m := consoleRE.FindStringSubmatch(line); m != nil {
				urls[m[1]] = m[2]
			}
			if !signalled && strings.Contains(line, "Stop with Ctrl-C") {
				signalled = true
				ready <- nil
			}
		}
		if !signalled {
			ready <- fmt.Errorf("custosd dev ended before its banner")
		}
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Minute):
		t.Fatal("custosd dev --nodes 3 did not start within 5 minutes")
	}
	if len(urls) != 3 {
		t.Fatalf("the banner named %d console URLs: %v", len(urls), urls)
	}

	// The browser part, with the client's environment.
	env := os.Environ()
	clientEnv, err := os.ReadFile(filepath.Join(dir, "client.env"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(clientEnv), "\n") {
		if kv, ok := strings.CutPrefix(line, "export "); ok {
			k, v, _ := strings.Cut(kv, "=")
			env = append(env, k+"="+strings.Trim(v, "'"))
		}
	}
	shots := *screenshots
	if shots == "" {
		shots = filepath.Join(work, "screenshots")
	} else if shots, err = filepath.Abs(shots); err != nil {
		t.Fatal(err)
	}
	env = append(env, "CONSOLE_NODE1="+urls["node1"], "CONSOLE_NODE2="+urls["node2"], "CONSOLE_NODE3="+urls["node3"],
		"CUSTOS_BIN="+filepath.Join(bin, "custos"), "WORK_DIR="+work, "DEV_DIR="+dir, "SCREENSHOT_DIR="+shots,
		"CA_FILE="+filepath.Join(dir, "pki", "ca.pem"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	run := exec.CommandContext(ctx, "node", script)
	run.Dir = filepath.Join(root, "e2e", "console")
	run.Env = env
	out, err := run.CombinedOutput()
	t.Logf("run.mjs:\n%s", out)
	if err != nil {
		t.Fatalf("the browser test failed: %v", err)
	}
	for _, page := range []string{"register", "signin", "pending", "approved", "keys", "evidence", "report", "cluster"} {
		if _, err := os.Stat(filepath.Join(shots, page+".png")); err != nil {
			t.Errorf("no screenshot of the %s page: %v", page, err)
		}
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
