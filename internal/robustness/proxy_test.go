package robustness

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// echoServer echoes every connection back; t.Cleanup closes it.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

// roundTrip writes msg on c and reads it back within d.
func roundTrip(c net.Conn, msg string, d time.Duration) (time.Duration, error) {
	start := time.Now()
	_ = c.SetDeadline(start.Add(d))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte(msg)); err != nil {
		return 0, err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return 0, err
	}
	if string(buf) != msg {
		return 0, errors.New("echo mismatch: " + string(buf))
	}
	return time.Since(start), nil
}

func TestProxy(t *testing.T) {
	target := echoServer(t)
	// Connections are named by the order they were dialed: the test
	// registers each client's local port before the proxy accepts it.
	var mu sync.Mutex
	names := map[int]string{}
	p, err := NewProxy("127.0.0.1:0", target, func(a, _ net.Addr) string {
		mu.Lock()
		defer mu.Unlock()
		return names[a.(*net.TCPAddr).Port]
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	dial := func(name string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}
		// Reserve a local port first, so the name is known at accept.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
		mu.Lock()
		names[port] = name
		mu.Unlock()
		c, err := d.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}

	a, b := dial("a"), dial("b")
	if _, err := roundTrip(a, "hello", time.Second); err != nil {
		t.Fatalf("pass: %v", err)
	}

	// Delay applies to a's connection only, to open connections too.
	p.Set("a", Rule{Mode: Delay, Delay: 150 * time.Millisecond})
	if d, err := roundTrip(a, "slow", 2*time.Second); err != nil || d < 300*time.Millisecond {
		t.Errorf("delay: round trip %v, %v; want >= 300ms (150ms each way)", d, err)
	}
	if d, err := roundTrip(b, "fast", time.Second); err != nil || d >= 150*time.Millisecond {
		t.Errorf("b under a's delay: round trip %v, %v", d, err)
	}

	// Blackhole: nothing arrives until the rule is lifted, then it does.
	p.Set("a", Rule{Mode: Blackhole})
	if _, err := roundTrip(a, "held", 300*time.Millisecond); err == nil {
		t.Error("blackhole: data went through")
	}
	p.Set("a", Rule{Mode: Pass})
	buf := make([]byte, 4)
	_ = a.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := io.ReadFull(a, buf); err != nil || string(buf) != "held" {
		t.Errorf("after blackhole: got %q, %v; want the held data", buf, err)
	}
	_ = a.SetReadDeadline(time.Time{})

	// Drop closes a's open connection and refuses new ones; b is not
	// affected.
	p.Set("a", Rule{Mode: Drop})
	if _, err := roundTrip(a, "x", time.Second); err == nil {
		t.Error("drop: open connection still works")
	}
	a2 := dial("a")
	if _, err := roundTrip(a2, "x", time.Second); err == nil {
		t.Error("drop: new connection works")
	}
	if _, err := roundTrip(b, "still", time.Second); err != nil {
		t.Errorf("b under a's drop: %v", err)
	}

	// AnySource applies to sources without a rule of their own; Clear
	// lifts everything.
	p.Set(AnySource, Rule{Mode: Drop})
	if _, err := roundTrip(b, "x", time.Second); err == nil {
		t.Error("drop of every source: b still works")
	}
	p.Clear()
	a3, b3 := dial("a"), dial("b")
	for _, c := range []net.Conn{a3, b3} {
		if _, err := roundTrip(c, "again", time.Second); err != nil {
			t.Errorf("after Clear: %v", err)
		}
	}
	if st := p.Stats(); st.Accepted != 5 || st.Dropped < 3 {
		t.Errorf("stats %+v: want 5 accepted, at least 3 dropped", st)
	}
}

// TestProcSource: the proxy names this process as the source of a
// connection it dialed.
func TestProcSource(t *testing.T) {
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Skip("no /proc/net/tcp")
	}
	target := echoServer(t)
	got := make(chan string, 1)
	src := ProcSource(func() map[int]string { return map[int]string{os.Getpid(): "me"} })
	p, err := NewProxy("127.0.0.1:0", target, func(a, l net.Addr) string {
		s := src(a, l)
		got <- s
		return s
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if s := <-got; s != "me" {
		t.Errorf("source = %q, want me", s)
	}
}

func TestFindInode(t *testing.T) {
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 222 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 333 1 0000000000000000 20 4 30 10 -1
`
	if got := findInode(strings.NewReader(table), ":C350", ":1F90"); got != "222" {
		t.Errorf("client socket inode = %q, want 222", got)
	}
	if got := findInode(strings.NewReader(table), ":0001", ":1F90"); got != "" {
		t.Errorf("no such socket: got %q", got)
	}
}
