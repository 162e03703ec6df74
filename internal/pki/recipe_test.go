package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// writeCA writes a customer CA (certificate and PKCS#8 key) into dir.
func writeCA(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Customer CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// The production recipe (scripts/pki.sh, docs/certificates.md) issues, from
// the customer's own CA, node, client and XKS certificates with the key
// usages and names custos needs: a node and an application built from it
// complete a mutual TLS handshake with custos's own TLS configurations, and
// the server sees the application's principal.
func TestProductionCertificateRecipe(t *testing.T) {
	script, err := filepath.Abs("../../scripts/pki.sh")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caCert, caKey := writeCA(t, dir)
	out := filepath.Join(dir, "issued")
	issue := func(args ...string) (string, error) {
		cmd := exec.Command(script, append([]string{"--ca-cert", caCert, "--ca-key", caKey, "--out", out, "--days", "30"}, args...)...)
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	for _, args := range [][]string{{"node", "n1", "127.0.0.1", "n1.example"}, {"client", "hr-app"}, {"xks", "xks.example.com"}} {
		if msg, err := issue(args...); err != nil {
			t.Fatalf("pki.sh %v: %v\n%s", args, err, msg)
		}
	}
	if msg, err := issue("client", "hr-app"); err == nil || !strings.Contains(msg, "exists") {
		t.Fatalf("issuing over an existing certificate: %v %s", err, msg)
	}
	if _, err := issue("node", "bad/id", "h"); err == nil {
		t.Fatal("an invalid node id was accepted")
	}

	roots, err := LoadPool(caCert)
	if err != nil {
		t.Fatal(err)
	}
	check := func(file, cn string, eku []x509.ExtKeyUsage, dns []string, ips int) {
		t.Helper()
		info, err := os.Stat(strings.TrimSuffix(file, ".pem") + "-key.pem")
		if err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("%s key file: %v, mode %v; want 0600", file, err, info.Mode().Perm())
		}
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		certs := CertificatesPEM(b)
		if len(certs) != 2 {
			t.Fatalf("%s: %d certificates, want the certificate and its CA", file, len(certs))
		}
		c, err := x509.ParseCertificate(certs[0])
		if err != nil {
			t.Fatal(err)
		}
		if c.Subject.CommonName != cn || !slices.Equal(c.ExtKeyUsage, eku) || c.KeyUsage != x509.KeyUsageDigitalSignature || c.IsCA ||
			!slices.Equal(c.DNSNames, dns) || len(c.IPAddresses) != ips || c.SignatureAlgorithm != x509.ECDSAWithSHA256 {
			t.Errorf("%s: CN %q EKU %v KU %v CA %v DNS %v IPs %v sig %v", file, c.Subject.CommonName, c.ExtKeyUsage, c.KeyUsage, c.IsCA, c.DNSNames, c.IPAddresses, c.SignatureAlgorithm)
		}
		if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
			t.Errorf("%s: not a P-256 key", file)
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: eku}); err != nil {
			t.Errorf("%s does not chain to the CA: %v", file, err)
		}
	}
	check(filepath.Join(out, "node-n1.pem"), NodeCNPrefix+"n1", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, []string{"n1.example"}, 1)
	check(filepath.Join(out, "client-hr-app.pem"), "hr-app", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil, 0)
	check(filepath.Join(out, "xks-xks.example.com.pem"), "xks.example.com", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, []string{"xks.example.com"}, 0)

	// A node serving and an application calling it, with custos's TLS
	// configurations.
	srvCfg, err := ServerTLSConfig(caCert, filepath.Join(out, "node-n1.pem"), filepath.Join(out, "node-n1-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cliCfg, err := ClientTLSConfig(caCert, filepath.Join(out, "client-hr-app.pem"), filepath.Join(out, "client-hr-app-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cliCfg.ServerName = "n1.example"
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	seen := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			seen <- err.Error()
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			seen <- err.Error()
			return
		}
		seen <- PrincipalFromCert(tc.ConnectionState().PeerCertificates[0])
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), cliCfg)
	if err != nil {
		t.Fatalf("the application's handshake with the node: %v", err)
	}
	defer conn.Close()
	if got := <-seen; got != "hr-app" {
		t.Fatalf("the node saw principal %q, want hr-app", got)
	}
}
