package kms_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/governance"
	"github.com/custos-kms/custos/kms/ledger"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// cosign signs the head at seq as witness name with key, at time at.
func cosign(t *testing.T, e *env, key *ecdsa.PrivateKey, name string, seq uint64, at time.Time) *custosv1.Cosignature {
	t.Helper()
	raw, err := e.state.PeerRecords(seq, seq)
	if err != nil || len(raw) != 1 {
		t.Fatalf("record %d: %v", seq, err)
	}
	h := ledger.Hash(raw[0])
	cs := &custosv1.Cosignature{ClusterId: e.svc.ClusterID(), Witness: name, Seq: seq, Head: h[:], TimeUnixNano: at.UnixNano()}
	d := sha256.Sum256(ledger.CosignatureMessage(cs.ClusterId, cs.Witness, cs.Seq, cs.Head, cs.TimeUnixNano))
	if cs.Signature, err = key.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
		t.Fatal(err)
	}
	return cs
}

// Witnesses: registered by the quorum; a cosignature counts only from a
// registered witness, over this ledger's head at that position, newer than
// the witness's last; a key whose policy sets witness_max_age_seconds
// releases nothing unless a witness cosigned recently (fail closed), and
// every cosignature is a record.
func TestWitnessCosignaturesGateRelease(t *testing.T) {
	e := newEnv(t)
	wkey, err := governance.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	add := func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_AddWitness{AddWitness: &custosv1.AddWitness{Witness: &custosv1.Witness{
			Name: "customer-witness", PublicKey: governance.MarshalPublicKey(&wkey.PublicKey)}}}
	}
	if _, err := e.govern(add, 0); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("AddWitness by one officer: %v, want ErrPermissionDenied", err)
	}
	if _, err := e.govern(add, 0, 1); err != nil {
		t.Fatalf("AddWitness by the quorum: %v", err)
	}
	createKey(t, e, "k")
	_, err = e.govern(func(st *custosv1.Statement) {
		p := kms.DefaultPolicy(app.Name)
		p.WitnessMaxAgeSeconds = 60
		st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "k", Policy: p}}
	}, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	dk := dataKey(t, e, "k", nil)
	decrypt := func() error {
		_, err := decryptAs(e, app.Name, dk.WrappedDataKey, custosv1.Reason_REASON_CUSTOMER_INITIATED)
		return err
	}
	// No cosignature yet: fail closed, recorded.
	if err := decrypt(); !errors.Is(err, kms.ErrFailedPrecondition) {
		t.Fatalf("decrypt before any cosignature: %v, want ErrFailedPrecondition", err)
	}
	if rec := lastRecord(t, e); rec.Outcome != custosv1.Outcome_OUTCOME_DENY || rec.MatchedRule != "policy/v2:witness" {
		t.Fatalf("record of the refused decrypt: %v", rec)
	}

	now := time.Now()
	seq, _ := e.state.LedgerHead()
	other, _ := governance.GenerateKey()
	for name, cs := range map[string]*custosv1.Cosignature{
		"unregistered witness":  cosign(t, e, wkey, "mallory", seq, now),
		"signed by another key": cosign(t, e, other, "customer-witness", seq, now),
		"two days ahead":        cosign(t, e, wkey, "customer-witness", seq, now.Add(48*time.Hour)),
		"a position not written": func() *custosv1.Cosignature {
			c := cosign(t, e, wkey, "customer-witness", seq, now)
			c.Seq = seq + 100
			return c
		}(),
		"another history": func() *custosv1.Cosignature {
			c := cosign(t, e, wkey, "customer-witness", seq, now)
			c.Head[0] ^= 1
			return c
		}(),
	} {
		if _, err := e.svc.SubmitCosignature(bg, app, cs); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if head, _ := e.state.LedgerHead(); head != seq {
		t.Fatalf("refused cosignatures appended records: head %d, was %d", head, seq)
	}

	// A cosignature that is two hours old counts for nothing.
	if _, err := e.svc.SubmitCosignature(bg, app, cosign(t, e, wkey, "customer-witness", seq, now.Add(-2*time.Hour))); err != nil {
		t.Fatalf("an old cosignature: %v", err)
	}
	if err := decrypt(); !errors.Is(err, kms.ErrFailedPrecondition) {
		t.Fatalf("decrypt after a stale cosignature: %v, want ErrFailedPrecondition", err)
	}
	// A fresh one: released; its record names the witness.
	seq, _ = e.state.LedgerHead()
	at, err := e.svc.SubmitCosignature(bg, app, cosign(t, e, wkey, "customer-witness", seq, time.Now()))
	if err != nil {
		t.Fatalf("a fresh cosignature: %v", err)
	}
	rec, err := e.state.DecisionRecord(at)
	if err != nil || rec.Operation != custosv1.Operation_OPERATION_WITNESS_COSIGNATURE || rec.Cosignature.GetSeq() != seq || rec.MatchedRule != "witness:customer-witness" {
		t.Fatalf("cosignature record: %v, %v", rec, err)
	}
	if err := decrypt(); err != nil {
		t.Fatalf("decrypt after a fresh cosignature: %v", err)
	}
	if rec.Notify {
		t.Error("a cosignature record is pushed to the sinks under the default rules")
	}
	// Replaying it, or an older one, is refused.
	if _, err := e.svc.SubmitCosignature(bg, app, rec.Cosignature); !errors.Is(err, kms.ErrFailedPrecondition) {
		t.Fatalf("the same cosignature again: %v, want ErrFailedPrecondition", err)
	}
	// The witness's last cosignature survives a restart.
	e.restart()
	g := e.state.Governance()
	if len(g.Witnesses) != 1 || g.Witnesses[0].Last.GetSeq() != seq {
		t.Fatalf("after a restart: witnesses %v", g.Witnesses)
	}
}

// Nodes whose clocks were set back cannot keep an old cosignature fresh:
// a cosignature moves the cluster's clock forward to the witness's time,
// and the policy's record bound ends the release after a number of
// records whatever the clocks say; nothing unsigned is stored.
func TestWitnessFreshnessResistsClocks(t *testing.T) {
	e := newEnv(t)
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
	createKey(t, e, "k")
	if _, err := e.govern(func(st *custosv1.Statement) {
		p := kms.DefaultPolicy(app.Name)
		p.WitnessMaxAgeSeconds, p.WitnessMaxRecords = 3600, 3
		st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "k", Policy: p}}
	}, 0, 1); err != nil {
		t.Fatal(err)
	}
	dk := dataKey(t, e, "k", nil)

	// A witness whose clock is ten minutes ahead of the nodes': accepted,
	// and the cluster's clock follows it.
	seq, _ := e.state.LedgerHead()
	ahead := time.Now().Add(10 * time.Minute)
	cs := cosign(t, e, wkey, "w", seq, ahead)
	cs.ProtoReflect().SetUnknown([]byte{0xfa, 0x3e, 0x03, 'x', 'y', 'z'}) // field 1007, unsigned padding
	at, err := e.svc.SubmitCosignature(bg, app, cs)
	if err != nil {
		t.Fatalf("a cosignature ten minutes ahead: %v", err)
	}
	if got := e.state.Clock(); got.Before(ahead) {
		t.Fatalf("cluster clock %s, want it moved to the cosignature's %s", got, ahead)
	}
	rec, err := e.state.DecisionRecord(at)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Cosignature.ProtoReflect().GetUnknown()) != 0 || len(e.state.Governance().Witnesses[0].Last.ProtoReflect().GetUnknown()) != 0 {
		t.Fatal("unsigned fields of a cosignature were stored")
	}
	// Fresh by time for an hour, whatever the nodes' clocks say; but only
	// for 3 more records.
	for i := 0; ; i++ {
		_, err := decryptAs(e, app.Name, dk.WrappedDataKey, custosv1.Reason_REASON_CUSTOMER_INITIATED)
		head, _ := e.state.LedgerHead()
		if head-1-at < 3 {
			if err != nil {
				t.Fatalf("decrypt %d, %d records after the cosignature: %v", i, head-1-at, err)
			}
			continue
		}
		if !errors.Is(err, kms.ErrFailedPrecondition) {
			t.Fatalf("decrypt %d records after the cosignature (bound 3): %v, want ErrFailedPrecondition", head-1-at, err)
		}
		break
	}
}
