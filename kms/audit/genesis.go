package audit

import (
	"bytes"
	"errors"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// checkGenesis verifies the officer-signed genesis a GENESIS record
// carries — a quorum of the officers it names signed it, at the record's
// time — and that the record says what it says. It returns the signers.
func checkGenesis(rec *custosv1.DecisionRecord) ([]string, error) {
	g := rec.GetGenesis()
	st, signers, err := governance.VerifyGenesis(g.GetStatement(), time.Unix(0, rec.GetTimeUnixNano()))
	if err != nil {
		return nil, err
	}
	cc := st.GetCreateCluster()
	cas := make([][]byte, 0, len(g.GetClientAuthorities()))
	for _, ca := range g.GetClientAuthorities() {
		cas = append(cas, ca.GetCertificate())
	}
	same := st.GetClusterId() == g.GetClusterId() && cc.GetQuorum() == g.GetQuorum() && cc.GetProfile() == g.GetProfile() &&
		slices.EqualFunc(cc.GetOfficers(), g.GetOfficers(), func(a, b *custosv1.Officer) bool { return proto.Equal(a, b) }) &&
		slices.EqualFunc(cc.GetClientAuthorities(), cas, bytes.Equal)
	if !same {
		return nil, errors.New("the record's officers, quorum, client authorities, profile or cluster id differ from the statement's")
	}
	return signers, nil
}
