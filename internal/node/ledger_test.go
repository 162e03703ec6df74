package node_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms/audit"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// TestReleasedKeysAreRecorded is invariant 2 of docs/architecture.md end to end over gRPC: every
// Decrypt that returned a data key has an ALLOW record (its decision_seq,
// request id, principal, key and operation) in an Export of the ledger, and
// that export verifies offline with kms/audit.Verify under the checkpoint
// keys GetCheckpoint publishes. It also checks that the node's checkpointer
// signs the chain head on its own (docs/architecture.md, invariant 5).
func TestReleasedKeysAreRecorded(t *testing.T) {
	h := nodetest.Start(t)
	kc := custosv1.NewKeyServiceClient(h.Conn(t, "app"))
	ac := custosv1.NewAuditServiceClient(h.Conn(t, nodetest.Auditor))
	ec := map[string]string{"dept": "hr"}
	var wrapped [][]byte
	for _, name := range []string{"payroll", "crm"} {
		if _, err := kc.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
		dk, err := kc.GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: name, EncryptionContext: ec})
		if err != nil {
			t.Fatal(err)
		}
		wrapped = append(wrapped, dk.GetWrappedDataKey())
	}

	// Concurrent decrypts, some of which wait for approval (released
	// nothing) and some of which are refused.
	const workers, each = 4, 15
	var (
		mu       sync.Mutex
		released []*custosv1.DecryptResponse
		refused  int
	)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				j := &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Text: fmt.Sprintf("worker %d/%d", w, i)}
				if i%5 == 4 {
					j.Reason = custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST
				}
				ctxt := ec
				if i%7 == 6 {
					ctxt = map[string]string{"dept": "sales"} // wrong context: decryption fails
				}
				dec, err := kc.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: wrapped[(w+i)%2], EncryptionContext: ctxt, Justification: j})
				mu.Lock()
				if err == nil {
					if len(dec.GetPlaintext()) != 32 {
						t.Errorf("data key of %d bytes", len(dec.GetPlaintext()))
					}
					released = append(released, dec)
				} else {
					refused++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(released) == 0 || refused == 0 {
		t.Fatalf("%d released, %d refused: want both", len(released), refused)
	}

	// The checkpointer (every 20 records or each second) signs the head.
	deadline := time.Now().Add(10 * time.Second)
	var cp *custosv1.GetCheckpointResponse
	for {
		var err error
		if cp, err = ac.GetCheckpoint(ctx(t), &custosv1.GetCheckpointRequest{}); err != nil {
			t.Fatal(err)
		}
		if cp.GetCheckpoint() != nil && cp.GetCheckpoint().GetSeq() >= uint64(len(released)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint from the checkpointer: %v", cp)
		}
		time.Sleep(100 * time.Millisecond)
	}
	keys, err := audit.ParseKeys(cp.GetPublicKeys())
	if err != nil || len(keys) != 1 {
		t.Fatalf("checkpoint keys: %d, %v", len(keys), err)
	}

	st, err := ac.Export(ctx(t), &custosv1.ExportRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var file bytes.Buffer
	if _, err := audit.Copy(&file, st.Recv); err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify(bytes.NewReader(file.Bytes()), keys)
	if err != nil {
		t.Fatalf("the export does not verify: %v (%+v)", err, rep)
	}
	if rep.Checkpoints == 0 || !rep.Trailer || rep.VerifiedThrough != rep.LastSeq {
		t.Errorf("report = %+v, want checkpoints and a trailer over the last record", rep)
	}

	bySeq := map[uint64]*custosv1.DecisionRecord{}
	rd := audit.NewReader(bytes.NewReader(file.Bytes()))
	for {
		it, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if data := it.GetRecord(); data != nil {
			r := &custosv1.DecisionRecord{}
			if err := proto.Unmarshal(data, r); err != nil {
				t.Fatal(err)
			}
			bySeq[r.GetSeq()] = r
		}
	}
	for _, dec := range released {
		r := bySeq[dec.GetDecisionSeq()]
		switch {
		case r == nil:
			t.Errorf("released data key (decision %d, request %s) has no record in the export", dec.GetDecisionSeq(), dec.GetRequestId())
		case r.GetOutcome() != custosv1.Outcome_OUTCOME_ALLOW || r.GetRequestId() != dec.GetRequestId() || r.GetPrincipal() != "app" ||
			r.GetKey() != dec.GetKey() || r.GetKeyVersion() != dec.GetKeyVersion() || r.GetOperation() != custosv1.Operation_OPERATION_DECRYPT_DATA_KEY:
			t.Errorf("release %d/%s is recorded as %v", dec.GetDecisionSeq(), dec.GetRequestId(), r)
		}
	}
	// Refused attempts are recorded too: pending ones as PENDING, and every
	// allowed decision is one of the releases or of the failed unwraps.
	var pending int
	for _, r := range bySeq {
		if r.GetOutcome() == custosv1.Outcome_OUTCOME_PENDING {
			pending++
		}
	}
	if pending == 0 {
		t.Error("no PENDING record for the third-party requests")
	}
}

// TestNodeNotifier checks that a node started with its notifier (the
// default outside tests) delivers notify records to a sink while it leads.
func TestNodeNotifier(t *testing.T) {
	h := nodetest.StartWith(t, func(c *node.Config) { c.NoNotifier = false })
	kc := custosv1.NewKeyServiceClient(h.Conn(t, "app"))
	gc := custosv1.NewGovernanceServiceClient(h.Conn(t, "app"))
	path := filepath.Join(t.TempDir(), "notify.jsonl")
	addSink := func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_AddSink{AddSink: &custosv1.AddSink{Sink: &custosv1.Sink{
			Name: "siem", Type: custosv1.SinkType_SINK_TYPE_FILE, Path: path}}}
	}
	if _, err := gc.Submit(ctx(t), h.Sign(t, addSink, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: "payroll"}); err != nil {
		t.Fatal(err)
	}
	dk, err := kc.GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: "payroll"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = kc.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: dk.GetWrappedDataKey(),
		Justification: &custosv1.Justification{Reason: custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST, Text: "subpoena", Ticket: "CASE-77"}})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("third-party decrypt: %v, want pending (FailedPrecondition)", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if bytes.Contains(b, []byte("CASE-77")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pending third-party request never reached the file sink; it holds %q", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
