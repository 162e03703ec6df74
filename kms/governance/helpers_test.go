package governance_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"math/big"
	"testing"
	"time"

	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

const testCluster = "cluster-test-1"

// testNow is the verifier's clock in the tests.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// officer is a test officer with a deterministic key.
type officer struct {
	name string
	key  *ecdsa.PrivateKey
}

// deterministicKey derives a P-256 key from seed (tests only).
func deterministicKey(t testing.TB, seed string) *ecdsa.PrivateKey {
	t.Helper()
	h := sha256.Sum256([]byte("custos-governance-test-key\x00" + seed))
	d := new(big.Int).SetBytes(h[:])
	n := elliptic.P256().Params().N
	d.Mod(d, new(big.Int).Sub(n, big.NewInt(1)))
	d.Add(d, big.NewInt(1))
	b := make([]byte, 32)
	d.FillBytes(b)
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newOfficers(t testing.TB, names ...string) []officer {
	t.Helper()
	var offs []officer
	for _, n := range names {
		offs = append(offs, officer{name: n, key: deterministicKey(t, n)})
	}
	return offs
}

func protoOfficers(offs []officer) []*custosv1.Officer {
	var out []*custosv1.Officer
	for _, o := range offs {
		out = append(out, &custosv1.Officer{Name: o.name, PublicKey: governance.MarshalPublicKey(&o.key.PublicKey)})
	}
	return out
}

func officerSet(t testing.TB, offs []officer, quorum uint32) *governance.OfficerSet {
	t.Helper()
	s, err := governance.NewOfficerSet(protoOfficers(offs), quorum)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// statement returns a statement for testCluster expiring an hour after
// testNow with a fixed nonce.
func statement(op any) *custosv1.Statement {
	st := &custosv1.Statement{
		ClusterId:    testCluster,
		Nonce:        bytes.Repeat([]byte{0x5a}, 16),
		NotAfterUnix: testNow.Add(time.Hour).Unix(),
		Comment:      "test",
	}
	switch o := op.(type) {
	case *custosv1.RevokeKey:
		st.Operation = &custosv1.Statement_RevokeKey{RevokeKey: o}
	case *custosv1.DisableKey:
		st.Operation = &custosv1.Statement_DisableKey{DisableKey: o}
	case *custosv1.EnableKey:
		st.Operation = &custosv1.Statement_EnableKey{EnableKey: o}
	case *custosv1.SetPolicy:
		st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: o}
	case *custosv1.ApproveRequest:
		st.Operation = &custosv1.Statement_ApproveRequest{ApproveRequest: o}
	case *custosv1.DenyRequest:
		st.Operation = &custosv1.Statement_DenyRequest{DenyRequest: o}
	case *custosv1.CreateGrant:
		st.Operation = &custosv1.Statement_CreateGrant{CreateGrant: o}
	case *custosv1.RevokeGrant:
		st.Operation = &custosv1.Statement_RevokeGrant{RevokeGrant: o}
	case *custosv1.SetOfficers:
		st.Operation = &custosv1.Statement_SetOfficers{SetOfficers: o}
	case nil:
	default:
		panic("unknown operation")
	}
	return st
}

func mustMarshal(t testing.TB, st *custosv1.Statement) []byte {
	t.Helper()
	b, err := governance.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// signAll signs b by each officer, in order.
func signAll(t testing.TB, b []byte, offs ...officer) *custosv1.SignedStatement {
	t.Helper()
	ss := &custosv1.SignedStatement{Statement: b}
	for _, o := range offs {
		sig, err := governance.Sign(o.key, o.name, b)
		if err != nil {
			t.Fatal(err)
		}
		ss.Signatures = append(ss.Signatures, sig)
	}
	return ss
}

// operations lists one valid operation of every kind, tightening first.
func operations(t testing.TB) []struct {
	name string
	op   any
	need governance.Requirement
} {
	newSet := newOfficers(t, "dora", "emil")
	return []struct {
		name string
		op   any
		need governance.Requirement
	}{
		{"revoke_key", &custosv1.RevokeKey{Key: "payroll"}, governance.One},
		{"disable_key", &custosv1.DisableKey{Key: "payroll"}, governance.One},
		{"deny_request", &custosv1.DenyRequest{RequestId: "req-1"}, governance.One},
		{"revoke_grant", &custosv1.RevokeGrant{GrantId: "grant-1"}, governance.One},
		{"enable_key", &custosv1.EnableKey{Key: "payroll"}, governance.Quorum},
		{"set_policy", &custosv1.SetPolicy{Key: "payroll", Policy: &custosv1.KeyPolicy{
			DecryptPrincipals: []string{"app-1"},
			Reasons:           []*custosv1.ReasonRule{{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Action: custosv1.Action_ACTION_ALLOW}},
		}}, governance.Quorum},
		{"approve_request", &custosv1.ApproveRequest{RequestId: "req-1", Uses: 2, TtlSeconds: 600}, governance.Quorum},
		{"create_grant", &custosv1.CreateGrant{Principal: "app-1", Key: "payroll", Reason: custosv1.Reason_REASON_CUSTOMER_WORKFLOW, ContextDigest: make([]byte, 32), Uses: 5, TtlSeconds: 3600}, governance.Quorum},
		{"set_officers", &custosv1.SetOfficers{Officers: protoOfficers(newSet), Quorum: 2}, governance.Quorum},
	}
}
