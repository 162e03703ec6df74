package kms_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/audit"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"google.golang.org/protobuf/proto"
)

// laggingLog is the log as a follower sees it when it has not applied
// everything the leader decided under: the decision it gets back names a
// log position one entry beyond what this node applied when the decision
// returned.
type laggingLog struct {
	kms.Log
	state *kms.State
}

func (l laggingLog) Apply(ctx context.Context, cmd *raftlogv1.Command) (any, error) {
	res, err := l.Log.Apply(ctx, cmd)
	if d, ok := res.(*kms.Decision); ok && cmd.GetDecide() != nil && d.Record != nil {
		rec := proto.Clone(d.Record).(*custosv1.DecisionRecord)
		rec.RaftIndex = l.state.AppliedIndex() + 1
		res = &kms.Decision{Record: rec, Err: d.Err, Result: d.Result, GrantID: d.GrantID}
	}
	return res, err
}

// ledgerSince returns the records after seq.
func ledgerSince(t *testing.T, st *kms.State, seq uint64) []*custosv1.DecisionRecord {
	t.Helper()
	head, _ := st.LedgerHead()
	var out []*custosv1.DecisionRecord
	for s := seq + 1; s <= head; s++ {
		r, err := st.DecisionRecord(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// blockedFor returns the RELEASE_BLOCKED record that follows the ALLOW
// decision of requestID among recs, or nil.
func blockedFor(recs []*custosv1.DecisionRecord, allow *custosv1.DecisionRecord) *custosv1.DecisionRecord {
	for _, r := range recs {
		if r.Operation == custosv1.Operation_OPERATION_RELEASE_BLOCKED && r.RequestId == allow.RequestId && r.Seq > allow.Seq {
			return r
		}
	}
	return nil
}

func notifyPolicy(notify bool) func(*custosv1.Statement) {
	return func(st *custosv1.Statement) {
		p := kms.DefaultPolicy(app.Name)
		p.NotifyBeforeRelease = notify
		st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "k", Policy: p}}
	}
}

// TestXKSDecryptWaitsUntilApplied: XKS decrypt goes through the same
// pipeline as Decrypt (docs/architecture.md, invariant 3): on a node that
// has not applied the log up to the decision it acts on nothing — no
// plaintext, and the ALLOW is followed by a RELEASE_BLOCKED record — and
// once it has, it follows the state at the decision: with a notify-before-
// release policy applied by then, the notification comes before the
// plaintext, and a notification that fails releases nothing.
func TestXKSDecryptWaitsUntilApplied(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	xc, err := e.svc.XKSEncrypt(bg, app, "k", []byte("0123456789abcdef0123456789abcdef"), []byte("aad"), false)
	if err != nil {
		t.Fatal(err)
	}
	follower, err := kms.NewService(kms.Config{NodeID: "node-1", HSM: e.hsm, Log: laggingLog{Log: e.log, state: e.state},
		State: e.state, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	j := &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Text: "xks"}
	xksDecrypt := func(ctx context.Context) ([]byte, *custosv1.DecisionRecord, error) {
		return follower.XKSDecrypt(ctx, app, "k", xc.KeyVersion, xc.IV, xc.Ciphertext, xc.Tag, []byte("aad"), j)
	}

	// Behind the decision, and nothing more is applied before the caller
	// gives up: nothing is released, and the ledger says so.
	decrypts := e.hsm.decrypts.Load()
	before, _ := e.state.LedgerHead()
	ctx, cancel := context.WithTimeout(bg, 300*time.Millisecond)
	pt, rec, err := xksDecrypt(ctx)
	cancel()
	if pt != nil || err == nil || !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("XKS decrypt on a node behind its decision: %q, %v; want nothing released, ErrUnavailable", pt, err)
	}
	if e.hsm.decrypts.Load() != decrypts {
		t.Fatal("the HSM decrypted before this node caught up with the decision")
	}
	recs := ledgerSince(t, e.state, before)
	if rec == nil || rec.Outcome != custosv1.Outcome_OUTCOME_ALLOW || blockedFor(recs, rec) == nil {
		t.Fatalf("ledger after a decision this node did not catch up with: %v", recs)
	}
	if b := blockedFor(recs, rec); b.MatchedRule != kms.BlockReleaseRule(kms.BlockCauseCancelled, rec.Seq) {
		t.Errorf("blocked release rule %q", b.MatchedRule)
	}

	// The entry this node had not applied turns notify-before-release on;
	// the notification (which fails) must come before any release.
	var mu sync.Mutex
	var notified []uint64
	notifyErr := errors.New("sink down")
	decided := make(chan struct{}, 1)
	follower2, err := kms.NewService(kms.Config{NodeID: "node-1", HSM: e.hsm, State: e.state, Logger: quiet,
		Log: hookLog{Log: laggingLog{Log: e.log, state: e.state}, after: func() { decided <- struct{}{} }}})
	if err != nil {
		t.Fatal(err)
	}
	follower2.SetReleaseNotifier(func(ctx context.Context, r *custosv1.DecisionRecord) error {
		mu.Lock()
		defer mu.Unlock()
		notified = append(notified, r.Seq)
		return notifyErr
	})
	type result struct {
		pt  []byte
		rec *custosv1.DecisionRecord
		err error
	}
	// run decrypts on the lagging node; once its decision is committed the
	// next entry (the one it had not applied) sets the policy, with
	// notify-before-release.
	run := func() result {
		done := make(chan result, 1)
		go func() {
			pt, rec, err := xksDecrypt(bg)
			done <- result{pt, rec, err}
		}()
		<-decided
		if _, err := e.govern(notifyPolicy(true), 0, 1); err != nil {
			t.Errorf("SetPolicy: %v", err)
		}
		return <-done
	}
	xksDecrypt = func(ctx context.Context) ([]byte, *custosv1.DecisionRecord, error) {
		return follower2.XKSDecrypt(ctx, app, "k", xc.KeyVersion, xc.IV, xc.Ciphertext, xc.Tag, []byte("aad"), j)
	}
	before, _ = e.state.LedgerHead()
	r := run()
	if r.pt != nil || !errors.Is(r.err, kms.ErrNotificationFailed) || r.rec == nil {
		t.Fatalf("XKS decrypt under a notify-before-release policy with the sink down: %q, %v", r.pt, r.err)
	}
	mu.Lock()
	if len(notified) != 1 || notified[0] != r.rec.Seq {
		t.Errorf("notified %v, want decision %d", notified, r.rec.Seq)
	}
	notifyErr = nil // the sink is back
	mu.Unlock()
	recs = ledgerSince(t, e.state, before)
	b := blockedFor(recs, r.rec)
	if b == nil || b.MatchedRule != kms.BlockReleaseRule(kms.BlockCauseNotify, r.rec.Seq) || !b.Notify {
		t.Fatalf("no RELEASE_BLOCKED (notify) after the refused XKS decrypt: %v", recs)
	}

	// With the sink up the notification precedes the plaintext.
	r = run()
	if r.err != nil || string(r.pt) != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("XKS decrypt with the sink up: %q, %v", r.pt, r.err)
	}
	mu.Lock()
	if notified[len(notified)-1] != r.rec.Seq {
		t.Errorf("released decision %d without notifying it first (notified %v)", r.rec.Seq, notified)
	}
	mu.Unlock()
}

// hookLog calls after each time a Decide has been committed.
type hookLog struct {
	kms.Log
	after func()
}

func (l hookLog) Apply(ctx context.Context, cmd *raftlogv1.Command) (any, error) {
	res, err := l.Log.Apply(ctx, cmd)
	if cmd.GetDecide() != nil && l.after != nil {
		defer l.after()
	}
	return res, err
}

// failingDecryptHSM is a real HSM whose decryptions fail as if the token
// were unreachable.
type failingDecryptHSM struct{ hsm.Backend }

func (failingDecryptHSM) DecryptGCM(context.Context, hsm.KeyRef, []byte, []byte, []byte) ([]byte, error) {
	return nil, fmt.Errorf("%w: token removed", hsm.ErrUnavailable)
}

// TestReleaseBlockedRecorded: every ALLOW that released nothing — the HSM
// failed, the ciphertext did not authenticate, the caller gave up — is
// followed by a RELEASE_BLOCKED record naming the cause, on every front
// door, and the disclosure report counts it as allowed but not released.
func TestReleaseBlockedRecorded(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	dk := dataKey(t, e, "k", nil)
	start, _ := e.state.LedgerHead()
	if _, err := decrypt(e, dk.WrappedDataKey, nil); err != nil { // released
		t.Fatal(err)
	}
	broken, err := kms.NewService(kms.Config{NodeID: "node-1", HSM: failingDecryptHSM{e.hsm}, Log: e.log, State: e.state, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	j := &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Text: "t"}
	req := &custosv1.DecryptRequest{Ciphertext: dk.WrappedDataKey, Justification: j}
	cancelled, cancel := context.WithCancel(bg)
	e.svc.SetReleaseNotifier(func(context.Context, *custosv1.DecisionRecord) error { cancel(); return nil })
	for _, c := range []struct {
		name  string
		call  func() error
		cause string
		kind  error
	}{
		{"Decrypt, HSM down", func() error { _, err := broken.Decrypt(bg, app, req); return err }, kms.BlockCauseHSM, kms.ErrUnavailable},
		{"ReEncrypt, HSM down", func() error {
			_, err := broken.ReEncrypt(bg, app, &custosv1.ReEncryptRequest{Ciphertext: dk.WrappedDataKey, Justification: j})
			return err
		}, kms.BlockCauseHSM, kms.ErrUnavailable},
		{"BatchDecrypt, HSM down", func() error {
			items, err := broken.BatchDecrypt(bg, app, &custosv1.BatchDecryptRequest{Requests: []*custosv1.DecryptRequest{req}})
			if err != nil {
				return err
			}
			return items[0].Err
		}, kms.BlockCauseHSM, kms.ErrUnavailable},
		{"Decrypt, wrong context", func() error {
			_, err := e.svc.Decrypt(bg, app, &custosv1.DecryptRequest{Ciphertext: dk.WrappedDataKey, Justification: j,
				EncryptionContext: map[string]string{"tenant": "other"}})
			return err
		}, kms.BlockCauseDecryptionFailed, kms.ErrDecryptionFailed},
		{"Decrypt, caller gone during the notification", func() error {
			if _, err := e.govern(notifyPolicy(true), 0, 1); err != nil {
				return err
			}
			defer func() { _, _ = e.govern(notifyPolicy(false), 0, 1) }()
			_, err := e.svc.Decrypt(cancelled, app, req)
			return err
		}, kms.BlockCauseCancelled, context.Canceled},
	} {
		before, _ := e.state.LedgerHead()
		err := c.call()
		if !errors.Is(err, c.kind) {
			t.Errorf("%s: %v, want %v", c.name, err, c.kind)
			continue
		}
		var allow *custosv1.DecisionRecord
		recs := ledgerSince(t, e.state, before)
		for _, r := range recs {
			if r.Outcome == custosv1.Outcome_OUTCOME_ALLOW && r.Operation != custosv1.Operation_OPERATION_GOVERNANCE {
				allow = r
			}
		}
		if allow == nil {
			t.Errorf("%s: no ALLOW recorded: %v", c.name, recs)
			continue
		}
		b := blockedFor(recs, allow)
		if b == nil || b.MatchedRule != kms.BlockReleaseRule(c.cause, allow.Seq) || b.Key != "k" || b.Detail == "" {
			t.Errorf("%s: RELEASE_BLOCKED after ALLOW %d: %v", c.name, allow.Seq, b)
		}
	}

	d := audit.Summarize(ledgerSince(t, e.state, start), time.Time{}, time.Time{}, "k")
	want := audit.UseTotals{Allowed: 6, Released: 1, NotReleased: 5, NotReleasedByCause: map[string]int{
		kms.BlockCauseHSM: 3, kms.BlockCauseDecryptionFailed: 1, kms.BlockCauseCancelled: 1}}
	if fmt.Sprint(d.Uses) != fmt.Sprint(want) || len(d.BlockedReleases) != 5 {
		t.Errorf("report uses %+v (%d blocked), want %+v", d.Uses, len(d.BlockedReleases), want)
	}
}
