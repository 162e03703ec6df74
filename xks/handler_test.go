package xks_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"github.com/custos-kms/custos/xks"
)

const (
	prefixPath = "/example/uri/path/prefix"
	region     = "us-east-1"
	ak1        = "BETWEEN2TENAND3TENCHARACTERS"
	secret1    = "PleaseReplaceThisWithSomeSecretOfLength43To64"
	ak2        = "SECONDACCESSKEYID234567ABCD"
	secret2    = "AnotherSecretAccessKeyOfSufficientLength0123456"
	xksUser    = "aws-kms-xks"
	// A second prefix whose decrypts default to PROVIDER_SERVICE, which
	// the default policy sends for approval.
	strictPath = "/strict"
	akStrict   = "STRICTACCESSKEYID234567ABCD"
)

var bg = context.Background()

// fixture is a real single node with the XKS handler in front of it.
type fixture struct {
	h       *nodetest.Harness
	svc     *kms.Service
	handler *xks.Handler
	srv     *httptest.Server
	cfg     xks.Config
	healthy error
	mu      sync.Mutex
	skew    atomic.Int64 // the handler's clock runs this far ahead (advance)
}

// advance moves the handler's clock forward, e.g. past the health cache.
func (f *fixture) advance(d time.Duration) { f.skew.Add(int64(d)) }

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{h: nodetest.Start(t)}
	f.svc = f.h.Node.Service()
	f.cfg = xks.Config{
		Logger: nodetest.Logger(),
		EKMID:  "node1",
		// Generous, so that a loaded test machine does not turn these
		// functional tests into deadline tests (deadline_test.go).
		Deadline: time.Minute,
		Now:      func() time.Time { return time.Now().Add(time.Duration(f.skew.Load())) },
		Prefixes: []xks.PrefixConfig{{
			Path: prefixPath, Region: region,
			Credentials: []xks.Credential{
				{AccessKeyID: ak1, Secret: secret1, Principal: xksUser},
				{AccessKeyID: ak2, Secret: secret2, Principal: xksUser},
			},
			DefaultReason: "CUSTOMER_WORKFLOW",
			ReasonMap:     map[string]string{"kmsViaService=support": "PROVIDER_SUPPORT", "kmsOperation=ReEncrypt": "REASON_CUSTOMER_INITIATED"},
		}, {
			Path: strictPath, Region: region,
			Credentials: []xks.Credential{{AccessKeyID: akStrict, Secret: secret1, Principal: xksUser}},
		}},
	}
	var err error
	f.handler, err = xks.NewHandler(f.cfg, f.svc, func(context.Context) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.healthy
	})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewTLSServer(f.handler)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) createKey(t testing.TB, name string) {
	t.Helper()
	if _, err := f.svc.CreateKey(bg, kms.Principal{Name: xksUser}, &custosv1.CreateKeyRequest{Name: name}); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
}

// reply is a response: status, decoded JSON body, headers.
type reply struct {
	status int
	body   map[string]any
	header http.Header
	closed bool // the server closes the connection after it
}

func (r reply) str(k string) string { s, _ := r.body[k].(string); return s }

func (r reply) bytes(t testing.TB, k string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(r.str(k))
	if err != nil {
		t.Fatalf("%s: %v", k, err)
	}
	return b
}

func (r reply) wantError(t testing.TB, status int, name string) {
	t.Helper()
	if r.status != status || r.str("errorName") != name {
		t.Fatalf("got %d %v, want %d %s", r.status, r.body, status, name)
	}
}

type callOpt struct {
	method  string
	prefix  string
	ak, sec string
	at      time.Time
	mutate  func(*http.Request)
}

func (f *fixture) call(t testing.TB, target string, body any, opts ...func(*callOpt)) reply {
	t.Helper()
	o := callOpt{method: "POST", prefix: prefixPath, ak: ak1, sec: secret1, at: time.Now()}
	for _, fn := range opts {
		fn(&o)
	}
	var raw []byte
	switch b := body.(type) {
	case []byte:
		raw = b
	case string:
		raw = []byte(b)
	default:
		var err error
		if raw, err = json.Marshal(body); err != nil {
			t.Fatal(err)
		}
	}
	req, err := http.NewRequest(o.method, f.srv.URL+o.prefix+"/kms/xks/v1/"+target, bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if err := xks.Sign(req, raw, o.ak, o.sec, region, xks.Service, o.at, "content-type"); err != nil {
		t.Fatal(err)
	}
	if o.mutate != nil {
		o.mutate(req)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, header: resp.Header, closed: resp.Close}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	if err := json.Unmarshal(data, &r.body); err != nil {
		t.Fatalf("response %d is not JSON: %q", resp.StatusCode, data)
	}
	return r
}

func withCred(ak, sec string) func(*callOpt) { return func(o *callOpt) { o.ak, o.sec = ak, sec } }
func withPrefix(p string) func(*callOpt)     { return func(o *callOpt) { o.prefix = p } }
func withMethod(m string) func(*callOpt)     { return func(o *callOpt) { o.method = m } }
func withTime(at time.Time) func(*callOpt)   { return func(o *callOpt) { o.at = at } }
func withMutate(m func(*http.Request)) func(*callOpt) {
	return func(o *callOpt) { o.mutate = m }
}

func md(op, reqID string) map[string]any {
	return map[string]any{
		"awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
		"kmsKeyArn":       "arn:aws:kms:us-east-2:123456789012:/key/1234abcd-12ab-34cd-56ef-1234567890ab",
		"kmsOperation":    op, "kmsRequestId": reqID, "kmsViaService": "ebs",
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func encryptBody(pt, aad []byte) map[string]any {
	m := map[string]any{"requestMetadata": md("GenerateDataKey", "enc-1"), "plaintext": b64(pt), "encryptionAlgorithm": "AES_GCM"}
	if aad != nil {
		m["additionalAuthenticatedData"] = b64(aad)
	}
	return m
}

func decryptBody(reqID string, enc reply, aad []byte) map[string]any {
	m := map[string]any{"requestMetadata": md("Decrypt", reqID), "encryptionAlgorithm": "AES_GCM",
		"ciphertext": enc.str("ciphertext"), "initializationVector": enc.str("initializationVector"),
		"authenticationTag": enc.str("authenticationTag"), "ciphertextMetadata": enc.str("ciphertextMetadata")}
	if aad != nil {
		m["additionalAuthenticatedData"] = b64(aad)
	}
	return m
}

// record finds the ledger record of a decrypt by its kmsRequestId.
func (f *fixture) record(t testing.TB, kmsRequestID string) *custosv1.DecisionRecord {
	t.Helper()
	st := f.svc.State()
	head, _ := st.LedgerHead()
	for seq := head; seq > 0; seq-- {
		rec, err := st.DecisionRecord(seq)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Ticket == kmsRequestID {
			return rec
		}
	}
	t.Fatalf("no ledger record with kmsRequestId %s", kmsRequestID)
	return nil
}

func TestXKS(t *testing.T) {
	f := newFixture(t)
	f.createKey(t, "foo")
	pt := []byte("0123456789abcdef0123456789abcdef")
	aad := []byte("project=nile,department=marketing")

	t.Run("health", func(t *testing.T) {
		r := f.call(t, "health", map[string]any{"requestMetadata": map[string]any{"kmsOperation": "KmsHealthCheck", "kmsRequestId": "h-1"}})
		if r.status != 200 || r.body["xksProxyFleetSize"] != float64(1) || r.str("ekmVendor") == "" || r.str("xksProxyVendor") == "" {
			t.Fatalf("health = %d %v", r.status, r.body)
		}
		d := r.body["ekmFleetDetails"].([]any)[0].(map[string]any)
		if d["healthStatus"] != "ACTIVE" || d["id"] != "node1" {
			t.Fatalf("ekmFleetDetails = %v", d)
		}
		f.mu.Lock()
		f.healthy = errors.New("not ready")
		f.mu.Unlock()
		f.advance(time.Second) // past the cached result
		r = f.call(t, "health", map[string]any{"requestMetadata": map[string]any{"kmsOperation": "KmsHealthCheck", "kmsRequestId": "h-2"}})
		f.mu.Lock()
		f.healthy = nil
		f.mu.Unlock()
		f.advance(time.Second)
		if d := r.body["ekmFleetDetails"].([]any)[0].(map[string]any); r.status != 200 || d["healthStatus"] != "UNAVAILABLE" {
			t.Fatalf("unhealthy = %d %v", r.status, r.body)
		}
		f.call(t, "health", "{}").wantError(t, 400, "ValidationException")
		f.call(t, "health", `{"requestMetadata":{}}`).wantError(t, 400, "ValidationException")
	})

	t.Run("metadata", func(t *testing.T) {
		r := f.call(t, "keys/foo/metadata", map[string]any{"requestMetadata": md("DescribeKey", "m-1")})
		if r.status != 200 || r.str("keySpec") != "AES_256" || r.str("keyStatus") != "ENABLED" ||
			fmt.Sprint(r.body["keyUsage"]) != "[ENCRYPT DECRYPT]" {
			t.Fatalf("metadata = %d %v", r.status, r.body)
		}
		f.call(t, "keys/non_existing_key/metadata", map[string]any{"requestMetadata": md("DescribeKey", "m-2")}).wantError(t, 404, "KeyNotFoundException")
		f.call(t, "keys/foo/metadata", "{}").wantError(t, 400, "ValidationException")
		f.call(t, "keys/foo/metadata", `{"requestMetadata":{}}`).wantError(t, 400, "ValidationException")
		// A key whose policy does not name the XKS principal.
		if _, err := f.svc.CreateKey(bg, kms.Principal{Name: "someone-else"}, &custosv1.CreateKeyRequest{Name: "theirs"}); err != nil {
			t.Fatal(err)
		}
		if r := f.call(t, "keys/theirs/metadata", map[string]any{"requestMetadata": md("DescribeKey", "m-3")}); r.status != 200 ||
			fmt.Sprint(r.body["keyUsage"]) != "[]" {
			t.Fatalf("metadata of a key not for this store = %d %v", r.status, r.body)
		}
		f.call(t, "keys/theirs/encrypt", encryptBody(pt, nil)).wantError(t, 400, "InvalidKeyUsageException")
	})

	t.Run("round trip", func(t *testing.T) {
		body := encryptBody(pt, aad)
		body["ciphertextDataIntegrityValueAlgorithm"] = "SHA_256"
		enc := f.call(t, "keys/foo/encrypt", body)
		if enc.status != 200 {
			t.Fatalf("encrypt = %d %v", enc.status, enc.body)
		}
		ct, iv, tag, meta := enc.bytes(t, "ciphertext"), enc.bytes(t, "initializationVector"), enc.bytes(t, "authenticationTag"), enc.bytes(t, "ciphertextMetadata")
		if len(ct) != len(pt) || len(iv) != 12 || len(tag) != 16 || !bytes.Equal(meta, []byte{1, 0, 0, 0, 1}) {
			t.Fatalf("encrypt fields: ct %d iv %d tag %d meta %x", len(ct), len(iv), len(tag), meta)
		}
		cdiv := sha256.Sum256(bytes.Join([][]byte{aad, meta, iv, ct, tag}, nil))
		if !bytes.Equal(enc.bytes(t, "ciphertextDataIntegrityValue"), cdiv[:]) {
			t.Fatal("ciphertextDataIntegrityValue does not match the specification's computation")
		}
		// Without the CDIV algorithm there is no CDIV.
		if r := f.call(t, "keys/foo/encrypt", encryptBody(pt, aad)); r.status != 200 || r.body["ciphertextDataIntegrityValue"] != nil {
			t.Fatalf("encrypt without CDIV = %d %v", r.status, r.body)
		}

		dec := f.call(t, "keys/foo/decrypt", decryptBody("dec-ok-1", enc, aad))
		if dec.status != 200 || !bytes.Equal(dec.bytes(t, "plaintext"), pt) {
			t.Fatalf("decrypt = %d %v", dec.status, dec.body)
		}
		rec := f.record(t, "dec-ok-1")
		digest := sha256.Sum256(aad)
		if rec.Outcome != custosv1.Outcome_OUTCOME_ALLOW || rec.Principal != xksUser || rec.Key != "foo" || rec.KeyVersion != 1 ||
			rec.Reason != custosv1.Reason_REASON_CUSTOMER_WORKFLOW || !bytes.Equal(rec.ContextDigest, digest[:]) ||
			!strings.Contains(rec.JustificationText, "kmsRequestId=dec-ok-1") || !strings.Contains(rec.JustificationText, "kmsViaService=ebs") {
			t.Fatalf("ledger record = %v", rec)
		}
		if dec.header.Get("X-Custos-Decision-Seq") != strconv.FormatUint(rec.Seq, 10) || dec.header.Get("X-Custos-Request-Id") != rec.RequestId {
			t.Fatalf("decision headers %v, record %d %s", dec.header, rec.Seq, rec.RequestId)
		}

		// The reason map: kmsOperation ReEncrypt → CUSTOMER_INITIATED.
		b := decryptBody("dec-ok-2", enc, aad)
		b["requestMetadata"].(map[string]any)["kmsOperation"] = "ReEncrypt"
		if r := f.call(t, "keys/foo/decrypt", b); r.status != 200 {
			t.Fatalf("decrypt for ReEncrypt = %d %v", r.status, r.body)
		}
		if rec := f.record(t, "dec-ok-2"); rec.Reason != custosv1.Reason_REASON_CUSTOMER_INITIATED {
			t.Fatalf("reason = %v", rec.Reason)
		}

		// No AAD at all.
		enc2 := f.call(t, "keys/foo/encrypt", encryptBody([]byte("Hello World!"), nil))
		if r := f.call(t, "keys/foo/decrypt", decryptBody("dec-ok-3", enc2, nil)); r.status != 200 || string(r.bytes(t, "plaintext")) != "Hello World!" {
			t.Fatalf("decrypt without AAD = %d %v", r.status, r.body)
		}
		// The largest plaintext and AAD the specification requires.
		big, bigAAD := bytes.Repeat([]byte{7}, kms.XKSMaxPlaintext), bytes.Repeat([]byte{9}, kms.XKSMaxAAD)
		enc3 := f.call(t, "keys/foo/encrypt", encryptBody(big, bigAAD))
		if r := f.call(t, "keys/foo/decrypt", decryptBody("dec-ok-4", enc3, bigAAD)); r.status != 200 || !bytes.Equal(r.bytes(t, "plaintext"), big) {
			t.Fatalf("large decrypt = %d", r.status)
		}

		// Tampering: every case is InvalidCiphertextException.
		flip := func(s string) string {
			b, _ := base64.StdEncoding.DecodeString(s)
			b[0] ^= 1
			return b64(b)
		}
		for name, mod := range map[string]func(m map[string]any){
			"wrong AAD":   func(m map[string]any) { m["additionalAuthenticatedData"] = b64([]byte("project=amazon")) },
			"missing AAD": func(m map[string]any) { delete(m, "additionalAuthenticatedData") },
			"AAD as metadata": func(m map[string]any) {
				m["additionalAuthenticatedData"] = m["ciphertextMetadata"]
				delete(m, "ciphertextMetadata")
			},
			"tampered tag":     func(m map[string]any) { m["authenticationTag"] = flip(m["authenticationTag"].(string)) },
			"tampered ct":      func(m map[string]any) { m["ciphertext"] = flip(m["ciphertext"].(string)) },
			"tampered iv":      func(m map[string]any) { m["initializationVector"] = flip(m["initializationVector"].(string)) },
			"16-byte iv":       func(m map[string]any) { m["initializationVector"] = b64(make([]byte, 16)) },
			"other version":    func(m map[string]any) { m["ciphertextMetadata"] = b64([]byte{1, 0, 0, 0, 2}) },
			"foreign metadata": func(m map[string]any) { m["ciphertextMetadata"] = b64([]byte("key_version=1")) },
			"missing metadata": func(m map[string]any) { delete(m, "ciphertextMetadata") },
			"truncated ct":     func(m map[string]any) { m["ciphertext"] = b64(ct[:len(ct)-1]) },
		} {
			t.Run(name, func(t *testing.T) {
				m := decryptBody("dec-bad", enc, aad)
				mod(m)
				f.call(t, "keys/foo/decrypt", m).wantError(t, 400, "InvalidCiphertextException")
			})
		}
	})

	t.Run("validation", func(t *testing.T) {
		enc := f.call(t, "keys/foo/encrypt", encryptBody(pt, nil))
		for name, c := range map[string]struct {
			target string
			body   func() map[string]any
			status int
			want   string
		}{
			"missing plaintext": {"encrypt", func() map[string]any { m := encryptBody(pt, nil); delete(m, "plaintext"); return m }, 400, "ValidationException"},
			"empty plaintext":   {"encrypt", func() map[string]any { return encryptBody([]byte{}, nil) }, 400, "ValidationException"},
			"bad base64":        {"encrypt", func() map[string]any { m := encryptBody(pt, nil); m["plaintext"] = "!!"; return m }, 400, "ValidationException"},
			"missing algorithm": {"encrypt", func() map[string]any { m := encryptBody(pt, nil); delete(m, "encryptionAlgorithm"); return m }, 400, "ValidationException"},
			"other algorithm":   {"encrypt", func() map[string]any { m := encryptBody(pt, nil); m["encryptionAlgorithm"] = "AES_CBC"; return m }, 501, "UnsupportedOperationException"},
			"other CDIV alg": {"encrypt", func() map[string]any {
				m := encryptBody(pt, nil)
				m["ciphertextDataIntegrityValueAlgorithm"] = "SHA_1"
				return m
			}, 501, "UnsupportedOperationException"},
			"oversized plaintext": {"encrypt", func() map[string]any { return encryptBody(make([]byte, kms.XKSMaxPlaintext+1), nil) }, 501, "UnsupportedOperationException"},
			"oversized AAD":       {"encrypt", func() map[string]any { return encryptBody(pt, make([]byte, kms.XKSMaxAAD+1)) }, 501, "UnsupportedOperationException"},
			"missing kmsKeyArn": {"encrypt", func() map[string]any {
				m := encryptBody(pt, nil)
				delete(m["requestMetadata"].(map[string]any), "kmsKeyArn")
				return m
			}, 400, "ValidationException"},
			"missing kmsRequestId": {"decrypt", func() map[string]any {
				m := decryptBody("x", enc, nil)
				delete(m["requestMetadata"].(map[string]any), "kmsRequestId")
				return m
			}, 400, "ValidationException"},
			"missing tag": {"decrypt", func() map[string]any { m := decryptBody("x", enc, nil); delete(m, "authenticationTag"); return m }, 400, "ValidationException"},
			"short tag": {"decrypt", func() map[string]any {
				m := decryptBody("x", enc, nil)
				m["authenticationTag"] = b64(make([]byte, 12))
				return m
			}, 400, "ValidationException"},
			"bad iv length": {"decrypt", func() map[string]any {
				m := decryptBody("x", enc, nil)
				m["initializationVector"] = b64(make([]byte, 8))
				return m
			}, 400, "ValidationException"},
			"long metadata": {"decrypt", func() map[string]any {
				m := decryptBody("x", enc, nil)
				m["ciphertextMetadata"] = b64(make([]byte, 21))
				return m
			}, 400, "ValidationException"},
			"missing ciphertext": {"decrypt", func() map[string]any { m := decryptBody("x", enc, nil); delete(m, "ciphertext"); return m }, 400, "ValidationException"},
			"unknown key":        {"../non_existing_key/encrypt", func() map[string]any { return encryptBody(pt, nil) }, 404, "KeyNotFoundException"},
			"unknown key dec":    {"../non_existing_key/decrypt", func() map[string]any { return decryptBody("x", enc, nil) }, 404, "KeyNotFoundException"},
		} {
			t.Run(name, func(t *testing.T) {
				target := "keys/foo/" + c.target
				if strings.HasPrefix(c.target, "../") {
					target = "keys/" + strings.TrimPrefix(c.target, "../")
				}
				f.call(t, target, c.body()).wantError(t, c.status, c.want)
			})
		}
		f.call(t, "keys/foo/encrypt", "not json").wantError(t, 400, "ValidationException")

	})

	t.Run("authentication", func(t *testing.T) {
		body := map[string]any{"requestMetadata": md("DescribeKey", "a-1")}
		f.call(t, "keys/foo/metadata", body, withCred("Invalid"+ak1, secret1)).wantError(t, 401, "AuthenticationFailedException")
		f.call(t, "keys/foo/metadata", body, withCred(ak1, "Invalid"+secret1)).wantError(t, 401, "AuthenticationFailedException")
		f.call(t, "keys/foo/metadata", body, withTime(time.Now().Add(-6*time.Minute))).wantError(t, 401, "AuthenticationFailedException")
		f.call(t, "keys/foo/metadata", body, withTime(time.Now().Add(6*time.Minute))).wantError(t, 401, "AuthenticationFailedException")
		if r := f.call(t, "keys/foo/metadata", body, withTime(time.Now().Add(-4*time.Minute))); r.status != 200 {
			t.Fatalf("4 minutes of skew: %d %v", r.status, r.body)
		}
		f.call(t, "keys/foo/metadata", body, withMutate(func(r *http.Request) { r.Header.Del("Authorization") })).wantError(t, 401, "AuthenticationFailedException")
		f.call(t, "keys/foo/metadata", body, withMutate(func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") })).wantError(t, 401, "AuthenticationFailedException")
		// A credential of another prefix does not work here.
		f.call(t, "keys/foo/metadata", body, withCred(akStrict, secret1)).wantError(t, 401, "AuthenticationFailedException")
		// The second credential (rotation) works.
		if r := f.call(t, "keys/foo/metadata", body, withCred(ak2, secret2)); r.status != 200 {
			t.Fatalf("second credential: %d %v", r.status, r.body)
		}
		// Wrong URI prefix, unknown operation, GET.
		f.call(t, "health", body, withPrefix(prefixPath+"/invalid")).wantError(t, 404, "InvalidUriPathException")
		f.call(t, "keys/foo/sign", body).wantError(t, 404, "InvalidUriPathException")
		for _, target := range []string{"health", "keys/foo/metadata", "keys/foo/encrypt", "keys/foo/decrypt"} {
			if r := f.call(t, target, body, withMethod("GET")); r.status != 405 || r.header.Get("Allow") != "POST" {
				t.Fatalf("GET %s = %d %v", target, r.status, r.body)
			}
		}
	})

	t.Run("reload drops the old credential", func(t *testing.T) {
		cfg := f.cfg
		cfg.Prefixes = append([]xks.PrefixConfig(nil), f.cfg.Prefixes...)
		cfg.Prefixes[0].Credentials = cfg.Prefixes[0].Credentials[1:]
		if err := f.handler.Reload(cfg); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := f.handler.Reload(f.cfg); err != nil {
				t.Fatal(err)
			}
		}()
		body := map[string]any{"requestMetadata": md("DescribeKey", "r-1")}
		f.call(t, "keys/foo/metadata", body).wantError(t, 401, "AuthenticationFailedException")
		if r := f.call(t, "keys/foo/metadata", body, withCred(ak2, secret2)); r.status != 200 {
			t.Fatalf("new credential: %d", r.status)
		}
	})

	t.Run("approval required", func(t *testing.T) {
		enc := f.call(t, "keys/foo/encrypt", encryptBody(pt, nil), withPrefix(strictPath), withCred(akStrict, secret1))
		if enc.status != 200 {
			t.Fatalf("encrypt = %d", enc.status)
		}
		r := f.call(t, "keys/foo/decrypt", decryptBody("dec-pending-1", enc, nil), withPrefix(strictPath), withCred(akStrict, secret1))
		r.wantError(t, 403, "AccessDeniedException")
		rec := f.record(t, "dec-pending-1")
		if rec.Outcome != custosv1.Outcome_OUTCOME_PENDING || rec.Reason != custosv1.Reason_REASON_PROVIDER_SERVICE ||
			!strings.Contains(r.str("errorMessage"), rec.RequestId) || !strings.Contains(r.str("errorMessage"), "dec-pending-1") {
			t.Fatalf("pending: %v / %v", r.body, rec)
		}
		// kmsViaService=support maps to PROVIDER_SUPPORT on the main prefix:
		// approval too.
		b := decryptBody("dec-pending-2", enc, nil)
		b["requestMetadata"].(map[string]any)["kmsViaService"] = "support"
		f.call(t, "keys/foo/decrypt", b).wantError(t, 403, "AccessDeniedException")
		if rec := f.record(t, "dec-pending-2"); rec.Reason != custosv1.Reason_REASON_PROVIDER_SUPPORT || rec.Outcome != custosv1.Outcome_OUTCOME_PENDING {
			t.Fatalf("record = %v", rec)
		}
	})

	t.Run("key usage", func(t *testing.T) {
		// Officers (2 of 3) make "enc-only" encrypt-only for the XKS principal.
		f.createKey(t, "enc-only")
		p := kms.DefaultPolicy(xksUser)
		p.DecryptPrincipals = []string{"someone-else"}
		ss := f.h.Sign(t, func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "enc-only", Policy: p}}
		}, 0, 1)
		if _, err := f.svc.Submit(bg, kms.Principal{Name: "officer-1"}, ss); err != nil {
			t.Fatalf("SetPolicy: %v", err)
		}
		r := f.call(t, "keys/enc-only/metadata", map[string]any{"requestMetadata": md("DescribeKey", "u-1")})
		if fmt.Sprint(r.body["keyUsage"]) != "[ENCRYPT]" {
			t.Fatalf("metadata = %v", r.body)
		}
		enc := f.call(t, "keys/enc-only/encrypt", encryptBody(pt, nil))
		if enc.status != 200 {
			t.Fatalf("encrypt = %d %v", enc.status, enc.body)
		}
		f.call(t, "keys/enc-only/decrypt", decryptBody("dec-enc-only", enc, nil)).wantError(t, 400, "InvalidKeyUsageException")
		if rec := f.record(t, "dec-enc-only"); rec.Outcome != custosv1.Outcome_OUTCOME_DENY {
			t.Fatalf("record = %v", rec)
		}
		b := encryptBody(pt, nil)
		b["ciphertextDataIntegrityValueAlgorithm"] = "SHA_256"
		f.call(t, "keys/enc-only/encrypt", b).wantError(t, 400, "InvalidKeyUsageException")
	})

	t.Run("disabled and revoked", func(t *testing.T) {
		for _, name := range []string{"to-disable", "to-revoke"} {
			f.createKey(t, name)
		}
		encD := f.call(t, "keys/to-disable/encrypt", encryptBody(pt, aad))
		encR := f.call(t, "keys/to-revoke/encrypt", encryptBody(pt, aad))
		if _, err := f.svc.SetKeyState(bg, kms.Principal{Name: xksUser}, &custosv1.SetKeyStateRequest{Name: "to-disable", State: custosv1.KeyState_KEY_STATE_DISABLED}); err != nil {
			t.Fatal(err)
		}
		ss := f.h.Sign(t, func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_RevokeKey{RevokeKey: &custosv1.RevokeKey{Key: "to-revoke"}}
		}, 0)
		if _, err := f.svc.Submit(bg, kms.Principal{Name: "officer-1"}, ss); err != nil {
			t.Fatalf("revoke: %v", err)
		}
		for _, c := range []struct {
			key string
			enc reply
		}{{"to-disable", encD}, {"to-revoke", encR}} {
			r := f.call(t, "keys/"+c.key+"/metadata", map[string]any{"requestMetadata": md("DescribeKey", "d-1")})
			if r.status != 200 || r.str("keyStatus") != "DISABLED" {
				t.Fatalf("%s metadata = %d %v", c.key, r.status, r.body)
			}
			f.call(t, "keys/"+c.key+"/encrypt", encryptBody(pt, aad)).wantError(t, 400, "InvalidStateException")
			f.call(t, "keys/"+c.key+"/decrypt", decryptBody("dec-"+c.key, c.enc, aad)).wantError(t, 400, "InvalidStateException")
			if rec := f.record(t, "dec-"+c.key); rec.Outcome != custosv1.Outcome_OUTCOME_DENY {
				t.Fatalf("record = %v", rec)
			}
		}
	})
}

func TestNewHandlerRejects(t *testing.T) {
	good := func() xks.Config {
		return xks.Config{Prefixes: []xks.PrefixConfig{{Path: "/p", Region: region,
			Credentials: []xks.Credential{{AccessKeyID: ak1, Secret: secret1, Principal: xksUser}}}}}
	}
	h := nodetest.Start(t)
	if _, err := xks.NewHandler(good(), h.Node.Service(), nil); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for name, mod := range map[string]func(c *xks.Config){
		"no prefixes":    func(c *xks.Config) { c.Prefixes = nil },
		"bad path":       func(c *xks.Config) { c.Prefixes[0].Path = "/a b" },
		"long path":      func(c *xks.Config) { c.Prefixes[0].Path = "/" + strings.Repeat("a", 120) },
		"no region":      func(c *xks.Config) { c.Prefixes[0].Region = "" },
		"no credentials": func(c *xks.Config) { c.Prefixes[0].Credentials = nil },
		"short secret":   func(c *xks.Config) { c.Prefixes[0].Credentials[0].Secret = "short" },
		"no principal":   func(c *xks.Config) { c.Prefixes[0].Credentials[0].Principal = "" },
		"dup access key": func(c *xks.Config) {
			c.Prefixes[0].Credentials = append(c.Prefixes[0].Credentials, c.Prefixes[0].Credentials[0])
		},
		"dup prefix":      func(c *xks.Config) { c.Prefixes = append(c.Prefixes, c.Prefixes[0]) },
		"bad reason":      func(c *xks.Config) { c.Prefixes[0].DefaultReason = "BECAUSE" },
		"bad reason key":  func(c *xks.Config) { c.Prefixes[0].ReasonMap = map[string]string{"ebs": "CUSTOMER_INITIATED"} },
		"bad reason name": func(c *xks.Config) { c.Prefixes[0].ReasonMap = map[string]string{"kmsOperation=Decrypt": "NOPE"} },
	} {
		c := good()
		mod(&c)
		if _, err := xks.NewHandler(c, h.Node.Service(), nil); err == nil {
			t.Errorf("%s: NewHandler accepted it", name)
		}
	}
}
