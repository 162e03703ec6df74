package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/custos-kms/custos/api"
	"github.com/custos-kms/custos/internal/console"
	"github.com/custos-kms/custos/internal/pki"
	"github.com/custos-kms/custos/internal/version"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// ConsoleConfig turns on the officer console (docs/console.md) on its own
// HTTPS listener.
type ConsoleConfig struct {
	// Listen is the HTTPS listen address, e.g. "127.0.0.1:8444". Required.
	Listen string
	// Listener, if set, is an open listener served instead of listening on
	// Listen; Start takes it over.
	Listener net.Listener
	// CertFile and KeyFile are the console's PEM certificate and key (a
	// certificate browsers trust for RPID); the node's TLS certificate if
	// empty. Reloaded when they change on disk.
	CertFile, KeyFile string
	// RPID is the WebAuthn relying party id: the host name officers use
	// to reach the console. Required.
	RPID string
	// Origins the console is reached at ("https://host:port"); when empty,
	// https://RPID:<the listener's port>.
	Origins []string
	// RequireUserVerification: sign-in and new credentials need the user
	// verified (PIN, biometric), not only present.
	RequireUserVerification bool
}

func (c *ConsoleConfig) check() error {
	switch {
	case c.Listen == "":
		return errors.New("node: config: console.listen is required")
	case c.RPID == "":
		return errors.New("node: config: console.rp_id is required (the host name officers open the console at)")
	case (c.CertFile == "") != (c.KeyFile == ""):
		return errors.New("node: config: console.cert and console.key go together")
	}
	return nil
}

type consoleServer struct {
	srv  *http.Server
	lis  net.Listener
	done chan struct{}
}

// startConsole serves the officer console; cd are the cluster status's
// dependencies.
func (n *Node) startConsole(c *ConsoleConfig, defCert, defKey string, cd api.ClusterDeps) (*consoleServer, error) {
	certFile, keyFile := c.CertFile, c.KeyFile
	if certFile == "" {
		certFile, keyFile = defCert, defKey
	}
	src, err := pki.NewCertSource(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("node: console certificate %s / key %s: %w", certFile, keyFile, err)
	}
	lis := c.Listener
	if lis == nil {
		if lis, err = net.Listen("tcp", c.Listen); err != nil {
			return nil, fmt.Errorf("node: console listen on %s (change console.listen or stop what uses it): %w", c.Listen, err)
		}
	}
	lg := n.log.With("component", "console")
	origins := c.Origins
	if len(origins) == 0 {
		origins = []string{consoleOrigin(c, lis)}
	}
	cs, err := console.New(console.Config{RPID: c.RPID, Origins: origins, RequireUserVerification: c.RequireUserVerification,
		Node: n.cfg.ID, Version: version.Version()}, console.Deps{Service: n.svc,
		Status: func(ctx context.Context) *custosv1.ClusterStatus { return api.ClusterStatus(ctx, cd) }, Log: lg})
	if err != nil {
		_ = lis.Close()
		return nil, fmt.Errorf("node: %w", err)
	}
	s := &consoleServer{lis: lis, done: make(chan struct{})}
	s.srv = &http.Server{
		Handler:           cs.Handler(),
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return src.Current() }},
		ReadHeaderTimeout: httpReadHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    httpMaxHeaderBytes,
		ErrorLog:          nil,
	}
	go func() {
		defer close(s.done)
		if err := s.srv.ServeTLS(lis, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			lg.Error("console listener stopped", "addr", c.Listen, "err", err)
		}
	}()
	lg.Info("officer console serving", "url", origins[0]+"/", "addr", lis.Addr().String(), "rp_id", c.RPID)
	return s, nil
}

func (s *consoleServer) close() error {
	if s == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx) // event streams end with their requests' contexts
	if err != nil {
		_ = s.srv.Close()
	}
	<-s.done
	return nil
}

// consoleOrigin is the console's first origin: the configured one, or
// https://RPID:<port>.
func consoleOrigin(c *ConsoleConfig, lis net.Listener) string {
	if len(c.Origins) > 0 {
		return c.Origins[0]
	}
	return "https://" + net.JoinHostPort(c.RPID, strconv.Itoa(lis.Addr().(*net.TCPAddr).Port))
}

// ConsoleURL returns the console's URL ("" without a console).
func (n *Node) ConsoleURL() string {
	if n.console == nil {
		return ""
	}
	return n.consoleURL
}
