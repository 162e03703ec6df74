package node_test

import (
	"context"
	"testing"
	"time"

	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"github.com/custos-kms/custos/softhsm"
)

// A node configured with the officers' signed genesis, and no officers of
// its own, starts the cluster the officers described: their cluster id,
// officers and quorum, the statement in record 1.
func TestNodeStartsFromOfficerSignedGenesis(t *testing.T) {
	dir := t.TempDir()
	cfg := nodetest.Config(t, dir, softhsm.TestToken(t))
	officers, pub := nodetest.NewOfficers(t, dir)
	const clusterID = "fedcba9876543210fedcba9876543210"
	st, err := governance.NewStatement(clusterID, time.Hour, "our cluster")
	if err != nil {
		t.Fatal(err)
	}
	st.Operation = &custosv1.Statement_CreateCluster{CreateCluster: &custosv1.CreateCluster{Officers: pub, Quorum: nodetest.Quorum}}
	b, err := governance.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	ss := &custosv1.SignedStatement{Statement: b}
	for _, i := range []int{0, 2} {
		sig, err := governance.Sign(officers[i].Key, officers[i].Name, b)
		if err != nil {
			t.Fatal(err)
		}
		ss.Signatures = append(ss.Signatures, sig)
	}
	cfg.Genesis = ss
	ctx, cancel := context.WithTimeout(context.Background(), nodetest.StartTimeout)
	defer cancel()
	n, err := node.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start from the officers' genesis: %v", err)
	}
	defer n.Close()
	if n.ClusterID() != clusterID {
		t.Fatalf("cluster %q, want the officers' %q", n.ClusterID(), clusterID)
	}
	rec, err := n.Service().State().DecisionRecord(1)
	if err != nil || rec.GetGenesis().GetStatement() == nil || len(rec.GetGenesis().GetOfficers()) != len(pub) {
		t.Fatalf("record 1: %v, %v", rec, err)
	}
}
