package raft_test

import (
	"crypto/x509"
	"sync/atomic"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"

	"github.com/custos-kms/custos/raft"
)

// TestTLSCARotation rotates the cluster CA of a running stream layer
// through CAPools: a node of a new CA is refused until the new CA is in
// the bundle, accepted once it is, and a node of the old CA is refused once
// the old CA has left the bundle — without restarting the listener.
func TestTLSCARotation(t *testing.T) {
	oldCA := newTestCA(t, "old cluster CA")
	newCA := newTestCA(t, "new cluster CA")
	both := x509.NewCertPool()
	both.AddCert(oldCA.cert)
	both.AddCert(newCA.cert)

	var bundle atomic.Pointer[x509.CertPool]
	bundle.Store(oldCA.pool)
	cfgA := tlsConfig(oldCA, newCertSlot(oldCA.issue(t, raft.NodeCommonName("a"))), newAllowSet("b").allowed)
	cfgA.CAPool = nil
	cfgA.CAPools = bundle.Load
	a := streamLayer(t, cfgA)
	addrA := hraft.ServerAddress(a.Addr().String())
	go func() {
		for {
			c, err := a.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()

	// dialer is node b with a certificate of ca, trusting pool for a's.
	dialer := func(ca *testCA, pool *x509.CertPool) *raft.TLSStreamLayer {
		cfg := tlsConfig(ca, newCertSlot(ca.issue(t, raft.NodeCommonName("b"))), func(string) bool { return true })
		cfg.CAPool = pool
		return streamLayer(t, cfg)
	}
	dial := func(d *raft.TLSStreamLayer) error {
		c, err := d.Dial(addrA, 5*time.Second)
		if err == nil {
			_ = c.Close()
		}
		return err
	}
	bOld, bNew := dialer(oldCA, both), dialer(newCA, both)

	if err := dial(bOld); err != nil {
		t.Fatalf("old-CA node refused under the old bundle: %v", err)
	}
	if err := dial(bNew); err == nil {
		t.Fatal("new-CA node accepted before its CA was in the bundle")
	}
	bundle.Store(both)
	if err := dial(bNew); err != nil {
		t.Fatalf("new-CA node refused once its CA was added: %v", err)
	}
	bundle.Store(newCA.pool)
	if err := dial(bOld); err == nil {
		t.Fatal("old-CA node accepted after its CA left the bundle")
	}
	if err := dial(bNew); err != nil {
		t.Fatalf("new-CA node refused under the new bundle: %v", err)
	}

	// Outbound: a verifies the server it dials against the current bundle
	// too. a dials a server with a new-CA certificate: accepted while a's
	// bundle holds the new CA, refused once it does not.
	srv := dialer(newCA, both)
	go func() {
		for {
			c, err := srv.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	srvAddr := hraft.ServerAddress(srv.Addr().String())
	if c, err := a.Dial(srvAddr, 5*time.Second); err != nil {
		t.Fatalf("a refused a new-CA server its bundle trusts: %v", err)
	} else {
		_ = c.Close()
	}
	bundle.Store(oldCA.pool)
	if c, err := a.Dial(srvAddr, 5*time.Second); err == nil {
		_ = c.Close()
		t.Fatal("a accepted a new-CA server after the new CA left its bundle")
	}
}
