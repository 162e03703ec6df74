package kms_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/audit"
	"github.com/custos-kms/custos/kms/governance"
	"github.com/custos-kms/custos/kms/ledger"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// forgeNewestDigest rewrites the newest digest-carrying record of the
// node's ledger so that it carries the digest of the state as it is now:
// what an operator who edited the state and rewrote the ledger to match
// would leave (the chain it breaks is the auditors' and the witness's to
// see, not the start check's).
func forgeNewestDigest(t *testing.T, e *env) {
	t.Helper()
	var recs []ledger.Record
	newest := -1
	if err := e.led.Scan(1, func(seq uint64, data []byte) error {
		r := &custosv1.DecisionRecord{}
		if err := proto.Unmarshal(data, r); err != nil {
			return err
		}
		if len(r.StateDigest) > 0 {
			newest = len(recs)
		}
		recs = append(recs, ledger.Record{Seq: seq, Data: append([]byte(nil), data...)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	r := &custosv1.DecisionRecord{}
	if err := proto.Unmarshal(recs[newest].Data, r); err != nil {
		t.Fatal(err)
	}
	r.StateDigest = e.state.StateDigest()
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	recs[newest].Data = data
	if err := e.led.Replace(recs, nil); err != nil {
		t.Fatal(err)
	}
}

// A node recomputes the governed state from its own ledger — the genesis,
// the officers' statements and the key administration records, with the
// auditor's code — and compares it with the state it holds
// (docs/ledger.md, Recomputed state): an honest state passes, also after
// a restart; a state edited outside the log is refused even when the
// ledger's state digests were rewritten to match it, which the digest
// check alone accepts.
func TestVerifyRecomputed(t *testing.T) {
	e := newEnv(t)
	if err := e.svc.EnsureCheckpointKey(bg); err != nil {
		t.Fatal(err)
	}
	createKey(t, e, "k")
	createKey(t, e, "k2")
	dk := dataKey(t, e, "k", nil)
	if _, err := decrypt(e, dk.WrappedDataKey, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.RotateKey(bg, app, &custosv1.RotateKeyRequest{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	p := kms.DefaultPolicy(app.Name)
	p.DecryptPrincipals = append(p.DecryptPrincipals, "batch")
	if _, err := e.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "k", Policy: p}}
	}, 0, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := e.govern(revokeKey("k2"), 2); err != nil {
		t.Fatal(err)
	}
	if _, err := e.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_ScheduleKeyDestruction{ScheduleKeyDestruction: &custosv1.ScheduleKeyDestruction{Key: "k", Version: 1}}
	}, 0, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := decrypt(e, dk.WrappedDataKey, nil); err == nil {
		t.Fatal("a version scheduled for destruction decrypted")
	}
	checkpointDigest(t, e)
	check := func(what string) *kms.Recheck {
		t.Helper()
		rc, err := e.state.VerifyRecomputed()
		if err != nil || !rc.Checked || rc.Keys != 2 || len(rc.NotPermitted) != 0 {
			t.Fatalf("%s: %v (%+v), want checked, 2 keys, nothing not permitted", what, err, rc)
		}
		return rc
	}
	check("honest state")
	e.restart()
	check("after a restart")

	// The operator adds itself to k's policy in the state and rewrites
	// the ledger's newest digest to match: the digest check passes, the
	// recomputation does not.
	e.state.EditPolicyForTest("k", func(p *custosv1.KeyPolicy) { p.DecryptPrincipals = append(p.DecryptPrincipals, "operator") })
	forgeNewestDigest(t, e)
	if checked, _, err := e.state.VerifyStateDigest("node-1"); !checked || err != nil {
		t.Fatalf("the forged digest: checked %v, %v; want it to pass (the point of this test)", checked, err)
	}
	_, err := e.state.VerifyRecomputed()
	if !errors.Is(err, kms.ErrNotRecomputed) || !strings.Contains(err.Error(), `key "k": its policy`) {
		t.Fatalf("edited policy: %v, want ErrNotRecomputed naming key k's policy", err)
	}
	e.state.EditPolicyForTest("k", func(p *custosv1.KeyPolicy) { p.DecryptPrincipals = p.DecryptPrincipals[:len(p.DecryptPrincipals)-1] })
	check("edit undone")

	// The revoked key re-enabled, the destruction dropped: each is named.
	e.state.EditKeyForTest("k2", func(enabled, revoked *bool) { *revoked = false })
	if _, err := e.state.VerifyRecomputed(); !errors.Is(err, kms.ErrNotRecomputed) || !strings.Contains(err.Error(), `key "k2"`) {
		t.Fatalf("un-revoked key: %v, want ErrNotRecomputed naming k2", err)
	}
	e.state.EditKeyForTest("k2", func(enabled, revoked *bool) { *revoked = true })
	e.state.EditVersionForTest("k", 1, func(v *raftlogv1.KeyVersionRecord) { v.DestroyAfterUnixNano = 0 })
	if _, err := e.state.VerifyRecomputed(); !errors.Is(err, kms.ErrNotRecomputed) || !strings.Contains(err.Error(), "version 1: its destruction state") {
		t.Fatalf("destruction dropped: %v, want ErrNotRecomputed naming version 1", err)
	}
}

// A cluster still at state machine version 2 (a rolling upgrade) verifies
// statements as version 2 did: a WebAuthn assertion someone attached to
// an officer's ECDSA signature is ignored, not recorded (as a version 2
// release recorded none), and the recomputation verifies the record as
// version 2 did — the node starts, and the export verifies.
func TestRecomputationFollowsTheVersion(t *testing.T) {
	e := newEnvVersion(t, 2)
	if err := e.svc.EnsureCheckpointKey(bg); err != nil {
		t.Fatal(err)
	}
	createKey(t, e, "k")
	var officers []*custosv1.Officer
	for _, o := range e.officers {
		officers = append(officers, &custosv1.Officer{Name: o.name, PublicKey: governance.MarshalPublicKey(&o.key.PublicKey)})
	}
	ss := e.signed(e.statement(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_SetOfficers{SetOfficers: &custosv1.SetOfficers{Officers: officers, Quorum: 3}}
	}), 0, 1)
	ss.Signatures[0].Webauthn = &custosv1.WebAuthnAssertion{CredentialId: []byte("junk"), Signature: []byte("junk")}
	if _, err := e.svc.Submit(bg, kms.Principal{Name: "anyone"}, ss); err != nil {
		t.Fatalf("Submit at version 2: %v", err)
	}
	if q := e.state.Governance().GetQuorum(); q != 3 {
		t.Fatalf("quorum %d, want 3 (the statement applied)", q)
	}
	if rec := lastRecord(t, e); rec.GetSignedStatement().GetSignatures()[0].GetWebauthn() != nil {
		t.Fatal("version 2 recorded a WebAuthn assertion")
	}
	if rc, err := e.state.VerifyRecomputed(); err != nil || !rc.Checked {
		t.Fatalf("VerifyRecomputed: %v (%+v): the node would refuse to start", err, rc)
	}
	checkpointDigest(t, e)
	if rep, err := audit.Verify(bytes.NewReader(exportOf(t, e)), publishedKeys(t, e)); err != nil {
		t.Fatalf("honest export: audit.Verify: %v (kind %s)", err, rep.Kind)
	}
}

// A witness's last cosignature decides whether a key that requires a fresh
// one releases, and it is outside the state digest: the start check
// compares the witnesses — their keys and last cosignatures — with the
// records, so a snapshot edit that makes the witness "cosign just now", or
// swaps its key for the operator's, is refused at start.
func TestVerifyRecomputedWitnesses(t *testing.T) {
	e := newEnv(t)
	if err := e.svc.EnsureCheckpointKey(bg); err != nil {
		t.Fatal(err)
	}
	wkey, err := governance.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_AddWitness{AddWitness: &custosv1.AddWitness{Witness: &custosv1.Witness{
			Name: "w", PublicKey: governance.MarshalPublicKey(&wkey.PublicKey)}}}
	}, 0, 1); err != nil {
		t.Fatal(err)
	}
	if rc, err := e.state.VerifyRecomputed(); err != nil || !rc.Checked {
		t.Fatalf("honest: %v (%+v)", err, rc)
	}
	head, _ := e.state.LedgerHead()
	cluster := e.state.ClusterID()
	e.state.EditWitnessForTest("w", func(w *custosv1.Witness) {
		w.Last = &custosv1.Cosignature{ClusterId: cluster, Witness: "w", Seq: head, Head: make([]byte, 32), TimeUnixNano: time.Now().UnixNano()}
	})
	if _, err := e.state.VerifyRecomputed(); !errors.Is(err, kms.ErrNotRecomputed) || !strings.Contains(err.Error(), "last cosignature") {
		t.Fatalf("a cosignature no record holds: %v, want ErrNotRecomputed", err)
	}
	other, err := governance.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	e.state.EditWitnessForTest("w", func(w *custosv1.Witness) {
		w.Last, w.PublicKey = nil, governance.MarshalPublicKey(&other.PublicKey)
	})
	if _, err := e.state.VerifyRecomputed(); !errors.Is(err, kms.ErrNotRecomputed) || !strings.Contains(err.Error(), `witness "w"`) {
		t.Fatalf("the operator's key for the witness: %v, want ErrNotRecomputed", err)
	}
}
