package kms

import (
	"fmt"
	"slices"
	"time"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Policy limits.
const (
	maxPolicyPrincipals = 256
	maxPrincipalLen     = 256
	maxWindows          = 32
	// Pending approval requests expire after this long, and at most
	// maxPendingPerPrincipal may wait at once per principal.
	requestLifetime        = 24 * time.Hour
	maxPendingPerPrincipal = 16
	// Decided requests are kept this long for `GetRequest`, then pruned.
	requestRetention = 7 * 24 * time.Hour
	// Grant defaults and bounds.
	defaultGrantUses = 1
	maxGrantUses     = 1_000_000
	// maxGrantDataDigests bounds the ciphertexts one grant names.
	maxGrantDataDigests = 64
	defaultGrantTTL     = time.Hour
	maxGrantTTL         = 30 * 24 * time.Hour
)

// DefaultPolicy is the policy of a new key: only its creator may use it;
// the customer's own reasons are allowed, every other reason (and a missing
// one, REASON_UNSPECIFIED) needs the officers' approval.
func DefaultPolicy(creator string) *custosv1.KeyPolicy {
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

// ValidatePolicy checks a policy's fields.
func ValidatePolicy(p *custosv1.KeyPolicy) error {
	if p == nil {
		return fmt.Errorf("%w: policy is missing", ErrInvalidArgument)
	}
	for field, list := range map[string][]string{"encrypt_principals": p.EncryptPrincipals, "decrypt_principals": p.DecryptPrincipals,
		"admin_principals": p.AdminPrincipals} {
		if len(list) > maxPolicyPrincipals {
			return fmt.Errorf("%w: policy.%s has more than %d entries", ErrInvalidArgument, field, maxPolicyPrincipals)
		}
		seen := map[string]bool{}
		for _, pr := range list {
			if pr == "" || len(pr) > maxPrincipalLen {
				return fmt.Errorf("%w: policy.%s has an empty or over-long principal", ErrInvalidArgument, field)
			}
			if seen[pr] {
				return fmt.Errorf("%w: policy.%s names %q twice", ErrInvalidArgument, field, pr)
			}
			seen[pr] = true
		}
	}
	seen := map[custosv1.Reason]bool{}
	for _, r := range p.Reasons {
		// REASON_UNSPECIFIED is a reason of its own: a rule may name it.
		if _, ok := custosv1.Reason_name[int32(r.GetReason())]; !ok {
			return fmt.Errorf("%w: policy.reasons has an unknown reason %d", ErrInvalidArgument, r.GetReason())
		}
		if r.GetAction() < custosv1.Action_ACTION_ALLOW || r.GetAction() > custosv1.Action_ACTION_DENY {
			return fmt.Errorf("%w: policy.reasons[%s] has no valid action", ErrInvalidArgument, r.GetReason())
		}
		if seen[r.GetReason()] {
			return fmt.Errorf("%w: policy.reasons lists %s twice", ErrInvalidArgument, r.GetReason())
		}
		seen[r.GetReason()] = true
	}
	if len(p.Windows) > maxWindows {
		return fmt.Errorf("%w: policy.windows has more than %d entries", ErrInvalidArgument, maxWindows)
	}
	for _, w := range p.Windows {
		if w.StartMinute < 0 || w.EndMinute > 24*60 || w.StartMinute >= w.EndMinute {
			return fmt.Errorf("%w: policy.windows: need 0 <= start_minute < end_minute <= 1440", ErrInvalidArgument)
		}
		for _, d := range w.Weekdays {
			if d < 0 || d > 6 {
				return fmt.Errorf("%w: policy.windows: weekday %d is not 0..6", ErrInvalidArgument, d)
			}
		}
	}
	return nil
}

// policyAction returns the policy's action for a decision's reason and the
// reason's name for the matched rule. A missing reason (REASON_UNSPECIFIED)
// is a reason of its own, recorded as given: a policy that names it decides
// it; one that does not (every policy written before it could be named)
// gives it the action of the strictest reason, THIRD_PARTY_DATA_REQUEST, so
// leaving the reason out never gets more than naming the strictest one. A
// reason this version does not know is THIRD_PARTY_DATA_REQUEST.
func policyAction(p *custosv1.KeyPolicy, r custosv1.Reason) (custosv1.Action, string) {
	const strictest = custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST
	switch _, known := custosv1.Reason_name[int32(r)]; {
	case !known:
		return actionFor(p, strictest), reasonName(strictest)
	case r != custosv1.Reason_REASON_UNSPECIFIED:
		return actionFor(p, r), reasonName(r)
	}
	for _, rr := range p.GetReasons() {
		if rr.Reason == custosv1.Reason_REASON_UNSPECIFIED {
			return rr.Action, reasonName(r)
		}
	}
	return actionFor(p, strictest), reasonName(r) + "(as " + reasonName(strictest) + ")"
}

// notifyReasons returns the reasons a decision counts as for the notify
// rules: a missing reason is selected by a rule naming it or, like an
// unknown one, by a rule naming THIRD_PARTY_DATA_REQUEST.
func notifyReasons(r custosv1.Reason) []custosv1.Reason {
	if _, known := custosv1.Reason_name[int32(r)]; known && r != custosv1.Reason_REASON_UNSPECIFIED {
		return []custosv1.Reason{r}
	}
	return []custosv1.Reason{r, custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST}
}

// actionFor returns the policy's action for a reason; unlisted reasons need
// approval.
func actionFor(p *custosv1.KeyPolicy, r custosv1.Reason) custosv1.Action {
	for _, rr := range p.Reasons {
		if rr.Reason == r {
			return rr.Action
		}
	}
	return custosv1.Action_ACTION_REQUIRE_APPROVAL
}

// inWindows reports whether t (UTC) falls in one of the policy's windows;
// no windows means always. Apply passes the command's effective time, which
// never goes back (clock.go), so a back-dated stamp cannot reopen a window.
func inWindows(p *custosv1.KeyPolicy, t time.Time) bool {
	if len(p.Windows) == 0 {
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

// isKeyUser reports whether principal is named by the key's policy.
func isKeyUser(p *custosv1.KeyPolicy, principal string) bool {
	return slices.Contains(p.EncryptPrincipals, principal) || slices.Contains(p.DecryptPrincipals, principal)
}

// isKeyAdmin reports whether principal may administer the key (rotate,
// raise the minimum version, disable): one of its admin_principals, or —
// for a policy written before admin_principals existed, which names none —
// any principal the policy names, as then.
func isKeyAdmin(p *custosv1.KeyPolicy, principal string) bool {
	if len(p.AdminPrincipals) == 0 {
		return isKeyUser(p, principal)
	}
	return slices.Contains(p.AdminPrincipals, principal)
}
