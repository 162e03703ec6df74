package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"sync"
	"time"
)

// ServerTLSConfig returns the TLS configuration of a custos server: TLS 1.3
// only, the certificate and key from certFile and keyFile, and client
// certificates verified against the CA bundle in caFile when presented.
//
// ClientAuth is tls.VerifyClientCertIfGiven: a client without a certificate
// completes the handshake, so that the gRPC layer can answer it with
// Unauthenticated (and serve health checks), while a certificate that does
// not chain to caFile fails the handshake.
//
// The server certificate is reloaded when certFile or keyFile change on
// disk, and the CA bundle when caFile changes (each checked at most once a
// second, at handshakes), so certificates and CAs can be rotated without a
// restart; if a new file does not load, the old one stays in use.
func ServerTLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	pools, err := NewPoolSource(caFile)
	if err != nil {
		return nil, err
	}
	r := &reloader{certFile: certFile, keyFile: keyFile}
	if err := r.load(); err != nil {
		return nil, err
	}
	s := &serverConfigs{pools: pools, base: &tls.Config{
		MinVersion:     tls.VersionTLS13,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		GetCertificate: r.getCertificate,
	}}
	cfg := s.base.Clone()
	cfg.ClientCAs = pools.Current()
	cfg.GetConfigForClient = s.forClient
	return cfg, nil
}

// serverConfigs derives the configuration of each handshake from the
// current CA bundle, so clients of a CA added to caFile are accepted (and
// those of a removed one refused) without a restart.
type serverConfigs struct {
	pools *PoolSource
	base  *tls.Config

	mu   sync.Mutex
	pool *x509.CertPool
	cfg  *tls.Config
}

func (s *serverConfigs) forClient(*tls.ClientHelloInfo) (*tls.Config, error) {
	pool := s.pools.Current()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg == nil || s.pool != pool {
		cfg := s.base.Clone()
		cfg.ClientCAs = pool
		s.cfg, s.pool = cfg, pool
	}
	return s.cfg, nil
}

// ClientTLSConfig returns the TLS configuration of a custos client: TLS 1.3
// only, the server verified against caFile, and the client certificate from
// certFile and keyFile. With certFile and keyFile both empty no client
// certificate is sent (only the health service answers such a client).
func ClientTLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	pool, err := loadPool(caFile)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool}
	if certFile == "" && keyFile == "" {
		return cfg, nil
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("pki: client certificate %s / key %s: %w", certFile, keyFile, err)
	}
	cfg.Certificates = []tls.Certificate{cert}
	return cfg, nil
}

func loadPool(caFile string) (*x509.CertPool, error) {
	if caFile == "" {
		return nil, fmt.Errorf("pki: no CA file given")
	}
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("pki: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("pki: CA file %s: %w in PEM", caFile, errNoCerts)
	}
	return pool, nil
}

// reloader serves a certificate pair and reloads it when its files change.
type reloader struct {
	certFile, keyFile string

	mu        sync.Mutex
	cert      *tls.Certificate
	stamp     []byte // modification times and sizes of both files
	lastCheck time.Time
}

func fileStamp(paths ...string) ([]byte, error) {
	var b bytes.Buffer
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "%s|%d|%d;", p, fi.ModTime().UnixNano(), fi.Size())
	}
	return b.Bytes(), nil
}

// load reads the pair; callers hold mu or own r exclusively.
func (r *reloader) load() error {
	stamp, err := fileStamp(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("pki: server certificate: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("pki: server certificate %s / key %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert, r.stamp = &cert, stamp
	return nil
}

func (r *reloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.lastCheck) >= time.Second {
		r.lastCheck = now
		if stamp, err := fileStamp(r.certFile, r.keyFile); err == nil && !bytes.Equal(stamp, r.stamp) {
			old := r.cert
			if err := r.load(); err != nil {
				r.cert = old // keep serving the previous pair
			}
		}
	}
	return r.cert, nil
}

// LoadPool reads a PEM CA bundle into a certificate pool.
func LoadPool(caFile string) (*x509.CertPool, error) { return loadPool(caFile) }

// CertSource serves a certificate pair from files and reloads it when the
// files change (checked at most once a second), for callbacks such as the
// Raft transport's Certificate.
type CertSource struct{ r *reloader }

// NewCertSource loads the pair once and returns a source for it.
func NewCertSource(certFile, keyFile string) (*CertSource, error) {
	r := &reloader{certFile: certFile, keyFile: keyFile}
	if err := r.load(); err != nil {
		return nil, err
	}
	return &CertSource{r: r}, nil
}

// Current returns the current pair.
func (c *CertSource) Current() (*tls.Certificate, error) { return c.r.getCertificate(nil) }

// PoolSource serves a CA bundle from a PEM file and reloads it when the
// file changes (checked at most once a second), so a CA can be added to or
// removed from the bundle without a restart. If the changed file does not
// parse, the previous bundle stays in use.
type PoolSource struct {
	file string

	mu        sync.Mutex
	pool      *x509.CertPool
	stamp     []byte
	lastCheck time.Time
}

// NewPoolSource loads caFile once and returns a source for it.
func NewPoolSource(caFile string) (*PoolSource, error) {
	p := &PoolSource{file: caFile}
	if caFile == "" {
		return nil, fmt.Errorf("pki: no CA file given")
	}
	stamp, err := fileStamp(caFile)
	if err != nil {
		return nil, fmt.Errorf("pki: CA file: %w", err)
	}
	if p.pool, err = loadPool(caFile); err != nil {
		return nil, err
	}
	p.stamp = stamp
	return p, nil
}

// Current returns the current bundle. The pool returned is never modified;
// a reload makes a new one, so callers may compare pools by identity.
func (p *PoolSource) Current() *x509.CertPool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if now := time.Now(); now.Sub(p.lastCheck) >= time.Second {
		p.lastCheck = now
		if stamp, err := fileStamp(p.file); err == nil && !bytes.Equal(stamp, p.stamp) {
			if pool, err := loadPool(p.file); err == nil {
				p.pool, p.stamp = pool, stamp
			}
		}
	}
	return p.pool
}

// LoadCACerts returns the DER of every CA certificate (basic constraints
// CA) in a PEM bundle: what a new cluster pins as its client authorities
// (docs/identities.md).
func LoadCACerts(file string) ([][]byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("pki: CA file: %w", err)
	}
	var out [][]byte
	for _, der := range CertificatesPEM(b) {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("pki: CA file %s: %w", file, err)
		}
		if c.BasicConstraintsValid && c.IsCA {
			out = append(out, der)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("pki: CA file %s: no CA certificate in PEM", file)
	}
	return out, nil
}

// CertificatesPEM returns the DER of every CERTIFICATE block in b.
func CertificatesPEM(b []byte) [][]byte {
	var out [][]byte
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out
		}
		if blk.Type == "CERTIFICATE" {
			out = append(out, blk.Bytes)
		}
	}
}
