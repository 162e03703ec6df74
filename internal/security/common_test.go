package security

import (
	"errors"
	"io"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/internal/node/nodetest"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// export returns the stored bytes and the decoded form of every ledger
// record from seq from on, through the AuditService as the auditor.
func export(t *testing.T, h *nodetest.Harness, from uint64) ([][]byte, []*custosv1.DecisionRecord) {
	t.Helper()
	ac := custosv1.NewAuditServiceClient(h.Conn(t, nodetest.Auditor))
	st, err := ac.Export(ctx(t), &custosv1.ExportRequest{FromSeq: from})
	if err != nil {
		t.Fatal(err)
	}
	var raw [][]byte
	var recs []*custosv1.DecisionRecord
	for {
		it, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("Export: %v", err)
		}
		if b := it.GetRecord(); b != nil {
			r := &custosv1.DecisionRecord{}
			if err := proto.Unmarshal(b, r); err != nil {
				t.Fatal(err)
			}
			raw = append(raw, b)
			recs = append(recs, r)
		}
	}
	return raw, recs
}

// setPolicy replaces key's policy with the one mod makes of the current
// one, signed by officers 1 and 2 (the quorum).
func setPolicy(t *testing.T, h *nodetest.Harness, gc custosv1.GovernanceServiceClient, key string, mod func(*custosv1.KeyPolicy)) *custosv1.SubmitResponse {
	t.Helper()
	p, err := gc.GetPolicy(ctx(t), &custosv1.GetPolicyRequest{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	mod(p)
	resp, err := gc.Submit(ctx(t), h.Sign(t, func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: key, Policy: p}}
	}, 0, 1))
	if err != nil {
		t.Fatalf("SetPolicy(%s): %v", key, err)
	}
	return resp
}
