package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestCreateDevPKIFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	if err := CreateDevPKI(dir, []string{"localhost", "127.0.0.1"}, "alice", "bob"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{CAFile, CAKeyFile, ServerFile, ServerKeyFile, "alice.pem", "alice-key.pem", "bob.pem", "bob-key.pem"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Ext(f) == ".pem" && len(f) > 8 && f[len(f)-8:] == "-key.pem" {
			if got := fi.Mode().Perm(); got != 0o600 {
				t.Errorf("%s mode = %v, want 0600", f, got)
			}
		}
	}
	ca, err := readCert(filepath.Join(dir, CAFile))
	if err != nil {
		t.Fatal(err)
	}
	if !ca.IsCA || ca.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Errorf("CA: IsCA=%v alg=%v", ca.IsCA, ca.SignatureAlgorithm)
	}
	srv, err := readCert(filepath.Join(dir, ServerFile))
	if err != nil {
		t.Fatal(err)
	}
	if srv.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Errorf("server alg = %v", srv.SignatureAlgorithm)
	}
	if pub, ok := srv.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("server key is not P-256")
	}
	if err := srv.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	if err := srv.VerifyHostname("localhost"); err != nil {
		t.Error(err)
	}
	alice, err := readCert(filepath.Join(dir, "alice.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if got := PrincipalFromCert(alice); got != "alice" {
		t.Errorf("PrincipalFromCert = %q, want alice", got)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := alice.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("alice does not verify as a client: %v", err)
	}
}

func TestCreateDevPKIIdempotent(t *testing.T) {
	dir := t.TempDir()
	if err := CreateDevPKI(dir, nil, "alice"); err != nil {
		t.Fatal(err)
	}
	read := func(f string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ca, srv, alice := read(CAFile), read(ServerFile), read("alice.pem")
	// Again, adding a client: the existing files are kept.
	if err := CreateDevPKI(dir, []string{"other"}, "alice", "carol"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ca, read(CAFile)) || !bytes.Equal(srv, read(ServerFile)) || !bytes.Equal(alice, read("alice.pem")) {
		t.Error("CreateDevPKI rewrote existing files")
	}
	if _, err := os.Stat(filepath.Join(dir, "carol.pem")); err != nil {
		t.Error(err)
	}
}

func TestCreateDevPKIBadName(t *testing.T) {
	for _, n := range []string{"", "../x", "a/b", "server", "ca", ".hidden"} {
		if err := CreateDevPKI(t.TempDir(), nil, n); err == nil {
			t.Errorf("CreateDevPKI(%q) = nil, want an error", n)
		}
	}
}

// handshake runs a TLS handshake between the two configs and returns the
// server's view of the connection (or the first error).
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		st  tls.ConnectionState
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		err = tc.Handshake()
		if err == nil {
			// Wait for the client's first read/close so TLS 1.3 client
			// certificate errors surface on both ends.
			_, _ = io.Copy(io.Discard, tc)
		}
		ch <- result{st: tc.ConnectionState(), err: err}
	}()
	cfg := clientCfg.Clone()
	cfg.ServerName = "127.0.0.1"
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), cfg)
	if err == nil {
		// In TLS 1.3 a rejected client certificate shows on the first read.
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, rerr := c.Read(make([]byte, 1))
		var ne net.Error
		if rerr != nil && !(errors.As(rerr, &ne) && ne.Timeout()) && !errors.Is(rerr, io.EOF) {
			err = rerr
		}
		c.Close()
	}
	r := <-ch
	if err != nil {
		return r.st, err
	}
	return r.st, r.err
}

func TestTLSConfigs(t *testing.T) {
	dir := t.TempDir()
	if err := CreateDevPKI(dir, []string{"127.0.0.1"}, "alice"); err != nil {
		t.Fatal(err)
	}
	srvCfg, err := ServerTLSConfig(filepath.Join(dir, CAFile), filepath.Join(dir, ServerFile), filepath.Join(dir, ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if srvCfg.MinVersion != tls.VersionTLS13 || srvCfg.ClientAuth != tls.VerifyClientCertIfGiven {
		t.Errorf("server config: MinVersion=%x ClientAuth=%v", srvCfg.MinVersion, srvCfg.ClientAuth)
	}
	aliceCert, aliceKey := ClientFiles(dir, "alice")

	t.Run("client cert", func(t *testing.T) {
		cli, err := ClientTLSConfig(filepath.Join(dir, CAFile), aliceCert, aliceKey)
		if err != nil {
			t.Fatal(err)
		}
		st, err := handshake(t, srvCfg, cli)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.VerifiedChains) == 0 {
			t.Fatal("no verified chain")
		}
		if got := PrincipalFromCert(st.VerifiedChains[0][0]); got != "alice" {
			t.Errorf("principal = %q, want alice", got)
		}
		if st.Version != tls.VersionTLS13 {
			t.Errorf("version = %x, want TLS 1.3", st.Version)
		}
	})
	t.Run("no client cert", func(t *testing.T) {
		cli, err := ClientTLSConfig(filepath.Join(dir, CAFile), "", "")
		if err != nil {
			t.Fatal(err)
		}
		st, err := handshake(t, srvCfg, cli)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.VerifiedChains) != 0 {
			t.Error("verified chain without a client certificate")
		}
	})
	t.Run("other CA", func(t *testing.T) {
		other := t.TempDir()
		if err := CreateDevPKI(other, []string{"127.0.0.1"}, "mallory"); err != nil {
			t.Fatal(err)
		}
		mc, mk := ClientFiles(other, "mallory")
		// Trusts our server, but presents a certificate from another CA.
		cli, err := ClientTLSConfig(filepath.Join(dir, CAFile), mc, mk)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := handshake(t, srvCfg, cli); err == nil {
			t.Fatal("handshake with a foreign client certificate succeeded")
		}
	})
	t.Run("TLS 1.2 refused", func(t *testing.T) {
		cli, err := ClientTLSConfig(filepath.Join(dir, CAFile), aliceCert, aliceKey)
		if err != nil {
			t.Fatal(err)
		}
		cli.MinVersion, cli.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		if _, err := handshake(t, srvCfg, cli); err == nil {
			t.Fatal("TLS 1.2 handshake succeeded")
		}
	})
}

func TestServerCertReload(t *testing.T) {
	dir := t.TempDir()
	if err := CreateDevPKI(dir, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, ServerFile), filepath.Join(dir, ServerKeyFile)
	r := &reloader{certFile: certFile, keyFile: keyFile}
	if err := r.load(); err != nil {
		t.Fatal(err)
	}
	first, _ := r.getCertificate(nil)
	// Reissue the server certificate (remove it so CreateDevPKI makes a new one).
	if err := os.Remove(certFile); err != nil {
		t.Fatal(err)
	}
	if err := CreateDevPKI(dir, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.lastCheck = time.Time{}
	r.mu.Unlock()
	second, _ := r.getCertificate(nil)
	if bytes.Equal(first.Certificate[0], second.Certificate[0]) {
		t.Fatal("server certificate not reloaded after the files changed")
	}
	// A broken file keeps the previous pair in service.
	if err := os.WriteFile(certFile, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.lastCheck = time.Time{}
	r.mu.Unlock()
	third, _ := r.getCertificate(nil)
	if !bytes.Equal(second.Certificate[0], third.Certificate[0]) {
		t.Fatal("a broken certificate file replaced the working pair")
	}
}

// TestCABundleReload changes the server's CA file under a running
// configuration: a client of a new CA is refused until its CA is appended,
// accepted after, and a client of a removed CA refused; a file that does
// not parse leaves the previous bundle in force.
func TestCABundleReload(t *testing.T) {
	dir, newDir := t.TempDir(), t.TempDir()
	if err := CreateDevPKI(dir, []string{"127.0.0.1"}, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := CreateDevPKI(newDir, nil, "bob"); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, CAFile)
	srvCfg, err := ServerTLSConfig(caFile, filepath.Join(dir, ServerFile), filepath.Join(dir, ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	client := func(certDir, name string) *tls.Config {
		c, k := ClientFiles(certDir, name)
		cfg, err := ClientTLSConfig(caFile, c, k)
		if err != nil {
			t.Fatal(err)
		}
		// The server certificate stays under the old CA; pin the trust to
		// it so that rewriting caFile changes only what the server accepts.
		cfg.RootCAs, err = LoadPool(filepath.Join(dir, CAFile))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	alice, bob := client(dir, "alice"), client(newDir, "bob")
	oldPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	newPEM, err := os.ReadFile(filepath.Join(newDir, CAFile))
	if err != nil {
		t.Fatal(err)
	}
	// rewrite replaces caFile and waits out the once-a-second check.
	rewrite := func(b []byte) {
		t.Helper()
		if err := os.WriteFile(caFile+".tmp", b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(caFile+".tmp", caFile); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1100 * time.Millisecond)
	}
	accepted := func(cfg *tls.Config) bool {
		st, err := handshake(t, srvCfg, cfg)
		return err == nil && len(st.PeerCertificates) > 0
	}

	if !accepted(alice) || accepted(bob) {
		t.Fatal("before rotation: want alice accepted and bob (new CA) refused")
	}
	rewrite(append(append([]byte{}, oldPEM...), newPEM...))
	if !accepted(alice) || !accepted(bob) {
		t.Fatal("with both CAs in the bundle: want both accepted")
	}
	rewrite([]byte("not PEM"))
	if !accepted(alice) || !accepted(bob) {
		t.Fatal("a CA file that does not parse replaced the working bundle")
	}
	rewrite(newPEM)
	if accepted(alice) || !accepted(bob) {
		t.Fatal("after the old CA left the bundle: want alice refused and bob accepted")
	}
}
