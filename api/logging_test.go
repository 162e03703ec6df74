package api_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The RPC log line of a decrypt carries the decision's ledger position and
// request id (ALLOW from the response, PENDING from the error detail), so
// logs match ledger records, and never the plaintext.
func TestRPCLogCarriesDecision(t *testing.T) {
	var buf syncBuffer
	h := nodetest.StartWith(t, func(cfg *node.Config) {
		// Successful data-path calls log at debug level.
		cfg.Logger = slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	kc := custosv1.NewKeyServiceClient(h.Conn(t, "app"))
	if _, err := kc.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: "logs"}); err != nil {
		t.Fatal(err)
	}
	pt := []byte("plaintext-that-must-not-be-logged")
	enc, err := kc.Encrypt(ctx(t), &custosv1.EncryptRequest{Key: "logs", Plaintext: pt})
	if err != nil {
		t.Fatal(err)
	}
	dec, err := kc.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: enc.GetCiphertext(),
		Justification: &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED}})
	if err != nil {
		t.Fatal(err)
	}
	// The default policy sends PROVIDER_SUPPORT for approval: PENDING.
	_, perr := kc.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: enc.GetCiphertext(),
		Justification: &custosv1.Justification{Reason: custosv1.Reason_REASON_PROVIDER_SUPPORT}})

	var allowLine, pendingLine map[string]any
	for _, line := range strings.Split(buf.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || m["msg"] != "rpc" || m["method"] != "/custos.v1.KeyService/Decrypt" {
			continue
		}
		if m["code"] == "OK" {
			allowLine = m
		} else {
			pendingLine = m
		}
	}
	if allowLine == nil {
		t.Fatalf("no rpc line for Decrypt in %s", buf.String())
	}
	if fmt.Sprint(allowLine["decision_seq"]) != fmt.Sprint(dec.GetDecisionSeq()) || allowLine["request_id"] != dec.GetRequestId() || dec.GetRequestId() == "" {
		t.Errorf("ALLOW line %v, response seq %d request %q", allowLine, dec.GetDecisionSeq(), dec.GetRequestId())
	}
	if perr == nil || pendingLine == nil {
		t.Fatalf("PROVIDER_SUPPORT decrypt: err %v, log line %v", perr, pendingLine)
	}
	if pendingLine["request_id"] == nil || pendingLine["request_id"] == "" || pendingLine["decision_seq"] == nil {
		t.Errorf("PENDING line without the decision: %v (err %v)", pendingLine, perr)
	}
	for _, secret := range []string{string(pt), base64.StdEncoding.EncodeToString(pt)} {
		if strings.Contains(buf.String(), secret) {
			t.Errorf("the log contains %q", secret)
		}
	}
}
