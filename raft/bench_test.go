package raft

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"
)

// BenchmarkLogStoreStoreLogs appends one entry of the size group commit
// makes at 64 callers (8 Decide commands, ~1.2 KB) per StoreLogs, fsynced,
// as the Raft leader does once per write batch: on a fresh log, and on a log
// that was compacted (20k entries appended, all but the last 100 deleted, as
// after a snapshot), whose freed pages are many. cpu-µs/op is the process's
// CPU time (user+system, fsync included) per append, which a shared machine
// disturbs less than the wall clock; page-writes/op counts bbolt's writes.
func BenchmarkLogStoreStoreLogs(b *testing.B) {
	data := make([]byte, 1200)
	var ru syscall.Rusage
	cpu := func() time.Duration {
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	for _, compacted := range []bool{false, true} {
		name := "fresh"
		if compacted {
			name = "compacted"
		}
		b.Run(name, func(b *testing.B) {
			s, err := OpenLogStore(filepath.Join(b.TempDir(), "raft.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			i := uint64(0)
			if compacted {
				const n = 20000
				for ; i < n; i += 100 {
					logs := make([]*hraft.Log, 100)
					for j := range logs {
						logs[j] = &hraft.Log{Index: i + uint64(j) + 1, Term: 1, Type: hraft.LogCommand, Data: data}
					}
					if err := s.StoreLogs(logs); err != nil {
						b.Fatal(err)
					}
				}
				if err := s.DeleteRange(1, n-100); err != nil {
					b.Fatal(err)
				}
			}
			st0 := s.db.Stats()
			w0 := st0.TxStats.GetWrite()
			b.ReportAllocs()
			b.ResetTimer()
			start := cpu()
			for b.Loop() {
				i++
				l := &hraft.Log{Index: i, Term: 1, Type: hraft.LogCommand, Data: data, AppendedAt: time.Now()}
				if err := s.StoreLogs([]*hraft.Log{l}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((cpu()-start).Microseconds())/float64(b.N), "cpu-µs/op")
			st1 := s.db.Stats()
			b.ReportMetric(float64(st1.TxStats.GetWrite()-w0)/float64(b.N), "page-writes/op")
		})
	}
}
