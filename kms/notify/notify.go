// Package notify pushes the ledger records selected by the cluster's notify
// rules to the configured sinks (webhooks and files), at least once and in
// ledger order, and delivers records synchronously for keys that require
// notification before release.
//
// Delivery is at least once: a sink's replicated cursor (Sink.delivered_seq)
// moves only after the sink acknowledged a batch, so a crash or a leader
// change between the acknowledgement and the cursor move delivers the batch
// again. Receivers deduplicate by seq. docs/notifications.md describes the
// wire format and how receivers verify it.
package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"google.golang.org/protobuf/proto"
)

// Defaults for Config.
const (
	DefaultClientTimeout  = 10 * time.Second
	DefaultMinBackoff     = 200 * time.Millisecond
	DefaultMaxBackoff     = 30 * time.Second
	DefaultBatchSize      = 100
	DefaultReleaseTimeout = 5 * time.Second
)

// idleAdvance is how many records without notify a sink's delivery loop
// skips before it moves the cursor without having delivered anything.
const idleAdvance = 1000

// maxScan bounds the records one pass over the ledger reads.
const maxScan = 10 * idleAdvance

// ErrNoRequiredSink is returned by DeliverNow when no sink has
// required_for_release: a key that requires notification before release
// must not be released silently, so the release is blocked.
var ErrNoRequiredSink = errors.New("no sink is required for release")

// Config configures a Notifier.
type Config struct {
	// State is the node's replicated state (ledger, sinks, cursors).
	State *kms.State
	// Service proposes cursor moves (AdvanceCursor) and takes the release
	// notifier (Install).
	Service *kms.Service
	// Client sends webhook requests (default: a client with a 10 s
	// timeout). The notifier uses a copy that never follows redirects.
	Client *http.Client
	// Logger gets seq ranges, sink names and status codes; never HMAC keys
	// or record contents.
	Logger *slog.Logger
	// MinBackoff and MaxBackoff bound the exponential back-off (with
	// jitter) between delivery attempts (defaults 200 ms and 30 s).
	MinBackoff, MaxBackoff time.Duration
	// BatchSize is the most records one delivery carries (default 100).
	BatchSize int
	// ReleaseTimeout bounds DeliverNow (default 5 s).
	ReleaseTimeout time.Duration
}

// Notifier delivers notify records to sinks.
type Notifier struct {
	cfg     Config
	st      *kms.State
	svc     *kms.Service
	client  *http.Client
	lg      *slog.Logger
	running atomic.Bool
	idle    int        // see idleAdvance (a field so tests can lower it)
	fileMu  sync.Mutex // serialises appends to file sinks
	now     func() time.Time
}

// New returns a Notifier; zero Config fields take their defaults.
func New(cfg Config) *Notifier {
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: DefaultClientTimeout}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = cfg.MinBackoff
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.ReleaseTimeout <= 0 {
		cfg.ReleaseTimeout = DefaultReleaseTimeout
	}
	c := *cfg.Client
	// A redirect is not an acknowledgement, and the signed body must not
	// follow it to another host: 3xx is retried like any non-2xx.
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Notifier{cfg: cfg, st: cfg.State, svc: cfg.Service, client: &c,
		lg: cfg.Logger.With("component", "notify"), now: time.Now, idle: idleAdvance}
}

// Install makes n the service's release notifier, so that keys whose policy
// sets notify_before_release are released only after DeliverNow succeeded.
// Install it on every node (any node may serve a decrypt); Run only on the
// leader.
func (n *Notifier) Install() {
	n.svc.SetReleaseNotifier(n.DeliverNow)
}

// Run is the delivery loop. Run it on the Raft leader only, and cancel ctx
// when leadership is lost, before the node closes; stopping at any point
// is safe (an interrupted batch is delivered again by the next leader). It
// starts one delivery goroutine per sink and re-reads the sink list
// whenever the ledger grows, so added, removed and replaced sinks are
// picked up. It returns ctx.Err() once every goroutine has stopped.
func (n *Notifier) Run(ctx context.Context) error {
	if !n.running.CompareAndSwap(false, true) {
		return errors.New("notify: Run is already running")
	}
	defer n.running.Store(false)
	type handle struct {
		sink   *custosv1.Sink
		cancel context.CancelFunc
		done   chan struct{}
	}
	workers := map[string]*handle{}
	stop := func(h *handle) {
		h.cancel()
		<-h.done
	}
	defer func() {
		for _, h := range workers {
			h.cancel()
		}
		for _, h := range workers {
			<-h.done
		}
	}()
	n.lg.Info("notification delivery started")
	defer n.lg.Info("notification delivery stopped")
	for {
		head, _ := n.st.LedgerHead()
		seen := map[string]bool{}
		for _, sk := range n.st.Sinks() {
			seen[sk.Name] = true
			if h, ok := workers[sk.Name]; ok {
				select {
				case <-h.done:
				default:
					if sameConfig(h.sink, sk) {
						continue
					}
				}
				stop(h)
			}
			wctx, cancel := context.WithCancel(ctx)
			h := &handle{sink: sk, cancel: cancel, done: make(chan struct{})}
			workers[sk.Name] = h
			go func() {
				defer close(h.done)
				n.deliverLoop(wctx, sk)
			}()
		}
		for name, h := range workers {
			if !seen[name] {
				stop(h)
				delete(workers, name)
			}
		}
		if err := n.st.WaitBeyond(ctx, head); err != nil {
			return err
		}
	}
}

// sameConfig reports whether two sink configurations deliver to the same
// place the same way (the cursor is not part of it).
func sameConfig(a, b *custosv1.Sink) bool {
	a, b = proto.Clone(a).(*custosv1.Sink), proto.Clone(b).(*custosv1.Sink)
	a.DeliveredSeq, b.DeliveredSeq = 0, 0
	return proto.Equal(a, b)
}

// currentSink returns the named sink from the state, or nil once removed.
func (n *Notifier) currentSink(name string) *custosv1.Sink {
	for _, sk := range n.st.Sinks() {
		if sk.Name == name {
			return sk
		}
	}
	return nil
}

// item is one record to deliver: its seq, its stored bytes and its JSON.
type item struct {
	seq  uint64
	json []byte
}

// batch is the result of one pass over the ledger.
type batch struct {
	items   []item
	last    uint64 // last seq the pass covered (delivered or skipped)
	skipped int    // records without notify in the pass
}

var errFull = errors.New("batch full")

// nextBatch reads the ledger after pos: up to BatchSize notify records,
// stopping at the head, and covering at most maxScan records.
func (n *Notifier) nextBatch(pos uint64) (batch, error) {
	b := batch{last: pos}
	scanned := 0
	err := n.st.ScanRecords(pos+1, func(seq uint64, data []byte) error {
		if seq != b.last+1 {
			return fmt.Errorf("ledger gap: record %d after %d", seq, b.last)
		}
		rec := &custosv1.DecisionRecord{}
		if err := proto.Unmarshal(data, rec); err != nil {
			return fmt.Errorf("decode ledger record %d: %v", seq, err)
		}
		b.last = seq
		scanned++
		if rec.Notify {
			j, err := recordJSON(rec, data)
			if err != nil {
				return fmt.Errorf("encode ledger record %d: %v", seq, err)
			}
			b.items = append(b.items, item{seq: seq, json: j})
			if len(b.items) >= n.cfg.BatchSize {
				return errFull
			}
		} else {
			b.skipped++
		}
		if scanned >= maxScan {
			return errFull
		}
		return nil
	})
	if errors.Is(err, errFull) {
		err = nil
	}
	return b, err
}

// deliverLoop delivers, strictly in ledger order, every notify record after
// the sink's cursor, until ctx ends or the sink is removed.
func (n *Notifier) deliverLoop(ctx context.Context, cfg *custosv1.Sink) {
	lg := n.lg.With("sink", cfg.Name, "type", cfg.Type.String())
	pos := cfg.DeliveredSeq // delivered (or skipped) locally up to here
	idle := 0               // records skipped since the last cursor move
	lg.Info("sink delivery started", "delivered_seq", pos)
	for ctx.Err() == nil {
		cur := n.currentSink(cfg.Name)
		if cur == nil {
			lg.Info("sink removed; delivery stopped")
			return
		}
		if cur.DeliveredSeq > pos {
			pos, idle = cur.DeliveredSeq, 0
		}
		var b batch
		if !n.retry(ctx, lg, "read ledger", func() error {
			var err error
			b, err = n.nextBatch(pos)
			return err
		}) {
			return
		}
		if len(b.items) > 0 {
			first, last := b.items[0].seq, b.items[len(b.items)-1].seq
			attempt := 0
			if !n.retry(ctx, lg, "deliver", func() error {
				attempt++
				err := n.deliver(ctx, cfg, b.items, "stream")
				if err != nil {
					lg.Warn("delivery failed; retrying the same batch", "first_seq", first, "last_seq", last,
						"records", len(b.items), "attempt", attempt, "err", err)
				}
				return err
			}) {
				return
			}
			lg.Info("delivered", "first_seq", first, "last_seq", last, "records", len(b.items), "covered_to", b.last, "attempts", attempt)
			pos = b.last
			if !n.advance(ctx, lg, cfg.Name, pos) {
				return
			}
			idle = 0
			continue
		}
		if b.last > pos {
			pos = b.last
			idle += b.skipped
			if idle >= n.idle {
				if !n.advance(ctx, lg, cfg.Name, pos) {
					return
				}
				idle = 0
			}
			continue
		}
		if err := n.st.WaitBeyond(ctx, pos); err != nil {
			return
		}
	}
}

// advance proposes the cursor move, retrying until it commits. It returns
// false when the loop must stop (ctx ended or the sink is gone).
func (n *Notifier) advance(ctx context.Context, lg *slog.Logger, sink string, seq uint64) bool {
	gone := false
	ok := n.retry(ctx, lg, "advance cursor", func() error {
		err := n.svc.AdvanceCursor(ctx, sink, seq)
		if errors.Is(err, kms.ErrNotFound) {
			gone = true
			return nil
		}
		return err
	})
	if gone {
		lg.Info("sink removed; delivery stopped")
		return false
	}
	if ok {
		lg.Debug("cursor advanced", "delivered_seq", seq)
	}
	return ok
}

// retry calls fn until it succeeds, sleeping with exponential back-off and
// jitter between attempts. It returns false if ctx ended first.
func (n *Notifier) retry(ctx context.Context, lg *slog.Logger, what string, fn func() error) bool {
	for attempt := 0; ; attempt++ {
		err := fn()
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if what != "deliver" {
			lg.Warn(what+" failed; retrying", "attempt", attempt+1, "err", err)
		}
		if !sleep(ctx, n.backoff(attempt)) {
			return false
		}
	}
}

// backoff returns the pause after failed attempt number attempt (from 0):
// MinBackoff·2^attempt capped at MaxBackoff, with the upper half jittered.
func (n *Notifier) backoff(attempt int) time.Duration {
	d := n.cfg.MinBackoff
	for i := 0; i < attempt && d < n.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, n.cfg.MaxBackoff)
	half := d / 2
	return half + rand.N(half+1)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// deliver sends one batch to a sink once.
func (n *Notifier) deliver(ctx context.Context, sk *custosv1.Sink, items []item, purpose string) error {
	switch sk.Type {
	case custosv1.SinkType_SINK_TYPE_WEBHOOK:
		return n.postWebhook(ctx, sk, items, purpose)
	case custosv1.SinkType_SINK_TYPE_FILE:
		return n.appendFile(sk, items)
	default:
		return fmt.Errorf("sink %q: unsupported type %s", sk.Name, sk.Type)
	}
}
