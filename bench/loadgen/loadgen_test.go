package loadgen

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// exactQuantile is the nearest-rank quantile of sorted samples.
func exactQuantile(sorted []int64, q float64) int64 {
	rank := int(math.Ceil(q*float64(len(sorted)) - 1e-9))
	rank = max(rank, 1)
	return sorted[rank-1]
}

func TestBucketsContiguous(t *testing.T) {
	prevHi := int64(-1)
	for i := range nBuckets {
		lo, hi := bucketBounds(i)
		if lo != prevHi+1 {
			t.Fatalf("bucket %d starts at %d, previous ended at %d", i, lo, prevHi)
		}
		if hi < lo {
			t.Fatalf("bucket %d: hi %d < lo %d", i, hi, lo)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d [%d,%d]: bucketOf gives %d, %d", i, lo, hi, bucketOf(lo), bucketOf(hi))
		}
		if hi == math.MaxInt64 {
			if i != nBuckets-1 {
				t.Fatalf("MaxInt64 in bucket %d of %d", i, nBuckets)
			}
			return
		}
		prevHi = hi
	}
	t.Fatalf("buckets end at %d, before MaxInt64", prevHi)
}

func TestBucketRelativeWidth(t *testing.T) {
	for i := 2 * subCount; i < nBuckets; i++ {
		lo, hi := bucketBounds(i)
		if w := float64(hi-lo) / float64(lo); w > 1.0/subCount {
			t.Fatalf("bucket %d [%d,%d] is %.4f wide, want <= 1/%d", i, lo, hi, w, subCount)
		}
	}
}

func TestQuantileSmallExact(t *testing.T) {
	// Values below 2*subCount ns are recorded exactly.
	h := NewHistogram()
	for v := 1; v <= 100; v++ {
		h.Record(time.Duration(v))
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0, 1}, {0.01, 1}, {0.5, 50}, {0.505, 51}, {0.99, 99}, {0.999, 100}, {1, 100}} {
		if got := h.Quantile(c.q); got != c.want {
			t.Errorf("Quantile(%v) = %d, want %d", c.q, got, c.want)
		}
	}
	if h.Min() != 1 || h.Max() != 100 || h.Count() != 100 {
		t.Errorf("min %d max %d count %d", h.Min(), h.Max(), h.Count())
	}
	if h.Mean() != 50 { // 50.5 truncated
		t.Errorf("mean %d, want 50", h.Mean())
	}
}

func TestQuantileMatchesSortedSamples(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, dist := range []struct {
		name string
		gen  func() int64
	}{
		{"uniform-us", func() int64 { return 1000 + rng.Int64N(100_000) }},
		{"lognormal", func() int64 { return int64(math.Exp(rng.NormFloat64()*1.5 + 12)) }},
		{"bimodal", func() int64 {
			if rng.IntN(100) == 0 {
				return 50_000_000 + rng.Int64N(1_000_000)
			}
			return 200_000 + rng.Int64N(10_000)
		}},
	} {
		t.Run(dist.name, func(t *testing.T) {
			const n = 20_000
			samples := make([]int64, n)
			h := NewHistogram()
			for i := range samples {
				samples[i] = dist.gen()
				h.Record(time.Duration(samples[i]))
			}
			slices.Sort(samples)
			for _, q := range []float64{0, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 1} {
				want := exactQuantile(samples, q)
				got := int64(h.Quantile(q))
				if rel := math.Abs(float64(got-want)) / float64(want); rel > 1.0/(2*subCount) {
					t.Errorf("Quantile(%v) = %d, exact %d: relative error %.5f > 1/%d", q, got, want, rel, 2*subCount)
				}
			}
			if int64(h.Min()) != samples[0] || int64(h.Max()) != samples[n-1] {
				t.Errorf("min/max %d/%d, want %d/%d", h.Min(), h.Max(), samples[0], samples[n-1])
			}
		})
	}
}

func TestMerge(t *testing.T) {
	a, b, all := NewHistogram(), NewHistogram(), NewHistogram()
	for i := range 1000 {
		d := time.Duration(i*i) * time.Microsecond
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(b)
	a.Merge(NewHistogram())
	a.Merge(nil)
	for _, q := range []float64{0, 0.5, 0.99, 0.999, 1} {
		if a.Quantile(q) != all.Quantile(q) {
			t.Errorf("merged Quantile(%v) = %v, want %v", q, a.Quantile(q), all.Quantile(q))
		}
	}
	if a.Count() != all.Count() || a.Min() != all.Min() || a.Max() != all.Max() || a.Mean() != all.Mean() {
		t.Errorf("merged summary differs")
	}
}

func TestEmptyAndNegative(t *testing.T) {
	h := NewHistogram()
	if h.Quantile(0.5) != 0 || h.Min() != 0 || h.Max() != 0 || h.Mean() != 0 {
		t.Errorf("empty histogram is not all zero")
	}
	h.Record(-5)
	h.Record(time.Duration(math.MaxInt64))
	if h.Min() != 0 || h.Max() != time.Duration(math.MaxInt64) || h.Quantile(1) != time.Duration(math.MaxInt64) {
		t.Errorf("min %d max %d q1 %d", h.Min(), h.Max(), h.Quantile(1))
	}
}

func TestRunOpsCount(t *testing.T) {
	var calls atomic.Int64
	var startCalled, stopCalled int
	res, err := Run(context.Background(), Config{
		Concurrency: 4, Ops: 1000,
		OnStart: func() { startCalled++ },
		OnStop:  func() { stopCalled++ },
	}, func(ctx context.Context) error {
		n := calls.Add(1)
		if n%100 == 0 {
			return errors.New("boom")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 1000 || calls.Load() != 1000 {
		t.Errorf("Ops = %d, calls = %d, want 1000", res.Ops, calls.Load())
	}
	if res.Errors != 10 || res.FirstError != "boom" {
		t.Errorf("Errors = %d (%q), want 10 (boom)", res.Errors, res.FirstError)
	}
	if startCalled != 1 || stopCalled != 1 {
		t.Errorf("OnStart called %d times, OnStop %d", startCalled, stopCalled)
	}
	if res.Concurrency != 4 || res.Hist.Count() != 1000 || res.Elapsed <= 0 || res.OpsPerSec <= 0 {
		t.Errorf("result %+v", res)
	}
	if !(res.Min <= res.P50 && res.P50 <= res.P99 && res.P99 <= res.P999 && res.P999 <= res.Max) {
		t.Errorf("percentiles out of order: %+v", res)
	}
}

func TestRunWarmupNotCounted(t *testing.T) {
	var calls atomic.Int64
	res, err := Run(context.Background(), Config{
		Concurrency: 2, Ops: 50, Warmup: 20 * time.Millisecond,
	}, func(ctx context.Context) error {
		calls.Add(1)
		time.Sleep(100 * time.Microsecond)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 50 {
		t.Errorf("Ops = %d, want 50", res.Ops)
	}
	if calls.Load() <= 50 {
		t.Errorf("calls = %d: the warm-up ran no operation", calls.Load())
	}
}

func TestRunDuration(t *testing.T) {
	res, err := Run(context.Background(), Config{Concurrency: 3, Duration: 30 * time.Millisecond},
		func(ctx context.Context) error { time.Sleep(time.Millisecond); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops == 0 || res.Errors != 0 || res.Elapsed < 30*time.Millisecond {
		t.Errorf("result %+v", res)
	}
}

func TestRunContextCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int64
	_, err := Run(ctx, Config{Concurrency: 2, Duration: time.Hour}, func(ctx context.Context) error {
		if calls.Add(1) == 10 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func TestRunBadConfig(t *testing.T) {
	op := func(context.Context) error { return nil }
	for _, cfg := range []Config{{Concurrency: 0, Ops: 1}, {Concurrency: 1}, {Concurrency: 1, Ops: 1, Warmup: -1}} {
		if _, err := Run(context.Background(), cfg, op); err == nil {
			t.Errorf("Run(%+v) succeeded", cfg)
		}
	}
}

func TestRunWorkers(t *testing.T) {
	// Worker w runs target w mod 3: with 7 workers, targets 0, 1 and 2 get
	// 3, 2 and 2 workers, and every target runs operations.
	var calls [3]atomic.Int64
	workers := map[int]bool{}
	res, err := RunWorkers(context.Background(), Config{Concurrency: 7, Ops: 700}, func(w int) Op {
		workers[w] = true // called before the workers start: no race
		target := &calls[w%3]
		return func(context.Context) error {
			target.Add(1)
			time.Sleep(50 * time.Microsecond)
			return nil
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(workers) != 7 || res.Ops != 700 {
		t.Errorf("workers %v, ops %d", workers, res.Ops)
	}
	var sum int64
	for i := range calls {
		if calls[i].Load() == 0 {
			t.Errorf("target %d ran no operation", i)
		}
		sum += calls[i].Load()
	}
	if sum != 700 {
		t.Errorf("%d calls, want 700", sum)
	}
	if _, err := RunWorkers(context.Background(), Config{Concurrency: 2, Ops: 1}, func(w int) Op { return nil }); err == nil {
		t.Error("nil operation accepted")
	}
}
