package audit_test

import (
	"strings"
	"testing"
	"time"

	"github.com/custos-kms/custos/kms/audit"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// The disclosure says what happened: a key use without a reason is listed
// as UNSPECIFIED (not left blank, not as another reason), and key
// administration and membership changes have sections of their own instead
// of being counted as uses, refusals or nothing.
func TestDisclosureListsUnspecifiedKeyAdministrationAndMembership(t *testing.T) {
	at := func(s int64) int64 {
		return time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(s) * time.Second).UnixNano()
	}
	allow, deny, pending := custosv1.Outcome_OUTCOME_ALLOW, custosv1.Outcome_OUTCOME_DENY, custosv1.Outcome_OUTCOME_PENDING
	recs := []*custosv1.DecisionRecord{
		{Seq: 1, TimeUnixNano: at(1), Principal: "app", Key: "k", KeyVersion: 1, Operation: custosv1.Operation_OPERATION_CREATE_KEY,
			Outcome: allow, MatchedRule: "key-admin:create", Detail: "key created with version 1; its policy names the creator only"},
		{Seq: 2, TimeUnixNano: at(2), Operation: custosv1.Operation_OPERATION_MEMBERSHIP, Outcome: allow,
			MatchedRule: "raft-configuration:add-voter", Detail: "server node2 at 10.0.0.2:7000 added as Voter", Notify: true},
		{Seq: 3, TimeUnixNano: at(3), Principal: "app", Key: "k", KeyVersion: 1, Operation: custosv1.Operation_OPERATION_DECRYPT_DATA_KEY,
			Outcome: pending, MatchedRule: "policy/v1:reason=UNSPECIFIED:require-approval", RequestId: "r1"},
		{Seq: 4, TimeUnixNano: at(4), Principal: "app", Key: "k", KeyVersion: 1, Operation: custosv1.Operation_OPERATION_DECRYPT_DATA_KEY,
			Outcome: allow, MatchedRule: "grant:g-1", RequestId: "r2"},
		{Seq: 5, TimeUnixNano: at(5), Principal: "intruder", Key: "k", KeyVersion: 2, Operation: custosv1.Operation_OPERATION_ROTATE_KEY,
			Outcome: deny, MatchedRule: "key-admin:rotate:denied", Detail: "permission denied", Notify: true},
		{Seq: 6, TimeUnixNano: at(6), Principal: "app", Key: "k", KeyVersion: 2, Operation: custosv1.Operation_OPERATION_ROTATE_KEY,
			Outcome: allow, MatchedRule: "key-admin:rotate"},
		{Seq: 7, TimeUnixNano: at(7), Principal: "app", Key: "k", Operation: custosv1.Operation_OPERATION_DISABLE_KEY,
			Outcome: allow, MatchedRule: "key-admin:disable"},
		{Seq: 8, TimeUnixNano: at(8), Principal: "app", Key: "k", KeyVersion: 2, Operation: custosv1.Operation_OPERATION_SET_MIN_DECRYPTION_VERSION,
			Outcome: allow, MatchedRule: "key-admin:set-min-decryption-version"},
	}
	d := audit.Summarize(recs, time.Time{}, time.Time{}, "")
	if len(d.Allowed) != 1 || d.Allowed[0].Reason != "UNSPECIFIED" || d.Allowed[0].Allowed != 1 || d.Allowed[0].Released != 1 {
		t.Errorf("allowed = %+v, want one use with reason UNSPECIFIED", d.Allowed)
	}
	if len(d.Pending) != 1 || d.Pending[0].Reason != "UNSPECIFIED" {
		t.Errorf("pending = %+v, want the request listed with reason UNSPECIFIED", d.Pending)
	}
	if len(d.Denied) != 0 {
		t.Errorf("denied = %+v: a refused rotation is key administration, not a refused key use", d.Denied)
	}
	if len(d.KeyAdministration) != 5 || d.KeyAdministration[1].Outcome != "DENY" || d.KeyAdministration[1].Principal != "intruder" ||
		d.KeyAdministration[2].KeyVersion != 2 {
		t.Errorf("key administration = %+v", d.KeyAdministration)
	}
	if len(d.Membership) != 1 || d.Membership[0].Seq != 2 {
		t.Errorf("membership = %+v", d.Membership)
	}
	text := d.Text()
	for _, want := range []string{
		"app                  k                    UNSPECIFIED",
		"reason=UNSPECIFIED request=r1",
		"Key administration (by key users; refused attempts DENY): 5",
		"#5 2026-11-01T00:00:05Z intruder key=k op=ROTATE_KEY version=2 DENY rule=key-admin:rotate:denied",
		"#7 2026-11-01T00:00:07Z app key=k op=DISABLE_KEY ALLOW rule=key-admin:disable",
		"Membership changes (Raft configuration): 1",
		`#2 2026-11-01T00:00:02Z rule=raft-configuration:add-voter detail="server node2 at 10.0.0.2:7000 added as Voter"`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("disclosure text lacks %q:\n%s", want, text)
		}
	}
	// A report about one key leaves the cluster's membership out.
	if k := audit.Summarize(recs, time.Time{}, time.Time{}, "k"); len(k.Membership) != 0 || len(k.KeyAdministration) != 5 {
		t.Errorf("report on key k: membership %v, key administration %d", k.Membership, len(k.KeyAdministration))
	}
}
