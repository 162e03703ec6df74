package audit_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/custos-kms/custos/kms/audit"
	"github.com/custos-kms/custos/kms/ledger"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// rechain rewrites records from index i on so that they link again after
// the record at i was changed by mod: what an operator who rewrites a
// ledger (and re-signs its checkpoints with the PIN) produces.
func rechain(t *testing.T, records [][]byte, i int, mod func(*custosv1.DecisionRecord)) [][]byte {
	t.Helper()
	out := append([][]byte(nil), records[:i]...)
	r := decode(t, records[i])
	mod(r)
	out = append(out, encode(t, r))
	for _, data := range records[i+1:] {
		r := decode(t, data)
		h := ledger.Hash(out[len(out)-1])
		r.PrevHash = h[:]
		out = append(out, encode(t, r))
	}
	return out
}

// headAt is the witness head of records[i].
func headAt(cluster string, records [][]byte, i int) audit.Head {
	h := ledger.Hash(records[i])
	return audit.Head{ClusterID: cluster, Seq: uint64(i + 1), Hash: hex.EncodeToString(h[:])}
}

// A witness accepts an export that extends the head it cosigned, and
// reports a fork for a rewritten history — even one whose chain links
// (the operator re-chained every later record) — and for a cut one.
func TestWitnessExtendsAndCheckHead(t *testing.T) {
	e, _ := realExport(t)
	cluster := e.header.GetHeader().GetClusterId()
	n := len(e.records)
	last := headAt(cluster, e.records, n-1)

	// A witness's first look: the whole ledger.
	got, err := audit.Extends(bytes.NewReader(e.file), audit.Head{})
	if err != nil || got != last {
		t.Fatalf("first look: %v, %v; want %v", got, err, last)
	}
	// From a head it cosigned earlier: an export starting there.
	mid := headAt(cluster, e.records, 9)
	from := *e
	from.header = &custosv1.ExportItem{Item: &custosv1.ExportItem_Header{Header: &custosv1.ExportHeader{ClusterId: cluster, FirstSeq: 10}}}
	if got, err := audit.Extends(bytes.NewReader(from.build(t, e.records[9:], true)), mid); err != nil || got != last {
		t.Fatalf("from seq 10: %v, %v; want %v", got, err, last)
	}
	if err := audit.CheckHead(bytes.NewReader(e.file), mid); err != nil {
		t.Fatalf("CheckHead of the untouched export: %v", err)
	}

	// Record 5's detail rewritten, every later record re-chained.
	forged := rechain(t, e.records, 4, func(r *custosv1.DecisionRecord) { r.JustificationText = "nothing to see" })
	if err := audit.CheckHead(bytes.NewReader(e.build(t, forged, true)), mid); !errors.Is(err, audit.ErrFork) {
		t.Fatalf("CheckHead of a rewritten history: %v, want ErrFork", err)
	}
	if _, err := audit.Extends(bytes.NewReader(from.build(t, forged[9:], true)), mid); !errors.Is(err, audit.ErrFork) {
		t.Fatalf("Extends over a rewritten history: %v, want ErrFork", err)
	}
	// Records dropped and the rest re-chained: the witnessed seq holds
	// another record.
	dropped := rechain(t, append(append([][]byte(nil), e.records[:3]...), e.records[5:]...), 3, func(r *custosv1.DecisionRecord) { r.Seq = 4 })
	for i := 4; i < len(dropped); i++ {
		r := decode(t, dropped[i])
		r.Seq = uint64(i + 1)
		if i > 0 {
			h := ledger.Hash(dropped[i-1])
			r.PrevHash = h[:]
		}
		dropped[i] = encode(t, r)
	}
	if err := audit.CheckHead(bytes.NewReader(e.build(t, dropped, true)), mid); !errors.Is(err, audit.ErrFork) {
		t.Fatalf("CheckHead after records were dropped: %v, want ErrFork", err)
	}
	// Cut before the witnessed head.
	if err := audit.CheckHead(bytes.NewReader(e.build(t, e.records[:5], true)), mid); !errors.Is(err, audit.ErrFork) {
		t.Fatalf("CheckHead of a cut export: %v, want ErrFork", err)
	}
	// Another cluster's ledger.
	other := mid
	other.ClusterID = "0123"
	if err := audit.CheckHead(bytes.NewReader(e.file), other); !errors.Is(err, audit.ErrFork) {
		t.Fatalf("CheckHead for another cluster: %v, want ErrFork", err)
	}
	// No trailer: not cosigned, but not a fork either.
	if _, err := audit.Extends(bytes.NewReader(e.build(t, e.records, false)), audit.Head{}); err == nil || errors.Is(err, audit.ErrFork) {
		t.Fatalf("Extends without a trailer: %v, want a non-fork error", err)
	}
}
