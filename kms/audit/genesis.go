package audit

import (
	"errors"
	"time"

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
	cas := make([][]byte, 0, len(g.GetClientAuthorities()))
	for _, ca := range g.GetClientAuthorities() {
		cas = append(cas, ca.GetCertificate())
	}
	if !governance.GenesisSays(st, g.GetClusterId(), g.GetOfficers(), g.GetQuorum(), cas, g.GetProfile()) {
		return nil, errors.New("the record's officers, quorum, client authorities, profile or cluster id differ from the statement's")
	}
	return signers, nil
}
