package kms

import (
	"fmt"
	"time"

	"github.com/custos-kms/custos/kms/keypolicy"
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
	defaultGrantUses = keypolicy.DefaultGrantUses
	maxGrantUses     = 1_000_000
	// maxGrantDataDigests bounds the ciphertexts one grant names.
	maxGrantDataDigests = 64
	defaultGrantTTL     = keypolicy.DefaultGrantTTL
	maxGrantTTL         = 30 * 24 * time.Hour
)

// DefaultPolicy is the policy of a new key (keypolicy.Default): only its
// creator may use it; the customer's own reasons are allowed, every other
// reason needs the officers' approval.
func DefaultPolicy(creator string) *custosv1.KeyPolicy { return keypolicy.Default(creator) }

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

// notifyReasons returns the reasons a decision counts as for the notify
// rules: a missing reason is selected by a rule naming it or, like an
// unknown one, by a rule naming THIRD_PARTY_DATA_REQUEST.
func notifyReasons(r custosv1.Reason) []custosv1.Reason {
	if _, known := custosv1.Reason_name[int32(r)]; known && r != custosv1.Reason_REASON_UNSPECIFIED {
		return []custosv1.Reason{r}
	}
	return []custosv1.Reason{r, custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST}
}

// The decision rules shared with the auditor's recomputation (keypolicy).
var (
	policyAction = keypolicy.Action
	inWindows    = keypolicy.InWindows
	isKeyUser    = keypolicy.IsUser
	isKeyAdmin   = keypolicy.IsAdmin
)
