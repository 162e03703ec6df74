package ledger_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/custos-kms/custos/kms/ledger"
)

func open(t *testing.T, path string) *ledger.Store {
	t.Helper()
	s, err := ledger.Open(path, ledger.Options{NoSync: true})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func rec(seq uint64) ledger.Record {
	return ledger.Record{Seq: seq, Data: []byte(fmt.Sprintf("record-%d", seq))}
}

func recs(from, n uint64) []ledger.Record {
	out := make([]ledger.Record, 0, n)
	for i := from; i < from+n; i++ {
		out = append(out, rec(i))
	}
	return out
}

func count(t *testing.T, s *ledger.Store) int {
	t.Helper()
	n, err := s.Count()
	if err != nil {
		t.Fatalf("Count: %v", err)
	}
	return n
}

func TestPutGetScanLast(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "ledger.db"))

	seq, data, err := s.Last()
	if seq != 0 || data != nil || err != nil {
		t.Fatalf("Last on empty = %d, %q, %v; want 0, nil, nil", seq, data, err)
	}
	if _, err := s.Get(1); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("Get on empty: %v, want ErrNotFound", err)
	}
	if err := s.PutBatch(recs(1, 10)); err != nil {
		t.Fatalf("PutBatch: %v", err)
	}
	got, err := s.Get(7)
	if err != nil || string(got) != "record-7" {
		t.Fatalf("Get(7) = %q, %v", got, err)
	}
	got[0] = 'X' // a copy: must not affect the store
	if again, _ := s.Get(7); string(again) != "record-7" {
		t.Fatalf("Get returned shared memory: %q", again)
	}
	seq, data, err = s.Last()
	if seq != 10 || string(data) != "record-10" || err != nil {
		t.Fatalf("Last = %d, %q, %v", seq, data, err)
	}
	if n := count(t, s); n != 10 {
		t.Fatalf("Count = %d, want 10", n)
	}

	var seen []uint64
	if err := s.Scan(4, func(seq uint64, data []byte) error {
		if want := fmt.Sprintf("record-%d", seq); string(data) != want {
			t.Errorf("Scan seq %d data %q, want %q", seq, data, want)
		}
		seen = append(seen, seq)
		return nil
	}); err != nil {
		t.Fatalf("Scan: %v", err)
	}
	if fmt.Sprint(seen) != "[4 5 6 7 8 9 10]" {
		t.Fatalf("Scan(4) saw %v", seen)
	}

	stop := errors.New("stop")
	seen = nil
	err = s.Scan(0, func(seq uint64, _ []byte) error {
		seen = append(seen, seq)
		if seq == 3 {
			return stop
		}
		return nil
	})
	if err != stop || fmt.Sprint(seen) != "[1 2 3]" {
		t.Fatalf("Scan with stop: err %v, saw %v", err, seen)
	}

	if err := s.PutBatch([]ledger.Record{{Seq: 0, Data: []byte("x")}}); err == nil {
		t.Fatal("PutBatch accepted seq 0")
	}
	if err := s.PutBatch([]ledger.Record{{Seq: 11, Data: nil}}); err != nil {
		t.Fatalf("PutBatch empty record: %v", err)
	}
	if got, err := s.Get(11); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("Get empty record = %q (nil %v), %v", got, got == nil, err)
	}
}

func TestBatch10k(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "ledger.db"))
	const n = 10000
	if err := s.PutBatch(recs(1, n)); err != nil {
		t.Fatalf("PutBatch: %v", err)
	}
	if c := count(t, s); c != n {
		t.Fatalf("Count = %d, want %d", c, n)
	}
	next := uint64(1)
	if err := s.Scan(1, func(seq uint64, data []byte) error {
		if seq != next || !bytes.Equal(data, rec(seq).Data) {
			return fmt.Errorf("seq %d (want %d) data %q", seq, next, data)
		}
		next++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if next != n+1 {
		t.Fatalf("scanned up to %d", next-1)
	}
}

func TestConflict(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "ledger.db"))
	if err := s.PutBatch(recs(1, 5)); err != nil {
		t.Fatal(err)
	}
	// Replay with identical bytes is fine, and may extend the ledger.
	if err := s.PutBatch(recs(3, 5)); err != nil {
		t.Fatalf("replay of identical records: %v", err)
	}
	if c := count(t, s); c != 7 {
		t.Fatalf("Count = %d, want 7", c)
	}
	// Different bytes at an existing seq: ErrConflict, and the whole batch
	// is rolled back.
	bad := []ledger.Record{rec(8), {Seq: 4, Data: []byte("forged")}}
	if err := s.PutBatch(bad); !errors.Is(err, ledger.ErrConflict) {
		t.Fatalf("PutBatch with conflicting record: %v, want ErrConflict", err)
	}
	if got, _ := s.Get(4); string(got) != "record-4" {
		t.Fatalf("seq 4 = %q after conflict", got)
	}
	if _, err := s.Get(8); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("seq 8 after rolled-back batch: %v, want ErrNotFound", err)
	}
}

func TestReopenDurability(t *testing.T) {
	for _, noSync := range []bool{false, true} {
		t.Run(fmt.Sprintf("NoSync=%v", noSync), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ledger.db")
			s, err := ledger.Open(path, ledger.Options{NoSync: noSync})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.PutBatch(recs(1, 100)); err != nil {
				t.Fatal(err)
			}
			if err := s.Sync(); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if _, err := s.Get(1); !errors.Is(err, ledger.ErrClosed) {
				t.Fatalf("Get after Close: %v, want ErrClosed", err)
			}
			s = open(t, path)
			if c := count(t, s); c != 100 {
				t.Fatalf("Count after reopen = %d", c)
			}
			if seq, data, _ := s.Last(); seq != 100 || string(data) != "record-100" {
				t.Fatalf("Last after reopen = %d, %q", seq, data)
			}
		})
	}
}

func TestReset(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "ledger.db"))
	if err := s.PutBatch(recs(1, 20)); err != nil {
		t.Fatal(err)
	}
	if err := s.Reset(); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	if seq, data, err := s.Last(); seq != 0 || data != nil || err != nil || count(t, s) != 0 {
		t.Fatalf("after Reset: Last %d %q %v, count %d", seq, data, err, count(t, s))
	}
	if err := s.PutBatch(recs(1, 3)); err != nil {
		t.Fatalf("PutBatch after Reset: %v", err)
	}
}

func TestBadPath(t *testing.T) {
	dir := t.TempDir()
	_, err := ledger.Open(filepath.Join(dir, "missing", "ledger.db"), ledger.Options{})
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open in missing dir: %v, want a not-exist error", err)
	}
	if want := filepath.Join(dir, "missing", "ledger.db"); !bytes.Contains([]byte(err.Error()), []byte(want)) {
		t.Fatalf("error %q does not name the path", err)
	}
	if _, err := ledger.Open(dir, ledger.Options{}); err == nil {
		t.Fatal("Open on a directory succeeded")
	}
	junk := filepath.Join(dir, "junk.db")
	if err := os.WriteFile(junk, bytes.Repeat([]byte("not a bolt file "), 512), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ledger.Open(junk, ledger.Options{}); err == nil {
		t.Fatal("Open on a junk file succeeded")
	}
}

func TestHash(t *testing.T) {
	// SHA-256("abc"), FIPS 180-2 example.
	got := ledger.Hash([]byte("abc"))
	if want := "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; fmt.Sprintf("%x", got) != want {
		t.Fatalf("Hash(abc) = %x, want %s", got, want)
	}
	if ledger.ZeroHash != [32]byte{} {
		t.Fatal("ZeroHash is not zero")
	}
}

func BenchmarkPutBatch256(b *testing.B) {
	for _, noSync := range []bool{true, false} {
		b.Run(fmt.Sprintf("NoSync=%v", noSync), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "ledger.db")
			s, err := ledger.Open(path, ledger.Options{NoSync: noSync})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			const batch, size = 256, 250
			payload := bytes.Repeat([]byte{0xA5}, size)
			buf := make([]ledger.Record, batch)
			seq := uint64(1)
			b.SetBytes(batch * size)
			b.ResetTimer()
			for b.Loop() {
				for i := range buf {
					d := append([]byte(nil), payload...)
					d[0], d[1], d[2] = byte(seq), byte(seq>>8), byte(seq>>16)
					buf[i] = ledger.Record{Seq: seq, Data: d}
					seq++
				}
				if err := s.PutBatch(buf); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			n := float64(seq - 1)
			b.ReportMetric(n/b.Elapsed().Seconds(), "records/s")
			if err := s.Sync(); err != nil {
				b.Fatal(err)
			}
			if fi, err := os.Stat(path); err == nil {
				b.ReportMetric(float64(fi.Size())/n, "disk-B/record")
			}
		})
	}
}

// Replace stores a snapshot's tail and the gap below it; the gap survives
// a reopen, FillGap shrinks it from the top only while it is still the
// range the caller checked against, and Reset forgets it.
func TestGapReplaceFill(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l.db")
	s := open(t, path)
	if err := s.PutBatch(recs(1, 5)); err != nil {
		t.Fatal(err)
	}
	anchor := [32]byte{7}
	if err := s.Replace(recs(11, 3), &ledger.Gap{Lo: 1, Hi: 10, Anchor: anchor}); err != nil {
		t.Fatalf("Replace: %v", err)
	}
	if _, err := s.Get(1); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("Replace kept record 1: %v", err)
	}
	if g := s.Missing(); g == nil || g.Lo != 1 || g.Hi != 10 || g.Anchor != anchor {
		t.Fatalf("Missing = %+v", g)
	}
	if err := s.Replace(recs(5, 3), &ledger.Gap{Lo: 1, Hi: 6}); err == nil {
		t.Fatal("Replace accepted a record inside the gap")
	}
	if g := s.Missing(); g == nil || g.Hi != 10 {
		t.Fatalf("a failed Replace changed the gap to %+v", g)
	}
	s.Close()
	s = open(t, path)
	g := s.Missing()
	if g == nil || g.Hi != 10 || g.Anchor != anchor || count(t, s) != 3 {
		t.Fatalf("after reopen: gap %+v, %d records", g, count(t, s))
	}

	// Compare-and-swap on the gap, and the range checks.
	if err := s.FillGap(&ledger.Gap{Lo: 1, Hi: 9}, recs(8, 3), &ledger.Gap{Lo: 1, Hi: 7}, false); !errors.Is(err, ledger.ErrGapChanged) {
		t.Fatalf("FillGap against a stale gap: %v", err)
	}
	if err := s.FillGap(g, recs(8, 4), &ledger.Gap{Lo: 1, Hi: 7}, false); err == nil {
		t.Fatal("FillGap stored a record above the gap")
	}
	if err := s.FillGap(g, recs(8, 3), &ledger.Gap{Lo: 1, Hi: 8}, false); err == nil {
		t.Fatal("FillGap stored a record in the gap that remains")
	}
	if err := s.FillGap(g, recs(8, 3), nil, false); err == nil {
		t.Fatal("FillGap closed a gap it did not fill")
	}
	next := &ledger.Gap{Lo: 1, Hi: 7, Anchor: [32]byte{8}}
	if err := s.FillGap(g, recs(8, 3), next, false); err != nil {
		t.Fatalf("FillGap: %v", err)
	}
	if g2 := s.Missing(); g2 == nil || *g2 != *next || count(t, s) != 6 {
		t.Fatalf("after FillGap: gap %+v, %d records", g2, count(t, s))
	}
	if err := s.FillGap(next, recs(1, 7), nil, false); err != nil {
		t.Fatalf("FillGap to the end: %v", err)
	}
	if g2 := s.Missing(); g2 != nil || count(t, s) != 13 {
		t.Fatalf("after the last FillGap: gap %+v, %d records", g2, count(t, s))
	}
	if err := s.FillGap(next, recs(1, 1), nil, false); !errors.Is(err, ledger.ErrGapChanged) {
		t.Fatalf("FillGap with no gap: %v", err)
	}
	s.Close()
	s = open(t, path)
	if g2 := s.Missing(); g2 != nil || count(t, s) != 13 {
		t.Fatalf("after reopen: gap %+v, %d records", g2, count(t, s))
	}
	if err := s.Replace(nil, &ledger.Gap{Lo: 1, Hi: 3}); err != nil {
		t.Fatal(err)
	}
	if err := s.Reset(); err != nil {
		t.Fatal(err)
	}
	if g2 := s.Missing(); g2 != nil || count(t, s) != 0 {
		t.Fatalf("after Reset: gap %+v, %d records", g2, count(t, s))
	}
}

// Extend keeps a node's own records below a gap; filling the gap to its
// bottom either closes it or, with dropBelow, turns the own records into
// the new gap.
func TestGapExtendDropBelow(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "l.db"))
	if err := s.PutBatch(recs(1, 4)); err != nil {
		t.Fatal(err)
	}
	gap := &ledger.Gap{Lo: 5, Hi: 8, Anchor: [32]byte{1}}
	if err := s.Extend(recs(9, 2), gap); err != nil {
		t.Fatalf("Extend: %v", err)
	}
	if g := s.Missing(); g == nil || *g != *gap || count(t, s) != 6 {
		t.Fatalf("after Extend: gap %+v, %d records", g, count(t, s))
	}
	if err := s.Extend(recs(11, 1), nil); !errors.Is(err, ledger.ErrGapChanged) {
		t.Fatalf("Extend with a gap open: %v", err)
	}
	if err := s.FillGap(gap, recs(3, 6), &ledger.Gap{Lo: 5, Hi: 2}, false); err == nil {
		t.Fatal("FillGap stored records below the gap")
	}
	// dropBelow needs the gap filled to its bottom and the next gap [1, 4].
	if err := s.FillGap(gap, recs(6, 3), &ledger.Gap{Lo: 1, Hi: 4}, true); err == nil {
		t.Fatal("FillGap dropped records before filling to the bottom")
	}
	drop := &ledger.Gap{Lo: 1, Hi: 4, Anchor: [32]byte{2}}
	if err := s.FillGap(gap, recs(5, 4), drop, true); err != nil {
		t.Fatalf("FillGap dropBelow: %v", err)
	}
	if g := s.Missing(); g == nil || *g != *drop || count(t, s) != 6 {
		t.Fatalf("after dropBelow: gap %+v, %d records", g, count(t, s))
	}
	if _, err := s.Get(4); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("record 4 kept after dropBelow: %v", err)
	}
	if err := s.FillGap(drop, recs(1, 4), nil, false); err != nil {
		t.Fatal(err)
	}
	if g := s.Missing(); g != nil || count(t, s) != 10 {
		t.Fatalf("at the end: gap %+v, %d records", g, count(t, s))
	}
}
