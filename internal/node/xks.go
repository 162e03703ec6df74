package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/custos-kms/custos/internal/pki"
	"github.com/custos-kms/custos/xks"
)

// XKSConfig turns on the AWS KMS External Key Store proxy API (docs/xks.md)
// on its own HTTPS listener.
type XKSConfig struct {
	// Listen is the HTTPS listen address, e.g. ":8443" or "127.0.0.1:0".
	// Required.
	Listen string
	// Listener, if set, is an open listener the XKS API is served on
	// instead of listening on Listen (which must still name its address);
	// Start takes it over as it does Config.Listener.
	Listener net.Listener
	// CertFile and KeyFile are the PEM server certificate (with chain) and
	// key. AWS KMS requires a certificate from a public CA for the DNS name
	// of the XksProxyUriEndpoint. They are reloaded when they change on
	// disk, as the gRPC server's are. Required.
	CertFile, KeyFile string
	// ClientCAFile, if set, turns on mutual TLS: clients must present a
	// certificate chained to a CA in this PEM file whose subject common
	// name is one of AllowedCNs (for AWS: the Amazon Trust Services roots
	// and cks.kms.<region>.amazonaws.com).
	ClientCAFile string
	AllowedCNs   []string
	// Prefixes are the logical key stores served, with their SigV4
	// credentials (secrets already read from their files). Required.
	Prefixes []xks.PrefixConfig
	// EKMID names this node in the health response; the node id if empty.
	EKMID string
	// Deadline bounds each XKS request (xks.Config.Deadline);
	// xks.DefaultDeadline if zero.
	Deadline time.Duration
}

// XKS listener limits.
const (
	xksReadTimeout  = 10 * time.Second
	xksWriteTimeout = 30 * time.Second // a decrypt may wait for a commit and notify-before-release
	xksIdleTimeout  = 2 * time.Minute
	xksStopTimeout  = 5 * time.Second
)

// xksCipherSuites are the TLS 1.2 suites the XKS listener accepts: ECDHE
// with AES-GCM only. (Go does not let TLS 1.3 suites be chosen; with
// AES-NI it prefers the AES-GCM ones.)
var xksCipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
}

func (c *XKSConfig) check() error {
	switch {
	case c.Listen == "":
		return errors.New("node: config: XKS.Listen is required")
	case c.CertFile == "" || c.KeyFile == "":
		return errors.New("node: config: XKS.CertFile and XKS.KeyFile are required")
	case c.ClientCAFile != "" && len(c.AllowedCNs) == 0:
		return errors.New("node: config: XKS.ClientCAFile is set but XKS.AllowedCNs is empty (for AWS: cks.kms.<region>.amazonaws.com)")
	case c.ClientCAFile == "" && len(c.AllowedCNs) > 0:
		return errors.New("node: config: XKS.AllowedCNs is set but XKS.ClientCAFile is empty")
	case len(c.Prefixes) == 0:
		return errors.New("node: config: XKS.Prefixes is empty")
	}
	return nil
}

// xksServer is the node's XKS listener.
type xksServer struct {
	handler *xks.Handler
	srv     *http.Server
	lis     net.Listener
	done    chan struct{}
}

// xksTLSConfig is the XKS listener's TLS configuration: TLS 1.2 with
// ECDHE AES-GCM suites or TLS 1.3, the certificate reloaded from disk, and
// mutual TLS when a client CA is configured.
func xksTLSConfig(c *XKSConfig) (*tls.Config, error) {
	src, err := pki.NewCertSource(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("certificate %s / key %s: %w", c.CertFile, c.KeyFile, err)
	}
	tc := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: xksCipherSuites,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return src.Current()
		},
	}
	if c.ClientCAFile == "" {
		return tc, nil
	}
	caPEM, err := os.ReadFile(c.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("client CA: %w", err)
	}
	return xks.MTLSConfig(tc, caPEM, c.AllowedCNs...)
}

// startXKS builds the handler and starts serving it with tc
// (xksTLSConfig); health is the node's
// readiness (a Raft leader known, the HSM answers, the ledger is sound).
func (n *Node) startXKS(c *XKSConfig, tc *tls.Config, health func(context.Context) error) (*xksServer, error) {
	hc := n.xksHandlerConfig(c)
	lg := hc.Logger
	h, err := xks.NewHandler(hc, n.svc, health)
	if err != nil {
		return nil, fmt.Errorf("node: XKS: %w", err)
	}
	wctx, cancel := context.WithTimeout(context.Background(), xksStopTimeout)
	if err := h.WarmUp(wctx); err != nil {
		lg.Warn("XKS health check failed at start; the health API reports UNAVAILABLE until one passes", "err", err)
	}
	cancel()
	lis := c.Listener
	if lis == nil {
		if lis, err = net.Listen("tcp", c.Listen); err != nil {
			_ = h.Close(context.Background())
			return nil, fmt.Errorf("node: XKS listen on %s (change xks.listen or stop what uses it): %w", c.Listen, err)
		}
	}
	s := &xksServer{handler: h, lis: lis, done: make(chan struct{})}
	s.srv = &http.Server{
		Handler:           h,
		TLSConfig:         tc,
		ReadHeaderTimeout: httpReadHeaderTimeout,
		ReadTimeout:       xksReadTimeout,
		WriteTimeout:      xksWriteTimeout,
		IdleTimeout:       xksIdleTimeout,
		MaxHeaderBytes:    httpMaxHeaderBytes,
		// TLS handshake failures (e.g. a client refused by mTLS) land here.
		ErrorLog: slog.NewLogLogger(lg.Handler(), slog.LevelInfo),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.ServeTLS(lis, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			lg.Error("XKS listener stopped", "addr", c.Listen, "err", err)
		}
	}()
	mtls := "off"
	if c.ClientCAFile != "" {
		mtls = strings.Join(c.AllowedCNs, ",")
	}
	lg.Info("XKS proxy API listening", "addr", lis.Addr().String(), "prefixes", len(c.Prefixes), "mtls", mtls)
	return s, nil
}

func (s *xksServer) close() error {
	if s == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), xksStopTimeout)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	<-s.done
	// Work that outlived its answer (a decrypt past its deadline) ends
	// before the service below it closes; then the health key goes.
	if herr := s.handler.Close(ctx); herr != nil && err == nil {
		err = herr
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return nil // in-flight requests were cut; AWS retries
	}
	return err
}

// XKSAddr returns the XKS listener's address, "" when XKS is off.
func (n *Node) XKSAddr() string {
	if n.xks == nil {
		return ""
	}
	return n.xks.lis.Addr().String()
}

// xksHandlerConfig is the handler configuration of c.
func (n *Node) xksHandlerConfig(c *XKSConfig) xks.Config {
	ekm := c.EKMID
	if ekm == "" {
		ekm = n.cfg.ID
	}
	return xks.Config{Prefixes: c.Prefixes, EKMID: ekm, Deadline: c.Deadline, Logger: n.log.With("component", "xks")}
}

// ReloadXKS makes c's key stores (prefixes, regions, reason mapping), SigV4
// credentials and EKM id those of the running XKS listener for the next
// requests, e.g. to add a new credential and later remove the old one
// during a rotation (docs/xks.md). The listener's address, TLS files
// (reloaded when they change on disk anyway), client CA and allowed CNs
// are fixed at start: a c that changes them is refused, as are turning XKS
// on or off, and an invalid c; the running configuration then stays.
func (n *Node) ReloadXKS(c *XKSConfig) error {
	switch {
	case n.xks == nil && c == nil:
		return nil
	case n.xks == nil:
		return errors.New("node: XKS is off in the running node; turning it on needs a restart")
	case c == nil:
		return errors.New("node: XKS is on in the running node; turning it off needs a restart")
	}
	run := n.cfg.XKS
	if c.Listen != run.Listen || c.CertFile != run.CertFile || c.KeyFile != run.KeyFile ||
		c.ClientCAFile != run.ClientCAFile || !slices.Equal(c.AllowedCNs, run.AllowedCNs) {
		return errors.New("node: XKS listen, cert, key, client_ca and allowed_cns are fixed at start; changing them needs a restart")
	}
	if err := n.xks.handler.Reload(n.xksHandlerConfig(c)); err != nil {
		return fmt.Errorf("node: XKS reload: %w", err)
	}
	return nil
}

// XKSHandler returns the XKS handler (nil when XKS is off).
func (n *Node) XKSHandler() *xks.Handler {
	if n.xks == nil {
		return nil
	}
	return n.xks.handler
}

// MetricsAddr returns the metrics listener's address, "" when off.
func (n *Node) MetricsAddr() string { return n.metrics.addr() }
