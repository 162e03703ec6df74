package custos_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms/audit"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// dialAs is a library client authenticated as cn.
func dialAs(t *testing.T, h *nodetest.Harness, cn string) *custos.Client {
	t.Helper()
	c, err := custos.Dial(context.Background(), custos.Config{Addrs: []string{h.Addr}, TLS: h.ClientTLS(t, cn)})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// scenario records an ALLOW, a PENDING and a DENY on key and returns the
// ciphertext it decrypted.
func scenario(t *testing.T, app, intruder *custos.Client, key string) {
	t.Helper()
	ctx := testCtx(t)
	if _, err := app.CreateKey(ctx, key, ""); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	ct, err := app.Encrypt(ctx, key, []byte("secret"), nil)
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	if _, err := app.Decrypt(ctx, ct, nil, custos.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Text: "payroll"}); err != nil {
		t.Fatalf("Decrypt ALLOW: %v", err)
	}
	_, err = app.Decrypt(ctx, ct, nil, custos.Justification{Reason: custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST, Text: "court order"})
	if _, ok := custos.PendingRequestID(err); !ok {
		t.Fatalf("Decrypt THIRD_PARTY: %v, want a pending request", err)
	}
	_, err = intruder.Decrypt(ctx, ct, nil, custos.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Text: "let me in"})
	if err == nil {
		t.Fatal("Decrypt by a principal outside the policy succeeded")
	}
}

// keyUses filters the records of key uses (not the key's administration).
var keyUses = []custosv1.Operation{custosv1.Operation_OPERATION_DECRYPT, custosv1.Operation_OPERATION_DECRYPT_DATA_KEY,
	custosv1.Operation_OPERATION_REENCRYPT}

func TestAudit(t *testing.T) {
	h := nodetest.Start(t)
	app := dial(t, h)
	intruder := dialAs(t, h, "intruder")
	aud := dialAs(t, h, nodetest.Auditor)
	scenario(t, app, intruder, "audit-a")
	scenario(t, app, intruder, "audit-b")

	t.Run("list filters and pages", func(t *testing.T) {
		ctx := testCtx(t)
		// The key's decisions (its creation is a CREATE_KEY record).
		f := &custosv1.DecisionFilter{Key: "audit-a", Operations: keyUses}
		var paged []*custosv1.DecisionRecord
		from := uint64(0)
		for pages := 0; ; pages++ {
			resp, err := aud.ListDecisions(ctx, f, from, 1)
			if err != nil {
				t.Fatalf("ListDecisions: %v", err)
			}
			paged = append(paged, resp.GetRecords()...)
			if resp.GetNextSeq() == 0 {
				break
			}
			from = resp.GetNextSeq()
			if pages > 100 {
				t.Fatal("paging does not end")
			}
		}
		var all []*custosv1.DecisionRecord
		for r, err := range aud.Decisions(ctx, f, 0) {
			if err != nil {
				t.Fatalf("Decisions: %v", err)
			}
			all = append(all, r)
		}
		if len(all) != 3 || len(paged) != 3 {
			t.Fatalf("key audit-a: %d records by iterator, %d by pages; want 3 (ALLOW, PENDING, DENY)", len(all), len(paged))
		}
		want := []custosv1.Outcome{custosv1.Outcome_OUTCOME_ALLOW, custosv1.Outcome_OUTCOME_PENDING, custosv1.Outcome_OUTCOME_DENY}
		for i, r := range all {
			if r.GetSeq() != paged[i].GetSeq() || r.GetKey() != "audit-a" || r.GetOutcome() != want[i] {
				t.Errorf("record %d: %v (paged seq %d), want key audit-a outcome %v", i, r, paged[i].GetSeq(), want[i])
			}
			if i > 0 && r.GetSeq() <= all[i-1].GetSeq() {
				t.Errorf("records out of order: %d after %d", r.GetSeq(), all[i-1].GetSeq())
			}
		}
		var denied []*custosv1.DecisionRecord
		for r, err := range aud.Decisions(ctx, &custosv1.DecisionFilter{Outcomes: []custosv1.Outcome{custosv1.Outcome_OUTCOME_DENY}}, 0) {
			if err != nil {
				t.Fatal(err)
			}
			denied = append(denied, r)
		}
		if len(denied) != 2 || denied[0].GetPrincipal() != "intruder" {
			t.Errorf("DENY records: %v, want 2 by intruder", denied)
		}
		if _, err := aud.ListDecisions(ctx, nil, 0, 1001); err == nil {
			t.Error("page size 1001 accepted")
		}
	})

	t.Run("export verifies with kms/audit", func(t *testing.T) {
		ctx := testCtx(t)
		cp, err := aud.GetCheckpoint(ctx)
		if err != nil {
			t.Fatalf("GetCheckpoint: %v", err)
		}
		if len(cp.GetPublicKeys()) == 0 || cp.GetHeadSeq() == 0 || cp.GetClusterId() == "" {
			t.Fatalf("GetCheckpoint = %v", cp)
		}
		var buf bytes.Buffer
		st, err := aud.ExportToStats(ctx, &buf, 0)
		if err != nil {
			t.Fatalf("ExportTo: %v", err)
		}
		if st.FirstSeq != 1 || st.Records < int(cp.GetHeadSeq()) || st.LastSeq != uint64(st.Records) {
			t.Errorf("export stats %+v, head was %d", st, cp.GetHeadSeq())
		}
		keys, err := audit.ParseKeys(cp.GetPublicKeys())
		if err != nil {
			t.Fatal(err)
		}
		rep, err := audit.Verify(bytes.NewReader(buf.Bytes()), keys)
		if err != nil || !rep.OK() || !rep.Trailer || rep.Records != st.Records {
			t.Fatalf("Verify = %+v, %v", rep, err)
		}
		// The framing is kms/audit's byte for byte.
		var again bytes.Buffer
		rd := audit.NewReader(bytes.NewReader(buf.Bytes()))
		w := audit.NewWriter(&again)
		for {
			it, err := rd.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("Reader.Next: %v", err)
			}
			if err := w.WriteItem(it); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(again.Bytes(), buf.Bytes()) {
			t.Error("the client's export framing differs from kms/audit's writer")
		}
		err = aud.ExportTo(ctx, io.Discard, cp.GetHeadSeq()+1000)
		wantCode(t, "export beyond head", err, codes.InvalidArgument)
	})

	t.Run("non-auditor is refused", func(t *testing.T) {
		ctx := testCtx(t)
		_, err := app.ListDecisions(ctx, nil, 0, 0)
		wantCode(t, "ListDecisions as app", err, codes.PermissionDenied)
		_, err = app.GetCheckpoint(ctx)
		wantCode(t, "GetCheckpoint as app", err, codes.PermissionDenied)
		err = app.ExportTo(ctx, io.Discard, 0)
		wantCode(t, "Export as app", err, codes.PermissionDenied)
		err = app.Watch(ctx, 0, nil, func(*custosv1.DecisionRecord) error { return nil })
		wantCode(t, "Watch as app", err, codes.PermissionDenied)
	})

	t.Run("watch follows in order and stops on callback error", func(t *testing.T) {
		ctx := testCtx(t)
		cp, err := aud.GetCheckpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// from beyond head+1 is refused.
		err = aud.Watch(ctx, cp.GetHeadSeq()+5, nil, func(*custosv1.DecisionRecord) error { return nil })
		wantCode(t, "Watch beyond head", err, codes.InvalidArgument)

		stop := errors.New("enough")
		var got []*custosv1.DecisionRecord
		done := make(chan error, 1)
		go func() {
			done <- aud.Watch(ctx, cp.GetHeadSeq()+1, &custosv1.DecisionFilter{Key: "watch-k", Operations: keyUses}, func(r *custosv1.DecisionRecord) error {
				got = append(got, r)
				if len(got) == 3 {
					return stop
				}
				return nil
			})
		}()
		scenario(t, app, intruder, "watch-k")
		select {
		case err := <-done:
			if !errors.Is(err, stop) {
				t.Fatalf("Watch = %v, want the callback's error", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Watch did not deliver 3 records")
		}
		want := []custosv1.Outcome{custosv1.Outcome_OUTCOME_ALLOW, custosv1.Outcome_OUTCOME_PENDING, custosv1.Outcome_OUTCOME_DENY}
		for i, r := range got {
			if r.GetKey() != "watch-k" || r.GetOutcome() != want[i] || (i > 0 && r.GetSeq() <= got[i-1].GetSeq()) {
				t.Errorf("watched record %d = %v", i, r)
			}
		}
	})

	t.Run("watch survives a node restart without gaps or repeats", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var (
			mu   sync.Mutex
			seqs []uint64
		)
		wctx, wcancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- aud.Watch(wctx, 1, nil, func(r *custosv1.DecisionRecord) error {
				mu.Lock()
				seqs = append(seqs, r.GetSeq())
				mu.Unlock()
				return nil
			})
		}()
		waitHead := func(head uint64) {
			t.Helper()
			deadline := time.Now().Add(60 * time.Second)
			for time.Now().Before(deadline) {
				mu.Lock()
				n := len(seqs)
				last := uint64(0)
				if n > 0 {
					last = seqs[n-1]
				}
				mu.Unlock()
				if last >= head {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			t.Fatalf("watch did not reach seq %d", head)
		}
		cp, err := aud.GetCheckpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		waitHead(cp.GetHeadSeq())
		h.Restart(t)
		scenario(t, app, intruder, "restart-k")
		// The auditor's connection may still be backing off after the
		// restart: a unary call is not waited for, so ask again.
		for {
			if cp, err = aud.GetCheckpoint(ctx); err == nil || ctx.Err() != nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		waitHead(cp.GetHeadSeq())
		wcancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Watch after cancel = %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		for i, s := range seqs {
			if s != uint64(i+1) {
				t.Fatalf("watched seq %d at position %d: a gap or a repeat (%v)", s, i, seqs)
			}
		}
	})
}

func TestParseOutcome(t *testing.T) {
	for in, want := range map[string]custosv1.Outcome{"allow": custosv1.Outcome_OUTCOME_ALLOW, "DENY": custosv1.Outcome_OUTCOME_DENY, "OUTCOME_PENDING": custosv1.Outcome_OUTCOME_PENDING} {
		if got, err := custos.ParseOutcome(in); err != nil || got != want {
			t.Errorf("ParseOutcome(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "unspecified", "maybe"} {
		if _, err := custos.ParseOutcome(bad); err == nil {
			t.Errorf("ParseOutcome(%q) accepted", bad)
		}
	}
}
