package notify_test

import (
	"context"
	"errors"
	"testing"

	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/notify"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Skipped records move the cursor without a delivery once enough of them
// piled up; a removed sink gets nothing more; Run refuses to run twice.
func TestIdleAdvanceAndRemoveSink(t *testing.T) {
	h := nodetest.Start(t)
	st := h.Node.Service().State()
	tr := newTraffic(t, h, "k1")
	rcv := newReceiver(t, "idle", nil)
	witness := newReceiver(t, "witness", nil)
	addWebhook(t, h, "idle", rcv, false)
	addSeq, _ := st.LedgerHead()
	addWebhook(t, h, "witness", witness, false)

	n := newNotifier(h, nil)
	notify.SetIdleAdvance(n, 5)
	stop := runNotifier(t, n)
	first := notifySeqs(t, st, addSeq-1)
	waitFor(t, "add_sink records", func() bool { return rcv.hasAll(first) })
	// The cursor moves after the acknowledgement: wait for it before reading.
	waitFor(t, "cursor after the first delivery", func() bool {
		return sinkOf(t, st, "idle").DeliveredSeq >= first[len(first)-1]
	})
	// The first Run is running (it delivered): a second one must refuse.
	ctx, cancel := context.WithTimeout(bg, waitTimeout)
	err := n.Run(ctx)
	cancel()
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a second Run on the same notifier: %v", err)
	}
	delivered := len(rcv.snapshot())
	cursor := sinkOf(t, st, "idle").DeliveredSeq

	for range 12 {
		if _, err := tr.decrypt("app", custosv1.Reason_REASON_CUSTOMER_INITIATED); err != nil {
			t.Fatal(err)
		}
	}
	head, _ := st.LedgerHead()
	if got := notifySeqs(t, st, cursor); len(got) != 0 {
		t.Fatalf("allowed decisions were notify records: %v", got)
	}
	waitFor(t, "idle cursor move", func() bool { return sinkOf(t, st, "idle").DeliveredSeq >= head-4 })
	if len(rcv.snapshot()) != delivered {
		t.Fatalf("records without notify were delivered: %+v", rcv.snapshot()[delivered:])
	}

	ss := h.Sign(t, func(s *custosv1.Statement) {
		s.Operation = &custosv1.Statement_RemoveSink{RemoveSink: &custosv1.RemoveSink{Name: "idle"}}
	}, 0, 1)
	if _, err := h.Node.Service().Submit(bg, kms.Principal{Name: "officer-cli"}, ss); err != nil {
		t.Fatalf("RemoveSink: %v", err)
	}
	tr.mix(t, 2)
	want := notifySeqs(t, st, sinkOf(t, st, "witness").DeliveredSeq)
	waitFor(t, "witness delivery", func() bool { return witness.hasAll(want) })
	stop()
	removedAt := want[0] // the remove_sink record
	for _, s := range streamSeqs(rcv.snapshot(), false) {
		if s >= removedAt {
			t.Fatalf("removed sink got record %d (removed at %d)", s, removedAt)
		}
	}
}
