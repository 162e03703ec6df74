package audit

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Disclosure is the report a customer hands its supervisors: over a period
// (and optionally one key), who used which key for what reason, what was
// refused, what waited for the officers, what the officers did, which
// allowed uses released nothing (and why), how keys were administered, how
// the cluster's membership changed, and which records the notify rules
// selected. Build it with Summarize from records that were
// verified first (Verify); render it with Text or encoding/json.
type Disclosure struct {
	// Since and Until bound the period (zero: unbounded); Key limits the
	// report to one key ("" = every key).
	Since time.Time `json:"since,omitzero"`
	Until time.Time `json:"until,omitzero"`
	Key   string    `json:"key,omitempty"`
	// FirstSeq and LastSeq are the first and last record in the period;
	// Records counts the records in it.
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	Records  int    `json:"records"`

	// Uses totals the allowed key uses and how many of them released
	// their key.
	Uses UseTotals `json:"uses"`
	// Allowed counts allowed key uses (decrypt, data key decrypt,
	// re-encrypt) by principal, key, reason and operation, and how many of
	// them released the key.
	Allowed []UseCount `json:"allowed"`
	// ThirdPartyRequests counts the allowed uses with reason
	// THIRD_PARTY_DATA_REQUEST (also in Allowed).
	ThirdPartyRequests int `json:"third_party_requests"`
	// Denied and Pending list every refused and every waiting attempt.
	Denied  []Event `json:"denied"`
	Pending []Event `json:"pending"`
	// Governance lists the officers' statements, applied or refused.
	Governance []Event `json:"governance"`
	// BlockedReleases lists the RELEASE_BLOCKED records: allowed uses that
	// released nothing, each with its cause (Event.Cause).
	BlockedReleases []Event `json:"blocked_releases"`
	// KeyAdministration lists the key users' own changes to keys (create,
	// rotate, disable, minimum decryption version), made or refused.
	KeyAdministration []Event `json:"key_administration"`
	// Membership lists the changes of the cluster's Raft membership.
	Membership []Event `json:"membership"`
	// Notified lists the records the notify rules selected.
	Notified []uint64 `json:"notified"`
	// Checkpoints counts signed checkpoints recorded in the period.
	Checkpoints int `json:"checkpoints"`
}

// UseTotals counts the allowed key uses of a Disclosure. An ALLOW decision
// followed by a RELEASE_BLOCKED record for the same request id released
// nothing; every other ALLOW counts as released — also one whose node
// crashed between the decision and the release, which leaves no follow-up
// record (conservative: the report may overstate use, never understate it).
type UseTotals struct {
	// Allowed counts the ALLOW decisions for key uses.
	Allowed int `json:"allowed"`
	// Released counts those not followed by a RELEASE_BLOCKED record.
	Released int `json:"released"`
	// NotReleased counts those followed by one; NotReleasedByCause splits
	// them by the record's cause ("notify", "hsm", "not-admitted",
	// "hsm-object", "decryption-failed", "cancelled", "error").
	NotReleased        int            `json:"not_released"`
	NotReleasedByCause map[string]int `json:"not_released_by_cause"`
}

// UseCount is one row of Disclosure.Allowed.
type UseCount struct {
	Principal string `json:"principal"`
	Key       string `json:"key"`
	Reason    string `json:"reason"`
	Operation string `json:"operation"`
	// Allowed counts the ALLOW decisions of the row, Released those that
	// released the key, NotReleased the others (UseTotals).
	Allowed     int    `json:"allowed"`
	Released    int    `json:"released"`
	NotReleased int    `json:"not_released"`
	FirstSeq    uint64 `json:"first_seq"`
	LastSeq     uint64 `json:"last_seq"`
}

// Event is one listed record.
type Event struct {
	Seq           uint64    `json:"seq"`
	Time          time.Time `json:"time"`
	Principal     string    `json:"principal"`
	Key           string    `json:"key,omitempty"`
	Operation     string    `json:"operation"`
	Outcome       string    `json:"outcome"`
	Reason        string    `json:"reason,omitempty"`
	Justification string    `json:"justification,omitempty"`
	Ticket        string    `json:"ticket,omitempty"`
	KeyVersion    uint32    `json:"key_version,omitempty"`
	RequestID     string    `json:"request_id,omitempty"`
	Rule          string    `json:"rule,omitempty"`
	Signers       []string  `json:"signers,omitempty"`
	Detail        string    `json:"detail,omitempty"`
	// Cause is why a RELEASE_BLOCKED record's decision released nothing.
	Cause string `json:"cause,omitempty"`
}

func enumName(s string, prefix string) string { return strings.TrimPrefix(s, prefix) }

func reasonName(r custosv1.Reason) string {
	return enumName(r.String(), "REASON_")
}

func opName(o custosv1.Operation) string { return enumName(o.String(), "OPERATION_") }

// isKeyAdminName is isKeyAdmin for an Event's operation name.
func isKeyAdminName(name string) bool {
	v, ok := custosv1.Operation_value["OPERATION_"+name]
	return ok && isKeyAdmin(custosv1.Operation(v))
}

func outcomeName(o custosv1.Outcome) string { return enumName(o.String(), "OUTCOME_") }

func event(r *custosv1.DecisionRecord) Event {
	e := Event{
		Seq: r.Seq, Time: time.Unix(0, r.TimeUnixNano).UTC(), Principal: r.Principal, Key: r.Key,
		Operation: opName(r.Operation), Outcome: outcomeName(r.Outcome), Justification: r.JustificationText,
		Ticket: r.Ticket, RequestID: r.RequestId, Rule: r.MatchedRule, Signers: r.Signers, Detail: r.Detail,
	}
	if isKeyAdmin(r.Operation) {
		e.KeyVersion = r.KeyVersion
	}
	// A key use names its reason, UNSPECIFIED when the caller gave none.
	if r.Reason != custosv1.Reason_REASON_UNSPECIFIED || isUse(r.Operation) {
		e.Reason = reasonName(r.Reason)
	}
	if r.Operation == custosv1.Operation_OPERATION_RELEASE_BLOCKED {
		e.Cause = BlockCause(r.MatchedRule)
	}
	return e
}

// BlockCause returns the cause a RELEASE_BLOCKED record's matched rule
// names: "notify" for "notify-before-release:decision-<seq>", <cause> for
// "release-blocked:<cause>:decision-<seq>", "unknown" otherwise.
func BlockCause(rule string) string {
	if strings.HasPrefix(rule, "notify-before-release:") {
		return "notify"
	}
	if rest, ok := strings.CutPrefix(rule, "release-blocked:"); ok {
		if cause, _, ok := strings.Cut(rest, ":"); ok && cause != "" {
			return cause
		}
	}
	return "unknown"
}

// isKeyAdmin reports whether op is a key user's change to a key.
func isKeyAdmin(op custosv1.Operation) bool {
	switch op {
	case custosv1.Operation_OPERATION_CREATE_KEY, custosv1.Operation_OPERATION_ROTATE_KEY,
		custosv1.Operation_OPERATION_DISABLE_KEY, custosv1.Operation_OPERATION_SET_MIN_DECRYPTION_VERSION:
		return true
	}
	return false
}

func isUse(op custosv1.Operation) bool {
	switch op {
	case custosv1.Operation_OPERATION_DECRYPT, custosv1.Operation_OPERATION_DECRYPT_DATA_KEY, custosv1.Operation_OPERATION_REENCRYPT:
		return true
	}
	return false
}

// Summarize builds the disclosure for the records with since <= time <
// until (a zero bound is open) and, if key is not "", about that key.
// records must be in ledger order. An ALLOW counts as released unless a
// RELEASE_BLOCKED record among records (in the period or after it) names
// its request id.
func Summarize(records []*custosv1.DecisionRecord, since, until time.Time, key string) *Disclosure {
	d := &Disclosure{Since: since, Until: until, Key: key, Uses: UseTotals{NotReleasedByCause: map[string]int{}},
		Allowed: []UseCount{}, Denied: []Event{}, Pending: []Event{}, Governance: []Event{}, BlockedReleases: []Event{},
		KeyAdministration: []Event{}, Membership: []Event{}, Notified: []uint64{}}
	blocked := map[string]string{} // request id of an ALLOW → cause of its RELEASE_BLOCKED record
	for _, r := range records {
		if r.Operation == custosv1.Operation_OPERATION_RELEASE_BLOCKED && r.RequestId != "" {
			blocked[r.RequestId] = BlockCause(r.MatchedRule)
		}
	}
	type useKey struct{ principal, key, reason, op string }
	uses := map[useKey]*UseCount{}
	for _, r := range records {
		t := time.Unix(0, r.TimeUnixNano)
		if (!since.IsZero() && t.Before(since)) || (!until.IsZero() && !t.Before(until)) {
			continue
		}
		if key != "" && r.Key != key {
			continue
		}
		if d.Records == 0 {
			d.FirstSeq = r.Seq
		}
		d.Records++
		d.LastSeq = r.Seq
		if r.Notify {
			d.Notified = append(d.Notified, r.Seq)
		}
		switch {
		case r.Operation == custosv1.Operation_OPERATION_CHECKPOINT:
			d.Checkpoints++
		case r.Operation == custosv1.Operation_OPERATION_GOVERNANCE:
			d.Governance = append(d.Governance, event(r))
		case r.Operation == custosv1.Operation_OPERATION_RELEASE_BLOCKED:
			d.BlockedReleases = append(d.BlockedReleases, event(r))
		case isKeyAdmin(r.Operation):
			d.KeyAdministration = append(d.KeyAdministration, event(r))
		case r.Operation == custosv1.Operation_OPERATION_MEMBERSHIP:
			d.Membership = append(d.Membership, event(r))
		case isUse(r.Operation) && r.Outcome == custosv1.Outcome_OUTCOME_ALLOW:
			k := useKey{r.Principal, r.Key, reasonName(r.Reason), opName(r.Operation)}
			u := uses[k]
			if u == nil {
				u = &UseCount{Principal: k.principal, Key: k.key, Reason: k.reason, Operation: k.op, FirstSeq: r.Seq}
				uses[k] = u
			}
			u.Allowed++
			u.LastSeq = r.Seq
			d.Uses.Allowed++
			if cause, ok := blocked[r.RequestId]; ok && r.RequestId != "" {
				u.NotReleased++
				d.Uses.NotReleased++
				d.Uses.NotReleasedByCause[cause]++
			} else {
				u.Released++
				d.Uses.Released++
			}
			if r.Reason == custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST {
				d.ThirdPartyRequests++
			}
		case r.Outcome == custosv1.Outcome_OUTCOME_DENY:
			d.Denied = append(d.Denied, event(r))
		case r.Outcome == custosv1.Outcome_OUTCOME_PENDING:
			d.Pending = append(d.Pending, event(r))
		}
	}
	for _, u := range uses {
		d.Allowed = append(d.Allowed, *u)
	}
	slices.SortFunc(d.Allowed, func(a, b UseCount) int {
		return cmp.Or(cmp.Compare(a.Principal, b.Principal), cmp.Compare(a.Key, b.Key),
			cmp.Compare(a.Reason, b.Reason), cmp.Compare(a.Operation, b.Operation))
	})
	return d
}

// JSON returns the disclosure as indented JSON.
func (d *Disclosure) JSON() ([]byte, error) { return json.MarshalIndent(d, "", "  ") }

// Text renders the disclosure as plain text for people.
func (d *Disclosure) Text() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	bound := func(t time.Time, open string) string {
		if t.IsZero() {
			return open
		}
		return t.UTC().Format(time.RFC3339)
	}
	p("custos key-use disclosure\n")
	p("period:  %s to %s\n", bound(d.Since, "the beginning"), bound(d.Until, "the end of the export"))
	if d.Key != "" {
		p("key:     %s\n", d.Key)
	} else {
		p("keys:    all\n")
	}
	if d.Records == 0 {
		p("records: none in the period\n")
	} else {
		p("records: %d (ledger seq %d to %d), %d signed checkpoints\n", d.Records, d.FirstSeq, d.LastSeq, d.Checkpoints)
	}
	p("\nAllowed key uses: %d (third-party data requests: %d)\n", d.Uses.Allowed, d.ThirdPartyRequests)
	p("  released:     %d\n", d.Uses.Released)
	p("  not released: %d", d.Uses.NotReleased)
	if len(d.Uses.NotReleasedByCause) > 0 {
		causes := make([]string, 0, len(d.Uses.NotReleasedByCause))
		for c, n := range d.Uses.NotReleasedByCause {
			causes = append(causes, fmt.Sprintf("%s %d", c, n))
		}
		slices.Sort(causes)
		p(" (%s)", strings.Join(causes, ", "))
	}
	p("\n")
	if len(d.Allowed) > 0 {
		p("  %-20s %-20s %-26s %-18s %7s %8s %12s  %s\n", "principal", "key", "reason", "operation", "allowed", "released", "not released", "seq")
		for _, u := range d.Allowed {
			p("  %-20s %-20s %-26s %-18s %7d %8d %12d  %d-%d\n", u.Principal, u.Key, u.Reason, u.Operation,
				u.Allowed, u.Released, u.NotReleased, u.FirstSeq, u.LastSeq)
		}
	}
	list := func(title string, es []Event) {
		p("\n%s: %d\n", title, len(es))
		for _, e := range es {
			p("  #%d %s", e.Seq, e.Time.Format(time.RFC3339))
			if e.Principal != "" { // membership records have none
				p(" %s", e.Principal)
			}
			if e.Key != "" {
				p(" key=%s", e.Key)
			}
			if e.Operation != "" && e.Operation != "GOVERNANCE" && e.Operation != "MEMBERSHIP" {
				p(" op=%s", e.Operation)
			}
			if e.KeyVersion != 0 {
				p(" version=%d", e.KeyVersion)
			}
			if e.Reason != "" {
				p(" reason=%s", e.Reason)
			}
			if e.Operation == "GOVERNANCE" || isKeyAdminName(e.Operation) {
				p(" %s", e.Outcome)
			}
			if e.RequestID != "" {
				p(" request=%s", e.RequestID)
			}
			if e.Ticket != "" {
				p(" ticket=%q", e.Ticket)
			}
			if e.Cause != "" {
				p(" cause=%s", e.Cause)
			}
			if e.Rule != "" {
				p(" rule=%s", e.Rule)
			}
			if len(e.Signers) > 0 {
				p(" signers=%s", strings.Join(e.Signers, ","))
			}
			if e.Justification != "" {
				p(" text=%q", e.Justification)
			}
			if e.Detail != "" {
				p(" detail=%q", e.Detail)
			}
			p("\n")
		}
	}
	list("Denied attempts", d.Denied)
	list("Pending (awaiting officer approval)", d.Pending)
	list("Governance actions", d.Governance)
	list("Blocked releases (allowed, nothing released)", d.BlockedReleases)
	list("Key administration (by key users; refused attempts DENY)", d.KeyAdministration)
	list("Membership changes (Raft configuration)", d.Membership)
	p("\nRecords selected by the notify rules: %d", len(d.Notified))
	if len(d.Notified) > 0 {
		s := make([]string, 0, len(d.Notified))
		for _, q := range d.Notified {
			s = append(s, fmt.Sprint(q))
		}
		p(" (seq %s)", strings.Join(s, ", "))
	}
	p("\n")
	return b.String()
}

// ReadRecords reads an export file and returns its decoded records, for
// Summarize. Verify the file first: ReadRecords checks only the framing.
func ReadRecords(r *Reader) ([]*custosv1.DecisionRecord, error) {
	var out []*custosv1.DecisionRecord
	for {
		it, err := r.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, err
		}
		if data := it.GetRecord(); data != nil {
			rec, err := decode(data)
			if err != nil {
				return out, fmt.Errorf("%w: record after seq %d does not decode: %v", ErrFormat, len(out), err)
			}
			out = append(out, rec)
		}
	}
}
