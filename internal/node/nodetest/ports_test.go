package nodetest

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestKeptPort: a port lent to one node after another stays bound in
// between (nobody else can listen on it), connections reach the current
// lease, and with no lease a connection is reset instead of hanging.
func TestKeptPort(t *testing.T) {
	k := keepPort(t)
	addr := k.l.Addr().String()
	first := k.lend()
	go func() {
		c, err := first.Accept()
		if err == nil {
			_, _ = c.Write([]byte("1"))
			_ = c.Close()
		}
	}()
	if got := readOne(t, addr); got != "1" {
		t.Fatalf("through the first lease: %q", got)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := first.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept on a closed lease: %v", err)
	}
	// Between leases: still bound, and a client is turned away at once.
	if l, err := net.Listen("tcp", addr); err == nil {
		_ = l.Close()
		t.Fatal("another listener took the port between two leases")
	}
	if got := readOne(t, addr); got != "" {
		t.Fatalf("with no lease the client read %q", got)
	}
	second := k.lend()
	if second.Addr().String() != addr {
		t.Fatalf("second lease on %s, want %s", second.Addr(), addr)
	}
	go func() {
		c, err := second.Accept()
		if err == nil {
			_, _ = c.Write([]byte("2"))
			_ = c.Close()
		}
	}()
	if got := readOne(t, addr); got != "2" {
		t.Fatalf("through the second lease: %q", got)
	}
}

// readOne dials addr and reads one byte ("" if the connection ends first).
// The deadline only bounds a hang, which would be the failure.
func readOne(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return ""
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(time.Minute))
	b := make([]byte, 1)
	n, err := c.Read(b)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the connection hung instead of being served or reset")
	}
	if n == 1 {
		return string(b)
	}
	if err != nil && !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("read: %v", err)
	}
	return ""
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe)
}
