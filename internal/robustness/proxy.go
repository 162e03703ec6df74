package robustness

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Mode is what a Proxy does with the connections of one source.
type Mode int

// The link faults a Proxy injects.
const (
	// Pass forwards traffic unchanged.
	Pass Mode = iota
	// Drop closes the source's open connections and closes new ones as
	// soon as they are accepted: the dialer sees a reset or EOF at once.
	Drop
	// Blackhole accepts connections but forwards nothing, in either
	// direction, until the rule changes: the dialer sees a stall, as with
	// packets lost on a dead link (what was held is delivered on heal,
	// as TCP would retransmit it).
	Blackhole
	// Delay forwards every chunk Rule.Delay after it was read, in order.
	Delay
)

func (m Mode) String() string {
	switch m {
	case Pass:
		return "pass"
	case Drop:
		return "drop"
	case Blackhole:
		return "blackhole"
	case Delay:
		return "delay"
	}
	return "mode(" + strconv.Itoa(int(m)) + ")"
}

// Rule is a Proxy's treatment of the connections from one source.
type Rule struct {
	Mode  Mode
	Delay time.Duration // for Delay
}

// AnySource is the source whose Rule applies to connections whose own
// source has none (including those the Source function cannot name).
const AnySource = ""

// Proxy is a TCP proxy from a loopback listener to one target address,
// which can drop, blackhole or delay the traffic of each source on
// command. The process-mode robustness suite puts one in front of every
// node's Raft port and gRPC port and has the nodes dial each other
// through them, so that it can cut links between nodes
// (docs/robustness.md).
//
// A connection's source is what Source returns for its remote address
// (e.g. ProcSource: the node process that dialed). Rules are looked up at
// every chunk forwarded, so a change applies to open connections too. It
// is safe for concurrent use.
type Proxy struct {
	ln     net.Listener
	target string
	source func(remote, local net.Addr) string

	mu      sync.Mutex
	rules   map[string]Rule
	changed chan struct{} // closed and replaced when rules change
	conns   map[*proxyConn]bool
	closed  bool
	stats   ProxyStats

	wg sync.WaitGroup
}

// ProxyStats counts what a Proxy did.
type ProxyStats struct {
	Accepted   int // connections accepted
	Dropped    int // connections closed by a Drop rule
	Unknown    int // connections whose source Source could not name
	DialFailed int // connections whose target could not be dialed
}

// NewProxy listens on listen (e.g. "127.0.0.1:0") and forwards every
// connection to target. source names the source of a connection from its
// remote and local (the proxy's) addresses; nil names none (only the
// AnySource rule applies).
func NewProxy(listen, target string, source func(remote, local net.Addr) string) (*Proxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("proxy for %s: %w", target, err)
	}
	p := &Proxy{ln: ln, target: target, source: source, rules: map[string]Rule{},
		changed: make(chan struct{}), conns: map[*proxyConn]bool{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr returns the proxy's listen address (the one to dial).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target returns the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// Set sets the rule for connections from src (AnySource: every source
// without a rule of its own). A Drop closes src's open connections.
func (p *Proxy) Set(src string, r Rule) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r.Mode == Pass {
		delete(p.rules, src)
	} else {
		p.rules[src] = r
	}
	close(p.changed)
	p.changed = make(chan struct{})
	if r.Mode == Drop {
		for c := range p.conns {
			if src == AnySource || c.src == src {
				c.close()
				p.stats.Dropped++
			}
		}
	}
}

// Clear removes every rule: all traffic passes again.
func (p *Proxy) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = map[string]Rule{}
	close(p.changed)
	p.changed = make(chan struct{})
}

// Stats returns the counters.
func (p *Proxy) Stats() ProxyStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// rule returns the rule for src and a channel closed at the next change.
func (p *Proxy) rule(src string) (Rule, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.rules[src]
	if !ok {
		r = p.rules[AnySource]
	}
	return r, p.changed
}

// Close stops listening and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	err := p.ln.Close()
	for c := range p.conns {
		c.close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return // closed
		}
		src := AnySource
		if p.source != nil {
			src = p.source(in.RemoteAddr(), in.LocalAddr())
		}
		p.mu.Lock()
		p.stats.Accepted++
		if src == AnySource {
			p.stats.Unknown++
		}
		p.mu.Unlock()
		if r, _ := p.rule(src); r.Mode == Drop {
			_ = in.Close()
			p.mu.Lock()
			p.stats.Dropped++
			p.mu.Unlock()
			continue
		}
		p.wg.Add(1)
		go p.serve(in, src)
	}
}

// proxyConn is one proxied connection.
type proxyConn struct {
	src     string
	in, out net.Conn
	done    chan struct{}
	once    sync.Once
}

func (c *proxyConn) close() {
	c.once.Do(func() {
		close(c.done)
		_ = c.in.Close()
		if c.out != nil {
			_ = c.out.Close()
		}
	})
}

func (p *Proxy) serve(in net.Conn, src string) {
	defer p.wg.Done()
	out, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		_ = in.Close()
		p.mu.Lock()
		p.stats.DialFailed++
		p.mu.Unlock()
		return
	}
	c := &proxyConn{src: src, in: in, out: out, done: make(chan struct{})}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.close()
		return
	}
	p.conns[c] = true
	p.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(c, in, out) }()
	go func() { defer wg.Done(); p.pipe(c, out, in) }()
	wg.Wait()
	c.close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// chunk is data read from one side, with the time it was read.
type chunk struct {
	b  []byte
	at time.Time
}

// pipe copies from → to under the rules: a reader fills a queue, a writer
// applies the rule to each chunk (waits out a Delay, holds the queue while
// Blackhole, closes on Drop).
func (p *Proxy) pipe(c *proxyConn, from, to net.Conn) {
	q := make(chan chunk, 64)
	go func() {
		defer close(q)
		for {
			b := make([]byte, 32<<10)
			n, err := from.Read(b)
			if n > 0 {
				select {
				case q <- chunk{b[:n], time.Now()}:
				case <-c.done:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	for ch := range q {
		if !p.release(c, ch) {
			c.close()
			break
		}
		if _, err := to.Write(ch.b); err != nil {
			c.close()
			break
		}
	}
	// Half-close so the other side sees EOF; the other pipe may still run.
	if tc, ok := to.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	} else {
		c.close()
	}
	for range q { // let the reader finish
	}
}

// release waits until ch may be written under the current rule; false:
// the connection is to be closed.
func (p *Proxy) release(c *proxyConn, ch chunk) bool {
	for {
		r, changed := p.rule(c.src)
		switch r.Mode {
		case Pass:
			return true
		case Drop:
			return false
		case Blackhole:
			select {
			case <-changed:
				continue
			case <-c.done:
				return false
			}
		case Delay:
			wait := time.Until(ch.at.Add(r.Delay))
			if wait <= 0 {
				return true
			}
			t := time.NewTimer(wait)
			select {
			case <-t.C:
				return true
			case <-changed:
				t.Stop()
				continue
			case <-c.done:
				t.Stop()
				return false
			}
		default:
			return true
		}
	}
}

// ProcSource returns a Source function for NewProxy that names the local
// process that dialed a loopback connection: it finds the socket whose
// local port is the connection's remote port in /proc/net/tcp{,6}, then
// the process among pids() (pid → name) holding that socket. Linux only;
// elsewhere, or when the process is not one of pids(), it returns
// AnySource.
func ProcSource(pids func() map[int]string) func(remote, local net.Addr) string {
	return func(remote, local net.Addr) string {
		ta, ok := remote.(*net.TCPAddr)
		la, ok2 := local.(*net.TCPAddr)
		if !ok || !ok2 {
			return AnySource
		}
		inode := socketInode(ta.Port, la.Port)
		if inode == "" {
			return AnySource
		}
		want := "socket:[" + inode + "]"
		for pid, name := range pids() {
			fds, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "fd"))
			if err != nil {
				continue
			}
			for _, fd := range fds {
				if l, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "fd", fd.Name())); err == nil && l == want {
					return name
				}
			}
		}
		return AnySource
	}
}

// socketInode returns the inode of the TCP socket with local port local
// and remote port remote, from /proc/net/tcp and tcp6; "" if none.
func socketInode(local, remote int) string {
	lp := fmt.Sprintf(":%04X", local)
	rp := fmt.Sprintf(":%04X", remote)
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		if in := scanInode(f, lp, rp); in != "" {
			return in
		}
	}
	return ""
}

func scanInode(file, lp, rp string) string {
	f, err := os.Open(file)
	if err != nil {
		return ""
	}
	defer f.Close()
	return findInode(f, lp, rp)
}

// findInode scans a /proc/net/tcp table for the socket whose local
// address ends in lp and remote address in rp (":PORT" in hex).
func findInode(r io.Reader, lp, rp string) string {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		if len(f) < 10 || !strings.HasSuffix(f[1], lp) || !strings.HasSuffix(f[2], rp) {
			continue
		}
		if f[9] != "0" {
			return f[9]
		}
	}
	return ""
}
