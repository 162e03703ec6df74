package kms_test

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/audit"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"github.com/custos-kms/custos/softhsm"
)

// genesisEnv is an env whose officers exist but whose cluster is not
// initialised yet.
func genesisEnv(t *testing.T) (*env, []*custosv1.Officer) {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), tok: softhsm.TestToken(t)}
	var pub []*custosv1.Officer
	for i := 1; i <= 3; i++ {
		k, err := governance.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		o := officer{name: fmt.Sprintf("officer-%d", i), key: k}
		e.officers = append(e.officers, o)
		pub = append(pub, &custosv1.Officer{Name: o.name, PublicKey: governance.MarshalPublicKey(&k.PublicKey)})
	}
	e.open()
	t.Cleanup(e.close)
	return e, pub
}

// genesisStatement is a CreateCluster for officers with quorum 2, signed by
// the officers with the given indices.
func genesisStatement(t *testing.T, e *env, officers []*custosv1.Officer, clusterID string, signers ...int) *custosv1.SignedStatement {
	t.Helper()
	st, err := governance.NewStatement(clusterID, time.Hour, "our cluster")
	if err != nil {
		t.Fatal(err)
	}
	st.Operation = &custosv1.Statement_CreateCluster{CreateCluster: &custosv1.CreateCluster{Officers: officers, Quorum: 2}}
	b, err := governance.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	return e.signed(b, signers...)
}

// The officers sign the genesis themselves (docs/governance.md,
// Officer-signed genesis): a node given it initialises the cluster with
// their id, officers and quorum and nothing from its configuration; the
// GENESIS record carries the statement, and audit.Verify checks it and
// names its signers. A genesis short of the quorum, or an initialisation
// that differs from it, is refused.
func TestOfficerSignedGenesis(t *testing.T) {
	const clusterID = "0123456789abcdef0123456789abcdef"
	e, officers := genesisEnv(t)
	svc := func(g *custosv1.SignedStatement) *kms.Service {
		s, err := kms.NewService(kms.Config{NodeID: "node-1", HSM: e.hsm, Log: e.node, State: e.state, Logger: quiet,
			Auditors: []string{"auditor"}, Genesis: g})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if err := svc(genesisStatement(t, e, officers, clusterID, 0)).InitCluster(bg, nil, 0); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("a genesis signed by one officer of a quorum of two: %v", err)
	}
	// An operator's edit after the officers signed: another officer set.
	forged := genesisStatement(t, e, officers, clusterID, 0, 1)
	st, _ := governance.Parse(forged.Statement)
	st.GetCreateCluster().Quorum = 1
	forged.Statement, _ = governance.Marshal(st)
	if err := svc(forged).InitCluster(bg, nil, 0); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("a genesis changed after signing: %v", err)
	}
	// The state machine checks it too: an InitCluster naming other
	// officers than the signed genesis it carries.
	good := genesisStatement(t, e, officers, clusterID, 0, 2)
	res, err := e.node.Apply(bg, &raftlogv1.Command{Node: "node-1", Principal: "custosd", TimeUnixNano: time.Now().UnixNano(),
		Op: &raftlogv1.Command_InitCluster{InitCluster: &raftlogv1.InitCluster{ClusterId: clusterID, DomainKeyId: []byte("custos/domain/x"),
			DomainKeyCheckValue: make([]byte, 3), Officers: officers[:1], Quorum: 1, GenesisStatement: good}}})
	if err == nil {
		err, _ = res.(error)
	}
	if !errors.Is(err, kms.ErrInvalidArgument) || e.state.ClusterID() != "" {
		t.Fatalf("an initialisation that differs from its genesis statement: %v (cluster %q)", err, e.state.ClusterID())
	}
	if err := svc(good).InitCluster(bg, officers[:1], 1); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("a genesis and configured officers: %v", err)
	}

	e.svc = svc(good)
	if err := e.svc.InitCluster(bg, nil, 0); err != nil {
		t.Fatalf("InitCluster from the officers' genesis: %v", err)
	}
	if e.state.ClusterID() != clusterID {
		t.Fatalf("cluster id %q, want the officers' %q", e.state.ClusterID(), clusterID)
	}
	g := recordAt(t, e, 1)
	if g.Operation != custosv1.Operation_OPERATION_GENESIS || g.GetGenesis().GetStatement() == nil || g.GetGenesis().GetQuorum() != 2 {
		t.Fatalf("record 1: %v", g)
	}
	// The officers it named govern: two of them revoke-and-enable as usual.
	createKey(t, e, "k")
	if _, err := e.govern(revokeKey("k"), 1); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.EnsureCheckpointKey(bg); err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify(bytes.NewReader(exportOf(t, e)), publishedKeys(t, e))
	if err != nil || !slices.Equal(rep.GenesisSigners, []string{"officer-1", "officer-3"}) {
		t.Fatalf("audit of an officer-signed genesis: %v, signers %v", err, rep.GenesisSigners)
	}
}
