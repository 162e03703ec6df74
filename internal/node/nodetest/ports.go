package nodetest

import (
	"net"
	"sync"
	"testing"
)

// keptPort holds a loopback port the kernel picked for the whole test and
// lends it to one node at a time (lend): a restarted node serves on the same
// port without binding it again, so no other process can take the port
// between a Kill and a Restart. While no node holds it, a connection is
// accepted and reset at once, as a port nobody listens on would refuse it.
type keptPort struct {
	l   net.Listener
	mu  sync.Mutex
	cur *lease
}

// keepPort listens on 127.0.0.1:0 until the test ends.
func keepPort(tb testing.TB) *keptPort {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	k := &keptPort{l: l}
	go k.serve()
	tb.Cleanup(func() { _ = l.Close() })
	return k
}

// serve hands each connection to the current lease, or resets it.
func (k *keptPort) serve() {
	for {
		c, err := k.l.Accept()
		if err != nil {
			return // the test is over
		}
		k.mu.Lock()
		ls := k.cur
		k.mu.Unlock()
		if ls == nil {
			reset(c)
			continue
		}
		select {
		case ls.conns <- c:
		case <-ls.done:
			reset(c)
		}
	}
}

// reset closes c with a TCP reset.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// lend returns a listener on the port for one node; a lease still open is
// ended first.
func (k *keptPort) lend() net.Listener {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cur != nil {
		k.cur.end()
	}
	k.cur = &lease{k: k, conns: make(chan net.Conn), done: make(chan struct{})}
	return k.cur
}

// lease is a node's view of a keptPort: Close ends the lease, not the port.
type lease struct {
	k     *keptPort
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

// Accept implements net.Listener.
func (l *lease) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener: the node is done with the port.
func (l *lease) Close() error {
	l.k.mu.Lock()
	defer l.k.mu.Unlock()
	l.end()
	if l.k.cur == l {
		l.k.cur = nil
	}
	return nil
}

func (l *lease) end() { l.once.Do(func() { close(l.done) }) }

// closed reports whether the node closed the lease.
func (l *lease) closed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// Addr implements net.Listener.
func (l *lease) Addr() net.Addr { return l.k.l.Addr() }
