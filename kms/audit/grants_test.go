package audit

import (
	"strings"
	"testing"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Every ALLOW under a grant is checked against the record that created
// the grant: what it covers, its uses, its lifetime, its revocation.
func TestGrantBook(t *testing.T) {
	third := custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST
	created := func(g *custosv1.Grant) *custosv1.DecisionRecord {
		return &custosv1.DecisionRecord{Operation: custosv1.Operation_OPERATION_GOVERNANCE, Outcome: custosv1.Outcome_OUTCOME_ALLOW,
			MatchedRule: "governance:create_grant", Grant: g}
	}
	use := func(id, principal string, at int64, data []byte) *custosv1.DecisionRecord {
		return &custosv1.DecisionRecord{Operation: custosv1.Operation_OPERATION_DECRYPT_DATA_KEY, Outcome: custosv1.Outcome_OUTCOME_ALLOW,
			MatchedRule: GrantRulePrefix + id, Principal: principal, Key: "k", Reason: third, TimeUnixNano: at, DataDigest: data}
	}
	a, b := []byte("digest-a"), []byte("digest-b")
	book := grantBook{grants: map[string]*grantUse{}, complete: true}
	for _, rec := range []*custosv1.DecisionRecord{
		created(&custosv1.Grant{GrantId: "g-1", Principal: "p", Key: "k", Reason: third, UsesLeft: 2, ExpireTimeUnixNano: 100}),
		created(&custosv1.Grant{GrantId: "g-2", Principal: "p", Key: "k", Reason: third, UsesLeft: 5, ExpireTimeUnixNano: 100,
			DataDigests: [][]byte{a}}),
		use("g-1", "p", 10, nil), use("g-1", "p", 11, nil), use("g-2", "p", 12, a),
	} {
		if why := book.note(rec); why != "" {
			t.Fatalf("a use the grant covers: %s", why)
		}
	}
	for name, tc := range map[string]struct {
		rec  *custosv1.DecisionRecord
		want string
	}{
		"used up":         {use("g-1", "p", 12, nil), "no use left"},
		"expired":         {use("g-2", "p", 100, a), "expired"},
		"other principal": {use("g-2", "q", 13, a), "another principal"},
		"other data":      {use("g-2", "p", 13, b), "other ciphertexts"},
		"never created":   {use("g-9", "p", 13, nil), "created grant g-9"},
	} {
		if why := book.note(tc.rec); !strings.Contains(why, tc.want) {
			t.Errorf("%s: %q, want it to say %q", name, why, tc.want)
		}
	}
	book.note(&custosv1.DecisionRecord{Operation: custosv1.Operation_OPERATION_GOVERNANCE, Outcome: custosv1.Outcome_OUTCOME_ALLOW,
		MatchedRule: "governance:revoke_grant", RevokedGrantId: "g-2"})
	if why := book.note(use("g-2", "p", 14, a)); !strings.Contains(why, "revoked") {
		t.Errorf("a use after revocation: %q", why)
	}
	// An export that does not start at record 1, or an older record that
	// created a grant without recording it: unknown grants are not
	// reported (they may have been created where the verifier cannot see).
	partial := grantBook{grants: map[string]*grantUse{}}
	if why := partial.note(use("g-1", "p", 10, nil)); why != "" {
		t.Errorf("partial export: %q", why)
	}
	old := grantBook{grants: map[string]*grantUse{}, complete: true}
	old.note(&custosv1.DecisionRecord{Operation: custosv1.Operation_OPERATION_GOVERNANCE, Outcome: custosv1.Outcome_OUTCOME_ALLOW,
		MatchedRule: "governance:approve_request"})
	if why := old.note(use("g-1", "p", 10, nil)); why != "" {
		t.Errorf("after an unrecorded grant: %q", why)
	}
}
