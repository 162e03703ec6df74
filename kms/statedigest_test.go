package kms_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/audit"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// exportOf exports e's ledger from seq 1 as the auditor.
func exportOf(t *testing.T, e *env) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := audit.NewWriter(&buf)
	if err := e.svc.Export(bg, auditor, &custosv1.ExportRequest{}, w.WriteItem); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// checkpointDigest signs a checkpoint and returns its record's state digest.
func checkpointDigest(t *testing.T, e *env) []byte {
	t.Helper()
	if _, err := e.svc.Checkpoint(bg); err != nil {
		t.Fatal(err)
	}
	rec := lastRecord(t, e)
	if rec.Operation != custosv1.Operation_OPERATION_CHECKPOINT || len(rec.StateDigest) != 32 {
		t.Fatalf("last record is not a checkpoint with a state digest: %v", rec)
	}
	return rec.StateDigest
}

// Checkpoint records carry a digest of the governed state: decisions do
// not change it, governance does, and a state changed outside the log (an
// edited snapshot: a revoked key re-enabled) changes it with no record to
// account for it, which audit.Verify reports.
func TestStateDigestShowsEditsOutsideTheLog(t *testing.T) {
	e := newEnv(t)
	if err := e.svc.EnsureCheckpointKey(bg); err != nil {
		t.Fatal(err)
	}
	createKey(t, e, "k")
	dk := dataKey(t, e, "k", nil)
	if _, err := e.govern(revokeKey("k"), 2); err != nil {
		t.Fatal(err)
	}
	d1 := checkpointDigest(t, e)
	if _, err := decrypt(e, dk.WrappedDataKey, nil); !errors.Is(err, kms.ErrFailedPrecondition) {
		t.Fatalf("decrypt under a revoked key: %v", err)
	}
	d2 := checkpointDigest(t, e)
	if !bytes.Equal(d1, d2) {
		t.Fatal("a decision changed the state digest")
	}
	keys, err := audit.ParseKeys(func() [][]byte {
		r, err := e.svc.GetCheckpoint(bg, auditor, &custosv1.GetCheckpointRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return r.PublicKeys
	}())
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := audit.Verify(bytes.NewReader(exportOf(t, e)), keys); err != nil {
		t.Fatalf("the untouched ledger: %v (%+v)", err, rep)
	}
	// The officers re-enable it: a governance record accounts for the
	// change.
	if _, err := e.govern(enableKey("k"), 0, 1); err != nil {
		t.Fatal(err)
	}
	d3 := checkpointDigest(t, e)
	if bytes.Equal(d2, d3) {
		t.Fatal("re-enabling a key did not change the state digest")
	}
	if _, err := audit.Verify(bytes.NewReader(exportOf(t, e)), keys); err != nil {
		t.Fatalf("a state changed by a statement: %v", err)
	}
	// The operator revokes... no: re-enables a key the officers revoke,
	// outside the log.
	if _, err := e.govern(revokeKey("k"), 2); err != nil {
		t.Fatal(err)
	}
	checkpointDigest(t, e)
	e.state.EditKeyForTest("k", func(enabled, revoked *bool) { *enabled, *revoked = true, false })
	if _, err := decrypt(e, dk.WrappedDataKey, nil); err != nil {
		t.Fatalf("decrypt after the edit (what the edit buys the operator): %v", err)
	}
	edited := checkpointDigest(t, e)
	rep, err := audit.Verify(bytes.NewReader(exportOf(t, e)), keys)
	if !errors.Is(err, audit.ErrBroken) || rep.Kind != audit.ProblemStateEdited || rep.ProblemSeq != lastRecord(t, e).Seq {
		t.Fatalf("the edited state: %v (%+v), want %s at the last checkpoint", err, rep, audit.ProblemStateEdited)
	}
	if !bytes.Equal(edited, e.state.StateDigest()) {
		t.Fatal("StateDigest differs from the last checkpoint's")
	}
}

// A node checks the state it loaded against its ledger's newest
// checkpoint: an edited state is ErrStateMismatch; when a state-changing
// record follows the checkpoint it cannot tell, and says so.
func TestVerifyStateDigest(t *testing.T) {
	e := newEnv(t)
	if err := e.svc.EnsureCheckpointKey(bg); err != nil {
		t.Fatal(err)
	}
	createKey(t, e, "k")
	// The CREATE_KEY record carries the digest of the state after it.
	if checked, _, err := e.state.VerifyStateDigest("node-1"); !checked || err != nil {
		t.Fatalf("after a key creation: checked %v, %v", checked, err)
	}
	dk := dataKey(t, e, "k", nil)
	if _, err := e.govern(revokeKey("k"), 2); err != nil {
		t.Fatal(err)
	}
	checkpointDigest(t, e)
	_, _ = decrypt(e, dk.WrappedDataKey, nil) // a DENY record: not state-changing
	checked, at, err := e.state.VerifyStateDigest("node-1")
	if !checked || err != nil || at == 0 {
		t.Fatalf("untouched state: checked %v at %d, %v", checked, at, err)
	}
	// A restart (log replay or snapshot) verifies too.
	e.restart()
	if checked, _, err := e.state.VerifyStateDigest("node-1"); !checked || err != nil {
		t.Fatalf("after a restart: checked %v, %v", checked, err)
	}
	e.state.EditKeyForTest("k", func(enabled, revoked *bool) { *enabled, *revoked = true, false })
	if _, _, err := e.state.VerifyStateDigest("node-1"); !errors.Is(err, kms.ErrStateMismatch) {
		t.Fatalf("edited state: %v, want ErrStateMismatch", err)
	}
	// An edit right after a state-changing record (any principal can make
	// one: a key creation) is caught too: that record carries the digest
	// of the state after it.
	e2 := newEnv(t)
	if err := e2.svc.EnsureCheckpointKey(bg); err != nil {
		t.Fatal(err)
	}
	createKey(t, e2, "k")
	if _, err := e2.govern(revokeKey("k"), 2); err != nil {
		t.Fatal(err)
	}
	checkpointDigest(t, e2)
	createKey(t, e2, "k2")
	if checked, _, err := e2.state.VerifyStateDigest("node-1"); !checked || err != nil {
		t.Fatalf("after a key creation that follows the checkpoint: checked %v, %v", checked, err)
	}
	e2.state.EditKeyForTest("k", func(enabled, revoked *bool) { *enabled, *revoked = true, false })
	if _, _, err := e2.state.VerifyStateDigest("node-1"); !errors.Is(err, kms.ErrStateMismatch) {
		t.Fatalf("edited after a key creation: %v, want ErrStateMismatch", err)
	}
}

// `custosd restore` checks a snapshot file's state against its own ledger
// tail's newest state digest: a file whose state was edited is refused.
func TestPrepareRestoreRefusesEditedState(t *testing.T) {
	e := newEnv(t)
	if err := e.svc.EnsureCheckpointKey(bg); err != nil {
		t.Fatal(err)
	}
	createKey(t, e, "k")
	if _, err := e.govern(revokeKey("k"), 2); err != nil {
		t.Fatal(err)
	}
	checkpointDigest(t, e)
	payload := snapshotBytes(t, e.state)

	// The operator's edit: the revoked key enabled again in the state item.
	const magic = "custos-snapshot-v2\n"
	if !bytes.HasPrefix(payload, []byte(magic)) {
		t.Fatalf("payload starts %q", payload[:20])
	}
	body := payload[len(magic):]
	n, k := binary.Uvarint(body)
	st := &raftlogv1.State{}
	if err := proto.Unmarshal(body[k:k+int(n)], st); err != nil {
		t.Fatal(err)
	}
	for _, key := range st.Keys {
		if key.Name == "k" {
			key.Revoked, key.Enabled = false, true
		}
	}
	edited, err := proto.MarshalOptions{Deterministic: true}.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	forged := append([]byte(magic), binary.AppendUvarint(nil, uint64(len(edited)))...)
	forged = append(append(forged, edited...), body[k+int(n):]...)

	src := kms.SnapshotSource{SHA256: strings.Repeat("ab", 32), ClusterID: e.svc.ClusterID(), Node: "node-1", Index: 7, Term: 2, Created: time.Now()}
	target := kms.RestoreTarget{Node: "node-1", RaftAddr: "127.0.0.1:7000", Now: time.Now(), ID: strings.Repeat("cd", 16),
		VerifyDomainKey: func(hsm.KeyRef) error { return nil }}
	var out bytes.Buffer
	if _, err := kms.PrepareRestore(bytes.NewReader(payload), &out, src, target); err != nil {
		t.Fatalf("the untouched file: %v", err)
	}
	out.Reset()
	_, err = kms.PrepareRestore(bytes.NewReader(forged), &out, src, target)
	if !errors.Is(err, kms.ErrFailedPrecondition) || !strings.Contains(err.Error(), "changed outside the log") {
		t.Fatalf("the edited file: %v, want it refused for its state digest", err)
	}
}

// A state that claims an unrecorded restore is not spared the check unless
// it is a restore into this very node, not yet accepted (its RESTORE record
// comes first thing).
func TestVerifyStateDigestRestoreClaims(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	e.state.SetRestoreForTest(&custosv1.ClusterRestore{Node: "ghost", Accepted: true})
	if _, _, err := e.state.VerifyStateDigest("node-1"); !errors.Is(err, kms.ErrStateMismatch) {
		t.Fatalf("a restore into another node that no record shows: %v, want ErrStateMismatch", err)
	}
	e.state.SetRestoreForTest(&custosv1.ClusterRestore{Node: "node-1", Accepted: true, RestoreId: strings.Repeat("ab", 16)})
	if _, _, err := e.state.VerifyStateDigest("node-1"); !errors.Is(err, kms.ErrStateMismatch) {
		t.Fatalf("an accepted restore that no record shows: %v, want ErrStateMismatch", err)
	}
	e.state.SetRestoreForTest(&custosv1.ClusterRestore{Node: "node-1", RestoreId: strings.Repeat("ab", 16)})
	if checked, _, err := e.state.VerifyStateDigest("node-1"); checked || err != nil {
		t.Fatalf("a fresh restore into this node: checked %v, %v; want not checked until its RESTORE record", checked, err)
	}
	// A node catching up with a cluster restored into another node, before
	// the RESTORE record reaches it: not accepted, so it serves no key
	// crypto, and only that node could report it.
	e.state.SetRestoreForTest(&custosv1.ClusterRestore{Node: "node-2", RestoreId: strings.Repeat("ab", 16)})
	if checked, _, err := e.state.VerifyStateDigest("node-1"); checked || err != nil {
		t.Fatalf("a fresh restore into another node: checked %v, %v; want not checked", checked, err)
	}
	if _, err := e.svc.GenerateDataKey(bg, app, &custosv1.GenerateDataKeyRequest{Key: "k"}); !errors.Is(err, kms.ErrFailedPrecondition) {
		t.Fatalf("key crypto under an unaccepted restore: %v, want FailedPrecondition", err)
	}
}

// Grants are governed state: each use is a record carrying the digest
// after it, so a grant injected into a snapshot (or one whose uses were
// reset) is an edit the start check refuses and an export shows.
func TestStateDigestCoversGrants(t *testing.T) {
	e := newEnv(t)
	if err := e.svc.EnsureCheckpointKey(bg); err != nil {
		t.Fatal(err)
	}
	createKey(t, e, "k")
	dk := dataKey(t, e, "k", nil)
	const provider = "provider-support"
	third := custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST
	p := kms.DefaultPolicy(app.Name)
	p.DecryptPrincipals = append(p.DecryptPrincipals, provider)
	if _, err := e.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "k", Policy: p}}
	}, 0, 1); err != nil {
		t.Fatal(err)
	}
	g, err := e.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_CreateGrant{CreateGrant: &custosv1.CreateGrant{Principal: provider, Key: "k", Reason: third, Uses: 2, TtlSeconds: 600}}
	}, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	before := e.state.StateDigest()
	if _, err := decryptAs(e, provider, dk.WrappedDataKey, third); err != nil {
		t.Fatalf("decrypt under the grant: %v", err)
	}
	rec := lastRecord(t, e)
	if !audit.UsesGrant(rec) || len(rec.StateDigest) != 32 || rec.StateDigestVersion != kms.StateDigestVersion ||
		bytes.Equal(rec.StateDigest, before) || !bytes.Equal(rec.StateDigest, e.state.StateDigest()) {
		t.Fatalf("a grant's use: record %v; want it to carry the digest after the use", rec)
	}
	if checked, _, err := e.state.VerifyStateDigest("node-1"); !checked || err != nil {
		t.Fatalf("after a grant's use: checked %v, %v", checked, err)
	}
	// Its last use ends it: a record again.
	if _, err := decryptAs(e, provider, dk.WrappedDataKey, third); err != nil {
		t.Fatal(err)
	}
	if checked, _, err := e.state.VerifyStateDigest("node-1"); !checked || err != nil {
		t.Fatalf("after a grant's last use: checked %v, %v", checked, err)
	}
	keys := publishedKeys(t, e)
	if _, err := audit.Verify(bytes.NewReader(exportOf(t, e)), keys); err != nil {
		t.Fatalf("the untouched ledger: %v", err)
	}

	// The operator's edits: a used-up grant's uses reset ...
	e.state.InjectGrantForTest(&custosv1.Grant{GrantId: g.GrantId, Principal: provider, Key: "k", Reason: third, UsesLeft: 2,
		ExpireTimeUnixNano: time.Now().Add(time.Hour).UnixNano()})
	if _, _, err := e.state.VerifyStateDigest("node-1"); !errors.Is(err, kms.ErrStateMismatch) {
		t.Fatalf("a used-up grant back in the state: %v, want ErrStateMismatch", err)
	}
	// ... or a grant no statement created. Either releases a key
	// (what the edit buys), and the use's record shows the edit.
	e2 := newEnv(t)
	if err := e2.svc.EnsureCheckpointKey(bg); err != nil {
		t.Fatal(err)
	}
	createKey(t, e2, "k")
	dk2 := dataKey(t, e2, "k", nil)
	if _, err := e2.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "k", Policy: p}}
	}, 0, 1); err != nil {
		t.Fatal(err)
	}
	e2.state.InjectGrantForTest(&custosv1.Grant{GrantId: "g-forged", Principal: provider, Key: "k", Reason: third, UsesLeft: 1,
		ExpireTimeUnixNano: time.Now().Add(time.Hour).UnixNano()})
	if _, _, err := e2.state.VerifyStateDigest("node-1"); !errors.Is(err, kms.ErrStateMismatch) {
		t.Fatalf("an injected grant: %v, want ErrStateMismatch", err)
	}
	if _, err := decryptAs(e2, provider, dk2.WrappedDataKey, third); err != nil {
		t.Fatalf("decrypt under the injected grant (what the edit buys): %v", err)
	}
	// The use's record carries a digest consistent with the edited state
	// (a node that skipped its start check), but no record created the
	// grant it names.
	rep, err := audit.Verify(bytes.NewReader(exportOf(t, e2)), publishedKeys(t, e2))
	if !errors.Is(err, audit.ErrBroken) || rep.Kind != audit.ProblemGrantUnaccounted || rep.ProblemSeq != lastRecord(t, e2).Seq {
		t.Fatalf("an export after a use of an injected grant: %v (%+v), want %s at the use", err, rep, audit.ProblemGrantUnaccounted)
	}
}

// publishedKeys returns the checkpoint keys e publishes, parsed.
func publishedKeys(t *testing.T, e *env) []*ecdsa.PublicKey {
	t.Helper()
	r, err := e.svc.GetCheckpoint(bg, auditor, &custosv1.GetCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := audit.ParseKeys(r.PublicKeys)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// A node's checkpoint key is registered by a NODE_KEY record naming it;
// one injected into a snapshot (which `custos audit pubkey` would then
// publish, and checkpoints it signs would verify under) is an edit.
func TestStateDigestCoversCheckpointKeys(t *testing.T) {
	e := newEnv(t)
	if err := e.svc.EnsureCheckpointKey(bg); err != nil {
		t.Fatal(err)
	}
	var reg *custosv1.DecisionRecord
	head, _ := e.state.LedgerHead()
	for seq := uint64(1); seq <= head && reg == nil; seq++ {
		if rec, err := e.state.DecisionRecord(seq); err == nil && rec.Operation == custosv1.Operation_OPERATION_NODE_KEY {
			reg = rec
		}
	}
	if reg == nil {
		t.Fatal("no NODE_KEY record")
	}
	r, err := e.svc.GetCheckpoint(bg, auditor, &custosv1.GetCheckpointRequest{})
	if err != nil || len(r.PublicKeys) != 1 || !bytes.Equal(reg.NodePublicKey, r.PublicKeys[0]) || reg.Node != "node-1" ||
		!audit.StateChanging(reg) || len(reg.StateDigest) != 32 {
		t.Fatalf("NODE_KEY record %v, published keys %v (%v)", reg, r.GetPublicKeys(), err)
	}
	// Registering it again (a restart) is no new record.
	if err := e.svc.EnsureCheckpointKey(bg); err != nil {
		t.Fatal(err)
	}
	if again, _ := e.state.LedgerHead(); again != head {
		t.Fatalf("re-registering the same key wrote records %d..%d", head+1, again)
	}
	other, err := governance.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&other.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	e.state.InjectNodeKeyForTest("node-1", der)
	if _, _, err := e.state.VerifyStateDigest("node-1"); !errors.Is(err, kms.ErrStateMismatch) {
		t.Fatalf("an injected checkpoint key: %v, want ErrStateMismatch", err)
	}
}
