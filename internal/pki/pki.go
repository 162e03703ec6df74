// Package pki makes a throwaway development CA and the certificates a custos
// node and its clients need for mutual TLS, and builds the TLS configurations
// both sides use. Everything is ECDSA P-256 with SHA-256 (CRYPTREC-listed).
//
// The dev PKI is for development and tests only: the CA key sits on disk next
// to the certificates. Production deployments bring their own CA.
//
// Files written by CreateDevPKI in dir:
//
//	ca.pem, ca-key.pem           the CA certificate and key
//	server.pem, server-key.pem   the server certificate (SANs = serverHosts)
//	<name>.pem, <name>-key.pem   one client certificate per name (CN = name)
//
// Keys are PKCS#8 PEM files with mode 0600.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"
)

// File names inside a dev PKI directory.
const (
	CAFile        = "ca.pem"
	CAKeyFile     = "ca-key.pem"
	ServerFile    = "server.pem"
	ServerKeyFile = "server-key.pem"
)

// Validity periods of dev certificates. Leaf certificates that expire within
// renewBefore are reissued by CreateDevPKI.
const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 365 * 24 * time.Hour
	renewBefore  = 24 * time.Hour
)

// DefaultServerHosts are the SANs of the server certificate when
// CreateDevPKI is given none.
var DefaultServerHosts = []string{"localhost", "127.0.0.1", "::1"}

var clientNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// mu serialises CreateDevPKI calls in this process so that concurrent
// callers on one directory do not issue a certificate twice.
var mu sync.Mutex

// ClientFiles returns the certificate and key paths of client name in dir.
func ClientFiles(dir, name string) (certFile, keyFile string) {
	return filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
}

// CreateDevPKI creates (or completes) a development PKI in dir: a CA, a
// server certificate valid for serverHosts (DNS names or IP addresses;
// DefaultServerHosts if empty) and one client certificate per client name,
// whose subject common name is the name. It is idempotent: files that exist
// are kept (a leaf that is unreadable or about to expire is reissued), so it
// can be called again to add a client.
func CreateDevPKI(dir string, serverHosts []string, clientNames ...string) error {
	for _, n := range clientNames {
		if !clientNameRE.MatchString(n) || n == "ca" || n == "server" || n == "ca-key" || n == "server-key" {
			return fmt.Errorf("pki: invalid client name %q: want 1-64 characters of [A-Za-z0-9_.-] starting with a letter or digit, not ca or server", n)
		}
	}
	if len(serverHosts) == 0 {
		serverHosts = DefaultServerHosts
	}
	mu.Lock()
	defer mu.Unlock()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	ca, caKey, err := loadOrCreateCA(dir)
	if err != nil {
		return err
	}
	if err := ensureLeaf(ca, caKey, filepath.Join(dir, ServerFile), filepath.Join(dir, ServerKeyFile),
		leafTemplate("custos-server", serverHosts, x509.ExtKeyUsageServerAuth)); err != nil {
		return err
	}
	for _, n := range clientNames {
		certFile, keyFile := ClientFiles(dir, n)
		if err := ensureLeaf(ca, caKey, certFile, keyFile,
			leafTemplate(n, nil, x509.ExtKeyUsageClientAuth)); err != nil {
			return err
		}
	}
	return nil
}

func loadOrCreateCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certFile, keyFile := filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)
	_, errC := os.Stat(certFile)
	_, errK := os.Stat(keyFile)
	if errC == nil && errK == nil {
		cert, err := readCert(certFile)
		if err != nil {
			return nil, nil, err
		}
		key, err := readKey(keyFile)
		if err != nil {
			return nil, nil, err
		}
		return cert, key, nil
	}
	if errC == nil || errK == nil {
		return nil, nil, fmt.Errorf("pki: %s and %s must both exist or both be absent; remove the one left to start a new CA", certFile, keyFile)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "custos dev CA", Organization: []string{"custos (development only)"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SignatureAlgorithm:    x509.ECDSAWithSHA256,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: create CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: %w", err)
	}
	if err := writeKey(keyFile, key); err != nil {
		return nil, nil, err
	}
	if err := writeFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

func leafTemplate(cn string, hosts []string, usage x509.ExtKeyUsage) *x509.Certificate {
	now := time.Now()
	t := &x509.Certificate{
		Subject:            pkix.Name{CommonName: cn},
		NotBefore:          now.Add(-time.Hour),
		NotAfter:           now.Add(leafValidity),
		KeyUsage:           x509.KeyUsageDigitalSignature,
		ExtKeyUsage:        []x509.ExtKeyUsage{usage},
		SignatureAlgorithm: x509.ECDSAWithSHA256,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			t.IPAddresses = append(t.IPAddresses, ip)
		} else {
			t.DNSNames = append(t.DNSNames, h)
		}
	}
	return t
}

// ensureLeaf keeps a valid existing certificate+key pair or issues a new one.
func ensureLeaf(ca *x509.Certificate, caKey *ecdsa.PrivateKey, certFile, keyFile string, tmpl *x509.Certificate) error {
	if cert, err := readCert(certFile); err == nil {
		if _, err := readKey(keyFile); err == nil && time.Until(cert.NotAfter) > renewBefore {
			return nil
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if tmpl.SerialNumber, err = newSerial(); err != nil {
		return err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("pki: issue %s: %w", tmpl.Subject.CommonName, err)
	}
	// Key first: a reader that sees the new certificate finds its key.
	if err := writeKey(keyFile, key); err != nil {
		return err
	}
	return writeFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}

func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("pki: %s: no PEM CERTIFICATE block", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", path, err)
	}
	return c, nil
}

func readKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("pki: %s: no PEM PRIVATE KEY block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", path, err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, fmt.Errorf("pki: %s: not an ECDSA P-256 key", path)
	}
	return ek, nil
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return writeFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// writeFile writes atomically: a temporary file in the same directory,
// fsynced, then renamed over path.
func writeFile(path string, data []byte, mode os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("pki: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("pki: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("pki: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}

// PrincipalFromCert returns the identity custos gives a verified client
// certificate: its subject common name ("" if it has none).
func PrincipalFromCert(c *x509.Certificate) string {
	if c == nil {
		return ""
	}
	return c.Subject.CommonName
}

var errNoCerts = errors.New("no certificates")

// nodeIDRE limits the node ids IssueNodeCert accepts, so that the id can
// name files: a subset of what raft.NodeIDFromCert accepts.
var nodeIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// NodeCNPrefix starts the common name of a node certificate; it equals
// raft.NodeCNPrefix (docs/cluster-transport.md).
const NodeCNPrefix = "custos-node:"

// NodeFiles returns the certificate and key paths of node id in dir.
func NodeFiles(dir, id string) (certFile, keyFile string) {
	return filepath.Join(dir, "node-"+id+".pem"), filepath.Join(dir, "node-"+id+"-key.pem")
}

// IssueNodeCert issues (or keeps, when valid) the certificate of the node
// with Raft id id under the CA in dir (created if missing): subject common
// name "custos-node:<id>" (raft.NodeCommonName), extended key usages
// serverAuth and clientAuth, and SANs for hosts (DNS names or IP addresses;
// DefaultServerHosts if empty). A node uses it for its gRPC server, for its
// connections to other nodes and for the Raft transport. The files are
// NodeFiles(dir, id).
func IssueNodeCert(dir, id string, hosts []string) (certFile, keyFile string, err error) {
	if !nodeIDRE.MatchString(id) {
		return "", "", fmt.Errorf("pki: invalid node id %q: want 1-64 characters of [A-Za-z0-9_.-] starting with a letter or digit", id)
	}
	if len(hosts) == 0 {
		hosts = DefaultServerHosts
	}
	mu.Lock()
	defer mu.Unlock()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("pki: %w", err)
	}
	ca, caKey, err := loadOrCreateCA(dir)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = NodeFiles(dir, id)
	tmpl := leafTemplate(NodeCNPrefix+id, hosts, x509.ExtKeyUsageServerAuth)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	if err := ensureLeaf(ca, caKey, certFile, keyFile, tmpl); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}
