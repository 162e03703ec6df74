package kms_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"github.com/custos-kms/custos/raft"
)

// configEntry is a Raft configuration entry at index of "id suffrage addr"
// servers, appended at time at.
func configEntry(index uint64, at int64, servers ...string) raft.AppliedEntry {
	c := &raft.Configuration{AppendedAtUnixNano: at}
	for _, s := range servers {
		f := strings.Fields(s)
		c.Servers = append(c.Servers, raft.Server{ID: f[0], Suffrage: f[1], Addr: f[2]})
	}
	return raft.AppliedEntry{Index: index, Configuration: c}
}

// records returns the stored bytes of records from..to.
func records(t *testing.T, s *kms.State, from, to uint64) [][]byte {
	t.Helper()
	var out [][]byte
	if err := s.ScanRecords(from, func(seq uint64, data []byte) error {
		if seq <= to {
			out = append(out, bytes.Clone(data))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// Every change of the Raft membership is a ledger record at the position
// of its configuration entry (docs/architecture.md, invariant 5), built
// from the entry and the previous configuration only: a replica restored
// from a snapshot records the next change exactly as one that applied the
// whole log.
func TestMembershipChangesAreRecorded(t *testing.T) {
	s, _ := emptyState(t)
	k, err := governance.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	initCmd := &raftlogv1.Command{Node: "n1", Principal: "admin", TimeUnixNano: 50, Op: &raftlogv1.Command_InitCluster{InitCluster: &raftlogv1.InitCluster{
		ClusterId: "c1", Officers: []*custosv1.Officer{{Name: "o1", PublicKey: governance.MarshalPublicKey(&k.PublicKey)}}, Quorum: 1,
		DomainKeyId: []byte("dk"), DomainKeyCheckValue: make([]byte, 16)}}}
	// The bootstrap configuration comes before the cluster (and its
	// ledger) exists: it is only remembered. The ledger starts with the
	// GENESIS record.
	out := s.ApplyBatch([]raft.AppliedEntry{
		configEntry(1, 0, "n1 Voter a1"),
		{Index: 2, Commands: []*raftlogv1.Command{initCmd}},
	})
	if len(out) != 2 || len(out[0]) != 0 || out[1][0] != nil {
		t.Fatalf("results %v", out)
	}
	if seq, _ := s.LedgerHead(); seq != 1 {
		t.Fatalf("bootstrap configuration and genesis recorded %d records, want the genesis only", seq)
	}
	if rec, err := s.DecisionRecord(1); err != nil || rec.Operation != custosv1.Operation_OPERATION_GENESIS || rec.Genesis.GetClusterId() != "c1" {
		t.Fatalf("record 1: %v, %v; want the GENESIS record", rec, err)
	}
	s.ApplyBatch([]raft.AppliedEntry{
		configEntry(3, 100, "n1 Voter a1", "n2 Voter a2"),
		configEntry(4, 200, "n1 Voter a1", "n2 Nonvoter a2", "n3 Nonvoter a3"),
	})
	snap := snapshotBytes(t, s)
	restored, _ := emptyState(t)
	if err := restored.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	later := []raft.AppliedEntry{
		configEntry(5, 300, "n1 Voter a1", "n2 Voter a2b"),
		configEntry(6, 400, "n1 Voter a1b", "n2 Voter a2b"),
		configEntry(7, 500, "n1 Voter a1b", "n2 Voter a2b"), // no change
	}
	s.ApplyBatch(later)
	restored.ApplyBatch(later)

	type want struct {
		index  uint64
		at     int64
		action string
		detail string
	}
	wants := []want{
		{3, 100, "add-voter", "server n2 at a2 added as Voter; configuration now: n1 Voter a1, n2 Voter a2"},
		{4, 200, "demote", "server n2 at a2 changed from Voter to Nonvoter; configuration now: n1 Voter a1, n2 Nonvoter a2, n3 Nonvoter a3"},
		{4, 200, "add-nonvoter", "server n3 at a3 added as Nonvoter"},
		{5, 300, "remove", "server n3 at a3 removed (was Nonvoter)"},
		{5, 300, "promote", "server n2 at a2b changed from Nonvoter to Voter (address was a2)"},
		{6, 400, "change-address", "server n1 moved from a1 to a1b; configuration now: n1 Voter a1b, n2 Voter a2b"},
	}
	seq, _ := s.LedgerHead()
	if seq != uint64(len(wants))+1 {
		t.Fatalf("%d records, want the genesis and %d", seq, len(wants))
	}
	for i, w := range wants {
		rec, err := s.DecisionRecord(uint64(i + 2))
		if err != nil {
			t.Fatal(err)
		}
		if rec.Operation != custosv1.Operation_OPERATION_MEMBERSHIP || rec.Outcome != custosv1.Outcome_OUTCOME_ALLOW ||
			rec.RaftIndex != w.index || rec.TimeUnixNano != w.at || rec.MatchedRule != "raft-configuration:"+w.action ||
			!strings.Contains(rec.Detail, w.detail) || rec.Principal != "" || rec.Key != "" || !rec.Notify {
			t.Errorf("record %d = %v\nwant %+v", i+2, rec, w)
		}
	}
	// The restored replica's records of the later entries are the same
	// bytes: the previous configuration travelled in the snapshot.
	a, b := records(t, s, 1, seq), records(t, restored, 1, seq)
	if len(a) != len(b) {
		t.Fatalf("restored replica has %d records, want %d", len(b), len(a))
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			t.Fatalf("record %d differs on the replica restored from a snapshot", i+1)
		}
	}
	if m := restored.Members(); len(m) != 2 || m[0].Address != "a1b" {
		t.Fatalf("restored members %v", m)
	}
}
