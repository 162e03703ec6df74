package api_test

import (
	"context"
	"errors"
	"io"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/custos-kms/custos/internal/node/nodetest"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// TestAuditService drives the AuditService over mTLS: the configured
// auditor reads, exports and follows the ledger; nobody else does, and a
// stream without a client certificate is refused by the stream
// interceptors.
func TestAuditService(t *testing.T) {
	h := nodetest.Start(t)
	kc := custosv1.NewKeyServiceClient(h.Conn(t, "app"))
	ac := custosv1.NewAuditServiceClient(h.Conn(t, nodetest.Auditor))
	if _, err := kc.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: "payroll"}); err != nil {
		t.Fatal(err)
	}
	ec := map[string]string{"dept": "hr"}
	dk, err := kc.GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: "payroll", EncryptionContext: ec})
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for range 3 {
		dec, err := kc.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: dk.GetWrappedDataKey(), EncryptionContext: ec, Justification: customer})
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, dec.GetDecisionSeq())
	}

	t.Run("ListDecisions filters and pages", func(t *testing.T) {
		var got []*custosv1.DecisionRecord
		from := uint64(0)
		for {
			resp, err := ac.ListDecisions(ctx(t), &custosv1.ListDecisionsRequest{FromSeq: from, PageSize: 1,
				Filter: &custosv1.DecisionFilter{Key: "payroll", Outcomes: []custosv1.Outcome{custosv1.Outcome_OUTCOME_ALLOW},
					Operations: []custosv1.Operation{custosv1.Operation_OPERATION_DECRYPT_DATA_KEY}}})
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, resp.GetRecords()...)
			if resp.GetNextSeq() == 0 {
				break
			}
			from = resp.GetNextSeq()
		}
		if len(got) != len(seqs) {
			t.Fatalf("ListDecisions found %d records, want %d", len(got), len(seqs))
		}
		for i, r := range got {
			if r.GetSeq() != seqs[i] || r.GetPrincipal() != "app" {
				t.Errorf("record %d = %v, want seq %d by app", i, r, seqs[i])
			}
		}
		_, err := ac.ListDecisions(ctx(t), &custosv1.ListDecisionsRequest{PageSize: 5000})
		wantCode(t, "ListDecisions(page_size 5000)", err, codes.InvalidArgument)
	})

	t.Run("GetCheckpoint", func(t *testing.T) {
		if _, err := h.Node.Service().Checkpoint(ctx(t)); err != nil {
			t.Fatal(err)
		}
		cp, err := ac.GetCheckpoint(ctx(t), &custosv1.GetCheckpointRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if cp.GetClusterId() != h.Node.ClusterID() || len(cp.GetPublicKeys()) != 1 || cp.GetCheckpoint() == nil ||
			cp.GetRecordSeq() <= cp.GetCheckpoint().GetSeq() || cp.GetHeadSeq() < cp.GetRecordSeq() {
			t.Errorf("GetCheckpoint = %v", cp)
		}
	})

	t.Run("Export streams header, records, trailer", func(t *testing.T) {
		st, err := ac.Export(ctx(t), &custosv1.ExportRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var items []*custosv1.ExportItem
		for {
			it, err := st.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			items = append(items, it)
		}
		if len(items) < 3 || items[0].GetHeader() == nil || items[len(items)-1].GetTrailer() == nil {
			t.Fatalf("export has %d items, want header ... trailer", len(items))
		}
		if items[0].GetHeader().GetFirstSeq() != 1 || uint64(len(items)-2) != items[len(items)-1].GetTrailer().GetSeq() {
			t.Errorf("header %v, %d records, trailer %v", items[0].GetHeader(), len(items)-2, items[len(items)-1].GetTrailer())
		}
		st, err = ac.Export(ctx(t), &custosv1.ExportRequest{FromSeq: 1 << 40})
		if err == nil {
			_, err = st.Recv()
		}
		wantCode(t, "Export(from_seq beyond the head)", err, codes.InvalidArgument)
	})

	t.Run("WatchDecisions follows new records", func(t *testing.T) {
		c, cancel := context.WithCancel(ctx(t))
		defer cancel()
		st, err := ac.WatchDecisions(c, &custosv1.WatchDecisionsRequest{FromSeq: seqs[len(seqs)-1] + 1,
			Filter: &custosv1.DecisionFilter{Principal: "app"}})
		if err != nil {
			t.Fatal(err)
		}
		dec, err := kc.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: dk.GetWrappedDataKey(), EncryptionContext: ec, Justification: customer})
		if err != nil {
			t.Fatal(err)
		}
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if r.GetSeq() != dec.GetDecisionSeq() || r.GetRequestId() != dec.GetRequestId() {
			t.Errorf("watched %v, want the record of decrypt %d", r, dec.GetDecisionSeq())
		}
	})

	t.Run("streams need a client certificate", func(t *testing.T) {
		anon := custosv1.NewAuditServiceClient(h.Conn(t, ""))
		st, err := anon.Export(ctx(t), &custosv1.ExportRequest{})
		if err == nil {
			_, err = st.Recv()
		}
		wantCode(t, "Export without a certificate", err, codes.Unauthenticated)
		ws, err := anon.WatchDecisions(ctx(t), &custosv1.WatchDecisionsRequest{})
		if err == nil {
			_, err = ws.Recv()
		}
		wantCode(t, "WatchDecisions without a certificate", err, codes.Unauthenticated)
		_, err = anon.GetCheckpoint(ctx(t), &custosv1.GetCheckpointRequest{})
		wantCode(t, "GetCheckpoint without a certificate", err, codes.Unauthenticated)
	})

	t.Run("non-auditors are PermissionDenied", func(t *testing.T) {
		app := custosv1.NewAuditServiceClient(h.Conn(t, "app"))
		_, err := app.GetCheckpoint(ctx(t), &custosv1.GetCheckpointRequest{})
		wantCode(t, "GetCheckpoint as app", err, codes.PermissionDenied)
		st, err := app.Export(ctx(t), &custosv1.ExportRequest{})
		if err == nil {
			_, err = st.Recv()
		}
		wantCode(t, "Export as app", err, codes.PermissionDenied)
	})
}
