package kms_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// reportRestore is node's ReportRestore command for the file sum.
func reportRestore(node, sum string, at time.Time) *raftlogv1.Command {
	return &raftlogv1.Command{TimeUnixNano: at.UnixNano(), Node: node, Principal: "custosd",
		Op: &raftlogv1.Command_ReportRestore{ReportRestore: &raftlogv1.ReportRestore{SnapshotSha256: sum}}}
}

// restoreID is the restore id the test restores with.
var restoreID = strings.Repeat("5e", 16)

func acceptRestore(sum string) func(*custosv1.Statement) {
	return func(st *custosv1.Statement) {
		st.RestoreId = restoreID
		st.Operation = &custosv1.Statement_AcceptRestore{AcceptRestore: &custosv1.AcceptRestore{SnapshotSha256: sum}}
	}
}

// TestPrepareRestore: the payload a restored node starts from (restore.go)
// and the two commands that follow it, on every replica alike. The HSM
// and Raft halves run on real nodes (internal/node
// TestRestoreClusterFromSnapshot).
func TestPrepareRestore(t *testing.T) {
	r := newReplicas(t, 2) // initialised by node-2
	at := t0.Add(time.Minute)
	payload := snapshotBytes(t, r.states[0])
	sum := strings.Repeat("ab", 32)
	src := kms.SnapshotSource{SHA256: sum, ClusterID: clockCluster, Node: "node-2", Index: 7, Term: 2, Created: at}
	target := kms.RestoreTarget{Node: "node-2", RaftAddr: "10.0.0.2:7000", Now: at, ID: restoreID,
		VerifyDomainKey: func(k hsm.KeyRef) error {
			if string(k.ID) != "dk" {
				t.Errorf("verified domain key %q", k.ID)
			}
			return nil
		}}

	var out bytes.Buffer
	foreign := src
	foreign.ClusterID = "another"
	if _, err := kms.PrepareRestore(bytes.NewReader(payload), &out, foreign, target); err == nil || !strings.Contains(err.Error(), "another") {
		t.Fatalf("payload of another cluster than the header: %v", err)
	}
	if _, err := kms.PrepareRestore(strings.NewReader("custos-snapshot-v2\ngarbage"), &out, src, target); resultErr(err) == nil {
		t.Fatal("a garbage payload was prepared")
	}
	noDK := target
	noDK.VerifyDomainKey = func(hsm.KeyRef) error { return hsm.ErrKeyNotFound }
	_, err := kms.PrepareRestore(bytes.NewReader(payload), &out, src, noDK)
	wantErr(t, "HSM without the domain key", err, kms.ErrFailedPrecondition, "does not hold the cluster's domain key")

	out.Reset()
	info, err := kms.PrepareRestore(bytes.NewReader(payload), &out, src, target)
	if err != nil {
		t.Fatal(err)
	}
	if info.SnapshotSha256 != sum || info.Node != "node-2" || info.SourceRaftIndex != 7 || info.Reported || info.Accepted {
		t.Fatalf("restore record %v", info)
	}
	for _, s := range r.states {
		if err := s.Restore(bytes.NewReader(out.Bytes())); err != nil {
			t.Fatal(err)
		}
	}
	st := r.states[0]
	if got := st.RestoreInfo(); got.GetSnapshotSha256() != sum || got.GetAccepted() {
		t.Fatalf("restored state's restore record %v", got)
	}
	if m := st.Members(); len(m) != 1 || m[0].Id != "node-2" || m[0].Address != "10.0.0.2:7000" {
		t.Fatalf("restored membership %v", m)
	}
	if a := st.Admission("node-2"); a.GetState() != custosv1.AdmissionState_ADMISSION_STATE_ADMITTED {
		t.Fatalf("restored node's admission %v", a)
	}
	if _, err := st.Key("k"); err != nil {
		t.Fatalf("the snapshot's key: %v", err)
	}

	// The restored node records the restore once; nobody else can.
	wantErr(t, "report by another node", r.apply(reportRestore("node-3", sum, at))[0], kms.ErrPermissionDenied, "only the restored node")
	wantErr(t, "report of another file", r.apply(reportRestore("node-2", strings.Repeat("cd", 32), at))[0], kms.ErrFailedPrecondition, "not")
	seq, _ := st.LedgerHead()
	r.mustApply(reportRestore("node-2", sum, at))
	rec, err := st.DecisionRecord(seq + 1)
	if err != nil || rec.Operation != custosv1.Operation_OPERATION_RESTORE || rec.MatchedRule != "restore:restored" || !strings.Contains(rec.Detail, sum) {
		t.Fatalf("restore record %v, %v", rec, err)
	}
	wantErr(t, "second report", r.apply(reportRestore("node-2", sum, at))[0], kms.ErrFailedPrecondition, "already recorded")

	// Officers accept it: the quorum, naming this file.
	one := r.sign(at.Add(time.Hour), acceptRestore(sum))
	one.Signatures = one.Signatures[:1]
	wantErr(t, "one officer accepts", r.apply(governAt(at, one))[0], kms.ErrPermissionDenied, "signature")
	wantErr(t, "accept another file", r.apply(governAt(at, r.sign(at.Add(time.Hour), acceptRestore(strings.Repeat("cd", 32)))))[0],
		kms.ErrFailedPrecondition, "restored from snapshot")
	r.mustApply(governAt(at, r.sign(at.Add(time.Hour), acceptRestore(sum))))
	if got := st.RestoreInfo(); !got.GetAccepted() || got.GetAcceptTimeUnixNano() != at.UnixNano() {
		t.Fatalf("after acceptance: %v", got)
	}
	wantErr(t, "accept twice", r.apply(governAt(at, r.sign(at.Add(time.Hour), acceptRestore(sum))))[0], kms.ErrFailedPrecondition, "already accepted")
	if g := st.Governance(); g.RestoreId != restoreID {
		t.Fatalf("governance restore id %q", g.RestoreId)
	}
	// Statements must name the restore: one signed before it (without the
	// id) or for another restore is refused, so nothing can be replayed
	// into the rolled-back state.
	revoke := func(id string) *raftlogv1.Command {
		return governAt(at, oneOfficer(r.sign(at.Add(time.Hour), func(s *custosv1.Statement) {
			s.RestoreId = id
			s.Operation = &custosv1.Statement_RevokeKey{RevokeKey: &custosv1.RevokeKey{Key: "k"}}
		})))
	}
	wantErr(t, "a statement without the restore id", r.apply(revoke(""))[0], kms.ErrFailedPrecondition, "must name it")
	wantErr(t, "a statement for another restore", r.apply(revoke(strings.Repeat("ab", 16)))[0], kms.ErrFailedPrecondition, "latest restore is")
	r.mustApply(revoke(restoreID))

	// The same file restored again: a new restore id, and the acceptance
	// of the first restore, replayed, is refused.
	replay := governAt(at, r.sign(at.Add(time.Hour), acceptRestore(sum)))
	again := target
	again.ID = strings.Repeat("77", 16)
	out.Reset()
	if _, err := kms.PrepareRestore(bytes.NewReader(payload), &out, src, again); err != nil {
		t.Fatal(err)
	}
	r2 := &replicas{t: t, officers: r.officers, index: r.index}
	for range 2 {
		s, _ := emptyState(t)
		if err := s.Restore(bytes.NewReader(out.Bytes())); err != nil {
			t.Fatal(err)
		}
		r2.states = append(r2.states, s)
	}
	wantErr(t, "the first restore's acceptance replayed", r2.apply(replay)[0], kms.ErrFailedPrecondition, "latest restore is")
	if r2.states[0].RestoreInfo().GetAccepted() {
		t.Fatal("a replayed acceptance accepted the second restore")
	}

	// A cluster that was never restored has nothing to report or accept.
	fresh := newReplicas(t, 1)
	wantErr(t, "accept without a restore", fresh.apply(governAt(at, fresh.sign(at.Add(time.Hour), func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_AcceptRestore{AcceptRestore: &custosv1.AcceptRestore{SnapshotSha256: sum}}
	})))[0], kms.ErrFailedPrecondition, "not restored")
	wantErr(t, "a restore id on a cluster never restored", fresh.apply(governAt(at, fresh.sign(at.Add(time.Hour), acceptRestore(sum))))[0],
		kms.ErrFailedPrecondition, "was not restored")
	wantErr(t, "report without a restore", fresh.apply(reportRestore("node-2", sum, at))[0], kms.ErrFailedPrecondition, "not restored")
}
