package security

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
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/internal/pki"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// handshake dials the node with cfg, completes the TLS handshake and reads
// once, which is where a TLS 1.3 client learns that the server refused its
// certificate. It returns the first error.
func handshake(t *testing.T, addr string, cfg *tls.Config) error {
	t.Helper()
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"h2"}
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = conn.Read(make([]byte, 1))
	return err
}

// issue signs a client certificate for cn with the CA in dir, valid in
// [notBefore, notAfter].
func issue(t *testing.T, dir, cn string, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			t.Fatalf("%s: no PEM block", name)
		}
		return blk.Bytes
	}
	ca, err := x509.ParseCertificate(read(pki.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := x509.ParsePKCS8PrivateKey(read(pki.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestTLSFrontDoor checks what the node's gRPC listener refuses: TLS 1.2,
// a client certificate from another CA, an expired client certificate.
func TestTLSFrontDoor(t *testing.T) {
	h := nodetest.Start(t)
	good := h.ClientTLS(t, "app")
	if err := handshake(t, h.Addr, good); err != nil && !os.IsTimeout(err) {
		t.Fatalf("a good client: %v", err)
	}
	pkiDir := filepath.Dir(h.CAFile)

	// call makes a gRPC call with cfg and returns its error.
	call := func(cfg *tls.Config) error {
		cc, err := grpc.NewClient(h.Addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		_, err = custosv1.NewKeyServiceClient(cc).ListKeys(ctx(t), &custosv1.ListKeysRequest{})
		return err
	}

	t.Run("TLS 1.2 refused", func(t *testing.T) {
		cfg := good.Clone()
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		err := handshake(t, h.Addr, cfg)
		if err == nil || os.IsTimeout(err) {
			t.Fatalf("TLS 1.2 handshake: %v, want a protocol version error", err)
		}
		t.Logf("TLS 1.2: %v", err)
		wantCode(t, "gRPC over TLS 1.2", call(cfg), codes.Unavailable)
	})

	t.Run("client certificate from another CA refused", func(t *testing.T) {
		other := t.TempDir()
		if err := pki.CreateDevPKI(other, nil, "app"); err != nil {
			t.Fatal(err)
		}
		cfg := good.Clone()
		cfg.Certificates = []tls.Certificate{issue(t, other, "app", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))}
		err := handshake(t, h.Addr, cfg)
		if err == nil || os.IsTimeout(err) {
			t.Fatalf("foreign certificate: %v, want a handshake error", err)
		}
		t.Logf("foreign CA: %v", err)
		err = call(cfg)
		wantCode(t, "gRPC with a foreign certificate", err, codes.Unavailable)
		if status.Code(err) == codes.OK {
			t.Error("served a foreign certificate")
		}
	})

	t.Run("expired client certificate refused", func(t *testing.T) {
		cfg := good.Clone()
		cfg.Certificates = []tls.Certificate{issue(t, pkiDir, "app", time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))}
		err := handshake(t, h.Addr, cfg)
		if err == nil || os.IsTimeout(err) {
			t.Fatalf("expired certificate: %v, want a handshake error", err)
		}
		t.Logf("expired: %v", err)
		wantCode(t, "gRPC with an expired certificate", call(cfg), codes.Unavailable)
	})
}
