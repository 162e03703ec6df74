package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/custos-kms/custos/internal/node"
)

// lockedBuffer is a bytes.Buffer safe for the logger's goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestReloadOnHangup sends this process SIGHUP twice with the handler
// installed: the first reload fails and is logged as refused, the second
// succeeds and is logged; the process is not terminated.
func TestReloadOnHangup(t *testing.T) {
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := make(chan struct{}, 4)
	n := 0
	reloadOnHangup(ctx, func() error {
		n++
		defer func() { calls <- struct{}{} }()
		if n == 1 {
			return errors.New("config custosd.json: field \"xks.prefixes[0].credentials\" is required")
		}
		return nil
	}, log)
	for i := range 2 {
		if err := syscall.Kill(syscall.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		select {
		case <-calls:
		case <-time.After(20 * time.Second):
			t.Fatalf("reload %d not called after SIGHUP", i+1)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "configuration reloaded") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	out := logs.String()
	if !strings.Contains(out, "configuration reload refused") || !strings.Contains(out, "xks.prefixes[0].credentials") ||
		!strings.Contains(out, "configuration reloaded") {
		t.Fatalf("logs:\n%s", out)
	}
}

func TestFixedChanges(t *testing.T) {
	var a node.Config
	a.ID, a.Listen, a.DataDir = "n1", "127.0.0.1:7400", "/var/lib/custos"
	a.PKCS11.PIN = "1234"
	b := a
	if got := fixedChanges(a, b); len(got) != 0 {
		t.Fatalf("same config: %v", got)
	}
	b.Listen, b.PKCS11.PIN = "127.0.0.1:7401", "5678"
	got := strings.Join(fixedChanges(a, b), ",")
	if got != "listen,pkcs11" {
		t.Fatalf("fixedChanges = %q, want listen,pkcs11", got)
	}
}
