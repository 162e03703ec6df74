package kms_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/custos-kms/custos/kms/audit"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// Every applied statement's record carries it, and audit.Verify follows
// the officer set from the genesis through every set_officers: a statement
// applied under officers no record installed — here swapped in a node's
// snapshot behind a made-up restore, which the node then reported and
// "its" officers accepted — is reported (docs/ledger.md, Officers).
func TestAuditFollowsTheOfficers(t *testing.T) {
	e := newEnv(t)
	if err := e.svc.EnsureCheckpointKey(bg); err != nil {
		t.Fatal(err)
	}
	createKey(t, e, "k")
	// Honest: the officers raise their quorum to 3; one officer revokes.
	var officers []*custosv1.Officer
	for _, o := range e.officers {
		officers = append(officers, &custosv1.Officer{Name: o.name, PublicKey: governance.MarshalPublicKey(&o.key.PublicKey)})
	}
	if _, err := e.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_SetOfficers{SetOfficers: &custosv1.SetOfficers{Officers: officers, Quorum: 3}}
	}, 0, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := e.govern(revokeKey("k"), 2); err != nil {
		t.Fatal(err)
	}
	keys := publishedKeys(t, e)
	if rep, err := audit.Verify(bytes.NewReader(exportOf(t, e)), keys); err != nil {
		t.Fatalf("the officers' own statements: %v (%+v)", err, rep)
	}
	if rec := lastRecord(t, e); rec.GetSignedStatement() == nil {
		t.Fatalf("a governance record without its statement: %v", rec)
	}

	// The operator's snapshot: two officers' keys swapped for its own, and
	// a restore into this node that no file ever made.
	var fake []officer
	restoreID, sum := strings.Repeat("ab", 16), strings.Repeat("cd", 32)
	edited := editSnapshotState(t, snapshotBytes(t, e.state), func(st *raftlogv1.State) {
		for i := range 3 {
			k, err := governance.GenerateKey()
			if err != nil {
				t.Fatal(err)
			}
			fake = append(fake, officer{name: st.Governance.Officers[i].Name, key: k})
			st.Governance.Officers[i].PublicKey = governance.MarshalPublicKey(&k.PublicKey)
		}
		st.Restore = &custosv1.ClusterRestore{Node: "node-1", RestoreId: restoreID, SnapshotSha256: sum}
	})
	if err := e.state.Restore(bytes.NewReader(edited)); err != nil {
		t.Fatalf("a state claiming a fresh restore into this node is not checked until its RESTORE record: %v", err)
	}
	if _, err := e.node.Apply(bg, &raftlogv1.Command{Node: "node-1", Principal: "custosd", TimeUnixNano: time.Now().UnixNano(),
		Op: &raftlogv1.Command_ReportRestore{ReportRestore: &raftlogv1.ReportRestore{SnapshotSha256: sum}}}); err != nil {
		t.Fatal(err)
	}
	e.officers = fake
	sign := func(op func(*custosv1.Statement)) {
		t.Helper()
		if _, err := e.govern(func(st *custosv1.Statement) { st.RestoreId = restoreID; op(st) }, 0, 1, 2); err != nil {
			t.Fatal(err)
		}
	}
	sign(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_AcceptRestore{AcceptRestore: &custosv1.AcceptRestore{SnapshotSha256: sum}}
	})
	accepted := lastRecord(t, e).Seq
	sign(enableKey("k")) // what the swap buys: the revoked key back
	rep, err := audit.Verify(bytes.NewReader(exportOf(t, e)), keys)
	if !errors.Is(err, audit.ErrBroken) || rep.Kind != audit.ProblemOfficers || rep.ProblemSeq != accepted {
		t.Fatalf("statements of officers no record installed: %v (%+v), want %s at %d", err, rep, audit.ProblemOfficers, accepted)
	}
}
