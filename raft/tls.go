package raft

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	hraft "github.com/hashicorp/raft"
)

// NodeCNPrefix starts the subject common name of every node certificate:
// a node whose Raft id is "n1" presents a certificate with CN
// "custos-node:n1". See docs/cluster-transport.md.
const NodeCNPrefix = "custos-node:"

// Defaults of TLSTransportConfig.
const (
	DefaultTLSMaxPool              = 3
	DefaultTLSTimeout              = 10 * time.Second
	DefaultTLSHandshakeTimeout     = 10 * time.Second
	DefaultTLSMaxPendingHandshakes = 64
)

// tlsStreamVersion is the byte the accepting side writes after a handshake
// it accepted. The dialing side waits for it, so Dial fails when the peer
// refuses our certificate (in TLS 1.3 the client finishes its handshake
// before the server has checked the client certificate).
const tlsStreamVersion byte = 0x01

// curves restricts key exchange to ECDHE over P-256, a CRYPTREC-listed
// algorithm (Go's default would negotiate X25519 or X25519MLKEM768). Go does
// not let TLS 1.3 cipher suites be configured; between two Go nodes on
// hardware with AES support it picks AES-GCM.
var curves = []tls.CurveID{tls.CurveP256}

// ErrPeerNotAllowed reports a peer whose certificate is valid but whose node
// id is not (or no longer) allowed by TLSTransportConfig.Allowed.
var ErrPeerNotAllowed = errors.New("raft: peer node not allowed")

// NodeCommonName returns the subject common name of the certificate of the
// node with Raft id id.
func NodeCommonName(id string) string { return NodeCNPrefix + id }

// NodeIDFromCert returns the Raft id named by a node certificate's subject
// common name ("custos-node:<id>"). ok is false when the certificate is not
// a node certificate: another CN, or an empty or malformed id (ids are 1-128
// printable ASCII characters without spaces).
func NodeIDFromCert(c *x509.Certificate) (id string, ok bool) {
	if c == nil {
		return "", false
	}
	id, ok = strings.CutPrefix(c.Subject.CommonName, NodeCNPrefix)
	if !ok || !validNodeID(id) {
		return "", false
	}
	return id, true
}

func validNodeID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return false
		}
	}
	return true
}

// TLSTransportConfig configures NewTLSTransport and NewTLSStreamLayer.
type TLSTransportConfig struct {
	// BindAddr is the TCP address to listen on, e.g. "10.0.0.5:7000".
	// Required unless Listener is set.
	BindAddr string
	// Listener, if set, is an open TCP listener the transport serves on
	// instead of listening on BindAddr; the transport closes it. A caller
	// that must know the address before the node starts (a test harness
	// writing every node's peers) listens on port 0 itself and passes the
	// listener in, so no other process can take the port in between
	// (docs/architecture.md, "Listeners").
	Listener net.Listener
	// Advertise is the address other nodes dial, if it differs from the
	// bound one (required when BindAddr binds an unspecified IP).
	Advertise string
	// CAPool holds the cluster CA certificate(s). Peers in both directions
	// must present a certificate chaining to it. Required.
	CAPool *x509.CertPool
	// CAPools, if set, returns the current cluster CA bundle and replaces
	// CAPool at every handshake, so a CA can be rotated without a restart
	// (pki.PoolSource.Current). It must be fast and safe for concurrent use.
	CAPools func() *x509.CertPool
	// Certificate returns this node's certificate and key (CN
	// NodeCommonName(id), extended key usages serverAuth and clientAuth).
	// It is called on every handshake, so a rotated certificate takes effect
	// for new connections without a restart; the caller caches it. Required.
	Certificate func() (*tls.Certificate, error)
	// Allowed reports whether the node with this Raft id may talk to us.
	// Wire it to the Raft configuration plus the admission list of nodes
	// being added. It is checked at every handshake and again before every
	// read and write on an established connection, so it must be fast and
	// safe for concurrent use. Required.
	Allowed func(id string) bool
	// Logger receives refused connections (WARN) and transport logs.
	// Default slog.Default().
	Logger *slog.Logger
	// MaxPool is how many outbound connections per peer the transport
	// pools. Default 3. Not used by NewTLSStreamLayer.
	MaxPool int
	// Timeout is hraft's I/O deadline for RPCs. Default 10s. Not used by
	// NewTLSStreamLayer.
	Timeout time.Duration
	// HandshakeTimeout bounds an inbound TLS handshake (and the accept
	// acknowledgement). Default 10s.
	HandshakeTimeout time.Duration
	// MaxPendingHandshakes bounds concurrent inbound handshakes; further
	// connections are closed at once until one finishes. Default 64.
	MaxPendingHandshakes int
}

// NewTLSTransport returns a Raft network transport whose connections are
// mutual TLS 1.3 between nodes holding certificates of the cluster CA whose
// node ids Allowed accepts. Pass it as Config.Transport; the caller closes
// it after the Node.
func NewTLSTransport(cfg TLSTransportConfig) (*hraft.NetworkTransport, error) {
	sl, err := NewTLSStreamLayer(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.MaxPool <= 0 {
		cfg.MaxPool = DefaultTLSMaxPool
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTLSTimeout
	}
	return hraft.NewNetworkTransportWithConfig(&hraft.NetworkTransportConfig{
		Stream:  sl,
		MaxPool: cfg.MaxPool,
		// No pipelined replication (nopipeline.go); Open refuses it
		// anyway, this keeps the transport safe on its own.
		MaxRPCsInFlight: maxRPCsInFlight,
		Timeout:         cfg.Timeout,
		Logger:          newHCLogAdapter(sl.log, "raft").Named("transport"),
	}), nil
}

// TLSStreamLayer is a hashicorp/raft StreamLayer over mutual TLS 1.3.
//
// Inbound connections are accepted by a goroutine of its own and each is
// handshaken in its own goroutine under HandshakeTimeout; Accept returns only
// connections whose peer passed every check, so a peer that connects and
// sends nothing never delays other peers. Outbound connections are dialed
// with the node's certificate and wait for the peer's acknowledgement, so
// Dial fails when the peer refuses us.
type TLSStreamLayer struct {
	ln        net.Listener // tls.NewListener over TCP
	addr      net.Addr
	pools     func() *x509.CertPool
	cert      func() (*tls.Certificate, error)
	allowed   func(string) bool
	log       *slog.Logger
	hsTimeout time.Duration
	serverCfg *tls.Config
	clientCfg *tls.Config

	cfgMu sync.Mutex
	hsCfg *tls.Config // serverCfg with the current CA bundle

	pending chan struct{} // semaphore of inbound handshakes
	conns   chan net.Conn // accepted, verified connections
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	once    sync.Once
}

var _ hraft.StreamLayer = (*TLSStreamLayer)(nil)

// NewTLSStreamLayer listens on cfg.BindAddr (or serves on cfg.Listener).
// MaxPool and Timeout are ignored. Most callers want NewTLSTransport.
func NewTLSStreamLayer(cfg TLSTransportConfig) (*TLSStreamLayer, error) {
	fail := func(err error) (*TLSStreamLayer, error) {
		if cfg.Listener != nil {
			_ = cfg.Listener.Close()
		}
		return nil, err
	}
	switch {
	case cfg.BindAddr == "" && cfg.Listener == nil:
		return fail(errors.New("raft: TLSTransportConfig.BindAddr is required"))
	case cfg.CAPool == nil && cfg.CAPools == nil:
		return fail(errors.New("raft: TLSTransportConfig.CAPool is required"))
	case cfg.Certificate == nil:
		return fail(errors.New("raft: TLSTransportConfig.Certificate is required"))
	case cfg.Allowed == nil:
		return fail(errors.New("raft: TLSTransportConfig.Allowed is required"))
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultTLSHandshakeTimeout
	}
	if cfg.MaxPendingHandshakes <= 0 {
		cfg.MaxPendingHandshakes = DefaultTLSMaxPendingHandshakes
	}
	var adv net.Addr
	if cfg.Advertise != "" {
		a, err := net.ResolveTCPAddr("tcp", cfg.Advertise)
		if err != nil {
			return fail(fmt.Errorf("raft: advertise address %q: %w", cfg.Advertise, err))
		}
		adv = a
	}
	pools := cfg.CAPools
	if pools == nil {
		pool := cfg.CAPool
		pools = func() *x509.CertPool { return pool }
	}
	s := &TLSStreamLayer{
		pools:     pools,
		cert:      cfg.Certificate,
		allowed:   cfg.Allowed,
		log:       cfg.Logger,
		hsTimeout: cfg.HandshakeTimeout,
		pending:   make(chan struct{}, cfg.MaxPendingHandshakes),
		conns:     make(chan net.Conn),
	}
	s.serverCfg = &tls.Config{
		MinVersion:       tls.VersionTLS13,
		CurvePreferences: curves,
		ClientAuth:       tls.RequireAndVerifyClientCert,
		ClientCAs:        pools(),
		GetCertificate:   func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.ownCert() },
		// Every connection runs the full check against the current CA pool
		// and Allowed set; no resumption of an older decision.
		SessionTicketsDisabled: true,
		VerifyConnection:       func(cs tls.ConnectionState) error { return s.verifyPeer(cs, false) },
	}
	s.clientCfg = &tls.Config{
		MinVersion:       tls.VersionTLS13,
		CurvePreferences: curves,
		// A node's identity is its certificate's CN, not the address it is
		// reached at, so the hostname check is replaced: VerifyConnection
		// verifies the chain against CAPool (serverAuth) and the node id.
		InsecureSkipVerify:   true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return s.ownCert() },
		VerifyConnection:     func(cs tls.ConnectionState) error { return s.verifyPeer(cs, true) },
	}

	// Each inbound handshake verifies the client against the current bundle.
	s.serverCfg.GetConfigForClient = s.serverConfig

	tcp := cfg.Listener
	if tcp == nil {
		var err error
		if tcp, err = net.Listen("tcp", cfg.BindAddr); err != nil {
			return nil, fmt.Errorf("raft: listen on %s: %w", cfg.BindAddr, err)
		}
	}
	if adv == nil {
		adv = tcp.Addr()
	}
	if ta, ok := adv.(*net.TCPAddr); !ok || ta.IP == nil || ta.IP.IsUnspecified() {
		_ = tcp.Close()
		return nil, fmt.Errorf("raft: %s is not an address other nodes can dial; set Advertise", adv)
	}
	s.addr = adv
	s.ln = tls.NewListener(tcp, s.serverCfg)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

// serverConfig is the server configuration of one inbound handshake: the
// static one with ClientCAs set to the current CA bundle (a copy is made
// only when the bundle changed).
func (s *TLSStreamLayer) serverConfig(*tls.ClientHelloInfo) (*tls.Config, error) {
	pool := s.pools()
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	if s.hsCfg == nil || s.hsCfg.ClientCAs != pool {
		cfg := s.serverCfg.Clone()
		cfg.GetConfigForClient = nil
		cfg.ClientCAs = pool
		s.hsCfg = cfg
	}
	return s.hsCfg, nil
}

func (s *TLSStreamLayer) ownCert() (*tls.Certificate, error) {
	c, err := s.cert()
	if err != nil {
		return nil, fmt.Errorf("raft: node certificate: %w", err)
	}
	if c == nil {
		return nil, errors.New("raft: node certificate: callback returned nil")
	}
	return c, nil
}

// verifyPeer checks the peer's certificate: issued by the cluster CA (the
// TLS server already verified client certificates against ClientCAs), a
// node certificate, and a node Allowed names.
func (s *TLSStreamLayer) verifyPeer(cs tls.ConnectionState, dialing bool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("peer presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	if dialing {
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{
			Roots:         s.pools(),
			Intermediates: inter,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}); err != nil {
			return fmt.Errorf("peer certificate %q not valid under the cluster CA: %w", leaf.Subject.CommonName, err)
		}
	}
	id, ok := NodeIDFromCert(leaf)
	if !ok {
		return fmt.Errorf("peer certificate CN %q is not a node certificate (want %q)", leaf.Subject.CommonName, NodeCommonName("<raft-id>"))
	}
	if !s.allowed(id) {
		return fmt.Errorf("%w: %q is neither in the configuration nor admitted", ErrPeerNotAllowed, id)
	}
	return nil
}

func (s *TLSStreamLayer) acceptLoop() {
	defer s.wg.Done()
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// e.g. EMFILE: back off, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("raft transport: accept failed", "error", err, "retry_in", delay)
			select {
			case <-time.After(delay):
				continue
			case <-s.ctx.Done():
				return
			}
		}
		delay = 0
		select {
		case s.pending <- struct{}{}:
		default:
			s.log.Warn("raft transport: refused inbound connection", "remote", c.RemoteAddr().String(),
				"reason", "too many handshakes in progress")
			_ = c.Close()
			continue
		}
		s.wg.Add(1)
		go s.handshake(c.(*tls.Conn))
	}
}

// handshake runs one inbound handshake under the handshake timeout and hands
// the connection to Accept when the peer passed every check.
func (s *TLSStreamLayer) handshake(c *tls.Conn) {
	defer s.wg.Done()
	defer func() { <-s.pending }()
	remote := c.RemoteAddr().String()
	ctx, cancel := context.WithTimeout(s.ctx, s.hsTimeout)
	defer cancel()
	err := c.HandshakeContext(ctx)
	if err == nil {
		// Acknowledge, so the dialer learns we accepted it.
		_ = c.SetWriteDeadline(time.Now().Add(s.hsTimeout))
		if _, err = c.Write([]byte{tlsStreamVersion}); err == nil {
			err = c.SetWriteDeadline(time.Time{})
		}
	}
	if err != nil {
		if s.ctx.Err() == nil {
			s.log.Warn("raft transport: refused inbound connection", "remote", remote, "reason", err.Error())
		}
		_ = c.Close()
		return
	}
	id, _ := NodeIDFromCert(c.ConnectionState().PeerCertificates[0])
	pc := s.wrap(c, id, remote)
	select {
	case s.conns <- pc:
	case <-s.ctx.Done():
		_ = c.Close()
	}
}

// Accept returns the next inbound connection whose peer passed the checks
// (net.Listener).
func (s *TLSStreamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.ctx.Done():
		return nil, net.ErrClosed
	}
}

// Close stops listening, aborts handshakes in progress and waits for them
// (net.Listener). Established connections are left to their owners.
func (s *TLSStreamLayer) Close() error {
	var err error
	s.once.Do(func() {
		s.cancel()
		err = s.ln.Close()
		s.wg.Wait()
	})
	return err
}

// Addr returns the advertised address (net.Listener).
func (s *TLSStreamLayer) Addr() net.Addr { return s.addr }

// Dial connects to a node, verifies it and waits for it to accept us
// (hraft.StreamLayer).
func (s *TLSStreamLayer) Dial(address hraft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 {
		timeout = s.hsTimeout
	}
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	d := tls.Dialer{Config: s.clientCfg}
	nc, err := d.DialContext(ctx, "tcp", string(address))
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Op == "dial" {
			// Peer down or unreachable: raft retries and logs it itself.
			s.log.Debug("raft transport: dial failed", "remote", string(address), "error", err)
		} else {
			s.log.Warn("raft transport: dial refused", "remote", string(address), "reason", err.Error())
		}
		return nil, fmt.Errorf("raft: dial %s: %w", address, err)
	}
	c := nc.(*tls.Conn)
	deadline, _ := ctx.Deadline()
	_ = c.SetReadDeadline(deadline)
	var ack [1]byte
	if _, err = io.ReadFull(c, ack[:]); err == nil && ack[0] != tlsStreamVersion {
		err = fmt.Errorf("unexpected stream version %#x", ack[0])
	}
	if err == nil {
		err = c.SetReadDeadline(time.Time{})
	}
	if err != nil {
		_ = c.Close()
		s.log.Warn("raft transport: peer refused connection", "remote", string(address), "reason", err.Error())
		return nil, fmt.Errorf("raft: dial %s: peer did not accept us: %w", address, err)
	}
	id, _ := NodeIDFromCert(c.ConnectionState().PeerCertificates[0])
	return s.wrap(c, id, string(address)), nil
}

func (s *TLSStreamLayer) wrap(c *tls.Conn, id, remote string) *peerConn {
	return &peerConn{Conn: c, id: id, remote: remote, s: s}
}

// peerConn is an authenticated connection to node id. Every read and write
// re-checks Allowed, so a node removed from the configuration (or from the
// admission list) stops talking on connections opened before its removal.
type peerConn struct {
	net.Conn
	id, remote string
	s          *TLSStreamLayer
	dropOnce   sync.Once
}

func (c *peerConn) check() error {
	if c.s.allowed(c.id) {
		return nil
	}
	c.dropOnce.Do(func() {
		c.s.log.Warn("raft transport: closing connection of node no longer allowed", "node", c.id, "remote", c.remote)
		_ = c.Conn.Close()
	})
	return fmt.Errorf("%w: %q", ErrPeerNotAllowed, c.id)
}

func (c *peerConn) Read(p []byte) (int, error) {
	if err := c.check(); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	// The read may have blocked across a change of the allowed set: what
	// arrived after it is not handed on.
	if cerr := c.check(); cerr != nil {
		return 0, cerr
	}
	return n, err
}

func (c *peerConn) Write(p []byte) (int, error) {
	if err := c.check(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// ConnectionState returns the TLS state of the connection (peer
// certificates, version).
func (c *peerConn) ConnectionState() tls.ConnectionState {
	return c.Conn.(*tls.Conn).ConnectionState()
}

// PeerNodeID returns the Raft id named by the peer's certificate, for a
// connection returned by a TLSStreamLayer ("" otherwise).
func PeerNodeID(c net.Conn) string {
	if pc, ok := c.(*peerConn); ok {
		return pc.id
	}
	return ""
}
