// Package keypolicy holds the pure rules by which a key's policy decides a
// use of the key: the default policy of a new key, the action for a
// reason, time windows, who may use and who may administer a key. The
// state machine (package kms) decides with them, and `custos audit verify`
// (package audit) checks every release in an export against the policies
// it recomputes from the officer-signed statements with the same code
// (docs/ledger.md, *Recomputed state*).
package keypolicy

import (
	"slices"
	"strconv"
	"time"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Default is the policy of a new key: only its creator may use it; the
// customer's own reasons are allowed, every other reason (and a missing
// one, REASON_UNSPECIFIED) needs the officers' approval.
func Default(creator string) *custosv1.KeyPolicy {
	ra := custosv1.Action_ACTION_REQUIRE_APPROVAL
	return &custosv1.KeyPolicy{
		Version:           1,
		EncryptPrincipals: []string{creator},
		DecryptPrincipals: []string{creator},
		AdminPrincipals:   []string{creator},
		Reasons: []*custosv1.ReasonRule{
			{Reason: custosv1.Reason_REASON_UNSPECIFIED, Action: ra},
			{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Action: custosv1.Action_ACTION_ALLOW},
			{Reason: custosv1.Reason_REASON_CUSTOMER_WORKFLOW, Action: custosv1.Action_ACTION_ALLOW},
			{Reason: custosv1.Reason_REASON_PROVIDER_SERVICE, Action: ra},
			{Reason: custosv1.Reason_REASON_PROVIDER_SUPPORT, Action: ra},
			{Reason: custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST, Action: ra},
			{Reason: custosv1.Reason_REASON_EMERGENCY, Action: ra},
		},
	}
}

// Action returns the policy's action for a decision's reason and the
// reason's name for the matched rule. A missing reason (REASON_UNSPECIFIED)
// is a reason of its own, recorded as given: a policy that names it decides
// it; one that does not (every policy written before it could be named)
// gives it the action of the strictest reason, THIRD_PARTY_DATA_REQUEST, so
// leaving the reason out never gets more than naming the strictest one. A
// reason this version does not know is THIRD_PARTY_DATA_REQUEST.
func Action(p *custosv1.KeyPolicy, r custosv1.Reason) (custosv1.Action, string) {
	const strictest = custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST
	switch _, known := custosv1.Reason_name[int32(r)]; {
	case !known:
		return ActionFor(p, strictest), ReasonName(strictest)
	case r != custosv1.Reason_REASON_UNSPECIFIED:
		return ActionFor(p, r), ReasonName(r)
	}
	for _, rr := range p.GetReasons() {
		if rr.Reason == custosv1.Reason_REASON_UNSPECIFIED {
			return rr.Action, ReasonName(r)
		}
	}
	return ActionFor(p, strictest), ReasonName(r) + "(as " + ReasonName(strictest) + ")"
}

// ActionFor returns the policy's action for a reason; unlisted reasons need
// approval.
func ActionFor(p *custosv1.KeyPolicy, r custosv1.Reason) custosv1.Action {
	for _, rr := range p.GetReasons() {
		if rr.Reason == r {
			return rr.Action
		}
	}
	return custosv1.Action_ACTION_REQUIRE_APPROVAL
}

// ReasonName is a reason's name without its REASON_ prefix.
func ReasonName(r custosv1.Reason) string {
	n := custosv1.Reason_name[int32(r)]
	if len(n) > len("REASON_") {
		return n[len("REASON_"):]
	}
	return n
}

// RulePrefix starts the matched rule of a decision the policy made:
// "policy/v<version>:".
func RulePrefix(p *custosv1.KeyPolicy) string {
	return "policy/v" + strconv.FormatUint(p.GetVersion(), 10) + ":"
}

// AllowRule is the matched rule of a decision the policy allowed for the
// reason's name (as Action returns it): "policy/v3:reason=CUSTOMER_INITIATED:allow".
func AllowRule(p *custosv1.KeyPolicy, reason string) string {
	return RulePrefix(p) + "reason=" + reason + ":allow"
}

// InWindows reports whether t (UTC) falls in one of the policy's windows;
// no windows means always.
func InWindows(p *custosv1.KeyPolicy, t time.Time) bool {
	if len(p.GetWindows()) == 0 {
		return true
	}
	t = t.UTC()
	minute := int32(t.Hour()*60 + t.Minute())
	for _, w := range p.Windows {
		if len(w.Weekdays) > 0 && !slices.Contains(w.Weekdays, int32(t.Weekday())) {
			continue
		}
		if minute >= w.StartMinute && minute < w.EndMinute {
			return true
		}
	}
	return false
}

// IsUser reports whether principal is named by the key's policy.
func IsUser(p *custosv1.KeyPolicy, principal string) bool {
	return slices.Contains(p.GetEncryptPrincipals(), principal) || slices.Contains(p.GetDecryptPrincipals(), principal)
}

// IsAdmin reports whether principal may administer the key (rotate, raise
// the minimum version, disable): one of its admin_principals, or — for a
// policy written before admin_principals existed, which names none — any
// principal the policy names, as then.
func IsAdmin(p *custosv1.KeyPolicy, principal string) bool {
	if len(p.GetAdminPrincipals()) == 0 {
		return IsUser(p, principal)
	}
	return slices.Contains(p.AdminPrincipals, principal)
}

// DefaultWitnessMaxRecords is KeyPolicy.witness_max_records's default.
const DefaultWitnessMaxRecords = 100_000

// WitnessMaxRecords is a policy's bound on how many records a witness's
// last cosignature may be behind the head for a release.
func WitnessMaxRecords(p *custosv1.KeyPolicy) uint64 {
	if n := p.GetWitnessMaxRecords(); n > 0 {
		return uint64(n)
	}
	return DefaultWitnessMaxRecords
}

// WitnessFresh reports whether a cosignature of seq at cosigned (Unix
// nanoseconds) lets a record at position seq+1.. be released at now under
// policy p: no older than witness_max_age_seconds, no more than
// witness_max_records behind the last record before the release.
func WitnessFresh(p *custosv1.KeyPolicy, now int64, lastSeq uint64, cosignedSeq uint64, cosigned int64) bool {
	age := time.Duration(now - cosigned)
	return age >= 0 && age <= time.Duration(p.GetWitnessMaxAgeSeconds())*time.Second && lastSeq-cosignedSeq <= WitnessMaxRecords(p)
}

// Grant defaults: a grant an officer creates or approves without saying
// otherwise has one use and lives an hour.
const (
	DefaultGrantUses = 1
	DefaultGrantTTL  = time.Hour
)

// GrantTerms returns the uses and lifetime of a grant a statement asks
// for, with the defaults for zero values (bounds are the state machine's).
func GrantTerms(uses uint32, ttlSeconds int64) (uint32, time.Duration) {
	if uses == 0 {
		uses = DefaultGrantUses
	}
	ttl := DefaultGrantTTL
	if ttlSeconds != 0 {
		ttl = time.Duration(ttlSeconds) * time.Second
	}
	return uses, ttl
}
