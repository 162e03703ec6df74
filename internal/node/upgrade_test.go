package node_test

import (
	"bytes"
	"testing"

	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/audit"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// A rolling upgrade (docs/upgrades.md): three nodes of a release that
// applies state machine version 1 only are replaced one at a time by the
// current release. The cluster serves throughout and keeps writing version
// 1 records, identical on every replica, until the last node reports that
// it can apply version 2; then the leader moves the cluster, a
// STATE_MACHINE_UPGRADE record says so, later records are of version 2,
// the whole ledger verifies offline, and a restarted node checks its state
// against the new digests.
func TestRollingUpgradeOfTheStateMachine(t *testing.T) {
	c := nodetest.StartCustodians(t, 3, func(_ int, cfg *node.Config) { cfg.MaxStateMachineVersion = 1 })
	state := func(i int) *kms.State { return c.Members[i].Node.Service().State() }
	kc := func(i int) custosv1.KeyServiceClient { return custosv1.NewKeyServiceClient(c.Conn(t, i, "app")) }
	if v := state(0).StateMachineVersion(); v != 1 {
		t.Fatalf("a cluster of version-1 nodes runs version %d", v)
	}
	if _, err := kc(c.Leader()).CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: "before"}); err != nil {
		t.Fatal(err)
	}
	dk, err := kc(c.Leader()).GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: "before"})
	if err != nil {
		t.Fatal(err)
	}
	decrypt := func(i int) {
		t.Helper()
		if _, err := kc(i).Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: dk.WrappedDataKey,
			Justification: &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED}}); err != nil {
			t.Fatalf("decrypt through node %d: %v", i, err)
		}
	}
	lastOf := func(i int, op custosv1.Operation) *custosv1.DecisionRecord {
		t.Helper()
		head, _ := state(i).LedgerHead()
		for seq := head; seq >= 1; seq-- {
			if r, err := state(i).DecisionRecord(seq); err == nil && r.Operation == op {
				return r
			}
		}
		return nil
	}
	if r := lastOf(0, custosv1.Operation_OPERATION_CREATE_KEY); r == nil || r.StateDigestVersion != 0 || len(r.StateDigestBefore) != 0 {
		t.Fatalf("a version 1 key creation: %v", r)
	}
	if r := lastOf(0, custosv1.Operation_OPERATION_NODE_KEY); r != nil {
		t.Fatalf("version 1 wrote a NODE_KEY record: %v", r)
	}

	// Followers first, the leader last.
	order := []int{}
	for i := range c.Members {
		if i != c.Leader() {
			order = append(order, i)
		}
	}
	order = append(order, c.Leader())
	for n, i := range order {
		c.Kill(t, i)
		c.Members[i].Config.MaxStateMachineVersion = 0 // the new release
		c.Restart(t, i)
		id := c.Members[i].Config.ID
		waitFor(t, id+"'s report", func() bool { return state(i).ReportedStateMachineVersions()[id] == kms.StateMachineVersion })
		if n < len(order)-1 {
			if v := state(i).StateMachineVersion(); v != 1 {
				t.Fatalf("after upgrading %d of 3 nodes the cluster runs version %d", n+1, v)
			}
		}
		decrypt(c.Leader())
		decrypt(i)
	}
	for i := range c.Members {
		waitFor(t, "the newest version on every node", func() bool { return state(i).StateMachineVersion() == kms.StateMachineVersion })
	}
	up := lastOf(0, custosv1.Operation_OPERATION_STATE_MACHINE_UPGRADE)
	if up == nil || up.StateDigestVersion != kms.StateDigestVersion || len(up.StateDigest) != 32 || len(up.RegisteredNodeKeys) != 3 {
		t.Fatalf("upgrade record %v", up)
	}
	if _, err := kc(c.Leader()).CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: "after"}); err != nil {
		t.Fatal(err)
	}
	after := lastOf(c.Leader(), custosv1.Operation_OPERATION_CREATE_KEY)
	if after.Key != "after" || after.StateDigestVersion != kms.StateDigestVersion || len(after.StateDigestBefore) != 32 {
		t.Fatalf("a key creation after the upgrade: %v", after)
	}
	// Every replica wrote the same records.
	for i := range c.Members {
		waitFor(t, "replicas caught up", func() bool {
			h, _ := state(i).LedgerHead()
			return h >= after.Seq
		})
		r, err := state(i).DecisionRecord(after.Seq)
		if err != nil || r.StateDigest == nil || !bytes.Equal(r.StateDigest, after.StateDigest) {
			t.Fatalf("node %d's record %d: %v, %v", i, after.Seq, r, err)
		}
	}

	// The whole ledger, both versions, verifies.
	ac := custosv1.NewAuditServiceClient(c.Conn(t, c.Leader(), nodetest.Auditor))
	cp, err := ac.GetCheckpoint(ctx(t), &custosv1.GetCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := audit.ParseKeys(cp.GetPublicKeys())
	if err != nil {
		t.Fatal(err)
	}
	st, err := ac.Export(ctx(t), &custosv1.ExportRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var file bytes.Buffer
	if _, err := audit.Copy(&file, st.Recv); err != nil {
		t.Fatal(err)
	}
	if rep, err := audit.Verify(bytes.NewReader(file.Bytes()), keys); err != nil {
		t.Fatalf("the export across the upgrade: %v (%+v)", err, rep)
	}

	// A node restarted now checks its state against a version 2 digest.
	f := order[0]
	c.Kill(t, f)
	c.Restart(t, f)
	if checked, _, err := state(f).VerifyStateDigest(c.Members[f].Config.ID); !checked || err != nil {
		t.Fatalf("after the upgrade, a restarted node's state check: %v, %v", checked, err)
	}
}
