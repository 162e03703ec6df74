package node_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// waitNewLeader waits until a member other than skip leads.
func waitNewLeader(t *testing.T, c *nodetest.Cluster, skip int) int {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for i, m := range c.Members {
			if i != skip && m.Node.Raft().IsLeader() {
				return i
			}
		}
	}
	t.Fatal("no new leader")
	return -1
}

// TestSealAfterRevokeOnIsolatedNode is KI-2 of docs/robustness.md: a node cut off from
// the cluster must not issue data keys (or encrypt) under a key whose
// revoke the cluster has acknowledged meanwhile (docs/architecture.md, invariant 3).
// Encrypt and GenerateDataKey take a read index first; on an isolated node
// that fails, so they fail closed.
func TestSealAfterRevokeOnIsolatedNode(t *testing.T) {
	c := nodetest.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Only node1 holds the domain key, so it must lead for what follows; on
	// a loaded machine another node may have won an election meanwhile.
	if l := c.Leader(); l != 0 {
		if err := c.Members[l].Node.Raft().TransferLeadership(ctx, c.Members[0].Config.ID); err != nil {
			t.Fatalf("leader is member %d; handing leadership back to the bootstrapping node: %v", l, err)
		}
		waitFor(t, "the bootstrapping node to lead", func() bool { return c.Members[0].Node.Raft().IsLeader() })
	}
	// Only node1 holds the domain key: it is the one that can seal.
	app := custosv1.NewKeyServiceClient(c.Conn(t, 0, clusterApp))
	for _, k := range []string{"k", "k2"} {
		if _, err := app.CreateKey(ctx, &custosv1.CreateKeyRequest{Name: k}); err != nil {
			t.Fatal(err)
		}
	}
	// Healthy: node1 seals (the read index is a round with the quorum).
	if _, err := app.GenerateDataKey(ctx, &custosv1.GenerateDataKeyRequest{Key: "k"}); err != nil {
		t.Fatalf("GenerateDataKey on a healthy cluster: %v", err)
	}
	if _, err := app.Encrypt(ctx, &custosv1.EncryptRequest{Key: "k", Plaintext: []byte("x")}); err != nil {
		t.Fatalf("Encrypt on a healthy cluster: %v", err)
	}

	// Isolate node1; node2 and node3 elect a leader and revoke the key.
	c.Members[0].Isolated.Store(true)
	waitNewLeader(t, c, 0)
	gov := custosv1.NewGovernanceServiceClient(c.Conn(t, 1, "officer-cli"))
	revoke := nodetest.SignStatement(t, c.ClusterID(), c.Officers, func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_RevokeKey{RevokeKey: &custosv1.RevokeKey{Key: "k"}}
	}, 0)
	if _, err := gov.Submit(ctx, revoke); err != nil {
		t.Fatalf("revoke through node2: %v", err)
	}
	if k, err := c.Members[0].Node.Service().State().Key("k"); err != nil || k.Revoked {
		t.Fatalf("isolated node1 already sees the revoke (%v): the test proves nothing", err)
	}

	// The revoke is acknowledged; node1's own state still says enabled.
	// Nothing may be sealed there now.
	for i := 0; i < 3; i++ {
		dk, err := app.GenerateDataKey(ctx, &custosv1.GenerateDataKeyRequest{Key: "k"})
		if dk != nil || status.Code(err) != codes.Unavailable {
			t.Fatalf("GenerateDataKey on isolated node1 after the revoke: %v, %v; want Unavailable and no data key", dk, err)
		}
		ct, err := app.Encrypt(ctx, &custosv1.EncryptRequest{Key: "k", Plaintext: []byte("x")})
		if ct != nil || status.Code(err) != codes.Unavailable {
			t.Fatalf("Encrypt on isolated node1 after the revoke: %v, %v; want Unavailable", ct, err)
		}
	}

	// Healed: node1 catches up through the read index and refuses
	// because the key is revoked — never a data key.
	c.Members[0].Isolated.Store(false)
	for deadline := time.Now().Add(60 * time.Second); ; {
		dk, err := app.GenerateDataKey(ctx, &custosv1.GenerateDataKeyRequest{Key: "k"})
		if dk != nil || err == nil {
			t.Fatal("GenerateDataKey issued a data key under a revoked key")
		}
		if status.Code(err) == codes.FailedPrecondition {
			break
		}
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			t.Fatalf("GenerateDataKey on healed node1: %v, want FailedPrecondition (revoked)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := app.Encrypt(ctx, &custosv1.EncryptRequest{Key: "k", Plaintext: []byte("x")}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("Encrypt on healed node1: %v, want FailedPrecondition (revoked)", err)
	}

	// A lagging follower: node3 misses the revoke of k2, then catches up.
	// Its seal path goes through the leader's read index
	// (Replication.ReadIndex). node3's HSM has no domain key, so its
	// Service is called in-process: the key-state check comes before any
	// HSM work, and it is what is under test.
	m3 := c.Members[2]
	svc3 := m3.Node.Service()
	waitSameHead(t, c, 2, 1)
	m3.Isolated.Store(true)
	gov2 := custosv1.NewGovernanceServiceClient(c.Conn(t, 1, "officer-cli"))
	revoke2 := nodetest.SignStatement(t, c.ClusterID(), c.Officers, func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_RevokeKey{RevokeKey: &custosv1.RevokeKey{Key: "k2"}}
	}, 0)
	if _, err := gov2.Submit(ctx, revoke2); err != nil {
		t.Fatalf("revoke k2: %v", err)
	}
	if k, err := svc3.State().Key("k2"); err != nil || k.Revoked {
		t.Fatalf("isolated node3 already sees the revoke of k2 (%v)", err)
	}
	p := kms.Principal{Name: clusterApp}
	_, err := svc3.GenerateDataKey(ctx, p, &custosv1.GenerateDataKeyRequest{Key: "k2"})
	if !errors.Is(err, kms.ErrUnavailable) || !strings.Contains(err.Error(), "nothing issued") {
		t.Fatalf("GenerateDataKey on isolated node3: %v, want the read index to fail (Unavailable)", err)
	}
	m3.Isolated.Store(false)
	for deadline := time.Now().Add(60 * time.Second); ; {
		_, err := svc3.GenerateDataKey(ctx, p, &custosv1.GenerateDataKeyRequest{Key: "k2"})
		if errors.Is(err, kms.ErrFailedPrecondition) && strings.Contains(err.Error(), "revoked") {
			break
		}
		if !errors.Is(err, kms.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("GenerateDataKey on healed node3: %v, want FailedPrecondition (revoked)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
