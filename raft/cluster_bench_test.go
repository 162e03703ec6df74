package raft_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-kms/custos/raft"
)

// BenchmarkThreeNodeApply: C concurrent callers apply small commands on the
// leader of a three-node cluster over loopback TCP (Open's own transport,
// bbolt log stores with fsync, group commit). ops/s is the commit rate
// seen by the callers; it is how the cost of replicating without the
// AppendEntries pipeline (raft/nopipeline.go) was measured.
func BenchmarkThreeNodeApply(b *testing.B) {
	for _, c := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("C=%d", c), func(b *testing.B) {
			nodes := make([]*raft.Node, 3)
			for i := range nodes {
				cfg := testConfig(fmt.Sprintf("n%d", i+1), b.TempDir())
				cfg.Bootstrap = i == 0
				n, err := raft.Open(cfg, &listSM{})
				if err != nil {
					b.Fatal(err)
				}
				defer n.Close()
				nodes[i] = n
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			for !nodes[0].IsLeader() {
				if ctx.Err() != nil {
					b.Fatal("no leader")
				}
				time.Sleep(10 * time.Millisecond)
			}
			for _, n := range nodes[1:] {
				if err := nodes[0].AddVoter(ctx, n.ID(), n.Addr()); err != nil {
					b.Fatal(err)
				}
			}
			lead := nodes[0]
			var next atomic.Int64
			var failed atomic.Int64
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for w := range c {
				wg.Go(func() {
					for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
						if _, err := lead.Apply(ctx, cmd(fmt.Sprintf("w%d-%d", w, i), i)); err != nil {
							failed.Add(1)
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
			if f := failed.Load(); f > 0 {
				b.Fatalf("%d applies failed", f)
			}
		})
	}
}
