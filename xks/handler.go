// Package xks serves the AWS KMS External Key Store (XKS) proxy API,
// version 1, over custos: AWS KMS calls it to encrypt and decrypt its data
// keys with a custos key, and every decrypt goes through custos's decision
// path (policy in the Raft log, a ledger record, approvals, notification)
// exactly like a gRPC Decrypt. See docs/xks.md.
//
// The handler serves, under each configured URI path prefix,
//
//	POST {prefix}/kms/xks/v1/health
//	POST {prefix}/kms/xks/v1/keys/{keyName}/metadata
//	POST {prefix}/kms/xks/v1/keys/{keyName}/encrypt
//	POST {prefix}/kms/xks/v1/keys/{keyName}/decrypt
//
// authenticated with SigV4 (service kms-xks-proxy) by one of the prefix's
// credentials. TLS (and optionally mTLS, see MTLSConfig) is the listener's.
package xks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Service is the SigV4 service name the XKS specification uses.
const Service = "kms-xks-proxy"

// apiPath is what follows a prefix in every XKS URI.
const apiPath = "/kms/xks/v1"

// Defaults and limits.
const (
	// DefaultMaxBody bounds a request body: room for the largest
	// plaintext (4300 bytes) and AAD (8192 bytes) in Base64 and two 2048
	// character ARNs. A larger body is UnsupportedOperationException.
	DefaultMaxBody = 64 << 10
	// DefaultDeadline is how long after it arrives a request is answered
	// at the latest. AWS KMS gives up on a proxy after 250 ms, network
	// included; the specification recommends a round trip of at most
	// 35 ms between AWS and the proxy.
	DefaultDeadline = 200 * time.Millisecond
	// MaxPathLen is the specification's bound on XksProxyUriPath
	// ({prefix}/kms/xks/v1).
	MaxPathLen = 128
	// maxMetadataLen is the specification's bound on ciphertextMetadata.
	maxMetadataLen = 20
	// minSecretLen is the shortest secret access key AWS KMS accepts.
	minSecretLen = 43
)

// Config configures the handler.
type Config struct {
	// Prefixes are the logical key stores served, each under its own URI
	// path prefix with its own credentials.
	Prefixes []PrefixConfig
	// MaxBody bounds a request body; DefaultMaxBody if zero.
	MaxBody int
	// MaxSkew bounds the SigV4 clock skew; DefaultMaxSkew (5 min) if zero.
	MaxSkew time.Duration
	// Now is the clock for SigV4 and for reusing a health check's result;
	// time.Now if nil.
	Now func() time.Time
	// Deadline bounds each request: custos's own work on it (the decision,
	// notification before release, the HSM) must end within four fifths
	// of it, and the answer goes out at Deadline after the request reached
	// the handler whatever that work is doing: 503
	// DependencyTimeoutException, nothing released, the decision recorded
	// (docs/xks.md, "Deadlines"). DefaultDeadline if zero.
	Deadline time.Duration
	// Logger; slog.Default() if nil. Never given plaintext or secrets.
	Logger *slog.Logger
	// EKMID names this node in the health response (ekmFleetDetails.id);
	// "custos" if empty.
	EKMID string
}

// PrefixConfig is one logical key store.
type PrefixConfig struct {
	// Path is the URI path prefix before /kms/xks/v1, e.g.
	// "/keystores/acme" (or "" for none). Letters, digits, '/', '-', '_'.
	Path string
	// Region is the AWS region in the SigV4 credential scope.
	Region string
	// Credentials are the SigV4 credentials accepted for this prefix; at
	// least one, two during a rotation.
	Credentials []Credential
	// ReasonMap maps request metadata to a custos justification reason for
	// decrypts. Keys are "kmsViaService=<service>" or
	// "kmsOperation=<operation>"; values are reason names such as
	// "CUSTOMER_INITIATED" or "REASON_PROVIDER_SERVICE". kmsViaService is
	// looked up first, then kmsOperation, then DefaultReason.
	ReasonMap map[string]string
	// DefaultReason is the reason when ReasonMap has no match;
	// PROVIDER_SERVICE if empty.
	DefaultReason string
}

// Credential is a SigV4 access key id and secret, and the custos principal
// whose name requests signed with it act as (in key policies and in the
// ledger).
type Credential struct {
	AccessKeyID string
	Secret      string
	Principal   string
}

// Handler is the XKS HTTP handler. Reload swaps its configuration (e.g. to
// add or remove a credential) without dropping connections.
type Handler struct {
	svc    *kms.Service
	health func(context.Context) error
	probe  *kms.XKSProbe
	cache  healthCache
	cfg    atomic.Pointer[compiled]
	// work counts requests' work still running, which may outlive their
	// answer (Deadline); Close waits for it.
	work sync.WaitGroup
}

type compiled struct {
	prefixes []*prefix
	maxBody  int
	lg       *slog.Logger
	ekmID    string
	now      func() time.Time
	deadline time.Duration
}

type prefix struct {
	path     string
	verifier *Verifier
	creds    map[string]Credential
	reasons  map[string]custosv1.Reason
	dflt     custosv1.Reason
}

// NewHandler returns the XKS handler for svc. health, if not nil, is the
// node's own readiness check; the health API reports it together with
// svc's deep check (kms.XKSProbe).
func NewHandler(cfg Config, svc *kms.Service, health func(context.Context) error) (*Handler, error) {
	if svc == nil {
		return nil, errors.New("xks: NewHandler needs a kms.Service")
	}
	h := &Handler{svc: svc, health: health, probe: svc.XKSProbe()}
	if err := h.Reload(cfg); err != nil {
		return nil, err
	}
	return h, nil
}

// Reload checks cfg and makes it the handler's configuration for the next
// requests.
func (h *Handler) Reload(cfg Config) error {
	c, err := compile(cfg)
	if err != nil {
		return err
	}
	h.cfg.Store(c)
	return nil
}

// Close waits until the work of every request served so far has ended
// (some may outlive their answer, see Config.Deadline) or ctx ends, then
// destroys the health check's HSM key. Call it once the server serving h
// has stopped.
func (h *Handler) Close(ctx context.Context) error {
	done := make(chan struct{})
	go func() { h.work.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("xks: requests still running: %w", ctx.Err())
	}
	h.probe.Close(ctx)
	return nil
}

// Wait waits until the work of every request served so far has ended.
func (h *Handler) Wait() { h.work.Wait() }

func compile(cfg Config) (*compiled, error) {
	c := &compiled{maxBody: cfg.MaxBody, lg: cfg.Logger, ekmID: cfg.EKMID, now: cfg.Now, deadline: cfg.Deadline}
	if c.maxBody <= 0 {
		c.maxBody = DefaultMaxBody
	}
	if c.now == nil {
		c.now = time.Now
	}
	switch {
	case c.deadline == 0:
		c.deadline = DefaultDeadline
	case c.deadline < 0:
		return nil, fmt.Errorf("xks: deadline %v is negative", c.deadline)
	}
	if c.lg == nil {
		c.lg = slog.Default()
	}
	if c.ekmID == "" {
		c.ekmID = "custos"
	}
	if len(cfg.Prefixes) == 0 {
		return nil, errors.New("xks: no prefixes configured")
	}
	seen := map[string]bool{}
	for i, pc := range cfg.Prefixes {
		p := strings.TrimRight(pc.Path, "/")
		if p != "" && !strings.HasPrefix(p, "/") {
			p = "/" + p
		}
		where := fmt.Sprintf("xks: prefix %d (%q)", i, p)
		if len(p)+len(apiPath) > MaxPathLen {
			return nil, fmt.Errorf("%s: %s%s is longer than %d characters", where, p, apiPath, MaxPathLen)
		}
		for _, r := range p {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '/' || r == '-' || r == '_') {
				return nil, fmt.Errorf("%s: path may hold only letters, digits, '/', '-' and '_'", where)
			}
		}
		if strings.Contains(p, "//") {
			return nil, fmt.Errorf("%s: path has an empty segment", where)
		}
		if seen[p] {
			return nil, fmt.Errorf("%s: configured twice", where)
		}
		seen[p] = true
		if pc.Region == "" {
			return nil, fmt.Errorf("%s: region is empty", where)
		}
		if len(pc.Credentials) == 0 {
			return nil, fmt.Errorf("%s: no credentials", where)
		}
		px := &prefix{path: p, creds: map[string]Credential{}, reasons: map[string]custosv1.Reason{}}
		for _, cr := range pc.Credentials {
			switch {
			case cr.AccessKeyID == "":
				return nil, fmt.Errorf("%s: a credential has no access key id", where)
			case len(cr.Secret) < minSecretLen:
				return nil, fmt.Errorf("%s: the secret of access key %s is shorter than %d characters", where, cr.AccessKeyID, minSecretLen)
			case cr.Principal == "":
				return nil, fmt.Errorf("%s: access key %s names no principal", where, cr.AccessKeyID)
			}
			if _, dup := px.creds[cr.AccessKeyID]; dup {
				return nil, fmt.Errorf("%s: access key %s configured twice", where, cr.AccessKeyID)
			}
			px.creds[cr.AccessKeyID] = cr
		}
		px.verifier = &Verifier{Service: Service, Region: pc.Region, Now: cfg.Now, MaxSkew: cfg.MaxSkew,
			Secret: func(ak string) (string, bool) { cr, ok := px.creds[ak]; return cr.Secret, ok }}
		var err error
		if px.dflt, err = parseReason(pc.DefaultReason, custosv1.Reason_REASON_PROVIDER_SERVICE); err != nil {
			return nil, fmt.Errorf("%s: default reason: %w", where, err)
		}
		for k, v := range pc.ReasonMap {
			field, val, ok := strings.Cut(k, "=")
			if !ok || val == "" || field != "kmsViaService" && field != "kmsOperation" {
				return nil, fmt.Errorf("%s: reason map key %q: want kmsViaService=<service> or kmsOperation=<operation>", where, k)
			}
			if px.reasons[k], err = parseReason(v, 0); err != nil {
				return nil, fmt.Errorf("%s: reason map %q: %w", where, k, err)
			}
		}
		c.prefixes = append(c.prefixes, px)
	}
	return c, nil
}

func parseReason(name string, dflt custosv1.Reason) (custosv1.Reason, error) {
	if name == "" && dflt != 0 {
		return dflt, nil
	}
	n := strings.ToUpper(name)
	if !strings.HasPrefix(n, "REASON_") {
		n = "REASON_" + n
	}
	r, ok := custosv1.Reason_value[n]
	if !ok || r == 0 {
		return 0, fmt.Errorf("unknown reason %q", name)
	}
	return custosv1.Reason(r), nil
}

// requestMetadata is the specification's requestMetadata object. Unknown
// fields are ignored: AWS KMS may add more.
type requestMetadata struct {
	AWSPrincipalARN string `json:"awsPrincipalArn"`
	AWSSourceVPC    string `json:"awsSourceVpc"`
	AWSSourceVPCE   string `json:"awsSourceVpce"`
	KMSKeyARN       string `json:"kmsKeyArn"`
	KMSOperation    string `json:"kmsOperation"`
	KMSRequestID    string `json:"kmsRequestId"`
	KMSViaService   string `json:"kmsViaService"`
}

type request struct {
	RequestMetadata *requestMetadata `json:"requestMetadata"`
	Plaintext       *string          `json:"plaintext"`
	Ciphertext      *string          `json:"ciphertext"`
	CiphertextMeta  *string          `json:"ciphertextMetadata"`
	EncryptionAlg   *string          `json:"encryptionAlgorithm"`
	AAD             *string          `json:"additionalAuthenticatedData"`
	IV              *string          `json:"initializationVector"`
	Tag             *string          `json:"authenticationTag"`
	CDIVAlg         *string          `json:"ciphertextDataIntegrityValueAlgorithm"`
}

// call is one request being served; its fields feed the log line.
type call struct {
	start     time.Time
	prefix    string
	op        string
	key       string // the externalKeyId
	name      string // the custos key name, when it differs (kms.XKSKeyName)
	accessKey string
	principal string
	md        *requestMetadata
	seq       uint64 // decision record, for decrypts
	reqID     string // custos request id of the decision
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := h.cfg.Load()
	cl := &call{start: time.Now()}
	resp, aerr := h.serve(c, cl, w, r)
	status := http.StatusOK
	if aerr != nil {
		status = errStatus[aerr.name]
		if status == 0 {
			status = http.StatusMethodNotAllowed
		}
		resp = map[string]string{"errorName": aerr.name, "errorMessage": printable(aerr.msg)}
		if status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", http.MethodPost)
		}
	}
	body, err := json.Marshal(resp)
	if err != nil {
		status, body = 500, []byte(`{"errorName":"InternalException"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	if cl.seq != 0 {
		// The ledger position of the decision, for operators correlating
		// AWS CloudTrail with the custos ledger.
		w.Header().Set("X-Custos-Decision-Seq", strconv.FormatUint(cl.seq, 10))
		w.Header().Set("X-Custos-Request-Id", cl.reqID)
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
	h.log(c, cl, r, status, aerr)
}

func (h *Handler) log(c *compiled, cl *call, r *http.Request, status int, aerr *apiError) {
	attrs := []any{"prefix", cl.prefix, "op", cl.op, "status", status,
		"duration_ms", float64(time.Since(cl.start).Microseconds()) / 1000}
	if cl.key != "" {
		attrs = append(attrs, "key", cl.key)
	}
	if cl.name != "" {
		attrs = append(attrs, "custos_key", cl.name)
	}
	if cl.accessKey != "" {
		attrs = append(attrs, "access_key_id", cl.accessKey)
	}
	if cl.principal != "" {
		attrs = append(attrs, "principal", cl.principal)
	}
	if md := cl.md; md != nil {
		attrs = append(attrs, "kms_request_id", md.KMSRequestID, "kms_operation", md.KMSOperation)
		if md.KMSViaService != "" {
			attrs = append(attrs, "kms_via_service", md.KMSViaService)
		}
		if md.AWSPrincipalARN != "" {
			attrs = append(attrs, "aws_principal_arn", md.AWSPrincipalARN)
		}
	}
	if cl.seq != 0 {
		attrs = append(attrs, "decision_seq", cl.seq, "request_id", cl.reqID)
	}
	if aerr != nil {
		attrs = append(attrs, "error", aerr.name, "detail", aerr.msg)
		c.lg.Warn("xks request failed", attrs...)
		return
	}
	c.lg.Info("xks request", attrs...)
}

// route finds the prefix, operation and key id of a path. The key id is
// not checked here: a request for a key URI is refused for its method and
// its signature before its key id is looked at.
func (c *compiled) route(path string) (*prefix, string, string, bool) {
	for _, p := range c.prefixes {
		rest, ok := strings.CutPrefix(path, p.path+apiPath+"/")
		if !ok {
			continue
		}
		if rest == "health" {
			return p, "health", "", true
		}
		parts := strings.Split(rest, "/")
		if len(parts) == 3 && parts[0] == "keys" {
			switch parts[2] {
			case "metadata", "encrypt", "decrypt":
				return p, parts[2], parts[1], true
			}
		}
		return p, "", "", false
	}
	return nil, "", "", false
}

// serve checks a request in the order the specification's errors imply —
// the URI (404 InvalidUriPathException), the method (405), the body's size
// (501), the SigV4 signature (401), the key id and the body (400) — and
// then runs the operation under the deadline (run). A key is looked up
// (404 KeyNotFoundException) only by an authenticated operation.
func (h *Handler) serve(c *compiled, cl *call, w http.ResponseWriter, r *http.Request) (any, *apiError) {
	p, op, id, ok := c.route(r.URL.EscapedPath())
	if !ok {
		return nil, fail(errInvalidURI, "no XKS API at this URI path")
	}
	cl.prefix, cl.op, cl.key = p.path, op, id
	if r.Method != http.MethodPost {
		return nil, &apiError{name: "MethodNotAllowed", msg: "the XKS API takes POST only"}
	}
	body, aerr := readBody(c, w, r)
	if aerr != nil {
		return nil, aerr
	}
	ak, err := p.verifier.Verify(r, body)
	cl.accessKey = ak
	if err != nil {
		c.lg.Debug("xks sigv4 verification failed", "prefix", p.path, "access_key_id", ak, "err", err)
		return nil, fail(errAuthFailed, "SigV4 signature verification failed")
	}
	cred := p.creds[ak]
	cl.principal = cred.Principal
	var name string
	if op != "health" {
		n, mapped, err := kms.XKSKeyName(id)
		if err != nil {
			return nil, fail(errValidation, "externalKeyId: 1 to %d letters, digits, '_', '.' or '-'", kms.XKSMaxKeyIDLen)
		}
		if name = n; mapped {
			cl.name = n
		}
	}
	var req request
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&req); err != nil {
		return nil, fail(errValidation, "request body is not a JSON object")
	}
	if dec.More() {
		return nil, fail(errValidation, "request body has data after the JSON object")
	}
	cl.md = req.RequestMetadata
	if err := checkMetadata(op, req.RequestMetadata); err != nil {
		return nil, err
	}
	principal := kms.Principal{Name: cred.Principal}
	k, md := xksKey{id: id, name: name}, cl.md
	return h.run(c, cl, r, func(ctx context.Context) outcome {
		var o outcome
		switch op {
		case "health":
			o.resp = h.healthResponse(ctx, c)
		case "metadata":
			o.resp, o.aerr = h.metadata(ctx, principal, k)
		case "encrypt":
			o.resp, o.aerr = h.encrypt(ctx, principal, k, &req)
		default:
			var rec *custosv1.DecisionRecord
			o.resp, o.aerr, rec = h.decrypt(ctx, p, md, principal, k, &req)
			if rec != nil {
				o.seq, o.reqID = rec.Seq, rec.RequestId
			}
		}
		return o
	})
}

// readBody reads the body, at most c.maxBody bytes. A larger one is
// UnsupportedOperationException (the specification's error for a value
// beyond the sizes an implementation supports, which are above its
// minimums) before its signature is checked: checking it would mean
// reading all of it. The connection is then closed rather than drained.
func readBody(c *compiled, w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	tooLarge := func() ([]byte, *apiError) {
		w.Header().Set("Connection", "close")
		return nil, fail(errUnsupported, "request body is larger than %d bytes, the most custos supports", c.maxBody)
	}
	if r.ContentLength > int64(c.maxBody) {
		return tooLarge()
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(c.maxBody)+1))
	switch {
	case err != nil:
		return nil, fail(errValidation, "could not read the request body")
	case len(body) > c.maxBody:
		return tooLarge()
	}
	return body, nil
}

// xksKey is the key of a request: its externalKeyId and the custos key
// name it maps to (kms.XKSKeyName).
type xksKey struct{ id, name string }

// outcome is what an operation ends with.
type outcome struct {
	resp  any
	aerr  *apiError
	seq   uint64 // decision record, for decrypts
	reqID string // custos request id of the decision
}

// run runs op with a context that ends four fifths of the deadline after
// the request arrived, and answers by the deadline whatever op is doing: a
// request still running then is DependencyTimeoutException. op goes on in
// the background until it returns; kms releases nothing to a caller whose
// context ended and records RELEASE_BLOCKED after an ALLOW it did not
// release (kms.Service.XKSDecrypt), so the ledger stays complete. Close
// waits for such work.
func (h *Handler) run(c *compiled, cl *call, r *http.Request, op func(context.Context) outcome) (any, *apiError) {
	answerBy := cl.start.Add(c.deadline)
	ctx, cancel := context.WithDeadline(r.Context(), cl.start.Add(c.deadline-c.deadline/5))
	defer cancel()
	done := make(chan outcome, 1)
	h.work.Add(1)
	go func() {
		defer h.work.Done()
		done <- op(ctx)
	}()
	timer := time.NewTimer(time.Until(answerBy))
	defer timer.Stop()
	select {
	case o := <-done:
		cl.seq, cl.reqID = o.seq, o.reqID
		if o.aerr != nil && ctx.Err() != nil && o.aerr.name == errInternal {
			o.aerr = fail(errTimeout, "custos did not answer within %v", c.deadline)
		}
		return o.resp, o.aerr
	case <-timer.C:
		return nil, fail(errTimeout, "custos did not answer within %v", c.deadline)
	case <-r.Context().Done():
		return nil, fail(errTimeout, "the request was cancelled before custos answered")
	}
}

// checkMetadata checks the requestMetadata fields the specification
// requires for op. Their values are opaque.
func checkMetadata(op string, md *requestMetadata) *apiError {
	if md == nil {
		return fail(errValidation, "requestMetadata is missing")
	}
	need := map[string]string{"kmsRequestId": md.KMSRequestID, "kmsOperation": md.KMSOperation}
	if op != "health" {
		need["awsPrincipalArn"] = md.AWSPrincipalARN
	}
	if op == "encrypt" || op == "decrypt" {
		need["kmsKeyArn"] = md.KMSKeyARN
	}
	for _, f := range []string{"awsPrincipalArn", "kmsKeyArn", "kmsOperation", "kmsRequestId"} {
		if v, ok := need[f]; ok && v == "" {
			return fail(errValidation, "requestMetadata.%s is missing", f)
		}
	}
	return nil
}
