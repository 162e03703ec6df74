package notify_test

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/notify"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"google.golang.org/protobuf/proto"
)

// Every notify record after a sink was added reaches it once, in ledger
// order, with the ledger's stored bytes; a webhook and a file sink added
// while the loop runs are both picked up; the cursors follow.
func TestStreamInOrderWebhookAndFile(t *testing.T) {
	h := nodetest.Start(t)
	st := h.Node.Service().State()
	stop := runNotifier(t, newNotifier(h, nil))

	rcv := newReceiver(t, "hook", nil)
	hookFrom := addWebhook(t, h, "hook", rcv, false)
	tr := newTraffic(t, h, "k1")
	tr.mix(t, 4)

	path := filepath.Join(t.TempDir(), "notify.jsonl")
	fileFrom := addSink(t, h, &custosv1.Sink{Name: "file", Type: custosv1.SinkType_SINK_TYPE_FILE, Path: path})
	tr.mix(t, 4)

	wantHook, wantFile := notifySeqs(t, st, hookFrom), notifySeqs(t, st, fileFrom)
	if len(wantHook) < 16 || len(wantFile) < 8 {
		t.Fatalf("too few notify records: %d, %d", len(wantHook), len(wantFile))
	}
	waitFor(t, "webhook delivery", func() bool { return rcv.hasAll(wantHook) })
	waitFor(t, "file delivery", func() bool { return len(readFileSink(t, path)) >= len(wantFile) })
	last := wantHook[len(wantHook)-1]
	waitFor(t, "cursors", func() bool {
		return sinkOf(t, st, "hook").DeliveredSeq >= last && sinkOf(t, st, "file").DeliveredSeq >= last
	})
	stop()

	led := scanLedger(t, st)
	calls := rcv.snapshot()
	got := streamSeqs(calls, false)
	if !equalSeqs(got, wantHook) {
		t.Fatalf("webhook got seqs %v\nledger notify seqs %v", got, wantHook)
	}
	for _, c := range calls {
		if !c.acked || len(c.seqs) > 4 {
			t.Fatalf("unexpected call %+v", c)
		}
		checkStored(t, led, c.records)
	}
	if led[wantHook[0]].rec.Operation != custosv1.Operation_OPERATION_GOVERNANCE {
		t.Fatalf("first record delivered is %v, want the add_sink governance record", led[wantHook[0]].rec.Operation)
	}

	lines := readFileSink(t, path)
	var fileSeqs []uint64
	for _, wr := range lines {
		fileSeqs = append(fileSeqs, wr.seq)
	}
	if !equalSeqs(fileSeqs, wantFile) {
		t.Fatalf("file got seqs %v\nledger notify seqs %v", fileSeqs, wantFile)
	}
	checkStored(t, led, lines)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("file sink mode %v, want 0600", fi.Mode().Perm())
	}
}

// Failing receivers (500, a hang past the client timeout, a closed
// connection) get the same batch again until they acknowledge it: nothing
// is lost, skipped or reordered, the cursor moves only after success, and
// the only repeats are batches that failed.
func TestRetriesAfterFailures(t *testing.T) {
	h := nodetest.Start(t)
	st := h.Node.Service().State()
	modes := map[string]func(n int) action{
		"fail500": func(n int) action {
			if n <= 3 {
				return fail500
			}
			return ack
		},
		"hang": func(n int) action {
			if n == 2 {
				return hang
			}
			return ack
		},
		"hijack": func(n int) action {
			if n == 1 || n == 3 || n == 4 {
				return hijack
			}
			return ack
		},
	}
	rcvs := map[string]*receiver{}
	from := map[string]uint64{}
	for name := range modes {
		rcvs[name] = newReceiver(t, name, nil)
		addWebhook(t, h, name, rcvs[name], false)
		from[name] = sinkOf(t, st, name).DeliveredSeq
	}
	// While a receiver fails a batch, its cursor must not cover the batch.
	for name, m := range modes {
		rcvs[name].setBehaviour(func(n int, c *call) action {
			a := m(n)
			if a != ack {
				if cur := sinkOf(t, st, name).DeliveredSeq; cur >= c.first {
					t.Errorf("%s: cursor %d covers the failing batch %v", name, cur, c.seqs)
				}
			}
			return a
		})
	}
	tr := newTraffic(t, h, "k1")
	tr.mix(t, 5)

	stop := runNotifier(t, newNotifier(h, func(c *notify.Config) {
		c.Client = &http.Client{Timeout: 300 * time.Millisecond}
	}))
	tr.mix(t, 2)
	for name, rcv := range rcvs {
		want := notifySeqs(t, st, from[name])
		waitFor(t, name+" delivery", func() bool { return rcv.hasAll(want) })
		// The cursor moves after the acknowledgement: wait for it too, or
		// stopping the loop may (legitimately) leave the last batch to be
		// delivered again.
		waitFor(t, name+" cursor", func() bool { return sinkOf(t, st, name).DeliveredSeq >= want[len(want)-1] })
	}
	stop()

	led := scanLedger(t, st)
	for name, rcv := range rcvs {
		want := notifySeqs(t, st, from[name])
		calls := rcv.snapshot()
		if acked := streamSeqs(calls, true); !equalSeqs(acked, want) {
			t.Errorf("%s: acknowledged seqs %v\nledger notify seqs %v", name, acked, want)
		}
		failed := 0
		for i, c := range calls {
			checkStored(t, led, c.records)
			if c.acked {
				continue
			}
			failed++
			// A failed batch is retried as is: the next call carries it.
			if i+1 >= len(calls) || !equalSeqs(calls[i+1].seqs, c.seqs) {
				t.Errorf("%s: failed batch %v not retried unchanged (next: %+v)", name, c.seqs, calls[min(i+1, len(calls)-1)].seqs)
			}
		}
		if failed == 0 {
			t.Errorf("%s: the receiver never failed; the test proves nothing", name)
		}
		if cur := sinkOf(t, st, name).DeliveredSeq; cur < want[len(want)-1] {
			t.Errorf("%s: cursor %d below the last delivered %d", name, cur, want[len(want)-1])
		}
	}
}

// A loop stopped in the middle of a delivery, then a node restart: the
// replicated cursor survives, the new loop delivers everything after it,
// in order, and the only repeat is the interrupted batch.
func TestStopMidStreamAndRestart(t *testing.T) {
	h := nodetest.Start(t)
	rcv := newReceiver(t, "hook", func(n int, _ *call) action {
		if n == 2 {
			return hang
		}
		return ack
	})
	addWebhook(t, h, "hook", rcv, false)
	from := sinkOf(t, h.Node.Service().State(), "hook").DeliveredSeq
	tr := newTraffic(t, h, "k1")
	tr.mix(t, 4)

	stop := runNotifier(t, newNotifier(h, nil))
	select {
	case <-rcv.hung:
	case <-time.After(waitTimeout):
		t.Fatal("the second delivery never arrived")
	}
	stop() // in the middle of the second delivery
	cursorBefore := sinkOf(t, h.Node.Service().State(), "hook").DeliveredSeq
	tr.mix(t, 2)

	h.Restart(t)
	st := h.Node.Service().State()
	cursor := sinkOf(t, st, "hook").DeliveredSeq
	calls := rcv.snapshot()
	if len(calls) != 2 || !calls[0].acked || calls[1].acked {
		t.Fatalf("before restart: calls %+v", calls)
	}
	if cursor != cursorBefore || cursor < calls[0].last || cursor >= calls[1].first {
		t.Fatalf("cursor after restart %d (before %d); first batch %v, interrupted batch %v",
			cursor, cursorBefore, calls[0].seqs, calls[1].seqs)
	}

	rcv.setBehaviour(func(int, *call) action { return ack })
	stop = runNotifier(t, newNotifier(h, nil))
	tr.mix(t, 2)
	want := notifySeqs(t, st, from)
	waitFor(t, "delivery after restart", func() bool { return rcv.hasAll(want) })
	waitFor(t, "cursor after restart", func() bool { return sinkOf(t, st, "hook").DeliveredSeq >= want[len(want)-1] })
	stop()

	calls = rcv.snapshot()
	if acked := streamSeqs(calls, true); !equalSeqs(acked, want) {
		t.Fatalf("acknowledged seqs %v\nledger notify seqs %v", acked, want)
	}
	if !equalSeqs(calls[2].seqs, calls[1].seqs) {
		t.Fatalf("interrupted batch %v was not delivered again first (got %v)", calls[1].seqs, calls[2].seqs)
	}
	// Everything seen, repeats included, is the stream plus that one batch.
	if got := len(streamSeqs(calls, false)); got != len(want)+len(calls[1].seqs) {
		t.Fatalf("saw %d records, want %d + %d repeated", got, len(want), len(calls[1].seqs))
	}
	checkIncreasing(t, "after restart", streamSeqs(calls[2:], false))
	led := scanLedger(t, st)
	for _, c := range calls {
		checkStored(t, led, c.records)
	}
}

// DeliverNow, directly and through the service for a key with
// notify_before_release: released while the required receiver answers,
// blocked (ErrUnavailable, a RELEASE_BLOCKED record, no plaintext) while it
// does not.
func TestNotifyBeforeRelease(t *testing.T) {
	h := nodetest.Start(t)
	svc := h.Node.Service()
	st := svc.State()
	n := newNotifier(h, func(c *notify.Config) { c.ReleaseTimeout = time.Second })

	probe := &custosv1.DecisionRecord{Seq: 1}
	if err := n.DeliverNow(bg, probe); !errors.Is(err, notify.ErrNoRequiredSink) ||
		err.Error() != "no sink is required for release" {
		t.Fatalf("DeliverNow without required sinks: %v", err)
	}

	rcv := newReceiver(t, "guard", nil)
	addWebhook(t, h, "guard", rcv, true)
	other := newReceiver(t, "other", nil)
	addWebhook(t, h, "other", other, false)
	if err := n.DeliverNow(bg, probe); err != nil {
		t.Fatalf("DeliverNow: %v", err)
	}
	calls := rcv.snapshot()
	if len(calls) != 1 || calls[0].purpose != "release" || !equalSeqs(calls[0].seqs, []uint64{1}) {
		t.Fatalf("guard saw %+v", calls)
	}
	if len(other.snapshot()) != 0 {
		t.Fatal("a sink not required for release got a release notification")
	}

	down := func(int, *call) action { return hijack }
	rcv.setBehaviour(down)
	if err := n.DeliverNow(bg, probe); err == nil {
		t.Fatal("DeliverNow succeeded with the receiver down")
	}

	// A key whose policy requires notification before release.
	tr := newTraffic(t, h, "guarded")
	pol := kms.DefaultPolicy("app")
	pol.NotifyBeforeRelease = true
	ss := h.Sign(t, func(s *custosv1.Statement) {
		s.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "guarded", Policy: pol}}
	}, 0, 1)
	if _, err := svc.Submit(bg, kms.Principal{Name: "officer-cli"}, ss); err != nil {
		t.Fatalf("SetPolicy: %v", err)
	}
	dk, err := svc.GenerateDataKey(bg, appPrincipal, &custosv1.GenerateDataKeyRequest{Key: "guarded"})
	if err != nil {
		t.Fatal(err)
	}
	tr.ct = dk.WrappedDataKey

	// Without a release notifier installed nothing is released.
	if resp, err := tr.decrypt("app", custosv1.Reason_REASON_CUSTOMER_INITIATED); !errors.Is(err, kms.ErrUnavailable) || resp != nil {
		t.Fatalf("decrypt without a notifier: %v", err)
	}

	n.Install()
	rcv.setBehaviour(func(int, *call) action { return ack })
	resp, err := tr.decrypt("app", custosv1.Reason_REASON_CUSTOMER_INITIATED)
	if err != nil {
		t.Fatalf("decrypt with the receiver up: %v", err)
	}
	if string(resp.Plaintext) != string(dk.Plaintext) {
		t.Fatal("decrypt returned the wrong data key")
	}
	calls = rcv.snapshot()
	lastCall := calls[len(calls)-1]
	if lastCall.purpose != "release" || !equalSeqs(lastCall.seqs, []uint64{resp.DecisionSeq}) ||
		lastCall.records[0].rec.Outcome != custosv1.Outcome_OUTCOME_ALLOW {
		t.Fatalf("release notification %+v for decision %d", lastCall, resp.DecisionSeq)
	}
	if led := scanLedger(t, st); string(led[resp.DecisionSeq].data) != string(lastCall.records[0].stored) {
		t.Fatal("release notification does not carry the stored record bytes")
	}

	rcv.setBehaviour(down)
	headBefore, _ := st.LedgerHead()
	resp, err = tr.decrypt("app", custosv1.Reason_REASON_CUSTOMER_INITIATED)
	if !errors.Is(err, kms.ErrUnavailable) || resp != nil {
		t.Fatalf("decrypt with the receiver down: resp %v, err %v", resp != nil, err)
	}
	var allow, blocked *custosv1.DecisionRecord
	for seq, lr := range scanLedger(t, st) {
		if seq <= headBefore {
			continue
		}
		switch lr.rec.Operation {
		case custosv1.Operation_OPERATION_RELEASE_BLOCKED:
			blocked = lr.rec
		case custosv1.Operation_OPERATION_DECRYPT_DATA_KEY:
			allow = lr.rec
		}
	}
	if allow == nil || allow.Outcome != custosv1.Outcome_OUTCOME_ALLOW || blocked == nil ||
		blocked.Key != "guarded" || !blocked.Notify || blocked.Seq <= allow.Seq ||
		blocked.MatchedRule != fmt.Sprintf("notify-before-release:decision-%d", allow.Seq) {
		t.Fatalf("ledger after a blocked release: allow %v, blocked %v", allow, blocked)
	}
	if strings.Contains(blocked.Detail, rcv.srv.URL) {
		t.Fatalf("blocked record names the webhook URL: %q", blocked.Detail)
	}

	// The RELEASE_BLOCKED record reaches the sinks through the stream once
	// the receiver is back.
	rcv.setBehaviour(func(int, *call) action { return ack })
	stop := runNotifier(t, n)
	waitFor(t, "blocked record in the stream", func() bool {
		return rcv.hasAll([]uint64{blocked.Seq}) && other.hasAll([]uint64{blocked.Seq})
	})
	stop()
	if !proto.Equal(streamRecord(rcv.snapshot(), blocked.Seq), blocked) {
		t.Fatal("streamed RELEASE_BLOCKED record differs from the ledger")
	}
}

func streamRecord(calls []call, seq uint64) *custosv1.DecisionRecord {
	for _, c := range calls {
		for _, r := range c.records {
			if c.purpose == "stream" && r.seq == seq {
				return r.rec
			}
		}
	}
	return nil
}
