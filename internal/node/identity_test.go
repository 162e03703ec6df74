package node_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/pem"
	"os"
	"testing"
	"time"

	"github.com/custos-kms/custos/internal/node/nodetest"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// TestFollowerRecordsPrincipalIssuer: a cluster pins its bootstrap CA
// bundle at genesis; a decision a follower serves (forwarded to the leader
// with the caller's certificate, which the leader checks against the
// pinned authorities) records on every node which CA issued the caller's
// certificate, and which certificate it was (docs/identities.md).
func TestFollowerRecordsPrincipalIssuer(t *testing.T) {
	c := nodetest.StartCustodians(t, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pemCA, err := os.ReadFile(c.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(pemCA)
	caSum := sha256.Sum256(blk.Bytes)

	g := c.Members[0].Node.Service().State().Governance()
	if !g.ClientAuthoritiesPinned || len(g.ClientAuthorities) != 1 {
		t.Fatalf("genesis: pinned %v with %d authorities, want the bootstrap CA pinned", g.ClientAuthoritiesPinned, len(g.ClientAuthorities))
	}
	leader := c.Leader()
	follower := (leader + 1) % 3
	kc := custosv1.NewKeyServiceClient(c.Conn(t, follower, clusterApp))
	if _, err := kc.CreateKey(ctx, &custosv1.CreateKeyRequest{Name: "issuer"}); err != nil {
		t.Fatal(err)
	}
	dk, err := kc.GenerateDataKey(ctx, &custosv1.GenerateDataKeyRequest{Key: "issuer"})
	if err != nil {
		t.Fatal(err)
	}
	out, err := kc.Decrypt(ctx, decryptReq(dk.WrappedDataKey))
	if err != nil {
		t.Fatalf("decrypt on follower %d: %v", follower, err)
	}
	for i, m := range c.Members {
		s := m.Node.Service().State()
		var rec *custosv1.DecisionRecord
		for deadline := time.Now().Add(30 * time.Second); ; {
			if rec, err = s.DecisionRecord(out.DecisionSeq); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d: record %d: %v", i, out.DecisionSeq, err)
			}
			time.Sleep(20 * time.Millisecond) // polling replication to node i
		}
		if rec.Principal != clusterApp || !bytes.Equal(rec.PrincipalIssuerSha256, caSum[:]) || len(rec.PrincipalCertSha256) != sha256.Size {
			t.Fatalf("node %d: record %d principal %q issuer %x cert %x; want %q issued by %x", i, rec.Seq, rec.Principal,
				rec.PrincipalIssuerSha256, rec.PrincipalCertSha256, clusterApp, caSum)
		}
	}
}
