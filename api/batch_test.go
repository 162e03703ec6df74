package api_test

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/custos-kms/custos/internal/node/nodetest"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// TestBatchDecrypt: a batch of allowed, denied and malformed items. Every
// decided item has its own ledger record, each released plaintext has an
// ALLOW record of its own, and no item's error fails the others.
func TestBatchDecrypt(t *testing.T) {
	h := nodetest.Start(t)
	kc := custosv1.NewKeyServiceClient(h.Conn(t, "app"))
	other := custosv1.NewKeyServiceClient(h.Conn(t, "other"))
	ac := custosv1.NewAuditServiceClient(h.Conn(t, nodetest.Auditor))
	ec := map[string]string{"tenant": "a"}
	for _, k := range []string{"open", "off"} {
		if _, err := kc.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: k}); err != nil {
			t.Fatal(err)
		}
	}
	gen := func(key string) *custosv1.GenerateDataKeyResponse {
		dk, err := kc.GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: key, EncryptionContext: ec})
		if err != nil {
			t.Fatal(err)
		}
		return dk
	}
	dk1, dk2, offDK := gen("open"), gen("open"), gen("off")
	if _, err := kc.SetKeyState(ctx(t), &custosv1.SetKeyStateRequest{Name: "off", State: custosv1.KeyState_KEY_STATE_DISABLED}); err != nil {
		t.Fatal(err)
	}
	item := func(dk []byte, ec map[string]string) *custosv1.DecryptRequest {
		return &custosv1.DecryptRequest{Ciphertext: dk, EncryptionContext: ec, Justification: customer}
	}
	type want struct {
		plain   []byte     // released plaintext, or nil
		code    codes.Code // item error code when plain is nil
		decided bool       // a decision record exists for the item
		outcome custosv1.Outcome
		blocked bool // an ALLOW followed by a RELEASE_BLOCKED record
	}
	items := []*custosv1.DecryptRequest{
		item(dk1.GetWrappedDataKey(), ec),
		item(offDK.GetWrappedDataKey(), ec),
		item([]byte("not a wrapped key"), ec),
		item(dk2.GetWrappedDataKey(), map[string]string{"tenant": "b"}), // ALLOW, then the HSM refuses the context
		item(nil, ec),
		{Ciphertext: dk2.GetWrappedDataKey(), EncryptionContext: ec, Justification: &custosv1.Justification{Reason: 999}},
		item(dk2.GetWrappedDataKey(), ec),
	}
	wants := []want{
		{plain: dk1.GetPlaintext(), decided: true, outcome: custosv1.Outcome_OUTCOME_ALLOW},
		{code: codes.FailedPrecondition, decided: true, outcome: custosv1.Outcome_OUTCOME_DENY},
		{code: codes.InvalidArgument},
		{code: codes.InvalidArgument, decided: true, outcome: custosv1.Outcome_OUTCOME_ALLOW, blocked: true},
		{code: codes.InvalidArgument},
		{code: codes.InvalidArgument},
		{plain: dk2.GetPlaintext(), decided: true, outcome: custosv1.Outcome_OUTCOME_ALLOW},
	}
	before := ledgerHead(t, ac)
	resp, err := kc.BatchDecrypt(ctx(t), &custosv1.BatchDecryptRequest{Requests: items})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetResults()) != len(items) {
		t.Fatalf("%d results for %d items", len(resp.GetResults()), len(items))
	}
	decided := 0
	for i, r := range resp.GetResults() {
		w := wants[i]
		var seq uint64
		if ok := r.GetResponse(); ok != nil {
			if w.plain == nil || !bytes.Equal(ok.GetPlaintext(), w.plain) {
				t.Errorf("item %d: released %x, want %v", i, ok.GetPlaintext(), w)
			}
			seq = ok.GetDecisionSeq()
		} else {
			e := r.GetError()
			if w.plain != nil || codes.Code(e.GetCode()) != w.code {
				t.Errorf("item %d: error %v, want %v", i, e, w)
			}
			seq = e.GetDecisionSeq()
		}
		if !w.decided {
			if seq != 0 {
				t.Errorf("item %d: decision %d for an item that was never decided", i, seq)
			}
			continue
		}
		decided++
		if w.blocked {
			decided++
		}
		rec := decision(t, ac, seq)
		if rec.GetOutcome() != w.outcome || rec.GetPrincipal() != "app" {
			t.Errorf("item %d: record %v, want outcome %v by app", i, rec, w.outcome)
		}
		if r.GetResponse() != nil && rec.GetOutcome() != custosv1.Outcome_OUTCOME_ALLOW {
			t.Errorf("item %d released on a %v record", i, rec.GetOutcome())
		}
	}
	if after := ledgerHead(t, ac); after-before != uint64(decided) {
		t.Errorf("the batch added %d ledger records, want %d (one per decided item, one per ALLOW that released nothing)", after-before, decided)
	}

	t.Run("another principal gets nothing, each item recorded as DENY", func(t *testing.T) {
		resp, err := other.BatchDecrypt(ctx(t), &custosv1.BatchDecryptRequest{Requests: items[:1]})
		if err != nil {
			t.Fatal(err)
		}
		e := resp.GetResults()[0].GetError()
		if e == nil || codes.Code(e.GetCode()) != codes.PermissionDenied {
			t.Fatalf("result %v, want PermissionDenied", resp.GetResults()[0])
		}
		if rec := decision(t, ac, e.GetDecisionSeq()); rec.GetOutcome() != custosv1.Outcome_OUTCOME_DENY || rec.GetPrincipal() != "other" {
			t.Errorf("record %v, want DENY by other", rec)
		}
	})

	t.Run("limits", func(t *testing.T) {
		resp, err := kc.BatchDecrypt(ctx(t), &custosv1.BatchDecryptRequest{})
		if err != nil || len(resp.GetResults()) != 0 {
			t.Errorf("empty batch: %v, %v", resp, err)
		}
		big := make([]*custosv1.DecryptRequest, 1001)
		for i := range big {
			big[i] = items[0]
		}
		_, err = kc.BatchDecrypt(ctx(t), &custosv1.BatchDecryptRequest{Requests: big})
		wantCode(t, "BatchDecrypt of 1001 items", err, codes.InvalidArgument)
	})

	t.Run("1000 items share log entries", func(t *testing.T) {
		big := make([]*custosv1.DecryptRequest, 1000)
		for i := range big {
			big[i] = items[0]
		}
		resp, err := kc.BatchDecrypt(ctx(t), &custosv1.BatchDecryptRequest{Requests: big})
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range resp.GetResults() {
			if !bytes.Equal(r.GetResponse().GetPlaintext(), dk1.GetPlaintext()) {
				t.Fatalf("item %d: %v", i, r.GetError())
			}
		}
		first := decision(t, ac, resp.GetResults()[0].GetResponse().GetDecisionSeq()).GetRaftIndex()
		last := decision(t, ac, resp.GetResults()[999].GetResponse().GetDecisionSeq()).GetRaftIndex()
		if last-first >= 999 {
			t.Errorf("1000 decisions in log entries %d..%d: not grouped", first, last)
		}
		t.Logf("1000 decisions in log entries %d..%d", first, last)
	})
}

func ledgerHead(t *testing.T, ac custosv1.AuditServiceClient) uint64 {
	t.Helper()
	var last uint64
	from := uint64(0)
	for {
		resp, err := ac.ListDecisions(ctx(t), &custosv1.ListDecisionsRequest{FromSeq: from, PageSize: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.GetRecords() {
			last = r.GetSeq()
		}
		if resp.GetNextSeq() == 0 {
			return last
		}
		from = resp.GetNextSeq()
	}
}

func decision(t *testing.T, ac custosv1.AuditServiceClient, seq uint64) *custosv1.DecisionRecord {
	t.Helper()
	resp, err := ac.ListDecisions(ctx(t), &custosv1.ListDecisionsRequest{FromSeq: seq, PageSize: 1})
	if err != nil || len(resp.GetRecords()) != 1 || resp.GetRecords()[0].GetSeq() != seq {
		t.Fatalf("decision %d: %v, %v", seq, resp, err)
	}
	return resp.GetRecords()[0]
}
