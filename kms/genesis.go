package kms

import (
	"fmt"
	"time"

	"github.com/custos-kms/custos/kms/governance"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// checkGenesisStatement checks that an InitCluster carries what its
// officer-signed genesis says (docs/governance.md, *Officer-signed
// genesis*): signed by a quorum of the officers it names, not expired at
// the command's time, and naming the same cluster id, officers, quorum,
// client authorities and profile. Every replica checks it alike.
func checkGenesisStatement(op *raftlogv1.InitCluster, now time.Time) error {
	st, _, err := governance.VerifyGenesis(op.GenesisStatement, now)
	if err != nil {
		return fmt.Errorf("%w: genesis statement: %v", ErrInvalidArgument, governanceError(err))
	}
	if !governance.GenesisSays(st, op.ClusterId, op.Officers, op.Quorum, op.ClientAuthorities, op.Profile) {
		return fmt.Errorf("%w: the cluster's initialisation differs from the officers' genesis statement", ErrInvalidArgument)
	}
	return nil
}
