package audit

import (
	"fmt"
	"time"

	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Officer accounting (docs/ledger.md, *Officers*): from the GENESIS record
// (or the STATE_MACHINE_UPGRADE record of a cluster born at version 1) the
// verifier knows the officer set, and every applied statement's record
// carries the signed statement: each must be signed as the officers on
// record require (one, or the quorum), and a set_officers moves the set. A
// statement applied under officers that no record installed — the officer
// set swapped in a node's state — shows here.

// officerBook follows the officer set through an export.
type officerBook struct {
	set *governance.OfficerSet // nil: not known (yet, or any more)
	// officers and quorum are what set was made from: the officers'
	// WebAuthn credentials move with add_officer_credential and
	// remove_officer_credential (governance.NextOfficers).
	officers []*custosv1.Officer
	quorum   uint32
	// smv is the cluster's state machine version at the record (from the
	// GENESIS record and every STATE_MACHINE_UPGRADE record; 0 before):
	// statements are verified as a node of that version verified them.
	smv uint32
}

// following reports whether the officer set on record is known.
func (b *officerBook) following() bool { return b.set != nil }

// upgradeVersion returns the version a STATE_MACHINE_UPGRADE record moved
// the cluster to (its detail: "state machine version 1 → 2: ..."), or 0.
func upgradeVersion(rec *custosv1.DecisionRecord) uint32 {
	var from, to uint32
	if _, err := fmt.Sscanf(rec.GetDetail(), "state machine version %d → %d", &from, &to); err != nil {
		return 0
	}
	return to
}

// install makes officers and quorum the set on record (nil if they do not
// parse).
func (b *officerBook) install(officers []*custosv1.Officer, quorum uint32) {
	b.set, _ = governance.NewOfficerSet(officers, quorum)
	b.officers, b.quorum = officers, quorum
}

// note takes in one record; it returns what is wrong with it, or "".
func (b *officerBook) note(rec *custosv1.DecisionRecord, cluster string, pos uint64) string {
	switch rec.GetOperation() {
	case custosv1.Operation_OPERATION_GENESIS:
		if g := rec.GetGenesis(); pos == 1 && g != nil {
			b.install(g.GetOfficers(), g.GetQuorum())
			b.smv = max(1, g.GetStateMachineVersion())
		}
	case custosv1.Operation_OPERATION_STATE_MACHINE_UPGRADE:
		if v := upgradeVersion(rec); v > b.smv && rec.GetOutcome() == custosv1.Outcome_OUTCOME_ALLOW {
			b.smv = v
		}
		if b.set == nil && len(rec.GetOfficers()) > 0 {
			b.install(rec.GetOfficers(), rec.GetQuorum())
		}
	case custosv1.Operation_OPERATION_GOVERNANCE:
		if rec.GetOutcome() != custosv1.Outcome_OUTCOME_ALLOW || b.set == nil {
			return ""
		}
		ss := rec.GetSignedStatement()
		if ss == nil {
			if b.smv >= 2 {
				// Every node of version 2 or later records the statement
				// it applied.
				return "it applied a statement it does not carry"
			}
			b.set = nil // applied before statements were recorded: cannot follow
			return ""
		}
		st, _, err := b.set.VerifyUsesAt(ss, cluster, time.Unix(0, rec.GetTimeUnixNano()), max(b.smv, 2))
		if err != nil {
			return fmt.Sprintf("the statement it applied is not signed as the officers on record require: %v", err)
		}
		officers, quorum, changed, err := governance.NextOfficers(b.officers, b.quorum, st)
		if err != nil {
			return fmt.Sprintf("its %s does not apply: %v", governance.OperationName(st), err)
		}
		if changed {
			b.install(officers, quorum)
		}
	}
	return ""
}
