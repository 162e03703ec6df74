package audit_test

// Attacks on the recomputed state (docs/ledger.md, *Recomputed state*)
// found in review, kept as regressions: modified node code (or an
// operator re-signing a rewritten ledger) writes each of these, and
// Verify must report it — a replayed statement, a forged cosignature, a
// statement-less GOVERNANCE record, a back-dated release, a grant no
// statement created, and a crafted export that must not panic.

import (
	"bytes"
	"crypto/ecdsa"
	"errors"
	"runtime/debug"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/kms/audit"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// wantCaught fails unless Verify reports a problem (any kind): a ledger
// it accepts (recomputed or not) is a miss.
func wantCaught(t *testing.T, b *ledgerBuilder, what string) {
	t.Helper()
	rep, err := b.verify()
	if err == nil {
		t.Fatalf("%s: Verify accepted the ledger (recomputed %v, releases checked %d, not recomputed %q)",
			what, rep.Recomputed, rep.ReleasesChecked, rep.NotRecomputed)
	}
	if !errors.Is(err, audit.ErrBroken) {
		t.Fatalf("%s: Verify: %v", what, err)
	}
}

func attackSetup(t *testing.T) *ledgerBuilder {
	b := newLedger(t)
	b.keyAdmin(custosv1.Operation_OPERATION_CREATE_KEY, "hr-app", "payroll", 1)
	b.release("hr-app", "payroll", initiated, nil)
	if rep, err := b.verify(); err != nil || !rep.Recomputed {
		t.Fatalf("clean ledger: %v %+v", err, rep)
	}
	return b
}

// FN: a statement the officers signed once is applied a second time (a
// copy of its GOVERNANCE record, still inside not_after): enable_key after
// a later revoke_key. The state machine refuses the replay (nonce spent);
// the recomputation re-enables the key and accepts the release.
func TestAttackReplayedStatementReenablesRevokedKey(t *testing.T) {
	b := attackSetup(t)
	b.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_EnableKey{EnableKey: &custosv1.EnableKey{Key: "payroll"}}
	})
	enable := b.recs[len(b.recs)-1]
	b.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_RevokeKey{RevokeKey: &custosv1.RevokeKey{Key: "payroll"}}
	})
	replay := proto.Clone(enable).(*custosv1.DecisionRecord)
	replay.TimeUnixNano = 0
	b.add(replay)
	b.release("hr-app", "payroll", initiated, nil)
	wantCaught(t, b, "release after a replayed enable_key")
}

// FN: WITNESS_COSIGNATURE records are taken at face value: one whose
// signature does not verify under the witness's registered key (here: no
// signature, no head) makes the witness fresh.
func TestAttackForgedCosignatureSatisfiesWitness(t *testing.T) {
	b := attackSetup(t)
	p := &custosv1.KeyPolicy{DecryptPrincipals: []string{"hr-app"}, WitnessMaxAgeSeconds: 60,
		Reasons: []*custosv1.ReasonRule{reasonRule(initiated, custosv1.Action_ACTION_ALLOW)}}
	b.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "payroll", Policy: p}}
	})
	p.Version = 2
	wk, err := governance.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	b.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_AddWitness{AddWitness: &custosv1.AddWitness{
			Witness: &custosv1.Witness{Name: "w1", PublicKey: governance.MarshalPublicKey(&wk.PublicKey)}}}
	})
	// Never signed by w1's key.
	b.add(&custosv1.DecisionRecord{Operation: custosv1.Operation_OPERATION_WITNESS_COSIGNATURE, MatchedRule: "witness:w1",
		Cosignature: &custosv1.Cosignature{ClusterId: b.cluster, Witness: "w1", Seq: uint64(len(b.recs)),
			Head: make([]byte, 32), TimeUnixNano: b.now.UnixNano(), Signature: []byte("forged")}})
	b.release("hr-app", "payroll", initiated, p)
	wantCaught(t, b, "release under a forged cosignature")
}

// FN: one GOVERNANCE ALLOW record without a signed statement — which no
// node of a cluster born at version 3 ever writes — stops the
// recomputation (and the officer book) silently; every release after it,
// here of a revoked key, goes unchecked and Verify succeeds.
func TestAttackStatementlessGovernanceRecordStopsRecomputation(t *testing.T) {
	b := attackSetup(t)
	b.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_RevokeKey{RevokeKey: &custosv1.RevokeKey{Key: "payroll"}}
	})
	b.add(&custosv1.DecisionRecord{Operation: custosv1.Operation_OPERATION_GOVERNANCE, Principal: "officer:alice",
		MatchedRule: "governance:set_notify_rules"})
	b.release("hr-app", "payroll", initiated, nil)
	wantCaught(t, b, "release of a revoked key after a statement-less GOVERNANCE record")
}

// FN: record times are not checked to be monotonic (the state's clock
// is): a third release in one hour, back-dated into the hour before,
// passes a limit of two per hour.
func TestAttackBackdatedReleaseEvadesRateLimit(t *testing.T) {
	b := attackSetup(t)
	p := &custosv1.KeyPolicy{DecryptPrincipals: []string{"hr-app"}, MaxDecryptsPerPrincipalPerHour: 2,
		Reasons: []*custosv1.ReasonRule{reasonRule(initiated, custosv1.Action_ACTION_ALLOW)}}
	b.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "payroll", Policy: p}}
	})
	p.Version = 2
	b.now = b.now.Truncate(time.Hour).Add(time.Hour)
	b.release("hr-app", "payroll", initiated, p)
	b.release("hr-app", "payroll", initiated, p)
	r := b.release("hr-app", "payroll", initiated, p)
	r.TimeUnixNano = b.now.Add(-30 * time.Minute).UnixNano() // before the record before it
	wantCaught(t, b, "back-dated third release")
}

// FN: the grant book takes a GOVERNANCE record's unsigned `grant` field at
// face value, on any applied statement (here add_witness), and the
// recomputation skips the reason check for every release naming a grant:
// a THIRD_PARTY_DATA_REQUEST release nobody approved passes. (Variant: a
// GOVERNANCE record whose unsigned matched_rule says create_grant and
// that carries no grant turns grant accounting off: any "grant:<id>"
// passes.)
func TestAttackGrantFieldNotBoundToStatement(t *testing.T) {
	for _, variant := range []string{"forged grant field", "matched rule create_grant"} {
		t.Run(variant, func(t *testing.T) {
			b := attackSetup(t)
			wk, err := governance.GenerateKey()
			if err != nil {
				t.Fatal(err)
			}
			b.govern(func(st *custosv1.Statement) {
				st.Operation = &custosv1.Statement_AddWitness{AddWitness: &custosv1.AddWitness{
					Witness: &custosv1.Witness{Name: "w1", PublicKey: governance.MarshalPublicKey(&wk.PublicKey)}}}
			})
			g := b.recs[len(b.recs)-1]
			if variant == "forged grant field" {
				g.Grant = &custosv1.Grant{GrantId: "g-evil", Principal: "hr-app", Key: "payroll",
					Reason: custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST, UsesLeft: 1000000,
					ExpireTimeUnixNano: b.now.Add(24 * time.Hour).UnixNano()}
			} else {
				g.MatchedRule = "governance:create_grant"
			}
			r := b.release("hr-app", "payroll", custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST, nil)
			r.MatchedRule = audit.GrantRulePrefix + "g-evil"
			wantCaught(t, b, "release under a grant no officer created")
		})
	}
}

// Crash: `custos audit verify` on a crafted export panics (nil pointer)
// on a set_policy statement without a policy, once the officer book does
// not follow (a genesis whose officers do not parse: it then verifies no
// statement).
func TestAttackNilPolicyPanicsVerify(t *testing.T) {
	b := newLedger(t)
	b.recs[0].Genesis.Officers = nil
	b.keyAdmin(custosv1.Operation_OPERATION_CREATE_KEY, "hr-app", "payroll", 1)
	st := &custosv1.Statement{ClusterId: b.cluster, Nonce: make([]byte, 16), NotAfterUnix: b.now.Add(time.Hour).Unix(),
		Operation: &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "payroll"}}}
	data, err := proto.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	b.add(&custosv1.DecisionRecord{Operation: custosv1.Operation_OPERATION_GOVERNANCE,
		SignedStatement: &custosv1.SignedStatement{Statement: data}})
	file := chainExport(t, b.cluster, b.cpKey, b.recs...)
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("audit.Verify panicked on a crafted export: %v\n%s", r, debug.Stack())
		}
	}()
	_, _ = audit.Verify(bytes.NewReader(file), []*ecdsa.PublicKey{&b.cpKey.PublicKey})
}
