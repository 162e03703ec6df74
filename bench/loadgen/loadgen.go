// Package loadgen runs an operation at a fixed concurrency (closed loop: each
// worker starts its next operation as soon as the previous one returns),
// after a warm-up, and records the latency of every operation in a bounded
// histogram.
//
//	res, err := loadgen.Run(ctx, loadgen.Config{Concurrency: 16, Duration: 10 * time.Second,
//		Warmup: time.Second}, func(ctx context.Context) error { ... })
//
// Operations that start during the warm-up are neither timed nor counted.
// The measured window opens when the warm-up ends and closes Duration later
// (or once Ops operations have started); operations started inside it are
// all waited for and counted, and the elapsed time runs until the last of
// them returns.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Op is one operation. It must be safe for concurrent use. A non-nil error
// counts as a failed operation; its latency is recorded all the same.
type Op func(ctx context.Context) error

// Config says how to run an Op.
type Config struct {
	// Concurrency is the number of workers, each running one operation at
	// a time. At least 1.
	Concurrency int
	// Duration is the length of the measured window. Ignored when Ops > 0.
	Duration time.Duration
	// Ops, when > 0, ends the measured window once this many operations
	// have started (across all workers), instead of after Duration.
	Ops int64
	// Warmup runs the operation, untimed, for this long before the
	// measured window opens. 0 means no warm-up.
	Warmup time.Duration
	// OnStart and OnStop, if set, are called just before the measured
	// window opens and just after its last operation returned: for
	// sampling resource use (CPU time, RSS) over exactly that window.
	OnStart, OnStop func()
}

// Result is what a Run measured.
type Result struct {
	Concurrency int `json:"concurrency"`
	// Ops counts every operation of the measured window, failed or not.
	Ops int64 `json:"ops"`
	// Errors counts the failed ones; FirstError is the text of the first.
	Errors     int64  `json:"errors"`
	FirstError string `json:"first_error,omitempty"`
	// Elapsed is the length of the measured window.
	Elapsed time.Duration `json:"elapsed_ns"`
	// OpsPerSec is Ops / Elapsed.
	OpsPerSec float64 `json:"ops_per_sec"`
	// Latencies of the operations of the window.
	Min  time.Duration `json:"min_ns"`
	Mean time.Duration `json:"mean_ns"`
	P50  time.Duration `json:"p50_ns"`
	P99  time.Duration `json:"p99_ns"`
	P999 time.Duration `json:"p999_ns"`
	Max  time.Duration `json:"max_ns"`

	// Hist holds every latency of the window.
	Hist *Histogram `json:"-"`
}

// Run runs op as cfg says and returns what it measured. It returns an error
// only for a bad Config, or when ctx ends before the measured window closes
// (the partial Result is returned with it).
func Run(ctx context.Context, cfg Config, op Op) (Result, error) {
	return RunWorkers(ctx, cfg, func(int) Op { return op })
}

// RunWorkers is Run with an operation of each worker's own: worker w (0 to
// Concurrency−1) runs opFor(w), which is called once, before the worker
// starts. It lets workers be spread over targets, e.g. worker w on node
// w mod N.
func RunWorkers(ctx context.Context, cfg Config, opFor func(worker int) Op) (Result, error) {
	if cfg.Concurrency < 1 {
		return Result{}, fmt.Errorf("loadgen: concurrency %d < 1", cfg.Concurrency)
	}
	if cfg.Ops <= 0 && cfg.Duration <= 0 {
		return Result{}, errors.New("loadgen: neither Duration nor Ops is set")
	}
	if cfg.Warmup < 0 {
		return Result{}, fmt.Errorf("loadgen: negative warm-up %v", cfg.Warmup)
	}
	ops := make([]Op, cfg.Concurrency)
	for w := range ops {
		if ops[w] = opFor(w); ops[w] == nil {
			return Result{}, fmt.Errorf("loadgen: no operation for worker %d", w)
		}
	}

	const (
		phaseWarmup = iota
		phaseMeasure
		phaseStop
	)
	var (
		phase   atomic.Int32
		started atomic.Int64 // operations claimed in the measured window
		errs    atomic.Int64
		errOnce sync.Once
		errText string
		wg      sync.WaitGroup
		hists   = make([]*Histogram, cfg.Concurrency)
		// measureStart is written before phase becomes phaseMeasure and
		// read only after, so the atomic orders it.
		measureStart time.Time
		stopOnce     sync.Once
		stopped      = make(chan struct{})
	)
	stop := func() {
		stopOnce.Do(func() {
			phase.Store(phaseStop)
			close(stopped)
		})
	}
	if cfg.Warmup == 0 {
		if cfg.OnStart != nil {
			cfg.OnStart()
		}
		measureStart = time.Now()
		phase.Store(phaseMeasure)
	}
	for w := range cfg.Concurrency {
		h := NewHistogram()
		hists[w] = h
		op := ops[w]
		wg.Go(func() {
			for {
				p := phase.Load()
				if p == phaseStop || ctx.Err() != nil {
					return
				}
				measured := p == phaseMeasure
				if measured && cfg.Ops > 0 {
					n := started.Add(1)
					if n > cfg.Ops {
						stop()
						return
					}
					if n == cfg.Ops {
						stop() // this one is the last
					}
				}
				t0 := time.Now()
				err := op(ctx)
				d := time.Since(t0)
				if !measured {
					continue
				}
				h.Record(d)
				if err != nil {
					errs.Add(1)
					errOnce.Do(func() { errText = err.Error() })
				}
			}
		})
	}

	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-stopped:
			return true
		case <-t.C:
			return true
		}
	}
	ok := true
	if cfg.Warmup > 0 {
		ok = wait(cfg.Warmup)
		if ok {
			if cfg.OnStart != nil {
				cfg.OnStart()
			}
			measureStart = time.Now()
			phase.Store(phaseMeasure)
		}
	}
	if ok {
		if cfg.Ops > 0 {
			select {
			case <-ctx.Done():
				ok = false
			case <-stopped:
			}
		} else {
			ok = wait(cfg.Duration)
		}
	}
	stop()
	wg.Wait()
	var elapsed time.Duration
	if !measureStart.IsZero() {
		elapsed = time.Since(measureStart)
	}
	if cfg.OnStop != nil && !measureStart.IsZero() {
		cfg.OnStop()
	}

	all := NewHistogram()
	for _, h := range hists {
		all.Merge(h)
	}
	res := Summarize(cfg.Concurrency, all, elapsed)
	res.Errors = errs.Load()
	res.FirstError = errText
	if !ok {
		return res, fmt.Errorf("loadgen: %w", context.Cause(ctx))
	}
	return res, nil
}

// Summarize builds a Result from a histogram of latencies and the length of
// the window they were recorded in (Errors and FirstError are left zero).
func Summarize(concurrency int, h *Histogram, elapsed time.Duration) Result {
	r := Result{
		Concurrency: concurrency,
		Ops:         int64(h.Count()),
		Elapsed:     elapsed,
		Min:         h.Min(),
		Mean:        h.Mean(),
		P50:         h.Quantile(0.50),
		P99:         h.Quantile(0.99),
		P999:        h.Quantile(0.999),
		Max:         h.Max(),
		Hist:        h,
	}
	if elapsed > 0 {
		r.OpsPerSec = float64(r.Ops) / elapsed.Seconds()
	}
	return r
}
