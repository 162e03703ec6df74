package xks_test

import (
	"context"
	"testing"
	"time"

	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// blockedRecord returns the RELEASE_BLOCKED record of the decision allow.
func (f *fixture) blockedRecord(t *testing.T, allow *custosv1.DecisionRecord) *custosv1.DecisionRecord {
	t.Helper()
	st := f.svc.State()
	head, _ := st.LedgerHead()
	for seq := head; seq > allow.Seq; seq-- {
		rec, err := st.DecisionRecord(seq)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Operation == custosv1.Operation_OPERATION_RELEASE_BLOCKED && rec.RequestId == allow.RequestId {
			return rec
		}
	}
	return nil
}

// TestXKSDeadline: a decrypt whose notification before release does not
// complete is answered at the deadline — 503 DependencyTimeoutException,
// while the sink still holds the notification — with nothing released,
// its ALLOW decision in the ledger and, once the work behind it ends, a
// RELEASE_BLOCKED record. Both a sink that never answers (and ignores the
// request's context) and one that gives up with the context are covered.
func TestXKSDeadline(t *testing.T) {
	f := newFixture(t)
	f.createKey(t, "notified")
	p := kms.DefaultPolicy(xksUser)
	p.NotifyBeforeRelease = true
	ss := f.h.Sign(t, func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "notified", Policy: p}}
	}, 0, 1)
	if _, err := f.svc.Submit(bg, kms.Principal{Name: "officer-1"}, ss); err != nil {
		t.Fatalf("SetPolicy: %v", err)
	}
	cfg := f.cfg
	cfg.Deadline = time.Second
	if err := f.handler.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	enc := f.call(t, "keys/notified/encrypt", encryptBody([]byte("0123456789abcdef0123456789abcdef"), nil))
	if enc.status != 200 {
		t.Fatalf("encrypt = %d %v", enc.status, enc.body)
	}

	for _, c := range []struct {
		name       string
		honoursCtx bool
		cause      string
	}{{"sink hangs", false, kms.BlockCauseCancelled}, {"sink gives up with the request", true, ""}} {
		t.Run(c.name, func(t *testing.T) {
			entered := make(chan *custosv1.DecisionRecord, 1)
			release := make(chan struct{})
			f.svc.SetReleaseNotifier(func(ctx context.Context, rec *custosv1.DecisionRecord) error {
				entered <- rec
				if c.honoursCtx {
					select {
					case <-release:
					case <-ctx.Done():
						return ctx.Err()
					}
					return nil
				}
				<-release
				return nil
			})
			kmsID := "deadline-" + c.name
			answer := make(chan reply, 1)
			go func() { answer <- f.call(t, "keys/notified/decrypt", decryptBody(kmsID, enc, nil)) }()
			var r reply
			select {
			case r = <-answer:
			case <-time.After(time.Minute): // a watchdog, not a wait for a condition
				close(release)
				t.Fatal("no answer while the sink held the notification: the request has no deadline")
			}
			select {
			case <-entered:
			default:
				t.Fatal("answered without asking the sink")
			}
			r.wantError(t, 503, "DependencyTimeoutException")
			if r.body["plaintext"] != nil {
				t.Fatal("plaintext in a timed-out answer")
			}
			allow := f.record(t, kmsID)
			if allow.Outcome != custosv1.Outcome_OUTCOME_ALLOW || allow.Key != "notified" {
				t.Fatalf("decision = %v", allow)
			}
			close(release)
			f.handler.Wait()
			b := f.blockedRecord(t, allow)
			if b == nil {
				t.Fatal("no RELEASE_BLOCKED record after the timed-out decrypt")
			}
			if c.cause != "" && b.MatchedRule != kms.BlockReleaseRule(c.cause, allow.Seq) {
				t.Errorf("RELEASE_BLOCKED rule %q, want %q", b.MatchedRule, kms.BlockReleaseRule(c.cause, allow.Seq))
			}
		})
	}
}
