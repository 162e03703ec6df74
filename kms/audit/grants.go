package audit

import (
	"bytes"
	"slices"
	"strings"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Grant accounting (docs/ledger.md, *Grants*): every ALLOW a grant gave
// ("grant:<id>") must trace back to the GOVERNANCE record that created the
// grant (an officer-approved request or an officer-signed create_grant),
// match what that grant covers, fall within its lifetime and uses, and come
// before any revocation. A release under a grant that no record created
// — one injected into a node's state — shows here.

// grantUse is what the verifier knows of one grant.
type grantUse struct {
	grant   *custosv1.Grant
	used    uint32
	revoked bool
}

// grantBook follows the grants an export creates and uses.
type grantBook struct {
	grants map[string]*grantUse
	// complete is false when a grant may have been created outside what
	// the verifier saw: the export does not start at record 1, or an
	// older record created a grant without recording it.
	complete bool
}

// grantCreating reports whether a GOVERNANCE record's statement creates a
// grant.
func grantCreating(rec *custosv1.DecisionRecord) bool {
	return rec.GetMatchedRule() == "governance:approve_request" || rec.GetMatchedRule() == "governance:create_grant"
}

// note takes in one record; it returns a description of what is wrong
// with a grant's use, or "".
func (b *grantBook) note(rec *custosv1.DecisionRecord) string {
	if rec.GetOperation() == custosv1.Operation_OPERATION_GOVERNANCE && rec.GetOutcome() == custosv1.Outcome_OUTCOME_ALLOW {
		switch {
		case rec.GetGrant() != nil:
			b.grants[rec.Grant.GrantId] = &grantUse{grant: rec.Grant}
		case rec.GetRevokedGrantId() != "":
			if g := b.grants[rec.RevokedGrantId]; g != nil {
				g.revoked = true
			}
		case grantCreating(rec) && rec.GetSignedStatement() == nil:
			// Recorded before grants were (state machine version 1).
			// (A record that carries its statement and no grant is
			// checked against the statement: Recomputed state.)
			b.complete = false
		}
		return ""
	}
	if !UsesGrant(rec) {
		return ""
	}
	id := strings.TrimPrefix(rec.MatchedRule, GrantRulePrefix)
	u := b.grants[id]
	if u == nil {
		if !b.complete {
			return ""
		}
		return "no record before it created grant " + id
	}
	g := u.grant
	switch {
	case u.revoked:
		return "grant " + id + " was revoked before"
	case u.used >= g.UsesLeft:
		return "grant " + id + " had no use left"
	case rec.TimeUnixNano >= g.ExpireTimeUnixNano:
		return "grant " + id + " had expired"
	case g.Principal != rec.Principal || g.Key != rec.Key || g.Reason != rec.Reason:
		return "grant " + id + " is for another principal, key or reason"
	case len(g.ContextDigest) > 0 && !bytes.Equal(g.ContextDigest, rec.ContextDigest):
		return "grant " + id + " is for another encryption context"
	case len(g.DataDigests) > 0 && !slices.ContainsFunc(g.DataDigests, func(d []byte) bool { return bytes.Equal(d, rec.DataDigest) }):
		return "grant " + id + " is for other ciphertexts"
	}
	u.used++
	return ""
}
