package governance

import (
	"bytes"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

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

// GenesisSays reports whether a genesis statement (VerifyGenesis's) names
// exactly this cluster id, officers, quorum, client authorities (DER) and
// profile: what a cluster's initialisation, or its GENESIS record, must
// carry.
func GenesisSays(st *custosv1.Statement, clusterID string, officers []*custosv1.Officer, quorum uint32, cas [][]byte, profile string) bool {
	cc := st.GetCreateCluster()
	return cc != nil && st.GetClusterId() == clusterID && cc.GetQuorum() == quorum && cc.GetProfile() == profile &&
		slices.EqualFunc(cc.GetOfficers(), officers, func(a, b *custosv1.Officer) bool { return proto.Equal(a, b) }) &&
		slices.EqualFunc(cc.GetClientAuthorities(), cas, bytes.Equal)
}
