package notify_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/custos-kms/custos/kms/notify"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"google.golang.org/protobuf/proto"
)

func TestVerifySignature(t *testing.T) {
	key := hmacKey("verify")
	now := time.Unix(1_800_000_000, 0)
	ts := strconv.FormatInt(now.Unix(), 10)
	body := []byte(`{"sink":"s","records":[{"seq":"1","record_b64":"CAE="}]}`)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(ts + "." + string(body)))
	good := "v1=" + hex.EncodeToString(m.Sum(nil))
	if got := notify.Sign(key, ts, body); got != good {
		t.Fatalf("Sign = %s, want %s", got, good)
	}
	for _, tc := range []struct {
		name    string
		key     []byte
		ts, sig string
		body    []byte
		now     time.Time
		skew    time.Duration
		want    error
	}{
		{name: "good", ts: ts, sig: good},
		{name: "good, 4 min late", ts: ts, sig: good, now: now.Add(4 * time.Minute)},
		{name: "good, 4 min early", ts: ts, sig: good, now: now.Add(-4 * time.Minute)},
		{name: "good among others", ts: ts, sig: "v0=abc, v1=00" + good[5:] + "," + good},
		{name: "uppercase hex", ts: ts, sig: "v1=" + string(toUpper(good[3:]))},
		{name: "stale", ts: ts, sig: good, now: now.Add(6 * time.Minute), want: notify.ErrStale},
		{name: "future", ts: ts, sig: good, now: now.Add(-6 * time.Minute), want: notify.ErrStale},
		{name: "custom skew", ts: ts, sig: good, now: now.Add(30 * time.Second), skew: 10 * time.Second, want: notify.ErrStale},
		{name: "wrong key", key: hmacKey("other"), ts: ts, sig: good, want: notify.ErrBadSignature},
		{name: "empty key", key: []byte{}, ts: ts, sig: good, want: notify.ErrBadSignature},
		{name: "tampered body", ts: ts, sig: good, body: append(append([]byte(nil), body...), ' '), want: notify.ErrBadSignature},
		{name: "other timestamp", ts: strconv.FormatInt(now.Unix()+1, 10), sig: good, want: notify.ErrBadSignature},
		{name: "timestamp not decimal", ts: "+" + ts, sig: good, want: notify.ErrBadSignature},
		{name: "timestamp empty", ts: "", sig: good, want: notify.ErrBadSignature},
		{name: "no scheme", ts: ts, sig: good[3:], want: notify.ErrBadSignature},
		{name: "truncated", ts: ts, sig: good[:len(good)-2], want: notify.ErrBadSignature},
		{name: "not hex", ts: ts, sig: "v1=zz", want: notify.ErrBadSignature},
		{name: "empty header", ts: ts, sig: "", want: notify.ErrBadSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, b, n := key, body, now
			if tc.key != nil {
				k = tc.key
			}
			if tc.body != nil {
				b = tc.body
			}
			if !tc.now.IsZero() {
				n = tc.now
			}
			err := notify.VerifySignature(k, tc.ts, tc.sig, b, n, tc.skew)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("VerifySignature = %v, want %v", err, tc.want)
			}
		})
	}
}

func toUpper(s string) []byte {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'f' {
			b[i] = c - 'a' + 'A'
		}
	}
	return b
}

// The wire encoding, byte for byte, as docs/notifications.md gives it.
func TestWireFormat(t *testing.T) {
	rec := &custosv1.DecisionRecord{Seq: 42, Principal: "app", Key: "k<&>", Operation: custosv1.Operation_OPERATION_DECRYPT,
		Reason: custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST, Outcome: custosv1.Outcome_OUTCOME_PENDING,
		PrevHash: []byte{0xff, 0xfe}, Notify: true}
	stored, err := proto.MarshalOptions{Deterministic: true}.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	j, err := notify.RecordJSON(rec, stored)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"seq":"42","principal":"app","key":"k<&>","operation":"OPERATION_DECRYPT",` +
		`"reason":"REASON_THIRD_PARTY_DATA_REQUEST","outcome":"OUTCOME_PENDING","prev_hash":"//4=","notify":true,` +
		`"record_b64":"` + base64.StdEncoding.EncodeToString(stored) + `"}`
	if string(j) != want {
		t.Fatalf("record JSON\n got %s\nwant %s", j, want)
	}
	body := notify.WebhookBody("sink-1", j, []byte(`{"seq":"43","record_b64":""}`))
	wantBody := `{"sink":"sink-1","records":[` + want + `,{"seq":"43","record_b64":""}]}`
	if string(body) != wantBody {
		t.Fatalf("body\n got %s\nwant %s", body, wantBody)
	}
}
