package kms

import (
	"bytes"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
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
	cc := st.GetCreateCluster()
	same := st.ClusterId == op.ClusterId && cc.Quorum == op.Quorum && cc.Profile == op.Profile &&
		slices.EqualFunc(cc.Officers, op.Officers, func(a, b *custosv1.Officer) bool { return proto.Equal(a, b) }) &&
		slices.EqualFunc(cc.ClientAuthorities, op.ClientAuthorities, bytes.Equal)
	if !same {
		return fmt.Errorf("%w: the cluster's initialisation differs from the officers' genesis statement", ErrInvalidArgument)
	}
	return nil
}
