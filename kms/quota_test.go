package kms_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// quotaService is a second service on e's node with the given rate quotas
// and a clock that never moves, so that no bucket refills during the test.
func quotaService(t *testing.T, e *env, decisions, refusals float64) *kms.Service {
	t.Helper()
	return quotaServiceBurst(t, e, decisions, refusals, 0)
}

func quotaServiceBurst(t *testing.T, e *env, decisions, refusals float64, burst int) *kms.Service {
	t.Helper()
	at := time.Now()
	svc, err := kms.NewService(kms.Config{NodeID: "node-1", HSM: e.hsm, Log: e.log, State: e.state, Logger: quiet,
		Now: func() time.Time { return at }, DecisionsPerSecond: decisions, RefusalsPerSecond: refusals, RefusalBurst: burst})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// throttledRecords returns the THROTTLED records after seq.
func throttledRecords(t *testing.T, e *env, after uint64) []*custosv1.DecisionRecord {
	t.Helper()
	head, _ := e.state.LedgerHead()
	var out []*custosv1.DecisionRecord
	for seq := after + 1; seq <= head; seq++ {
		r, err := e.state.DecisionRecord(seq)
		if err != nil {
			t.Fatal(err)
		}
		if r.Operation == custosv1.Operation_OPERATION_THROTTLED {
			out = append(out, r)
		}
	}
	return out
}

// A flood of requests that would be refused anyway (a key that does not
// exist) is cut to the refusal quota: the first burst is decided and
// recorded one by one, the rest refused with ResourceExhausted before
// anything is proposed, and summarised in one THROTTLED record per
// principal — nothing refused is missing from the ledger.
func TestRefusalFloodIsThrottledAndSummarised(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	dk := dataKey(t, e, "k", nil)
	svc := quotaService(t, e, 0, 1)
	missing, err := kms.ParseWrapped(dk.WrappedDataKey)
	if err != nil {
		t.Fatal(err)
	}
	missing.Key = "no-such-key"
	req := &custosv1.DecryptRequest{Ciphertext: missing.Marshal(), Justification: &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED}}
	batch := make([]*custosv1.DecryptRequest, kms.MaxBatchDecrypt)
	for i := range batch {
		batch[i] = req
	}
	start, _ := e.state.LedgerHead()
	for round := range 3 {
		items, err := svc.BatchDecrypt(bg, app, &custosv1.BatchDecryptRequest{Requests: batch})
		if err != nil {
			t.Fatal(err)
		}
		for i, it := range items {
			want := kms.ErrNotFound
			if round > 0 {
				want = kms.ErrResourceExhausted
			}
			if !errors.Is(it.Err, want) {
				t.Fatalf("round %d item %d: %v, want %v", round, i, it.Err, want)
			}
		}
	}
	head, _ := e.state.LedgerHead()
	if got := head - start; got != kms.MaxBatchDecrypt {
		t.Fatalf("%d records for the flood, want %d (the burst) before the summary", got, kms.MaxBatchDecrypt)
	}
	// The key exists and names app: its decisions are not refusals and
	// pass.
	if _, err := svc.Decrypt(bg, app, &custosv1.DecryptRequest{Ciphertext: dk.WrappedDataKey, Justification: req.Justification}); err != nil {
		t.Fatalf("a decrypt the policy allows, during the flood: %v", err)
	}
	if err := svc.FlushThrottled(bg); err != nil {
		t.Fatal(err)
	}
	recs := throttledRecords(t, e, start)
	if len(recs) != 1 {
		t.Fatalf("%d THROTTLED records, want 1", len(recs))
	}
	r := recs[0]
	if r.Principal != app.Name || r.Outcome != custosv1.Outcome_OUTCOME_DENY || r.MatchedRule != "quota:refusals-per-second" ||
		r.Key != "no-such-key" || !strings.Contains(r.Detail, "refused 2000 requests") {
		t.Fatalf("THROTTLED record: %v", r)
	}
	// Flushed once: nothing more to record.
	if err := svc.FlushThrottled(bg); err != nil {
		t.Fatal(err)
	}
	if n := len(throttledRecords(t, e, start)); n != 1 {
		t.Fatalf("%d THROTTLED records after a second flush, want 1", n)
	}
}

// The decision quota applies to every decision of a principal on a node.
func TestDecisionRateQuota(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	dk := dataKey(t, e, "k", nil)
	svc := quotaService(t, e, 2, 0)
	j := &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED}
	for i := range 3 {
		_, err := svc.Decrypt(bg, app, &custosv1.DecryptRequest{Ciphertext: dk.WrappedDataKey, Justification: j})
		if i < 2 && err != nil {
			t.Fatalf("decrypt %d within the quota: %v", i, err)
		}
		if i == 2 && !errors.Is(err, kms.ErrResourceExhausted) {
			t.Fatalf("decrypt over the quota: %v, want ErrResourceExhausted", err)
		}
	}
	// Another principal has its own quota.
	if _, err := svc.Decrypt(bg, kms.Principal{Name: "app-2"}, &custosv1.DecryptRequest{Ciphertext: dk.WrappedDataKey, Justification: j}); errors.Is(err, kms.ErrResourceExhausted) {
		t.Fatalf("another principal throttled: %v", err)
	}
	start, _ := e.state.LedgerHead()
	if err := svc.FlushThrottled(bg); err != nil {
		t.Fatal(err)
	}
	if recs := throttledRecords(t, e, start); len(recs) != 1 || recs[0].MatchedRule != "quota:decisions-per-second" || recs[0].Key != "k" {
		t.Fatalf("THROTTLED records: %v", recs)
	}
}

// Keys per principal and pending requests per principal are cluster
// quotas the officers' quorum sets.
func TestClusterQuotas(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k1")
	set := func(keys, pending uint32) func(*custosv1.Statement) {
		return func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_SetQuotas{SetQuotas: &custosv1.SetQuotas{Quotas: &custosv1.Quotas{
				MaxKeysPerPrincipal: keys, MaxPendingPerPrincipal: pending}}}
		}
	}
	if _, err := e.govern(set(2, 1), 0); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("set_quotas by one officer: %v, want ErrPermissionDenied", err)
	}
	if _, err := e.govern(set(2, 1), 0, 1); err != nil {
		t.Fatalf("set_quotas by the quorum: %v", err)
	}
	createKey(t, e, "k2")
	if _, err := e.svc.CreateKey(bg, app, &custosv1.CreateKeyRequest{Name: "k3"}); !errors.Is(err, kms.ErrResourceExhausted) {
		t.Fatalf("a third key over a quota of 2: %v, want ErrResourceExhausted", err)
	}
	if rec := lastRecord(t, e); rec.Operation != custosv1.Operation_OPERATION_CREATE_KEY || rec.Outcome != custosv1.Outcome_OUTCOME_DENY ||
		rec.MatchedRule != "key-admin:create:denied" {
		t.Fatalf("the refused creation is not on record: %v", rec)
	}
	if _, err := e.svc.CreateKey(bg, kms.Principal{Name: "other"}, &custosv1.CreateKeyRequest{Name: "k3"}); err != nil {
		t.Fatalf("another principal's first key: %v", err)
	}
	dk := dataKey(t, e, "k1", nil)
	third := custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST
	if _, err := decryptAs(e, app.Name, dk.WrappedDataKey, third); !errors.Is(err, kms.ErrApprovalRequired) {
		t.Fatalf("first request for approval: %v", err)
	}
	_, err := decryptAs(e, app.Name, dk.WrappedDataKey, third)
	if !errors.Is(err, kms.ErrResourceExhausted) {
		t.Fatalf("a second pending request over a quota of 1: %v, want ErrResourceExhausted", err)
	}
	if rec := lastRecord(t, e); rec.MatchedRule != "approval:too-many-pending" || rec.Outcome != custosv1.Outcome_OUTCOME_DENY {
		t.Fatalf("record: %v", rec)
	}
	if q := e.state.Governance().Quotas; q.GetMaxKeysPerPrincipal() != 2 || q.GetMaxPendingPerPrincipal() != 1 {
		t.Fatalf("governance quotas: %v", q)
	}
}

// Every route that writes a refusal to the ledger is under the refusal
// quota, not only decrypts of unknown keys: malformed or unsigned
// statements, key administration by a principal that is not the key's
// administrator, decrypts under a version that does not exist.
func TestRefusalQuotaCoversEveryRoute(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "victim")
	dk := dataKey(t, e, "victim", nil)
	svc := quotaServiceBurst(t, e, 0, 1, 2)
	w, err := kms.ParseWrapped(dk.WrappedDataKey)
	if err != nil {
		t.Fatal(err)
	}
	w.KeyVersion = 99
	badVersion := w.Marshal()
	j := &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED}
	routes := map[string]func(p kms.Principal) error{
		"garbage statement": func(p kms.Principal) error {
			_, err := svc.Submit(bg, p, &custosv1.SignedStatement{Statement: []byte("not a statement"),
				Signatures: []*custosv1.OfficerSignature{{Officer: "nobody", Signature: []byte{1}}}})
			return err
		},
		"disable someone else's key": func(p kms.Principal) error {
			_, err := svc.SetKeyState(bg, p, &custosv1.SetKeyStateRequest{Name: "victim", State: custosv1.KeyState_KEY_STATE_DISABLED})
			return err
		},
		"rotate someone else's key": func(p kms.Principal) error {
			_, err := svc.RotateKey(bg, p, &custosv1.RotateKeyRequest{Name: "victim"})
			return err
		},
		"decrypt under a version that does not exist": func(p kms.Principal) error {
			_, err := svc.Decrypt(bg, p, &custosv1.DecryptRequest{Ciphertext: badVersion, Justification: j})
			return err
		},
	}
	for name, call := range routes {
		p := kms.Principal{Name: "flood-" + strings.ReplaceAll(name, " ", "-")}
		if name == "decrypt under a version that does not exist" {
			p = app // the key's own user
		}
		start, _ := e.state.LedgerHead()
		for i := range 3 {
			err := call(p)
			if i < 2 && (err == nil || errors.Is(err, kms.ErrResourceExhausted)) {
				t.Fatalf("%s, attempt %d: %v, want the refusal itself", name, i, err)
			}
			if i == 2 && !errors.Is(err, kms.ErrResourceExhausted) {
				t.Fatalf("%s, attempt 3 over a burst of 2: %v, want ErrResourceExhausted", name, err)
			}
		}
		if head, _ := e.state.LedgerHead(); head-start != 2 {
			t.Fatalf("%s: %d records, want the 2 refusals within the burst", name, head-start)
		}
	}
	// The key's user's allowed traffic on this node is not cut by its
	// refusals.
	if _, err := svc.Decrypt(bg, app, &custosv1.DecryptRequest{Ciphertext: dk.WrappedDataKey, Justification: j}); err != nil {
		t.Fatalf("an allowed decrypt after the principal's refusals were throttled: %v", err)
	}
	if err := svc.FlushThrottled(bg); err != nil {
		t.Fatal(err)
	}
}
