package node

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/api"
	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"github.com/custos-kms/custos/raft"
)

// Metrics of a node, on a private registry (several nodes may run in one
// process) served at /metrics on Config.MetricsListen. docs/operations.md
// lists every series.
const (
	// raftPoll is how often the node samples Raft for leader changes.
	raftPoll = time.Second
	// httpReadHeaderTimeout and httpMaxHeaderBytes bound what a client of
	// the metrics or XKS listener may make the node hold.
	httpReadHeaderTimeout = 5 * time.Second
	httpMaxHeaderBytes    = 16 << 10
)

// raftStates are the values of custos_raft_state's state label.
var raftStates = []string{"Follower", "Candidate", "Leader", "Shutdown"}

// nodeMetrics holds a node's registry and the series it feeds itself.
type nodeMetrics struct {
	reg  *prometheus.Registry
	grpc *api.Metrics

	decisions     *prometheus.CounterVec
	admin         *prometheus.CounterVec
	hsmLatency    *prometheus.HistogramVec
	hsmErrors     *prometheus.CounterVec
	leaderChanges prometheus.Counter

	stop context.CancelFunc
	wg   sync.WaitGroup
	srv  *http.Server
	lis  net.Listener
}

func newNodeMetrics() (*nodeMetrics, error) {
	m := &nodeMetrics{reg: prometheus.NewRegistry()}
	m.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "custos_decisions_total",
		Help: "Decision records applied on this node since it started, by operation, outcome, reason and key (checkpoints, key administration and membership records excluded).",
	}, []string{"operation", "outcome", "reason", "key"})
	m.admin = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "custos_admin_records_total",
		Help: "Key administration (create, rotate, disable, minimum version) and membership records applied on this node since it started, by operation and outcome.",
	}, []string{"operation", "outcome"})
	m.hsmLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "custos_hsm_call_duration_seconds",
		Help:    "Duration of calls to this node's HSM (PKCS#11), by backend method, errors included.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"method"})
	m.hsmErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "custos_hsm_call_errors_total",
		Help: "Calls to this node's HSM that returned an error, by backend method.",
	}, []string{"method"})
	m.leaderChanges = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "custos_raft_leader_changes_total",
		Help: "Changes of the Raft leader seen by this node (sampled every second), the first leader included.",
	})
	for _, c := range []prometheus.Collector{m.decisions, m.admin, m.hsmLatency, m.hsmErrors, m.leaderChanges,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := m.reg.Register(c); err != nil {
			return nil, err
		}
	}
	var err error
	if m.grpc, err = api.NewMetrics(m.reg); err != nil {
		return nil, err
	}
	return m, nil
}

// stateCollector reports, at each scrape, what the Raft node and the
// replicated state say now: Raft state, indexes and term, the ledger head
// and the notification backlog of each sink.
type stateCollector struct {
	raft  *raft.Node
	state *kms.State

	raftState, commit, applied, lastLog, term, head, backlog *prometheus.Desc
}

func newStateCollector(r *raft.Node, st *kms.State) *stateCollector {
	return &stateCollector{
		raft: r, state: st,
		raftState: prometheus.NewDesc("custos_raft_state", "1 for this node's current Raft state, 0 for the others.", []string{"state"}, nil),
		commit:    prometheus.NewDesc("custos_raft_commit_index", "Raft commit index on this node.", nil, nil),
		applied:   prometheus.NewDesc("custos_raft_applied_index", "Raft index applied to this node's state.", nil, nil),
		lastLog:   prometheus.NewDesc("custos_raft_last_log_index", "Last index in this node's Raft log.", nil, nil),
		term:      prometheus.NewDesc("custos_raft_term", "Current Raft term.", nil, nil),
		head:      prometheus.NewDesc("custos_ledger_head_seq", "Sequence number of the newest decision record in this node's ledger.", nil, nil),
		backlog: prometheus.NewDesc("custos_notify_backlog_records",
			"Ledger records after the sink's replicated delivery cursor (head - delivered_seq): an upper bound on the notifications still to deliver.", []string{"sink"}, nil),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.raftState, c.commit, c.applied, c.lastLog, c.term, c.head, c.backlog} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.raft.Stats()
	for _, s := range raftStates {
		v := 0.0
		if s == st.State {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.raftState, prometheus.GaugeValue, v, s)
	}
	ch <- prometheus.MustNewConstMetric(c.commit, prometheus.GaugeValue, float64(st.CommitIndex))
	ch <- prometheus.MustNewConstMetric(c.applied, prometheus.GaugeValue, float64(st.AppliedIndex))
	ch <- prometheus.MustNewConstMetric(c.lastLog, prometheus.GaugeValue, float64(st.LastLogIndex))
	ch <- prometheus.MustNewConstMetric(c.term, prometheus.GaugeValue, float64(st.Term))
	head, _ := c.state.LedgerHead()
	ch <- prometheus.MustNewConstMetric(c.head, prometheus.GaugeValue, float64(head))
	// Sinks() returns secrets too; only names and cursors leave here.
	for _, sk := range c.state.Sinks() {
		var b uint64
		if head > sk.GetDeliveredSeq() {
			b = head - sk.GetDeliveredSeq()
		}
		ch <- prometheus.MustNewConstMetric(c.backlog, prometheus.GaugeValue, float64(b), sk.GetName())
	}
}

// start registers the state collector and starts the ledger follower and
// the Raft poller; then, if addr is set, serves /metrics on it, or on lis
// when lis is not nil (a listener handed in, Config.MetricsListener).
func (m *nodeMetrics) start(addr string, lis net.Listener, r *raft.Node, st *kms.State, log *slog.Logger) error {
	if err := m.reg.Register(newStateCollector(r, st)); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.stop = cancel
	from, _ := st.LedgerHead()
	m.wg.Add(2)
	go func() { defer m.wg.Done(); m.followLedger(ctx, st, from, log) }()
	go func() { defer m.wg.Done(); m.pollRaft(ctx, r) }()
	if addr == "" {
		return nil
	}
	if lis == nil {
		var err error
		if lis, err = net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("node: metrics listen on %s: %w", addr, err)
		}
	}
	m.lis = lis
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	m.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: httpReadHeaderTimeout,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    httpMaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if err := m.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener stopped", "addr", addr, "err", err)
		}
	}()
	return nil
}

// addr is the metrics listener's address, "" when off.
func (m *nodeMetrics) addr() string {
	if m == nil || m.lis == nil {
		return ""
	}
	return m.lis.Addr().String()
}

// close stops the listener and the background work.
func (m *nodeMetrics) close() {
	if m == nil {
		return
	}
	if m.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = m.srv.Shutdown(ctx)
		cancel()
	}
	if m.stop != nil {
		m.stop()
	}
	m.wg.Wait()
}

// followLedger counts the ledger records applied after position from, in
// order, as they are applied.
func (m *nodeMetrics) followLedger(ctx context.Context, st *kms.State, from uint64, log *slog.Logger) {
	pos := from
	for {
		if err := st.WaitBeyond(ctx, pos); err != nil {
			return
		}
		err := st.ScanRecords(pos+1, func(seq uint64, data []byte) error {
			pos = seq
			rec := &custosv1.DecisionRecord{}
			if err := proto.Unmarshal(data, rec); err != nil {
				return fmt.Errorf("decode ledger record %d: %w", seq, err)
			}
			switch rec.GetOperation() {
			case custosv1.Operation_OPERATION_CHECKPOINT:
				return nil
			case custosv1.Operation_OPERATION_CREATE_KEY, custosv1.Operation_OPERATION_ROTATE_KEY,
				custosv1.Operation_OPERATION_DISABLE_KEY, custosv1.Operation_OPERATION_SET_MIN_DECRYPTION_VERSION,
				custosv1.Operation_OPERATION_MEMBERSHIP:
				// No key use and no reason: counted apart, and without a
				// key label (the decisions' key label is already bounded
				// by the keys in use).
				m.admin.WithLabelValues(rec.GetOperation().String(), rec.GetOutcome().String()).Inc()
				return nil
			}
			m.decisions.WithLabelValues(rec.GetOperation().String(), rec.GetOutcome().String(),
				rec.GetReason().String(), rec.GetKey()).Inc()
			return nil
		})
		if err != nil {
			// Skip what cannot be read rather than spin on it.
			log.Warn("metrics: reading the ledger", "err", err)
			if head, _ := st.LedgerHead(); head > pos {
				pos = head
			}
		}
	}
}

// pollRaft counts leader changes.
func (m *nodeMetrics) pollRaft(ctx context.Context, r *raft.Node) {
	t := time.NewTicker(raftPoll)
	defer t.Stop()
	last := ""
	for {
		if l := r.Stats().Leader; l != "" && l != last {
			m.leaderChanges.Inc()
			last = l
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// instrumentedHSM is a transparent hsm.Backend decorator: every call goes
// to the backend unchanged, and is timed (custos_hsm_call_duration_seconds)
// and, when it fails, counted (custos_hsm_call_errors_total) by method.
// Arguments and results are never looked at.
type instrumentedHSM struct {
	b hsm.Backend
	m *nodeMetrics
}

var _ hsm.Backend = (*instrumentedHSM)(nil)

// hsmMethods are the method labels, created at start so that zero counts
// show.
var hsmMethods = []string{"Random", "GenerateKey", "GenerateWrappedKey", "UnwrapKey", "EncryptGCM", "DecryptGCM",
	"VerifyKey", "GenerateTransportKey", "WrapForTransport", "ReceiveWrappingKey", "ImportWrappedKey", "ReceiveRewrapKey", "RewrapKey", "DestroyTransportKey", "GenerateECKey", "PublicKey", "SignECDSA", "KeyAttributes", "HasKey", "DestroyKey", "Health", "Close"}

func newInstrumentedHSM(b hsm.Backend, m *nodeMetrics) *instrumentedHSM {
	for _, meth := range hsmMethods {
		m.hsmErrors.WithLabelValues(meth)
	}
	return &instrumentedHSM{b: b, m: m}
}

func (h *instrumentedHSM) done(method string, start time.Time, err error) {
	h.m.hsmLatency.WithLabelValues(method).Observe(time.Since(start).Seconds())
	if err != nil {
		h.m.hsmErrors.WithLabelValues(method).Inc()
	}
}

func (h *instrumentedHSM) Random(ctx context.Context, n int) (_ []byte, err error) {
	defer func(t time.Time) { h.done("Random", t, err) }(time.Now())
	return h.b.Random(ctx, n)
}

func (h *instrumentedHSM) GenerateKey(ctx context.Context, spec hsm.KeySpec) (_ []byte, err error) {
	defer func(t time.Time) { h.done("GenerateKey", t, err) }(time.Now())
	return h.b.GenerateKey(ctx, spec)
}

func (h *instrumentedHSM) GenerateWrappedKey(ctx context.Context, wrap hsm.KeyRef) (_, _ []byte, err error) {
	defer func(t time.Time) { h.done("GenerateWrappedKey", t, err) }(time.Now())
	return h.b.GenerateWrappedKey(ctx, wrap)
}

func (h *instrumentedHSM) UnwrapKey(ctx context.Context, wrap hsm.KeyRef, wrapped []byte, spec hsm.KeySpec) (err error) {
	defer func(t time.Time) { h.done("UnwrapKey", t, err) }(time.Now())
	return h.b.UnwrapKey(ctx, wrap, wrapped, spec)
}

func (h *instrumentedHSM) EncryptGCM(ctx context.Context, key hsm.KeyRef, iv, plaintext, aad []byte) (_ []byte, err error) {
	defer func(t time.Time) { h.done("EncryptGCM", t, err) }(time.Now())
	return h.b.EncryptGCM(ctx, key, iv, plaintext, aad)
}

func (h *instrumentedHSM) DecryptGCM(ctx context.Context, key hsm.KeyRef, iv, ciphertext, aad []byte) (_ []byte, err error) {
	defer func(t time.Time) { h.done("DecryptGCM", t, err) }(time.Now())
	return h.b.DecryptGCM(ctx, key, iv, ciphertext, aad)
}

func (h *instrumentedHSM) VerifyKey(ctx context.Context, key hsm.KeyRef, usage hsm.KeyUsage) (err error) {
	defer func(t time.Time) { h.done("VerifyKey", t, err) }(time.Now())
	return h.b.VerifyKey(ctx, key, usage)
}

func (h *instrumentedHSM) GenerateTransportKey(ctx context.Context, id []byte) (_ *rsa.PublicKey, err error) {
	defer func(t time.Time) { h.done("GenerateTransportKey", t, err) }(time.Now())
	return h.b.GenerateTransportKey(ctx, id)
}

func (h *instrumentedHSM) WrapForTransport(ctx context.Context, key hsm.KeyRef, trusted []byte, pub *rsa.PublicKey, hash hsm.OAEPHash) (_ []byte, err error) {
	defer func(t time.Time) { h.done("WrapForTransport", t, err) }(time.Now())
	return h.b.WrapForTransport(ctx, key, trusted, pub, hash)
}

func (h *instrumentedHSM) ReceiveWrappingKey(ctx context.Context, transport, wrapped []byte, hash hsm.OAEPHash, spec hsm.KeySpec) (err error) {
	defer func(t time.Time) { h.done("ReceiveWrappingKey", t, err) }(time.Now())
	return h.b.ReceiveWrappingKey(ctx, transport, wrapped, hash, spec)
}

func (h *instrumentedHSM) ImportWrappedKey(ctx context.Context, importKey, material []byte, format hsm.ImportFormat, hash hsm.OAEPHash, wrap hsm.KeyRef) (_, _ []byte, err error) {
	defer func(t time.Time) { h.done("ImportWrappedKey", t, err) }(time.Now())
	return h.b.ImportWrappedKey(ctx, importKey, material, format, hash, wrap)
}

func (h *instrumentedHSM) ReceiveRewrapKey(ctx context.Context, transport, wrapped []byte, hash hsm.OAEPHash, id []byte) (err error) {
	defer func(t time.Time) { h.done("ReceiveRewrapKey", t, err) }(time.Now())
	return h.b.ReceiveRewrapKey(ctx, transport, wrapped, hash, id)
}

func (h *instrumentedHSM) RewrapKey(ctx context.Context, from, wrapped []byte, to hsm.KeyRef, checkValue []byte) (_ []byte, err error) {
	defer func(t time.Time) { h.done("RewrapKey", t, err) }(time.Now())
	return h.b.RewrapKey(ctx, from, wrapped, to, checkValue)
}

func (h *instrumentedHSM) DestroyTransportKey(ctx context.Context, id []byte) (err error) {
	defer func(t time.Time) { h.done("DestroyTransportKey", t, err) }(time.Now())
	return h.b.DestroyTransportKey(ctx, id)
}

func (h *instrumentedHSM) GenerateECKey(ctx context.Context, id []byte, label string) (_ *ecdsa.PublicKey, err error) {
	defer func(t time.Time) { h.done("GenerateECKey", t, err) }(time.Now())
	return h.b.GenerateECKey(ctx, id, label)
}

func (h *instrumentedHSM) PublicKey(ctx context.Context, id []byte) (_ *ecdsa.PublicKey, err error) {
	defer func(t time.Time) { h.done("PublicKey", t, err) }(time.Now())
	return h.b.PublicKey(ctx, id)
}

func (h *instrumentedHSM) SignECDSA(ctx context.Context, id, digest []byte) (_ []byte, err error) {
	defer func(t time.Time) { h.done("SignECDSA", t, err) }(time.Now())
	return h.b.SignECDSA(ctx, id, digest)
}

func (h *instrumentedHSM) KeyAttributes(ctx context.Context, id []byte) (_ hsm.Attributes, err error) {
	defer func(t time.Time) { h.done("KeyAttributes", t, err) }(time.Now())
	return h.b.KeyAttributes(ctx, id)
}

func (h *instrumentedHSM) HasKey(ctx context.Context, id []byte) (_ bool, err error) {
	defer func(t time.Time) { h.done("HasKey", t, err) }(time.Now())
	return h.b.HasKey(ctx, id)
}

func (h *instrumentedHSM) DestroyKey(ctx context.Context, id []byte) (err error) {
	defer func(t time.Time) { h.done("DestroyKey", t, err) }(time.Now())
	return h.b.DestroyKey(ctx, id)
}

func (h *instrumentedHSM) Health(ctx context.Context) (err error) {
	defer func(t time.Time) { h.done("Health", t, err) }(time.Now())
	return h.b.Health(ctx)
}

func (h *instrumentedHSM) Close() (err error) {
	defer func(t time.Time) { h.done("Close", t, err) }(time.Now())
	return h.b.Close()
}
