package custos

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// Environment variables read by ConfigFromEnv. custosd dev writes them to
// client.env.
const (
	// EnvAddr holds host:port of a custos node, or a comma-separated list of
	// them tried in order.
	EnvAddr = "CUSTOS_ADDR"
	// EnvCA is the path of the PEM CA bundle that signed the server
	// certificates.
	EnvCA = "CUSTOS_CA"
	// EnvCert is the path of the client's PEM certificate.
	EnvCert = "CUSTOS_CERT"
	// EnvKey is the path of the client's PEM private key.
	EnvKey = "CUSTOS_KEY"
	// EnvGenesis, optional, is the genesis fingerprint of the cluster the
	// client must be talking to (Config.Genesis).
	EnvGenesis = "CUSTOS_GENESIS"
)

// Defaults used when the corresponding Config field is zero.
const (
	DefaultConnectTimeout = 5 * time.Second
	DefaultCallTimeout    = 30 * time.Second
)

// Config says how to reach a custos cluster.
type Config struct {
	// Addrs are host:port addresses of custos nodes, tried in order. At
	// least one is required.
	Addrs []string
	// CAFile, CertFile and KeyFile are PEM files: the CA bundle that
	// verifies the server, and the client certificate and key presented
	// for mutual TLS. They are ignored when TLS is set.
	CAFile, CertFile, KeyFile string
	// TLS, if set, is used instead of the files. It must carry a client
	// certificate (mutual TLS); MinVersion is raised to TLS 1.3.
	TLS *tls.Config

	// ConnectTimeout bounds how long a call waits for a connection to one
	// address before trying the next; 0 means DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// CallTimeout bounds each RPC attempt whose context has no deadline;
	// 0 means DefaultCallTimeout, a negative value means no bound.
	// Streaming encryption and decryption are not bounded by it, only the
	// RPC they make.
	CallTimeout time.Duration
	// Genesis, if set, is the genesis fingerprint (64 hex digits: the
	// chain hash of the cluster's first ledger record, which `custos officer
	// list` prints) of the cluster this client must be talking to. Dial
	// then reads the cluster's and refuses any other cluster, or one
	// without a genesis record.
	Genesis string
}

// ConfigFromEnv reads CUSTOS_ADDR (comma-separated host:port list),
// CUSTOS_CA, CUSTOS_CERT and CUSTOS_KEY. The error names every variable that
// is missing or empty.
func ConfigFromEnv() (Config, error) {
	var missing []string
	get := func(name string) string {
		v := strings.TrimSpace(os.Getenv(name))
		if v == "" {
			missing = append(missing, name)
		}
		return v
	}
	cfg := Config{
		Addrs:    SplitAddrs(get(EnvAddr)),
		CAFile:   get(EnvCA),
		CertFile: get(EnvCert),
		KeyFile:  get(EnvKey),
		Genesis:  strings.TrimSpace(os.Getenv(EnvGenesis)),
	}
	if len(missing) > 0 {
		verb := "is"
		if len(missing) > 1 {
			verb = "are"
		}
		return cfg, fmt.Errorf("custos: %s %s not set (custosd dev writes them to client.env)", strings.Join(missing, ", "), verb)
	}
	if len(cfg.Addrs) == 0 {
		return cfg, fmt.Errorf("custos: %s holds no address", EnvAddr)
	}
	return cfg, nil
}

// SplitAddrs splits a comma-separated address list, dropping blanks.
func SplitAddrs(s string) []string {
	var addrs []string
	for a := range strings.SplitSeq(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

// tlsConfig returns the client TLS configuration: cfg.TLS (cloned) or one
// built from the files.
func (cfg *Config) tlsConfig() (*tls.Config, error) {
	if cfg.TLS != nil {
		t := cfg.TLS.Clone()
		if t.MinVersion < tls.VersionTLS13 {
			t.MinVersion = tls.VersionTLS13
		}
		if len(t.Certificates) == 0 && t.GetClientCertificate == nil {
			return nil, errors.New("custos: config: TLS has no client certificate")
		}
		return t, nil
	}
	var missing []string
	for _, f := range []struct{ name, val string }{{"CAFile", cfg.CAFile}, {"CertFile", cfg.CertFile}, {"KeyFile", cfg.KeyFile}} {
		if f.val == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("custos: config: no %s (and no TLS)", strings.Join(missing, ", "))
	}
	pem, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("custos: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("custos: CA file %s: no PEM certificate", cfg.CAFile)
	}
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("custos: client certificate %s / key %s: %w", cfg.CertFile, cfg.KeyFile, err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		RootCAs:      pool,
		Certificates: []tls.Certificate{cert},
	}, nil
}
