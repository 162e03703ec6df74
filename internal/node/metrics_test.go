package node_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// scrape fetches and parses the node's /metrics.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return mf
}

// series returns the metrics of family name whose labels include want.
func series(mf map[string]*dto.MetricFamily, name string, want map[string]string) []*dto.Metric {
	var out []*dto.Metric
	f := mf[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		out = append(out, m)
	}
	return out
}

func gauge(t *testing.T, mf map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	s := series(mf, name, labels)
	if len(s) != 1 {
		t.Fatalf("%s%v: %d series", name, labels, len(s))
	}
	return s[0].GetGauge().GetValue()
}

func TestMetrics(t *testing.T) {
	h := nodetest.StartWith(t, func(cfg *node.Config) { cfg.MetricsListen = "127.0.0.1:0" })
	addr := h.Node.MetricsAddr()
	if addr == "" {
		t.Fatal("MetricsAddr is empty")
	}
	kc := custosv1.NewKeyServiceClient(h.Conn(t, "app"))
	if _, err := kc.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: "payroll"}); err != nil {
		t.Fatal(err)
	}
	enc, err := kc.Encrypt(ctx(t), &custosv1.EncryptRequest{Key: "payroll", Plaintext: []byte("hello")})
	if err != nil {
		t.Fatal(err)
	}
	const decrypts = 5
	just := &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED}
	for i := 0; i < decrypts; i++ {
		if _, err := kc.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: enc.GetCiphertext(), Justification: just}); err != nil {
			t.Fatal(err)
		}
	}
	allow := map[string]string{"operation": "OPERATION_DECRYPT", "outcome": "OUTCOME_ALLOW",
		"reason": "REASON_CUSTOMER_INITIATED", "key": "payroll"}
	var mf map[string]*dto.MetricFamily
	deadline := time.Now().Add(10 * time.Second)
	for {
		mf = scrape(t, addr)
		if s := series(mf, "custos_decisions_total", allow); len(s) == 1 && s[0].GetCounter().GetValue() >= decrypts {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("custos_decisions_total%v did not reach %d: %v", allow, decrypts, mf["custos_decisions_total"])
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The key's creation is an administration record, not a decision.
	if s := series(mf, "custos_admin_records_total", map[string]string{"operation": "OPERATION_CREATE_KEY", "outcome": "OUTCOME_ALLOW"}); len(s) != 1 || s[0].GetCounter().GetValue() != 1 {
		t.Errorf("custos_admin_records_total{CREATE_KEY, ALLOW} = %v", s)
	}
	if s := series(mf, "custos_decisions_total", map[string]string{"operation": "OPERATION_CREATE_KEY"}); len(s) != 0 {
		t.Errorf("key creation counted as a decision: %v", s)
	}

	// gRPC latency: a histogram for Decrypt with at least the decrypts made.
	dec := series(mf, "custos_grpc_server_handling_seconds", map[string]string{"method": "/custos.v1.KeyService/Decrypt", "code": "OK"})
	if len(dec) != 1 || dec[0].GetHistogram().GetSampleCount() < decrypts || len(dec[0].GetHistogram().GetBucket()) == 0 {
		t.Fatalf("Decrypt latency histogram = %v", dec)
	}
	if dec[0].GetHistogram().GetSampleSum() <= 0 {
		t.Errorf("Decrypt latency sum = %v", dec[0].GetHistogram().GetSampleSum())
	}

	// HSM: every decrypt unwrapped in the HSM; no errors.
	hsmDec := series(mf, "custos_hsm_call_duration_seconds", map[string]string{"method": "DecryptGCM"})
	if len(hsmDec) != 1 || hsmDec[0].GetHistogram().GetSampleCount() < decrypts {
		t.Fatalf("HSM DecryptGCM histogram = %v", hsmDec)
	}
	if e := series(mf, "custos_hsm_call_errors_total", map[string]string{"method": "DecryptGCM"}); len(e) != 1 || e[0].GetCounter().GetValue() != 0 {
		t.Errorf("HSM DecryptGCM errors = %v", e)
	}

	// Raft: a single node leads; indexes have moved; one leader seen.
	if v := gauge(t, mf, "custos_raft_state", map[string]string{"state": "Leader"}); v != 1 {
		t.Errorf("custos_raft_state{state=Leader} = %v", v)
	}
	if v := gauge(t, mf, "custos_raft_state", map[string]string{"state": "Follower"}); v != 0 {
		t.Errorf("custos_raft_state{state=Follower} = %v", v)
	}
	commit := gauge(t, mf, "custos_raft_commit_index", nil)
	applied := gauge(t, mf, "custos_raft_applied_index", nil)
	if commit < decrypts || applied < decrypts || applied > commit {
		t.Errorf("commit index %v, applied index %v", commit, applied)
	}
	if s := series(mf, "custos_raft_leader_changes_total", nil); len(s) != 1 || s[0].GetCounter().GetValue() < 1 {
		t.Errorf("custos_raft_leader_changes_total = %v", s)
	}
	// Ledger head: at least the decisions.
	head := gauge(t, mf, "custos_ledger_head_seq", nil)
	if head < decrypts {
		t.Errorf("custos_ledger_head_seq = %v", head)
	}
	if _, ok := mf["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}

	// The notification backlog appears per sink once a sink exists.
	ss := h.Sign(t, func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_AddSink{AddSink: &custosv1.AddSink{Sink: &custosv1.Sink{
			Name: "siem", Type: custosv1.SinkType_SINK_TYPE_WEBHOOK, Url: "http://127.0.0.1:1/custos",
			HmacKey: []byte("0123456789abcdef0123456789abcdef")}}}
	}, 0)
	gc := custosv1.NewGovernanceServiceClient(h.Conn(t, "officer-1"))
	if _, err := gc.Submit(ctx(t), ss); err != nil {
		t.Fatalf("add sink: %v", err)
	}
	mf = scrape(t, addr)
	b := gauge(t, mf, "custos_notify_backlog_records", map[string]string{"sink": "siem"})
	if h2 := gauge(t, mf, "custos_ledger_head_seq", nil); b < 0 || b > h2 {
		t.Errorf("backlog %v with head %v", b, h2)
	}
	// Nothing secret leaks into the exposition (the sink's HMAC key, URL).
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, secret := range []string{"0123456789abcdef", "127.0.0.1:1/custos"} {
		if strings.Contains(string(raw), secret) {
			t.Errorf("/metrics contains %q", secret)
		}
	}
}
