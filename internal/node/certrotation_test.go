package node_test

import (
	"crypto/tls"
	"encoding/pem"
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

// TestCertificateRotationWithoutRestart rotates, on a running node, first
// its gRPC server certificate and then the CA bundle it verifies clients
// against, as an operator would (new files on disk; no restart, no signal):
// new connections see the new server certificate, a client of a new CA is
// refused until that CA is in the bundle, identifies nobody until the
// officers trust it too, and is then served as the principal its
// certificate names, clients of a CA removed from the bundle
// are refused, and connections opened before each change keep working.
func TestCertificateRotationWithoutRestart(t *testing.T) {
	h := nodetest.Start(t)
	pkiDir := filepath.Dir(h.CAFile)
	before := custosv1.NewKeyServiceClient(h.Conn(t, "app"))
	if _, err := before.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: "rotation"}); err != nil {
		t.Fatal(err)
	}
	generate := func(kc custosv1.KeyServiceClient) error {
		_, err := kc.GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: "rotation"})
		return err
	}
	serverLeaf := func() []byte {
		t.Helper()
		c, err := tls.Dial("tcp", h.Addr, h.ClientTLS(t, "app"))
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Raw
	}
	// replace writes path through a rename (as operators and cert managers
	// do) and waits out the node's once-a-second check of the files.
	replace := func(path string, b []byte) {
		t.Helper()
		if err := os.WriteFile(path+".new", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1100 * time.Millisecond)
	}

	// 1. The server certificate.
	first := serverLeaf()
	certFile, keyFile := filepath.Join(pkiDir, pki.ServerFile), filepath.Join(pkiDir, pki.ServerKeyFile)
	if err := os.Remove(certFile); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	if err := pki.CreateDevPKI(pkiDir, []string{"127.0.0.1", "localhost"}); err != nil { // reissues the pair
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	if string(serverLeaf()) == string(first) {
		t.Fatal("new connections still get the old server certificate")
	}
	if err := generate(custosv1.NewKeyServiceClient(h.Conn(t, "app"))); err != nil {
		t.Fatalf("call over a new connection after the server certificate changed: %v", err)
	}
	if err := generate(before); err != nil {
		t.Fatalf("call over the connection opened before the rotation: %v", err)
	}

	// 2. The client CA bundle: a second CA issues a certificate for the same
	// principal.
	newDir := t.TempDir()
	if err := pki.CreateDevPKI(newDir, nil, "app"); err != nil {
		t.Fatal(err)
	}
	oldPEM, err := os.ReadFile(h.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	newPEM, err := os.ReadFile(filepath.Join(newDir, pki.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	serverRoots, err := pki.LoadPool(h.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	newClient := func(certDir string) custosv1.KeyServiceClient {
		t.Helper()
		c, k := pki.ClientFiles(certDir, "app")
		cfg, err := pki.ClientTLSConfig(filepath.Join(newDir, pki.CAFile), c, k)
		if err != nil {
			t.Fatal(err)
		}
		cfg.RootCAs = serverRoots // the server's certificate stays under the first CA
		cc, err := grpc.NewClient(h.Addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		return custosv1.NewKeyServiceClient(cc)
	}
	refused := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("%s: got %v, want the handshake refused (Unavailable)", what, err)
		}
	}
	refused("new-CA client before its CA is in the bundle", generate(newClient(newDir)))

	replace(h.CAFile, append(append([]byte{}, oldPEM...), newPEM...))
	// The bundle lets its certificates through TLS; they identify nobody
	// until the officers trust the CA (docs/identities.md).
	if err := generate(newClient(newDir)); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("new-CA client once its CA is in the bundle, before the officers trust it: %v, want Unauthenticated", err)
	}
	blk, _ := pem.Decode(newPEM)
	gc := custosv1.NewGovernanceServiceClient(h.Conn(t, "officer-desk"))
	if _, err := gc.Submit(ctx(t), h.Sign(t, func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_AddClientAuthority{AddClientAuthority: &custosv1.AddClientAuthority{Certificate: blk.Bytes}}
	}, 0, 1)); err != nil {
		t.Fatalf("AddClientAuthority: %v", err)
	}
	if err := generate(newClient(newDir)); err != nil {
		t.Fatalf("new-CA client once its CA is in the bundle and trusted by the officers: %v", err)
	}
	if err := generate(newClient(pkiDir)); err != nil {
		t.Fatalf("old-CA client while both CAs are in the bundle: %v", err)
	}

	replace(h.CAFile, newPEM)
	refused("old-CA client after its CA left the bundle", generate(newClient(pkiDir)))
	if err := generate(newClient(newDir)); err != nil {
		t.Fatalf("new-CA client after the old CA left the bundle: %v", err)
	}
	if err := generate(before); err != nil {
		t.Fatalf("connection opened before the CA rotation: %v", err)
	}
}
