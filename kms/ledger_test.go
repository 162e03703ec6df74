package kms_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/governance"
	"github.com/custos-kms/custos/kms/ledger"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"google.golang.org/protobuf/proto"
)

var auditor = kms.Principal{Name: "auditor"}

func TestCheckpointsAreSignedInTheHSMAndChained(t *testing.T) {
	e := newEnv(t)
	if err := e.svc.EnsureCheckpointKey(bg); err != nil {
		t.Fatalf("EnsureCheckpointKey: %v", err)
	}
	createKey(t, e, "k")
	dk := dataKey(t, e, "k", nil)
	for i := 0; i < 5; i++ {
		if _, err := decrypt(e, dk.WrappedDataKey, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Records: the genesis, the checkpoint key's registration, the key's
	// creation, then the five decisions.
	cp, err := e.svc.Checkpoint(bg)
	if err != nil || cp == nil || cp.Seq != 8 {
		t.Fatalf("Checkpoint = %v, %v", cp, err)
	}
	// A second checkpoint with nothing new is a no-op.
	if again, _ := e.svc.Checkpoint(bg); again.Seq != cp.Seq {
		t.Fatalf("checkpoint without new records moved to %d", again.Seq)
	}
	resp, err := e.svc.GetCheckpoint(bg, auditor, &custosv1.GetCheckpointRequest{})
	if err != nil || resp.RecordSeq != 9 || len(resp.PublicKeys) != 1 {
		t.Fatalf("GetCheckpoint = %v, %v", resp, err)
	}
	pub, _ := governance.ParsePublicKey(resp.PublicKeys[0])
	if !governance.VerifyECDSA(pub, ledger.CheckpointMessage(cp.ClusterId, cp.Seq, cp.Head), cp.Signature) {
		t.Fatalf("checkpoint signature does not verify under the published key")
	}
	// The signing key is an HSM key pair, the private half non-extractable.
	a, err := e.hsm.KeyAttributes(bg, []byte("custos/checkpoint/node-1"))
	if err != nil || !a.Sensitive || a.Extractable {
		t.Fatalf("checkpoint key attributes = %+v, %v", a, err)
	}
	// A forged checkpoint is refused by the state machine.
	forged := proto.Clone(cp).(*custosv1.Checkpoint)
	forged.Seq, forged.Head = 10, bytes.Repeat([]byte{1}, 32)
	if _, err := e.log.Apply(bg, &raftlogv1.Command{Op: &raftlogv1.Command_RecordCheckpoint{RecordCheckpoint: &raftlogv1.RecordCheckpoint{Checkpoint: forged}}}); err == nil {
		t.Fatalf("forged checkpoint accepted")
	}
	other, _ := governance.GenerateKey()
	head, hash := e.state.LedgerHead()
	d := sha256.Sum256(ledger.CheckpointMessage(cp.ClusterId, head, hash[:]))
	sig, _ := other.Sign(nil, d[:], nil)
	bad := &custosv1.Checkpoint{ClusterId: cp.ClusterId, Seq: head, Head: hash[:], KeyId: cp.KeyId, Signature: sig}
	_, err = e.log.Apply(bg, &raftlogv1.Command{TimeUnixNano: time.Now().UnixNano(),
		Op: &raftlogv1.Command_RecordCheckpoint{RecordCheckpoint: &raftlogv1.RecordCheckpoint{Checkpoint: bad}}})
	if !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("checkpoint signed by an unregistered key: got %v, want ErrPermissionDenied", err)
	}
	verifyChain(t, e.state, e.led)
}

func TestNotifyFlagsAndSinks(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	dk := dataKey(t, e, "k", nil)
	if _, err := decrypt(e, dk.WrappedDataKey, nil); err != nil {
		t.Fatal(err)
	}
	if lastRecord(t, e).Notify {
		t.Fatalf("a customer-initiated ALLOW must not notify by default")
	}
	if _, err := decryptAs(e, "stranger", dk.WrappedDataKey, custosv1.Reason_REASON_CUSTOMER_INITIATED); err == nil {
		t.Fatal("stranger allowed")
	}
	if !lastRecord(t, e).Notify {
		t.Fatalf("a DENY must notify by default")
	}
	sink := &custosv1.Sink{Name: "siem", Type: custosv1.SinkType_SINK_TYPE_WEBHOOK, Url: "https://siem.example/hook",
		HmacKey: bytes.Repeat([]byte{7}, 32)}
	addSink := func(sk *custosv1.Sink) func(*custosv1.Statement) {
		return func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_AddSink{AddSink: &custosv1.AddSink{Sink: sk}}
		}
	}
	if _, err := e.govern(addSink(&custosv1.Sink{Name: "x", Type: custosv1.SinkType_SINK_TYPE_WEBHOOK, Url: "http://siem.example/hook", HmacKey: sink.HmacKey}), 0); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("plain-http webhook to a remote host: got %v, want ErrInvalidArgument", err)
	}
	if _, err := e.govern(addSink(&custosv1.Sink{Name: "x", Type: custosv1.SinkType_SINK_TYPE_WEBHOOK, Url: sink.Url, HmacKey: []byte("short")}), 0); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("short HMAC key: got %v, want ErrInvalidArgument", err)
	}
	if _, err := e.govern(addSink(sink), 0); err != nil {
		t.Fatalf("add sink with one officer: %v", err)
	}
	g, _ := e.svc.GetGovernance(bg, app, &custosv1.GetGovernanceRequest{})
	if len(g.Sinks) != 1 || len(g.Sinks[0].HmacKey) != 0 {
		t.Fatalf("sinks read back = %v: want one, without its key", g.Sinks)
	}
	head, _ := e.state.LedgerHead()
	if err := e.svc.AdvanceCursor(bg, "siem", head); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.AdvanceCursor(bg, "siem", head+100); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("cursor beyond head: got %v", err)
	}
	if e.state.Sinks()[0].DeliveredSeq != head {
		t.Fatalf("cursor not recorded")
	}
	removeSink := func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_RemoveSink{RemoveSink: &custosv1.RemoveSink{Name: "siem"}}
	}
	if _, err := e.govern(removeSink, 0); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("remove sink with one officer: got %v, want ErrPermissionDenied", err)
	}
	if _, err := e.govern(removeSink, 0, 1); err != nil {
		t.Fatalf("remove sink with the quorum: %v", err)
	}
}

func TestAuditReads(t *testing.T) {
	e := newEnv(t)
	if err := e.svc.EnsureCheckpointKey(bg); err != nil {
		t.Fatal(err)
	}
	createKey(t, e, "k")
	createKey(t, e, "other")
	dk := dataKey(t, e, "k", nil)
	for i := 0; i < 12; i++ {
		if _, err := decrypt(e, dk.WrappedDataKey, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := decryptAs(e, "stranger", dk.WrappedDataKey, custosv1.Reason_REASON_EMERGENCY); err == nil {
		t.Fatal("stranger allowed")
	}
	if _, err := e.svc.ListDecisions(bg, app, &custosv1.ListDecisionsRequest{}); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("ListDecisions by a non-auditor: got %v, want ErrPermissionDenied", err)
	}
	var got []uint64
	from := uint64(0)
	for {
		resp, err := e.svc.ListDecisions(bg, auditor, &custosv1.ListDecisionsRequest{FromSeq: from, PageSize: 5,
			Filter: &custosv1.DecisionFilter{Key: "k", Outcomes: []custosv1.Outcome{custosv1.Outcome_OUTCOME_ALLOW},
				Operations: []custosv1.Operation{custosv1.Operation_OPERATION_DECRYPT_DATA_KEY}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.Records {
			got = append(got, r.Seq)
		}
		if from = resp.NextSeq; from == 0 {
			break
		}
	}
	if len(got) != 12 {
		t.Fatalf("filtered listing returned %d records, want 12", len(got))
	}
	resp, _ := e.svc.ListDecisions(bg, auditor, &custosv1.ListDecisionsRequest{Filter: &custosv1.DecisionFilter{Principal: "stranger"}})
	if len(resp.Records) != 1 || resp.Records[0].Reason != custosv1.Reason_REASON_EMERGENCY {
		t.Fatalf("principal filter = %v", resp.Records)
	}
	// Export: header, every record, and a trailer signed now over the head.
	var items []*custosv1.ExportItem
	if err := e.svc.Export(bg, auditor, &custosv1.ExportRequest{}, func(it *custosv1.ExportItem) error {
		items = append(items, it)
		return nil
	}); err != nil {
		t.Fatalf("Export: %v", err)
	}
	head, hash := e.state.LedgerHead()
	if len(items) != int(head)+2 || items[0].GetHeader() == nil || items[len(items)-1].GetTrailer() == nil {
		t.Fatalf("export has %d items for %d records", len(items), head)
	}
	tr := items[len(items)-1].GetTrailer()
	if tr.Seq != head || !bytes.Equal(tr.Head, hash[:]) {
		t.Fatalf("trailer covers %d, want the head %d", tr.Seq, head)
	}
	// Watch: from beyond the head is refused; from an old seq it replays,
	// then follows new records.
	if err := e.svc.WatchDecisions(bg, auditor, &custosv1.WatchDecisionsRequest{FromSeq: head + 2}, nil); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("watch beyond the head: got %v, want ErrInvalidArgument", err)
	}
	ctx, cancel := context.WithTimeout(bg, 30*time.Second)
	defer cancel()
	seen := make(chan uint64, 100)
	go func() {
		_ = e.svc.WatchDecisions(ctx, auditor, &custosv1.WatchDecisionsRequest{FromSeq: head - 1}, func(r *custosv1.DecisionRecord) error {
			seen <- r.Seq
			return nil
		})
	}()
	if _, err := decrypt(e, dk.WrappedDataKey, nil); err != nil {
		t.Fatal(err)
	}
	for want := head - 1; want <= head+1; want++ {
		select {
		case got := <-seen:
			if got != want {
				t.Fatalf("watch delivered %d, want %d", got, want)
			}
		case <-ctx.Done():
			t.Fatalf("watch did not deliver %d", want)
		}
	}
}

// TestNodeKeyRegistrationNeedsNoLeaderOnRestart: a node registers its
// checkpoint key (and advertises its address) through the log once; on
// later starts, with the same key and address already in the state, it
// proposes nothing, so a node restarting while the leader is unreachable
// still starts (docs/robustness.md, KI-3). A new address is proposed.
func TestNodeKeyRegistrationNeedsNoLeaderOnRestart(t *testing.T) {
	e := newEnv(t)
	if err := e.svc.EnsureCheckpointKey(bg); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.AdvertiseAPIAddr(bg, "127.0.0.1:7401"); err != nil {
		t.Fatal(err)
	}
	// The same node, its leader now unreachable: every proposal fails.
	unreachable := e.newService(failingLog{err: errors.New("could not reach the leader")})
	if err := unreachable.EnsureCheckpointKey(bg); err != nil {
		t.Fatalf("EnsureCheckpointKey with the key registered and no leader: %v", err)
	}
	if err := unreachable.AdvertiseAPIAddr(bg, "127.0.0.1:7401"); err != nil {
		t.Fatalf("AdvertiseAPIAddr of the registered address with no leader: %v", err)
	}
	if err := unreachable.AdvertiseAPIAddr(bg, "127.0.0.1:7402"); err == nil {
		t.Fatal("a new address was not proposed (it needs the log)")
	}
	if got := e.state.NodeAPIAddr("node-1"); got != "127.0.0.1:7401" {
		t.Fatalf("NodeAPIAddr = %q", got)
	}
}
