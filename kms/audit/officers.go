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
}

// note takes in one record; it returns what is wrong with it, or "".
func (b *officerBook) note(rec *custosv1.DecisionRecord, cluster string, pos uint64) string {
	switch rec.GetOperation() {
	case custosv1.Operation_OPERATION_GENESIS:
		if g := rec.GetGenesis(); pos == 1 && g != nil {
			b.set, _ = governance.NewOfficerSet(g.GetOfficers(), g.GetQuorum())
		}
	case custosv1.Operation_OPERATION_STATE_MACHINE_UPGRADE:
		if b.set == nil && len(rec.GetOfficers()) > 0 {
			b.set, _ = governance.NewOfficerSet(rec.GetOfficers(), rec.GetQuorum())
		}
	case custosv1.Operation_OPERATION_GOVERNANCE:
		if rec.GetOutcome() != custosv1.Outcome_OUTCOME_ALLOW || b.set == nil {
			return ""
		}
		ss := rec.GetSignedStatement()
		if ss == nil {
			b.set = nil // applied before statements were recorded: cannot follow
			return ""
		}
		st, _, err := b.set.Verify(ss, cluster, time.Unix(0, rec.GetTimeUnixNano()))
		if err != nil {
			return fmt.Sprintf("the statement it applied is not signed as the officers on record require: %v", err)
		}
		if so := st.GetSetOfficers(); so != nil {
			set, err := governance.NewOfficerSet(so.GetOfficers(), so.GetQuorum())
			if err != nil {
				return fmt.Sprintf("its set_officers does not parse: %v", err)
			}
			b.set = set
		}
	}
	return ""
}
