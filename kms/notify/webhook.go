package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

// Webhook request headers.
const (
	HeaderTimestamp = "X-Custos-Timestamp"
	HeaderSignature = "X-Custos-Signature"
	HeaderFirstSeq  = "X-Custos-First-Seq"
	HeaderLastSeq   = "X-Custos-Last-Seq"
	HeaderSink      = "X-Custos-Sink"
	// HeaderRestore carries the restore id of a cluster restored from a
	// snapshot file (absent otherwise): its ledger reuses the sequence
	// numbers after the file's head (docs/notifications.md). Not signed:
	// a receiver detects the fork from the signed records' hashes.
	HeaderRestore = "X-Custos-Restore"
	// HeaderPurpose is "stream" for the ordered delivery loop and "release"
	// for a synchronous notify-before-release delivery.
	HeaderPurpose = "X-Custos-Purpose"
)

// DefaultSkew is the clock skew VerifySignature callers should allow.
const DefaultSkew = 5 * time.Minute

// signatureScheme prefixes the hex HMAC in the signature header.
const signatureScheme = "v1="

// recordJSON is the JSON form of one record: the protojson encoding of rec
// (proto field names, compact) with "record_b64", the standard base64 of
// the stored bytes, added as the last member.
func recordJSON(rec *custosv1.DecisionRecord, stored []byte) ([]byte, error) {
	j, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(rec)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, j); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		return nil, fmt.Errorf("protojson produced %d bytes that are not an object", len(b))
	}
	out := append([]byte(nil), b[:len(b)-1]...)
	if len(b) > 2 {
		out = append(out, ',')
	}
	out = append(out, `"record_b64":"`...)
	out = base64.StdEncoding.AppendEncode(out, stored)
	return append(out, `"}`...), nil
}

// webhookBody is {"sink":<name>,"records":[<record>,...]} without spaces.
func webhookBody(sink string, items []item) []byte {
	name, _ := json.Marshal(sink)
	var b bytes.Buffer
	b.WriteString(`{"sink":`)
	b.Write(name)
	b.WriteString(`,"records":[`)
	for i, it := range items {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(it.json)
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

// Sign returns the X-Custos-Signature value for a body sent at timestamp
// (decimal Unix seconds): "v1=" + hex(HMAC-SHA-256(key, timestamp "." body)).
func Sign(hmacKey []byte, timestamp string, body []byte) string {
	return signatureScheme + hex.EncodeToString(mac(hmacKey, timestamp, body))
}

func mac(key []byte, timestamp string, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Errors from VerifySignature.
var (
	ErrBadSignature = errors.New("notify: signature does not verify")
	ErrStale        = errors.New("notify: timestamp outside the allowed skew")
)

// VerifySignature checks a webhook request for receivers: timestamp is the
// X-Custos-Timestamp header, signatureHeader the X-Custos-Signature header
// and body the raw request body, exactly as received. The timestamp must be
// within skew of now (skew <= 0 means DefaultSkew, 5 minutes) and one "v1="
// entry of the header (entries are separated by commas; unknown schemes are
// ignored) must equal the HMAC, compared in constant time.
func VerifySignature(hmacKey []byte, timestamp, signatureHeader string, body []byte, now time.Time, skew time.Duration) error {
	if skew <= 0 {
		skew = DefaultSkew
	}
	if len(hmacKey) == 0 {
		return fmt.Errorf("%w: empty key", ErrBadSignature)
	}
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil || timestamp != strconv.FormatInt(ts, 10) {
		return fmt.Errorf("%w: timestamp %q is not decimal Unix seconds", ErrBadSignature, timestamp)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > skew || d < -skew {
		return fmt.Errorf("%w: timestamp is %s away from now", ErrStale, d.Round(time.Second))
	}
	want := mac(hmacKey, timestamp, body)
	found := false
	for _, e := range strings.Split(signatureHeader, ",") {
		e = strings.TrimSpace(e)
		hexSig, ok := strings.CutPrefix(e, signatureScheme)
		if !ok {
			continue
		}
		got, err := hex.DecodeString(hexSig)
		if err != nil {
			continue
		}
		if hmac.Equal(got, want) {
			found = true
		}
	}
	if !found {
		return ErrBadSignature
	}
	return nil
}

// maxResponse is how much of a webhook response is read before closing.
const maxResponse = 64 << 10

// postWebhook sends one signed request; only a 2xx answer acknowledges.
// Errors name the sink and the failure, never the URL or the key.
func (n *Notifier) postWebhook(ctx context.Context, sk *custosv1.Sink, items []item, purpose string) error {
	body := webhookBody(sk.Name, items)
	ts := strconv.FormatInt(n.now().Unix(), 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, sk.Url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("sink %q: bad request: %v", sk.Name, unwrapURL(err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "custos-notify/1")
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, Sign(sk.HmacKey, ts, body))
	req.Header.Set(HeaderFirstSeq, strconv.FormatUint(items[0].seq, 10))
	req.Header.Set(HeaderLastSeq, strconv.FormatUint(items[len(items)-1].seq, 10))
	req.Header.Set(HeaderSink, sk.Name)
	req.Header.Set(HeaderPurpose, purpose)
	if r := n.cfg.State.RestoreInfo().GetRestoreId(); r != "" {
		req.Header.Set(HeaderRestore, r)
	}
	resp, err := n.client.Do(req)
	if err != nil {
		return fmt.Errorf("sink %q: %v", sk.Name, unwrapURL(err))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &StatusError{Sink: sk.Name, Code: resp.StatusCode}
	}
	return nil
}

// StatusError is a webhook answer that is not 2xx.
type StatusError struct {
	Sink string
	Code int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("sink %q answered HTTP %d", e.Sink, e.Code)
}

// unwrapURL drops the URL from an HTTP client error: it may carry a
// secret, and these errors reach logs and RELEASE_BLOCKED records.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
