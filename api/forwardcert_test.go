package api

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/custos-kms/custos/kms"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// TestReplicationChecksForwardedCertificate: a follower that names its
// principal's certificate must forward it, it must be the certificate
// named, for the principal named; the leader removes it before proposing,
// so it never enters the log. (Against pinned client authorities, the
// issuer is checked too: kms.TestVerifyForwardedCertificate.)
func TestReplicationChecksForwardedCertificate(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hr-app"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	node2 := context.WithValue(context.Background(), principalKey{}, kms.Principal{Name: "custos-node:node2"})
	f := &fakeLeader{leader: true}
	srv := NewReplicationServer(f)
	cmd := func(mod func(*raftlogv1.Command)) *raftlogv1.Command {
		c := &raftlogv1.Command{TimeUnixNano: leaderNow.UnixNano(), Node: "node2", Principal: "hr-app",
			PrincipalIssuerSha256: sum[:], PrincipalCertSha256: sum[:], PrincipalCertificate: der,
			Op: &raftlogv1.Command_Decide{Decide: &raftlogv1.Decide{Key: "k", KeyVersion: 1}}}
		if mod != nil {
			mod(c)
		}
		return c
	}
	if _, err := srv.Apply(node2, cmd(nil)); err != nil {
		t.Fatalf("a forwarded command with its principal's certificate: %v", err)
	}
	if f.applied != 1 || f.last.GetPrincipalCertificate() != nil || len(f.last.GetPrincipalCertSha256()) != sha256.Size {
		t.Fatalf("proposed %d commands, the last carrying certificate %d bytes and digest %x: want the certificate removed, the digest kept",
			f.applied, len(f.last.GetPrincipalCertificate()), f.last.GetPrincipalCertSha256())
	}
	for name, mod := range map[string]func(*raftlogv1.Command){
		"digests without the certificate":   func(c *raftlogv1.Command) { c.PrincipalCertificate = nil },
		"certificate without digests":       func(c *raftlogv1.Command) { c.PrincipalIssuerSha256, c.PrincipalCertSha256 = nil, nil },
		"another principal's name":          func(c *raftlogv1.Command) { c.Principal = "payroll" },
		"a certificate that is not the one": func(c *raftlogv1.Command) { c.PrincipalCertSha256 = make([]byte, 32) },
	} {
		// Refused as a domain result, which the follower does not retry.
		r, err := srv.Apply(node2, cmd(mod))
		if err != nil {
			t.Fatalf("%s: a gRPC error (%v), want the refusal as the command's result", name, err)
		}
		if _, derr := kms.DecodeResult(r); !errors.Is(derr, kms.ErrPermissionDenied) {
			t.Errorf("%s: %v, want ErrPermissionDenied", name, derr)
		}
	}
	if f.applied != 1 {
		t.Fatalf("%d commands proposed, want only the good one", f.applied)
	}
}
