package raft_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-kms/custos/raft"
	hraft "github.com/hashicorp/raft"
)

// testCA is a throwaway ECDSA P-256 CA.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

var serial atomic.Int64

// issue makes a leaf certificate with a fresh key, usable as TLS server and
// client (as node certificates are).
func (ca *testCA) issue(t *testing.T, cn string) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(100 + serial.Add(1)),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// allowSet is a concurrency-safe set of allowed node ids.
type allowSet struct {
	mu  sync.RWMutex
	ids map[string]bool
}

func newAllowSet(ids ...string) *allowSet {
	a := &allowSet{ids: map[string]bool{}}
	for _, id := range ids {
		a.ids[id] = true
	}
	return a
}

func (a *allowSet) allowed(id string) bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.ids[id]
}

func (a *allowSet) set(id string, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ids[id] = ok
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// certSlot holds a node's current certificate; swapping it rotates.
type certSlot struct {
	p atomic.Pointer[tls.Certificate]
}

func newCertSlot(c *tls.Certificate) *certSlot {
	s := &certSlot{}
	s.p.Store(c)
	return s
}

func (s *certSlot) get() (*tls.Certificate, error) { return s.p.Load(), nil }

func tlsConfig(ca *testCA, cert *certSlot, allow func(string) bool) raft.TLSTransportConfig {
	return raft.TLSTransportConfig{
		BindAddr:         "127.0.0.1:0",
		CAPool:           ca.pool,
		Certificate:      cert.get,
		Allowed:          allow,
		Logger:           quietLogger(),
		Timeout:          5 * time.Second,
		HandshakeTimeout: 30 * time.Second,
	}
}

// streamLayer starts a bare TLSStreamLayer closed at the end of the test.
func streamLayer(t *testing.T, cfg raft.TLSTransportConfig) *raft.TLSStreamLayer {
	t.Helper()
	sl, err := raft.NewTLSStreamLayer(cfg)
	if err != nil {
		t.Fatalf("NewTLSStreamLayer: %v", err)
	}
	t.Cleanup(func() { _ = sl.Close() })
	return sl
}

type tlsNode struct {
	node  *raft.Node
	sm    *listSM
	trans *hraft.NetworkTransport
	cert  *certSlot
}

func startTLSNode(t *testing.T, id string, ca *testCA, allow *allowSet, bootstrap bool) *tlsNode {
	t.Helper()
	cert := newCertSlot(ca.issue(t, raft.NodeCommonName(id)))
	trans, err := raft.NewTLSTransport(tlsConfig(ca, cert, allow.allowed))
	if err != nil {
		t.Fatalf("NewTLSTransport(%s): %v", id, err)
	}
	t.Cleanup(func() { _ = trans.Close() }) // after the node's Close (LIFO)
	cfg := testConfig(id, t.TempDir())
	cfg.Transport = trans
	cfg.Bootstrap = bootstrap
	sm := &listSM{}
	return &tlsNode{node: openNode(t, cfg, sm), sm: sm, trans: trans, cert: cert}
}

// closedByServer reports whether a plain connection was closed by the
// server without it speaking raft: the read ends with an error or EOF.
func closedByServer(t *testing.T, c net.Conn) bool {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return true
}

func TestNodeCommonName(t *testing.T) {
	ca := newTestCA(t, "ca")
	if got := raft.NodeCommonName("n1"); got != "custos-node:n1" {
		t.Fatalf("NodeCommonName = %q", got)
	}
	for cn, want := range map[string]string{
		"custos-node:n1":            "n1",
		"custos-node:10.0.0.5:7000": "10.0.0.5:7000",
		"custos-node:":              "",
		"custos-node:a b":           "",
		"n1":                        "",
		"CUSTOS-NODE:n1":            "",
		"app-client":                "",
	} {
		id, ok := raft.NodeIDFromCert(ca.issue(t, cn).Leaf)
		if id != want || ok != (want != "") {
			t.Errorf("NodeIDFromCert(CN %q) = %q, %v; want %q", cn, id, ok, want)
		}
	}
	if _, ok := raft.NodeIDFromCert(nil); ok {
		t.Error("NodeIDFromCert(nil) ok")
	}
}

// A peer that connects and sends nothing is closed after HandshakeTimeout,
// and its handshake slot (here the only one) is freed for others.
func TestTLSHandshakeTimeout(t *testing.T) {
	ca := newTestCA(t, "cluster CA")
	cfg := tlsConfig(ca, newCertSlot(ca.issue(t, raft.NodeCommonName("a"))), newAllowSet("b").allowed)
	cfg.HandshakeTimeout = 500 * time.Millisecond
	cfg.MaxPendingHandshakes = 1
	a := streamLayer(t, cfg)
	go func() { // drain accepted connections
		for {
			c, err := a.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	silent, err := net.Dial("tcp", a.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if !closedByServer(t, silent) {
		t.Fatal("silent connection was not closed")
	}
	b := streamLayer(t, tlsConfig(ca, newCertSlot(ca.issue(t, raft.NodeCommonName("b"))), func(string) bool { return true }))
	eventually(t, "b to connect after the silent peer's slot is freed", func() bool {
		c, err := b.Dial(hraft.ServerAddress(a.Addr().String()), 5*time.Second)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	})
}

func TestTLSTransportConfigRequired(t *testing.T) {
	ca := newTestCA(t, "ca")
	cert := newCertSlot(ca.issue(t, raft.NodeCommonName("n1")))
	good := tlsConfig(ca, cert, newAllowSet().allowed)
	for name, mod := range map[string]func(*raft.TLSTransportConfig){
		"BindAddr":    func(c *raft.TLSTransportConfig) { c.BindAddr = "" },
		"CAPool":      func(c *raft.TLSTransportConfig) { c.CAPool = nil },
		"Certificate": func(c *raft.TLSTransportConfig) { c.Certificate = nil },
		"Allowed":     func(c *raft.TLSTransportConfig) { c.Allowed = nil },
		"Advertise":   func(c *raft.TLSTransportConfig) { c.BindAddr = "0.0.0.0:0" },
	} {
		cfg := good
		mod(&cfg)
		if tr, err := raft.NewTLSTransport(cfg); err == nil {
			_ = tr.Close()
			t.Errorf("missing %s: no error", name)
		}
	}
}

// Stream-layer checks without raft: both directions refuse a peer from
// another CA, a non-node certificate and a node id not allowed; an
// established connection stops when its peer is no longer allowed.
func TestTLSStreamLayerChecks(t *testing.T) {
	ca := newTestCA(t, "cluster CA")
	other := newTestCA(t, "other CA")
	allowA := newAllowSet("b")
	logA := &syncBuffer{}
	cfgA := tlsConfig(ca, newCertSlot(ca.issue(t, raft.NodeCommonName("a"))), allowA.allowed)
	cfgA.Logger = slog.New(slog.NewTextHandler(logA, nil))
	a := streamLayer(t, cfgA)
	addrA := hraft.ServerAddress(a.Addr().String())

	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := a.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()

	allowAll := func(string) bool { return true }
	dialer := func(ca *testCA, pool *x509.CertPool, cn string) *raft.TLSStreamLayer {
		cfg := tlsConfig(ca, newCertSlot(ca.issue(t, cn)), allowAll)
		cfg.CAPool = pool
		return streamLayer(t, cfg)
	}
	both := x509.NewCertPool()
	both.AddCert(ca.cert)
	both.AddCert(other.cert)

	// Inbound refusals: Dial fails because a does not acknowledge, and a
	// logs why.
	for _, tc := range []struct {
		name, reason string
		d            *raft.TLSStreamLayer
	}{
		{"other CA", "unknown authority", dialer(other, both, raft.NodeCommonName("b"))},
		{"not a node cert", `"app-client" is not a node certificate`, dialer(ca, ca.pool, "app-client")},
		{"id not allowed", `"intruder" is neither in the configuration nor admitted`, dialer(ca, ca.pool, raft.NodeCommonName("intruder"))},
	} {
		if c, err := tc.d.Dial(addrA, 5*time.Second); err == nil {
			_ = c.Close()
			t.Errorf("%s: Dial to a succeeded", tc.name)
		}
		// (slog's text handler escapes the quotes.)
		want := strings.ReplaceAll(tc.reason, `"`, `\"`)
		eventually(t, "a to log the refusal of "+tc.name, func() bool {
			return strings.Contains(logA.String(), want)
		})
	}

	// Outbound refusals: a dials listeners that present bad certificates
	// (and would accept a).
	for _, tc := range []struct {
		name, reason string
		l            *raft.TLSStreamLayer
	}{
		{"other CA", "unknown authority", dialer(other, both, raft.NodeCommonName("b"))},
		{"not a node cert", `"app-client" is not a node certificate`, dialer(ca, ca.pool, "app-client")},
		{"id not allowed", `"intruder" is neither in the configuration nor admitted`, dialer(ca, ca.pool, raft.NodeCommonName("intruder"))},
	} {
		c, err := a.Dial(hraft.ServerAddress(tc.l.Addr().String()), 5*time.Second)
		if err == nil {
			_ = c.Close()
			t.Errorf("%s: a's Dial succeeded", tc.name)
		} else if !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("%s: a's Dial: %v, want %q", tc.name, err, tc.reason)
		}
	}

	// TLS 1.2, even with an allowed certificate, is refused.
	bLeaf := ca.issue(t, raft.NodeCommonName("b"))
	if c, err := tls.Dial("tcp", string(addrA), &tls.Config{
		MaxVersion: tls.VersionTLS12, RootCAs: ca.pool, ServerName: "127.0.0.1",
		Certificates: []tls.Certificate{*bLeaf},
	}); err == nil {
		_ = c.Close()
		t.Fatal("TLS 1.2 handshake succeeded")
	}

	// b is allowed: the connection works both ways, and the accepted one
	// names b.
	b := dialer(ca, ca.pool, raft.NodeCommonName("b"))
	cb, err := b.Dial(addrA, 5*time.Second)
	if err != nil {
		t.Fatalf("b Dial a: %v", err)
	}
	defer cb.Close()
	var ca2 net.Conn
	select {
	case ca2 = <-accepted:
	case <-time.After(20 * time.Second):
		t.Fatal("a did not accept b")
	}
	defer ca2.Close()
	if id := raft.PeerNodeID(ca2); id != "b" {
		t.Fatalf("accepted peer id %q, want b", id)
	}
	if id := raft.PeerNodeID(cb); id != "a" {
		t.Fatalf("dialed peer id %q, want a", id)
	}
	cs := ca2.(interface{ ConnectionState() tls.ConnectionState }).ConnectionState()
	if cs.Version != tls.VersionTLS13 || cs.CurveID != tls.CurveP256 {
		t.Fatalf("negotiated version %#x, key exchange %v; want TLS 1.3 over P-256", cs.Version, cs.CurveID)
	}
	if _, err := cb.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(ca2, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q, %v", buf, err)
	}
	// Rotate b's certificate (same CN, new key) without restarting b: the
	// next connection presents the new one.
	peerLeaf := func() []byte {
		t.Helper()
		select {
		case c := <-accepted:
			t.Cleanup(func() { _ = c.Close() })
			return c.(interface{ ConnectionState() tls.ConnectionState }).ConnectionState().PeerCertificates[0].Raw
		case <-time.After(20 * time.Second):
			t.Fatal("a did not accept b")
			return nil
		}
	}
	bCert := newCertSlot(ca.issue(t, raft.NodeCommonName("b")))
	b2 := streamLayer(t, tlsConfig(ca, bCert, allowAll))
	for i, cert := range []*tls.Certificate{bCert.p.Load(), ca.issue(t, raft.NodeCommonName("b"))} {
		bCert.p.Store(cert)
		c, err := b2.Dial(addrA, 5*time.Second)
		if err != nil {
			t.Fatalf("b Dial a (certificate %d): %v", i, err)
		}
		defer c.Close()
		if !bytes.Equal(peerLeaf(), cert.Certificate[0]) {
			t.Fatalf("a saw the wrong certificate of b (certificate %d)", i)
		}
	}

	// Revoke b on a: the next read on a's side fails, the connection closes.
	allowA.set("b", false)
	_, _ = cb.Write([]byte("pong"))
	if _, err := io.ReadFull(ca2, buf); !errors.Is(err, raft.ErrPeerNotAllowed) {
		t.Fatalf("read from revoked peer: %v, want ErrPeerNotAllowed", err)
	}
	_ = cb.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := cb.Read(buf); err == nil {
		t.Fatal("b's connection still open after revocation")
	}
	if c, err := b.Dial(addrA, 5*time.Second); err == nil {
		_ = c.Close()
		t.Fatal("revoked b could dial a again")
	}
}

// A 3-node cluster over mutual TLS keeps committing through hostile
// connection attempts and a certificate rotation.
func TestTLSCluster(t *testing.T) {
	ca := newTestCA(t, "cluster CA")
	ids := []string{"n1", "n2", "n3"}
	allow := newAllowSet(ids...) // configuration + admission list, shared
	tn := make([]*tlsNode, 3)
	nodes := make([]*raft.Node, 3)
	sms := make([]*listSM, 3)
	for i, id := range ids {
		tn[i] = startTLSNode(t, id, ca, allow, i == 0)
		nodes[i], sms[i] = tn[i].node, tn[i].sm
	}
	waitLeaderSelf(t, nodes[0])
	ctx := ctxT(t, 60*time.Second)
	for _, n := range nodes[1:] {
		eventually(t, "AddVoter("+n.ID()+")", func() bool {
			l := leaderOf(nodes)
			return l != nil && l.AddVoter(ctx, n.ID(), n.Addr()) == nil
		})
	}
	var applied []string
	apply := func(prefix string, count int) {
		t.Helper()
		for i := range count {
			p := fmt.Sprintf("%s-%d", prefix, i)
			if r := clusterApply(t, nodes, p, int64(i)); r.Principal != p {
				t.Fatalf("Apply(%s) got result for %s", p, r.Principal)
			}
			applied = append(applied, p)
		}
		converged(t, nodes, sms, applied)
	}
	apply("a", 20)

	raftAddr := hraft.ServerAddress(nodes[0].Addr())

	t.Run("ForeignCA", func(t *testing.T) {
		other := newTestCA(t, "other CA")
		pool := x509.NewCertPool()
		pool.AddCert(ca.cert) // the intruder trusts the cluster's servers
		pool.AddCert(other.cert)
		cfg := tlsConfig(other, newCertSlot(other.issue(t, raft.NodeCommonName("n4"))), func(string) bool { return true })
		cfg.CAPool = pool
		intruder := streamLayer(t, cfg)
		for _, n := range nodes {
			if c, err := intruder.Dial(hraft.ServerAddress(n.Addr()), 5*time.Second); err == nil {
				_ = c.Close()
				t.Fatalf("peer with a foreign-CA certificate connected to %s", n.ID())
			}
		}
		// Even one that claims a member's id.
		cfg.Certificate = newCertSlot(other.issue(t, raft.NodeCommonName("n2"))).get
		if c, err := streamLayer(t, cfg).Dial(raftAddr, 5*time.Second); err == nil {
			_ = c.Close()
			t.Fatal("foreign-CA certificate claiming n2 connected")
		}
		apply("foreign", 5)
	})

	t.Run("NotAllowed", func(t *testing.T) {
		cfg := tlsConfig(ca, newCertSlot(ca.issue(t, raft.NodeCommonName("n4"))), func(string) bool { return true })
		n4 := streamLayer(t, cfg)
		if c, err := n4.Dial(raftAddr, 5*time.Second); err == nil {
			_ = c.Close()
			t.Fatal("valid-CA node n4, not admitted, connected")
		}
		apply("notallowed", 5)
	})

	t.Run("PlainTCP", func(t *testing.T) {
		// A silent connection (its handshake would only time out after
		// 30s) must not block other peers' handshakes.
		silent, err := net.Dial("tcp", string(raftAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer silent.Close()
		garbage, err := net.Dial("tcp", string(raftAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer garbage.Close()
		// What an hraft TCP transport would send: an rpc type byte and msgpack.
		if _, err := garbage.Write([]byte{0x00, 0x82, 0xa2, 'I', 'D', 0xa2, 'n', '9'}); err != nil {
			t.Fatal(err)
		}
		if !closedByServer(t, garbage) {
			t.Fatal("plain TCP connection sending raft bytes was not closed")
		}
		// While the silent one is pending, a member still connects.
		probe := streamLayer(t, tlsConfig(ca, newCertSlot(ca.issue(t, raft.NodeCommonName("n2"))), allow.allowed))
		c, err := probe.Dial(raftAddr, 5*time.Second)
		if err != nil {
			t.Fatalf("member Dial while a silent peer is pending: %v", err)
		}
		_ = c.Close()
		apply("plain", 5)
	})

	t.Run("Rotation", func(t *testing.T) {
		old := tn[1].cert.p.Load()
		fresh := ca.issue(t, raft.NodeCommonName("n2"))
		tn[1].cert.p.Store(fresh)
		// New connections to n2 see the new certificate.
		probe := streamLayer(t, tlsConfig(ca, newCertSlot(ca.issue(t, raft.NodeCommonName("n1"))), allow.allowed))
		c, err := probe.Dial(hraft.ServerAddress(nodes[1].Addr()), 5*time.Second)
		if err != nil {
			t.Fatalf("Dial n2 after rotation: %v", err)
		}
		_ = c.Close()
		seen := dialLeaf(t, ca, nodes[1].Addr())
		if !bytes.Equal(seen, fresh.Certificate[0]) || bytes.Equal(seen, old.Certificate[0]) {
			t.Fatal("n2 still presents its old certificate")
		}
		apply("rotated", 10)
	})
}

// dialLeaf handshakes with a node as member n1 and returns the DER of the
// certificate it presents.
func dialLeaf(t *testing.T, ca *testCA, addr string) []byte {
	t.Helper()
	me := ca.issue(t, raft.NodeCommonName("n1"))
	conn, err := tls.Dial("tcp", addr, &tls.Config{
		MinVersion:   tls.VersionTLS13,
		RootCAs:      ca.pool,
		Certificates: []tls.Certificate{*me},
		ServerName:   "127.0.0.1",
	})
	if err != nil {
		t.Fatalf("tls.Dial %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Raw
}
