package audit_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms/audit"
	"github.com/custos-kms/custos/kms/governance"
	"github.com/custos-kms/custos/kms/ledger"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// export is a real export, split into items.
type export struct {
	header  *custosv1.ExportItem
	records [][]byte
	trailer *custosv1.ExportItem
	keys    []*ecdsa.PublicKey
	file    []byte
}

func (e *export) build(t *testing.T, records [][]byte, trailer bool) []byte {
	t.Helper()
	var b bytes.Buffer
	w := audit.NewWriter(&b)
	if err := w.WriteItem(e.header); err != nil {
		t.Fatal(err)
	}
	for _, r := range records {
		if err := w.WriteItem(&custosv1.ExportItem{Item: &custosv1.ExportItem_Record{Record: r}}); err != nil {
			t.Fatal(err)
		}
	}
	if trailer {
		if err := w.WriteItem(e.trailer); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

func decode(t *testing.T, data []byte) *custosv1.DecisionRecord {
	t.Helper()
	r := &custosv1.DecisionRecord{}
	if err := proto.Unmarshal(data, r); err != nil {
		t.Fatal(err)
	}
	return r
}

func encode(t *testing.T, r *custosv1.DecisionRecord) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type traffic struct {
	allowed []*custosv1.DecryptResponse
	pending int
	denied  int
	tickets []string
}

// realExport starts a node, makes decisions of every kind with a couple of
// checkpoints in between, and exports the ledger over gRPC as the auditor.
func realExport(t *testing.T) (*export, *traffic) {
	h := nodetest.Start(t)
	kc := custosv1.NewKeyServiceClient(h.Conn(t, "app"))
	op := custosv1.NewKeyServiceClient(h.Conn(t, "operator"))
	ac := custosv1.NewAuditServiceClient(h.Conn(t, nodetest.Auditor))
	if _, err := kc.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: "payroll"}); err != nil {
		t.Fatal(err)
	}
	ec := map[string]string{"dept": "hr"}
	dk, err := kc.GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: "payroll", EncryptionContext: ec})
	if err != nil {
		t.Fatal(err)
	}
	var tr traffic
	for i := range 45 {
		j := &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Text: fmt.Sprintf("batch job %d", i)}
		client := kc
		switch i % 9 {
		case 4:
			j = &custosv1.Justification{Reason: custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST, Text: "court order", Ticket: fmt.Sprintf("CASE-%d", i)}
		case 7:
			client = op
		}
		dec, err := client.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: dk.GetWrappedDataKey(), EncryptionContext: ec, Justification: j})
		switch {
		case err == nil:
			tr.allowed = append(tr.allowed, dec)
		case i%9 == 4:
			tr.pending++
			tr.tickets = append(tr.tickets, j.Ticket)
		case i%9 == 7:
			tr.denied++
		default:
			t.Fatalf("decrypt %d: %v", i, err)
		}
		if i%15 == 14 {
			if _, err := h.Node.Service().Checkpoint(ctx(t)); err != nil {
				t.Fatal(err)
			}
		}
	}
	cp, err := ac.GetCheckpoint(ctx(t), &custosv1.GetCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := audit.ParseKeys(cp.GetPublicKeys())
	if err != nil {
		t.Fatal(err)
	}
	st, err := ac.Export(ctx(t), &custosv1.ExportRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var file bytes.Buffer
	if _, err := audit.Copy(&file, st.Recv); err != nil {
		t.Fatal(err)
	}
	e := &export{keys: keys, file: file.Bytes()}
	rd := audit.NewReader(bytes.NewReader(e.file))
	for {
		it, err := rd.Next()
		if err != nil {
			if !errors.Is(err, errEOF) {
				t.Fatal(err)
			}
			break
		}
		switch it.Item.(type) {
		case *custosv1.ExportItem_Header:
			e.header = it
		case *custosv1.ExportItem_Record:
			e.records = append(e.records, it.GetRecord())
		case *custosv1.ExportItem_Trailer:
			e.trailer = it
		}
	}
	if e.header == nil || e.trailer == nil || len(e.records) < 50 {
		t.Fatalf("export: header %v, %d records, trailer %v", e.header, len(e.records), e.trailer)
	}
	if got := e.build(t, e.records, true); !bytes.Equal(got, e.file) {
		t.Fatal("re-framing the items does not give the exported file back")
	}
	return e, &tr
}

// TestVerifyRealExport tampers with a real export in every way invariant 5 of docs/architecture.md
// names and checks that Verify finds each, naming the right record.
func TestVerifyRealExport(t *testing.T) {
	e, tr := realExport(t)
	n := uint64(len(e.records))
	verify := func(t *testing.T, file []byte, keys []*ecdsa.PublicKey) (*audit.Report, error) {
		t.Helper()
		return audit.Verify(bytes.NewReader(file), keys)
	}
	want := func(t *testing.T, file []byte, keys []*ecdsa.PublicKey, kind audit.ProblemKind, seq uint64) *audit.Report {
		t.Helper()
		rep, err := verify(t, file, keys)
		if !errors.Is(err, audit.ErrBroken) {
			t.Fatalf("Verify: err = %v, want ErrBroken (report %+v)", err, rep)
		}
		if rep.Kind != kind || rep.ProblemSeq != seq {
			t.Errorf("Verify: %s at seq %d (%s), want %s at seq %d", rep.Kind, rep.ProblemSeq, rep.Problem, kind, seq)
		}
		if !strings.Contains(err.Error(), rep.Problem) {
			t.Errorf("error %q does not carry the problem %q", err, rep.Problem)
		}
		if rep.VerifiedThrough >= seq && kind != audit.ProblemTruncated {
			t.Errorf("VerifiedThrough = %d, at or beyond the problem at %d", rep.VerifiedThrough, seq)
		}
		return rep
	}
	// Positions of checkpoint records (seq = index+1) and a plain decision
	// k in the middle whose neighbours are plain decisions too.
	var cps []uint64
	for i, r := range e.records {
		if decode(t, r).GetOperation() == custosv1.Operation_OPERATION_CHECKPOINT {
			cps = append(cps, uint64(i+1))
		}
	}
	if len(cps) < 2 {
		t.Fatalf("the export has %d checkpoint records, want at least 2", len(cps))
	}
	plain := func(seq uint64) bool {
		op := decode(t, e.records[seq-1]).GetOperation()
		return op != custosv1.Operation_OPERATION_CHECKPOINT
	}
	var k uint64
	for s := n / 2; s < n-2; s++ {
		if plain(s-1) && plain(s) && plain(s+1) && plain(s+2) {
			k = s
			break
		}
	}
	if k == 0 {
		t.Fatal("no plain decision in the middle of the export")
	}
	recs := func() [][]byte {
		out := make([][]byte, len(e.records))
		for i, r := range e.records {
			out[i] = bytes.Clone(r)
		}
		return out
	}

	t.Run("untouched export verifies", func(t *testing.T) {
		rep, err := verify(t, e.file, e.keys)
		if err != nil {
			t.Fatalf("Verify: %v (%+v)", err, rep)
		}
		if !rep.OK() || rep.FirstSeq != 1 || rep.LastSeq != n || rep.Records != int(n) || rep.VerifiedThrough != n ||
			!rep.Trailer || rep.Checkpoints != len(cps) || rep.ClusterID != e.header.GetHeader().GetClusterId() || rep.Partial {
			t.Errorf("report = %+v, want %d records, %d checkpoints, verified through %d", rep, n, len(cps), n)
		}
		// Every release the node made is checked against the state
		// recomputed from the genesis, and the node's decisions hold.
		if !rep.Recomputed || rep.NotRecomputed != "" || rep.ReleasesChecked != len(tr.allowed) {
			t.Errorf("recomputed %v (%q), %d releases checked, want every one of %d", rep.Recomputed, rep.NotRecomputed, rep.ReleasesChecked, len(tr.allowed))
		}
	})

	t.Run("removed record", func(t *testing.T) {
		r := recs()
		r = append(r[:k-1], r[k:]...)
		want(t, e.build(t, r, true), e.keys, audit.ProblemRemoved, k)
	})

	t.Run("removed records", func(t *testing.T) {
		r := recs()
		r = append(r[:k-1], r[k+1:]...)
		rep := want(t, e.build(t, r, true), e.keys, audit.ProblemRemoved, k)
		if !strings.Contains(rep.Problem, fmt.Sprintf("%d..%d", k, k+1)) {
			t.Errorf("problem %q does not name records %d..%d", rep.Problem, k, k+1)
		}
	})

	t.Run("removed first record", func(t *testing.T) {
		want(t, e.build(t, recs()[1:], true), e.keys, audit.ProblemRemoved, 1)
	})

	t.Run("one byte of one record changed, at every offset", func(t *testing.T) {
		for off := range e.records[k-1] {
			r := recs()
			r[k-1][off] ^= 0x01
			rep, err := verify(t, e.build(t, r, true), e.keys)
			if !errors.Is(err, audit.ErrBroken) || rep.Kind != audit.ProblemAltered || rep.ProblemSeq != k {
				t.Errorf("byte %d of record %d flipped: %s at %d (%v), want altered at %d", off, k, rep.Kind, rep.ProblemSeq, err, k)
			}
		}
	})

	t.Run("text of the last record changed", func(t *testing.T) {
		// The last record is covered by the trailer only.
		r := recs()
		last := decode(t, r[n-1])
		last.Detail += "!"
		r[n-1] = encode(t, last)
		want(t, e.build(t, r, true), e.keys, audit.ProblemAltered, n)
	})

	t.Run("principal rewritten and chain re-linked after it", func(t *testing.T) {
		// A careful forger fixes every later link: the next checkpoint's
		// signed head no longer matches.
		r := recs()
		rec := decode(t, r[k-1])
		rec.Principal = "someone-else"
		r[k-1] = encode(t, rec)
		for i := k; i < n; i++ {
			next := decode(t, r[i])
			h := ledger.Hash(r[i-1])
			next.PrevHash = h[:]
			r[i] = encode(t, next)
		}
		var cover uint64
		for _, c := range cps {
			if cp := decode(t, r[c-1]).GetCheckpoint(); cp.GetSeq() >= k {
				cover = cp.GetSeq()
				break
			}
		}
		if cover == 0 {
			cover = n // the trailer
		}
		want(t, e.build(t, r, true), e.keys, audit.ProblemAltered, cover)
	})

	t.Run("two records swapped", func(t *testing.T) {
		r := recs()
		r[k-1], r[k] = r[k], r[k-1]
		want(t, e.build(t, r, true), e.keys, audit.ProblemReordered, k)
	})

	t.Run("record moved back", func(t *testing.T) {
		r := recs()
		moved := r[k-1]
		r = append(r[:k-1], r[k:]...)
		r = append(r[:k+1], append([][]byte{moved}, r[k+1:]...)...)
		// Missing from its place is what the first broken link shows.
		want(t, e.build(t, r, true), e.keys, audit.ProblemRemoved, k)
	})

	t.Run("forged record inserted, linked to its predecessor", func(t *testing.T) {
		r := recs()
		forged := decode(t, r[k])
		forged.Principal, forged.JustificationText = "mallory", "nothing to see"
		h := ledger.Hash(r[k-1])
		forged.PrevHash = h[:]
		r = append(r[:k], append([][]byte{encode(t, forged)}, r[k:]...)...)
		want(t, e.build(t, r, true), e.keys, audit.ProblemInserted, k+1)
	})

	t.Run("forged record inserted, not linked", func(t *testing.T) {
		r := recs()
		forged := decode(t, r[k])
		forged.Principal = "mallory"
		forged.PrevHash = make([]byte, 32)
		r = append(r[:k], append([][]byte{encode(t, forged)}, r[k:]...)...)
		want(t, e.build(t, r, true), e.keys, audit.ProblemInserted, k+1)
	})

	t.Run("record duplicated", func(t *testing.T) {
		r := recs()
		r = append(r[:k], append([][]byte{bytes.Clone(r[k-1])}, r[k:]...)...)
		want(t, e.build(t, r, true), e.keys, audit.ProblemInserted, k)
	})

	// Offsets of the items in the file.
	itemEnds := func(file []byte) []int {
		rd := audit.NewReader(bytes.NewReader(file))
		var ends []int
		for {
			if _, err := rd.Next(); err != nil {
				return ends
			}
			ends = append(ends, int(rd.Offset()))
		}
	}
	ends := itemEnds(e.file) // ends[0] header, ends[i] record i, ends[n+1] trailer

	t.Run("truncated inside a record", func(t *testing.T) {
		cut := (ends[k-1] + ends[k]) / 2
		rep := want(t, e.file[:cut], e.keys, audit.ProblemTruncated, k)
		if rep.LastSeq != k-1 {
			t.Errorf("LastSeq = %d, want %d", rep.LastSeq, k-1)
		}
	})

	t.Run("truncated inside the length of a record", func(t *testing.T) {
		// Lengths of records of 128 bytes or more take two bytes.
		if ends[k]-ends[k-1] < 130 {
			t.Skip("record too short for a two-byte length")
		}
		want(t, e.file[:ends[k-1]+1], e.keys, audit.ProblemTruncated, k)
	})

	t.Run("truncated at a record boundary, trailer dropped", func(t *testing.T) {
		rep := want(t, e.file[:ends[k]], e.keys, audit.ProblemTruncated, k+1)
		if rep.LastSeq != k || rep.VerifiedThrough >= k {
			t.Errorf("report = %+v", rep)
		}
	})

	t.Run("only the trailer dropped", func(t *testing.T) {
		want(t, e.build(t, e.records, false), e.keys, audit.ProblemTruncated, n+1)
	})

	t.Run("last records dropped, trailer kept", func(t *testing.T) {
		want(t, e.build(t, e.records[:n-3], true), e.keys, audit.ProblemTruncated, n-2)
	})

	t.Run("checkpoint signature changed", func(t *testing.T) {
		r := recs()
		c := cps[len(cps)-1]
		rec := decode(t, r[c-1])
		sig := rec.Checkpoint.Signature
		sig[len(sig)-3] ^= 0x40
		r[c-1] = encode(t, rec)
		want(t, e.build(t, r, true), e.keys, audit.ProblemBadSignature, c)
	})

	t.Run("checkpoint head changed", func(t *testing.T) {
		r := recs()
		c := cps[0]
		rec := decode(t, r[c-1])
		rec.Checkpoint.Head[0] ^= 1
		r[c-1] = encode(t, rec)
		want(t, e.build(t, r, true), e.keys, audit.ProblemBadSignature, c)
	})

	t.Run("trailer signature changed", func(t *testing.T) {
		tr := proto.Clone(e.trailer).(*custosv1.ExportItem)
		tr.GetTrailer().Signature[5] ^= 1
		bad := &export{header: e.header, trailer: tr}
		want(t, bad.build(t, e.records, true), e.keys, audit.ProblemBadSignature, n)
	})

	t.Run("wrong public key", func(t *testing.T) {
		other, err := governance.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		want(t, e.file, []*ecdsa.PublicKey{&other.PublicKey}, audit.ProblemUnknownKey, cps[0])
		want(t, e.file, nil, audit.ProblemUnknownKey, cps[0])
	})

	t.Run("keys in the header are not trusted", func(t *testing.T) {
		other, err := governance.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		hdr := proto.Clone(e.header).(*custosv1.ExportItem)
		hdr.GetHeader().PublicKeys = [][]byte{governance.MarshalPublicKey(&other.PublicKey)}
		bad := &export{header: hdr, trailer: e.trailer}
		if rep, err := verify(t, bad.build(t, e.records, true), e.keys); err != nil {
			t.Errorf("header keys changed: %v (%+v)", err, rep)
		}
	})

	t.Run("header from another cluster", func(t *testing.T) {
		hdr := proto.Clone(e.header).(*custosv1.ExportItem)
		hdr.GetHeader().ClusterId = "other-cluster"
		bad := &export{header: hdr, trailer: e.trailer}
		want(t, bad.build(t, e.records, true), e.keys, audit.ProblemCheckpoint, cps[0])
	})

	t.Run("data after the trailer", func(t *testing.T) {
		file := append(bytes.Clone(e.file), e.file[ends[0]:ends[1]]...)
		want(t, file, e.keys, audit.ProblemFormat, n+1)
	})

	t.Run("not an export", func(t *testing.T) {
		for _, file := range [][]byte{nil, []byte("hello"), append([]byte(audit.Magic), 2), e.file[:len(audit.Magic)+1]} {
			rep, err := verify(t, file, e.keys)
			if !errors.Is(err, audit.ErrBroken) || rep.Kind != audit.ProblemFormat {
				t.Errorf("Verify(%q): %v, %+v", file, err, rep)
			}
		}
	})

	t.Run("partial export", func(t *testing.T) {
		hdr := proto.Clone(e.header).(*custosv1.ExportItem)
		hdr.GetHeader().FirstSeq = k
		part := &export{header: hdr, trailer: e.trailer}
		rep, err := verify(t, part.build(t, e.records[k-1:], true), e.keys)
		if err != nil || !rep.Partial || rep.FirstSeq != k || rep.VerifiedThrough != n {
			t.Errorf("partial export: %v, %+v", err, rep)
		}
		// A "full" export that lacks its first records.
		hdr.GetHeader().FirstSeq = 1
		want(t, part.build(t, e.records[k-1:], true), e.keys, audit.ProblemRemoved, 1)
	})

	t.Run("disclosure", func(t *testing.T) {
		records, err := audit.ReadRecords(audit.NewReader(bytes.NewReader(e.file)))
		if err != nil || len(records) != int(n) {
			t.Fatalf("ReadRecords: %d records, %v", len(records), err)
		}
		d := audit.Summarize(records, time.Time{}, time.Time{}, "payroll")
		total := 0
		for _, u := range d.Allowed {
			if u.Principal != "app" || u.Key != "payroll" || u.Reason != "CUSTOMER_INITIATED" {
				t.Errorf("allowed row %+v", u)
			}
			total += u.Allowed
		}
		if total != len(tr.allowed) || len(d.Denied) != tr.denied || len(d.Pending) != tr.pending || d.ThirdPartyRequests != 0 {
			t.Errorf("disclosure: %d allowed, %d denied, %d pending; want %d, %d, %d",
				total, len(d.Denied), len(d.Pending), len(tr.allowed), tr.denied, tr.pending)
		}
		for i, p := range d.Pending {
			if p.RequestID == "" || p.Ticket != tr.tickets[i] || p.Reason != "THIRD_PARTY_DATA_REQUEST" {
				t.Errorf("pending %d = %+v", i, p)
			}
		}
		for _, dn := range d.Denied {
			if dn.Principal != "operator" {
				t.Errorf("denied %+v", dn)
			}
		}
		// Denied and pending attempts match the default notify rules.
		if len(d.Notified) < tr.denied+tr.pending {
			t.Errorf("%d records notified, want at least %d", len(d.Notified), tr.denied+tr.pending)
		}
		text := d.Text()
		for _, s := range []string{"Allowed key uses: " + fmt.Sprint(len(tr.allowed)), "Denied attempts: " + fmt.Sprint(tr.denied),
			"Pending (awaiting officer approval): " + fmt.Sprint(tr.pending), tr.tickets[0], "operator"} {
			if !strings.Contains(text, s) {
				t.Errorf("text does not contain %q:\n%s", s, text)
			}
		}
		b, err := d.JSON()
		if err != nil {
			t.Fatal(err)
		}
		var back audit.Disclosure
		if err := json.Unmarshal(b, &back); err != nil || len(back.Pending) != tr.pending || back.Pending[0].Ticket != tr.tickets[0] {
			t.Errorf("JSON round trip: %v, %+v", err, back.Pending)
		}
		// The period bounds the report.
		mid := time.Unix(0, records[k-1].GetTimeUnixNano())
		before := audit.Summarize(records, time.Time{}, mid, "")
		after := audit.Summarize(records, mid, time.Time{}, "")
		if before.Records+after.Records != int(n) || after.FirstSeq > k {
			t.Errorf("split at seq %d: %d + %d records (after starts at %d)", k, before.Records, after.Records, after.FirstSeq)
		}
		if none := audit.Summarize(records, time.Time{}, time.Time{}, "no-such-key"); none.Records != 0 || !strings.Contains(none.Text(), "none") {
			t.Errorf("no-such-key: %+v", none)
		}
	})
}
