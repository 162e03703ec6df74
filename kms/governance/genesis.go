package governance

import (
	"fmt"
	"time"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// VerifyGenesis checks an officer-signed genesis (a CreateCluster
// statement, docs/governance.md, *Officer-signed genesis*): a quorum of
// the officers it names signed it, under the keys it names, and it has not
// expired at now. It returns the statement and the signers.
func VerifyGenesis(ss *custosv1.SignedStatement, now time.Time) (*custosv1.Statement, []string, error) {
	if ss == nil {
		return nil, nil, fmt.Errorf("%w: no genesis statement", ErrMalformed)
	}
	st, err := Parse(ss.GetStatement())
	if err != nil {
		return nil, nil, err
	}
	cc := st.GetCreateCluster()
	if cc == nil {
		return nil, nil, fmt.Errorf("%w: the genesis statement is %s, not create_cluster", ErrMalformed, OperationName(st))
	}
	set, err := NewOfficerSet(cc.GetOfficers(), cc.GetQuorum())
	if err != nil {
		return nil, nil, err
	}
	st, signers, err := set.Verify(ss, st.GetClusterId(), now)
	if err != nil {
		return nil, nil, err
	}
	return st, signers, nil
}
