package notify_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/notify"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

var bg = context.Background()

// waitTimeout only bounds how long a broken test hangs; no test asserts
// how long anything took.
const waitTimeout = 30 * time.Second

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func hmacKey(name string) []byte {
	k := sha256.Sum256([]byte("test hmac key for " + name))
	return k[:]
}

// addSink adds a sink with a one-officer AddSink statement.
// addSink adds a sink and returns its initial cursor: the sequence number
// before its own add_sink record (read from the statement's result, since the
// running notifier may already have moved the live cursor).
func addSink(t *testing.T, h *nodetest.Harness, sk *custosv1.Sink) uint64 {
	t.Helper()
	ss := h.Sign(t, func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_AddSink{AddSink: &custosv1.AddSink{Sink: sk}}
	}, 0)
	resp, err := h.Node.Service().Submit(bg, kms.Principal{Name: "officer-cli"}, ss)
	if err != nil {
		t.Fatalf("add sink %s: %v", sk.Name, err)
	}
	return resp.LedgerSeq - 1
}

func addWebhook(t *testing.T, h *nodetest.Harness, name string, r *receiver, required bool) uint64 {
	t.Helper()
	return addSink(t, h, &custosv1.Sink{Name: name, Type: custosv1.SinkType_SINK_TYPE_WEBHOOK, Url: r.srv.URL,
		HmacKey: hmacKey(name), RequiredForRelease: required})
}

func sinkOf(t *testing.T, st *kms.State, name string) *custosv1.Sink {
	t.Helper()
	for _, sk := range st.Sinks() {
		if sk.Name == name {
			return sk
		}
	}
	t.Fatalf("sink %q not in state", name)
	return nil
}

// ledgerRecord is one stored record.
type ledgerRecord struct {
	data []byte
	rec  *custosv1.DecisionRecord
}

// scanLedger returns every stored record by seq.
func scanLedger(t *testing.T, st *kms.State) map[uint64]ledgerRecord {
	t.Helper()
	out := map[uint64]ledgerRecord{}
	err := st.ScanRecords(1, func(seq uint64, data []byte) error {
		r := &custosv1.DecisionRecord{}
		if err := proto.Unmarshal(data, r); err != nil {
			return err
		}
		out[seq] = ledgerRecord{data: append([]byte(nil), data...), rec: r}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// notifySeqs returns the seqs of notify records in (after, head].
func notifySeqs(t *testing.T, st *kms.State, after uint64) []uint64 {
	t.Helper()
	var out []uint64
	err := st.ScanRecords(after+1, func(seq uint64, data []byte) error {
		r := &custosv1.DecisionRecord{}
		if err := proto.Unmarshal(data, r); err != nil {
			return err
		}
		if r.Notify {
			out = append(out, seq)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// wireRecord is one record as a receiver parses it.
type wireRecord struct {
	seq    uint64
	stored []byte
	rec    *custosv1.DecisionRecord
}

// parseRecord checks one JSON record: its protojson part and its stored
// bytes must describe the same record.
func parseRecord(raw []byte) (wireRecord, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return wireRecord{}, err
	}
	var stored []byte
	if err := json.Unmarshal(m["record_b64"], &stored); err != nil || len(stored) == 0 {
		return wireRecord{}, fmt.Errorf("record_b64: %v", err)
	}
	delete(m, "record_b64")
	rest, _ := json.Marshal(m)
	fromJSON := &custosv1.DecisionRecord{}
	if err := protojson.Unmarshal(rest, fromJSON); err != nil {
		return wireRecord{}, fmt.Errorf("protojson part: %v", err)
	}
	fromBytes := &custosv1.DecisionRecord{}
	if err := proto.Unmarshal(stored, fromBytes); err != nil {
		return wireRecord{}, fmt.Errorf("stored bytes: %v", err)
	}
	if !proto.Equal(fromJSON, fromBytes) {
		return wireRecord{}, fmt.Errorf("JSON and record_b64 differ for seq %d", fromBytes.Seq)
	}
	return wireRecord{seq: fromBytes.Seq, stored: stored, rec: fromBytes}, nil
}

// call is one request a receiver saw.
type call struct {
	purpose     string
	first, last uint64 // headers
	seqs        []uint64
	records     []wireRecord
	acked       bool // answered 2xx
}

// action is what a receiver does with a request it has read and checked.
type action int

const (
	ack     action = iota // 200
	fail500               // 500
	hang                  // never answer: block until the client goes away
	hijack                // close the connection without an answer
)

// receiver is a real HTTP webhook receiver that verifies every request.
type receiver struct {
	t    *testing.T
	name string
	srv  *httptest.Server

	mu     sync.Mutex
	calls  []call
	behave func(n int, c *call) action // n counts requests from 1
	hung   chan struct{}               // closed when a request hangs
	once   sync.Once
}

func newReceiver(t *testing.T, name string, behave func(n int, c *call) action) *receiver {
	r := &receiver{t: t, name: name, behave: behave, hung: make(chan struct{})}
	if r.behave == nil {
		r.behave = func(int, *call) action { return ack }
	}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) setBehaviour(b func(n int, c *call) action) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.behave = b
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return
	}
	bad := func(f string, a ...any) {
		r.t.Errorf("receiver %s: "+f, append([]any{r.name}, a...)...)
		w.WriteHeader(http.StatusBadRequest)
	}
	if req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/json" {
		bad("method %s content type %q", req.Method, req.Header.Get("Content-Type"))
		return
	}
	if err := notify.VerifySignature(hmacKey(r.name), req.Header.Get("X-Custos-Timestamp"),
		req.Header.Get("X-Custos-Signature"), body, time.Now(), 0); err != nil {
		bad("signature: %v", err)
		return
	}
	var env struct {
		Sink    string            `json:"sink"`
		Records []json.RawMessage `json:"records"`
	}
	if err := json.Unmarshal(body, &env); err != nil || env.Sink != r.name || len(env.Records) == 0 {
		bad("body: %v (sink %q, %d records)", err, env.Sink, len(env.Records))
		return
	}
	c := call{purpose: req.Header.Get("X-Custos-Purpose")}
	c.first, _ = strconv.ParseUint(req.Header.Get("X-Custos-First-Seq"), 10, 64)
	c.last, _ = strconv.ParseUint(req.Header.Get("X-Custos-Last-Seq"), 10, 64)
	for _, raw := range env.Records {
		wr, err := parseRecord(raw)
		if err != nil {
			bad("record: %v", err)
			return
		}
		c.records = append(c.records, wr)
		c.seqs = append(c.seqs, wr.seq)
	}
	if c.first != c.seqs[0] || c.last != c.seqs[len(c.seqs)-1] {
		bad("headers say %d..%d, body has %v", c.first, c.last, c.seqs)
		return
	}
	r.mu.Lock()
	n := len(r.calls) + 1
	act := r.behave(n, &c)
	c.acked = act == ack
	r.calls = append(r.calls, c)
	r.mu.Unlock()
	switch act {
	case ack:
		w.WriteHeader(http.StatusOK)
	case fail500:
		w.WriteHeader(http.StatusInternalServerError)
	case hang:
		r.once.Do(func() { close(r.hung) })
		<-req.Context().Done()
	case hijack:
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			r.t.Errorf("hijack: %v", err)
			return
		}
		_ = conn.Close()
	}
}

func (r *receiver) snapshot() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]call(nil), r.calls...)
}

// streamSeqs returns the seqs of stream calls, acknowledged or all.
func streamSeqs(calls []call, ackedOnly bool) []uint64 {
	var out []uint64
	for _, c := range calls {
		if c.purpose == "stream" && (c.acked || !ackedOnly) {
			out = append(out, c.seqs...)
		}
	}
	return out
}

// hasAll reports whether the acknowledged stream covers want.
func (r *receiver) hasAll(want []uint64) bool {
	got := map[uint64]bool{}
	for _, s := range streamSeqs(r.snapshot(), true) {
		got[s] = true
	}
	for _, s := range want {
		if !got[s] {
			return false
		}
	}
	return true
}

// runNotifier starts n.Run and returns a function that stops it and waits.
func runNotifier(t *testing.T, n *notify.Notifier) (stop func()) {
	ctx, cancel := context.WithCancel(bg)
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != context.Canceled {
				t.Errorf("Run returned %v, want context.Canceled", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func newNotifier(h *nodetest.Harness, mod func(*notify.Config)) *notify.Notifier {
	cfg := notify.Config{State: h.Node.Service().State(), Service: h.Node.Service(), Logger: nodetest.Logger(),
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, BatchSize: 4}
	if mod != nil {
		mod(&cfg)
	}
	return notify.New(cfg)
}

// traffic makes decisions: ALLOWs (not notified), DENYs by an outsider and
// third-party requests (notified). The key must exist.
type traffic struct {
	h   *nodetest.Harness
	key string
	ct  []byte
}

var appPrincipal = kms.Principal{Name: "app"}

func newTraffic(t *testing.T, h *nodetest.Harness, key string) *traffic {
	t.Helper()
	svc := h.Node.Service()
	if _, err := svc.CreateKey(bg, appPrincipal, &custosv1.CreateKeyRequest{Name: key}); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	dk, err := svc.GenerateDataKey(bg, appPrincipal, &custosv1.GenerateDataKeyRequest{Key: key})
	if err != nil {
		t.Fatalf("GenerateDataKey: %v", err)
	}
	return &traffic{h: h, key: key, ct: dk.WrappedDataKey}
}

func (tr *traffic) decrypt(p string, reason custosv1.Reason) (*custosv1.DecryptResponse, error) {
	return tr.h.Node.Service().Decrypt(bg, kms.Principal{Name: p}, &custosv1.DecryptRequest{Ciphertext: tr.ct,
		Justification: &custosv1.Justification{Reason: reason, Text: "secret justification text"}})
}

// mix makes n rounds of: an ALLOW, a DENY, a third-party request.
func (tr *traffic) mix(t *testing.T, n int) {
	t.Helper()
	for range n {
		if _, err := tr.decrypt("app", custosv1.Reason_REASON_CUSTOMER_INITIATED); err != nil {
			t.Fatalf("allowed decrypt: %v", err)
		}
		if _, err := tr.decrypt("outsider", custosv1.Reason_REASON_CUSTOMER_INITIATED); err == nil {
			t.Fatal("outsider decrypt succeeded")
		}
		if _, err := tr.decrypt("app", custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST); err == nil {
			t.Fatal("third-party decrypt succeeded without approval")
		}
	}
}

// checkStream checks that a stream of seqs is strictly increasing.
func checkIncreasing(t *testing.T, what string, seqs []uint64) {
	t.Helper()
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Fatalf("%s: seq %d after %d (stream %v)", what, seqs[i], seqs[i-1], seqs)
		}
	}
}

func equalSeqs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// checkStored checks that every delivered record carries the ledger's
// stored bytes.
func checkStored(t *testing.T, led map[uint64]ledgerRecord, recs []wireRecord) {
	t.Helper()
	for _, wr := range recs {
		lr, ok := led[wr.seq]
		if !ok || !bytes.Equal(lr.data, wr.stored) {
			t.Fatalf("record %d: delivered bytes differ from the ledger", wr.seq)
		}
		if !lr.rec.Notify {
			t.Fatalf("record %d delivered but notify is false", wr.seq)
		}
	}
}

// readFileSink parses a file sink's lines.
func readFileSink(t *testing.T, path string) []wireRecord {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []wireRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 1<<20), 1<<20)
	for sc.Scan() {
		wr, err := parseRecord(sc.Bytes())
		if err != nil {
			t.Fatalf("file sink line %d: %v", len(out)+1, err)
		}
		out = append(out, wr)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
