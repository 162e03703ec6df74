package pki

import (
	"crypto/x509"
	"testing"

	"github.com/custos-kms/custos/raft"
)

func TestIssueNodeCert(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, err := IssueNodeCert(dir, "n1", []string{"127.0.0.1", "node1.example"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := readCert(certFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readKey(keyFile); err != nil {
		t.Fatal(err)
	}
	if c.Subject.CommonName != raft.NodeCommonName("n1") {
		t.Fatalf("CN %q", c.Subject.CommonName)
	}
	if id, ok := raft.NodeIDFromCert(c); !ok || id != "n1" {
		t.Fatalf("NodeIDFromCert = %q, %v", id, ok)
	}
	pool, err := LoadPool(dir + "/" + CAFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{u}, DNSName: "node1.example"}); err != nil {
			t.Fatalf("usage %v: %v", u, err)
		}
	}
	if len(c.IPAddresses) != 1 || c.IPAddresses[0].String() != "127.0.0.1" {
		t.Fatalf("IP SANs %v", c.IPAddresses)
	}
	// Idempotent: the valid certificate is kept.
	again, _, err := IssueNodeCert(dir, "n1", nil)
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := readCert(again)
	if c2.SerialNumber.Cmp(c.SerialNumber) != 0 {
		t.Fatal("certificate reissued")
	}
	src, err := NewCertSource(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if tc, err := src.Current(); err != nil || tc == nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "a b", "a:b", "../x"} {
		if _, _, err := IssueNodeCert(dir, bad, nil); err == nil {
			t.Errorf("IssueNodeCert(%q) succeeded", bad)
		}
	}
	// Client names still refuse ':'.
	if err := CreateDevPKI(dir, nil, "custos-node:n2"); err == nil {
		t.Error("CreateDevPKI accepted a node CN as a client name")
	}
}
