// Package kmsplugin is a Kubernetes KMS v2 plugin backed by custos: it
// serves the KMS v2 gRPC API (k8s.io/kms/apis/v2) that the API server calls
// over a unix socket, and keeps the key in a custos cluster (docs/kubernetes.md).
//
//   - Encrypt seals the API server's DEK seed with custos Encrypt (AES-256-GCM
//     in the HSM, under the primary version of one named custos key, bound to
//     a fixed encryption context) and returns custos's ciphertext; its key_id
//     names that key version (KeyID).
//   - Decrypt asks custos to decrypt it: a decision recorded in custos's
//     ledger, under the plugin's principal and justification, before the seed
//     is released.
//   - Status reads the key and seals a probe under it, which custos records
//     nowhere, and caches the answer briefly.
//
// No key material is logged. Seeds pass through the plugin's memory only
// for the duration of one call.
package kmsplugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	kmsapi "k8s.io/kms/apis/v2"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Defaults for the Config fields left zero.
const (
	DefaultStatusTTL      = 20 * time.Second
	DefaultStatusErrorTTL = 3 * time.Second
	DefaultStatusTimeout  = 10 * time.Second
	DefaultText           = "kube-apiserver: unwrap a KMS v2 DEK seed"
	DefaultReason         = custosv1.Reason_REASON_CUSTOMER_WORKFLOW
)

// PurposeContextKey is the encryption context entry the plugin always adds:
// custos binds every seed it seals to it, so a seed ciphertext cannot be
// presented to custos as anything else, nor another ciphertext as a seed.
const (
	PurposeContextKey   = "purpose"
	PurposeContextValue = "kubernetes-kms-v2-seed"
	probeContextValue   = "kubernetes-kms-v2-status-probe"
)

// Seed sizes the plugin accepts from the API server: it sends 32 bytes
// (an HKDF seed or an AES-256 key).
const (
	MinSeedSize = 32
	MaxSeedSize = 64
)

// maxUIDInText bounds the API server's request uid copied into the
// justification text (custos allows 1024 bytes in all).
const maxUIDInText = 128

// Config configures a Plugin.
type Config struct {
	// Keys is custos's key service: custos.Client.Keys() of a client dialled
	// with the plugin's certificate (its common name is the principal
	// custos's policies name and its ledger records).
	Keys custosv1.KeyServiceClient
	// Key is the custos key that seals the seeds. Required.
	Key string
	// Reason, Text and Ticket are the justification recorded with every
	// decrypt. Zero Reason means DefaultReason, empty Text DefaultText; the
	// API server's request uid is appended to Text.
	Reason custosv1.Reason
	Text   string
	Ticket string
	// Context is added to the encryption context of every seed (with
	// PurposeContextKey, which it may not set). Changing it later makes
	// every stored seed undecryptable: keep it fixed.
	Context map[string]string
	// StatusTTL is how long a healthy Status answer is reused;
	// StatusErrorTTL how long an unhealthy one is; zero means the default,
	// a negative TTL no reuse. StatusTimeout bounds one probe (zero or
	// negative: DefaultStatusTimeout).
	StatusTTL, StatusErrorTTL, StatusTimeout time.Duration
	// Sign, if set, signs each DecryptRequest before it is sent
	// (custos.Client.SignDecryptRequest): a key whose policy requires
	// signed requests releases only to signed ones
	// (docs/signed-requests.md). nil: unsigned.
	Sign func(*custosv1.DecryptRequest) error
	// Logger receives one line per call (never key material); nil: discard.
	Logger *slog.Logger
	// Now is the clock (tests); nil: time.Now.
	Now func() time.Time
}

// Plugin implements kmsapi.KeyManagementServiceServer over custos.
type Plugin struct {
	kmsapi.UnimplementedKeyManagementServiceServer

	keys    custosv1.KeyServiceClient
	sign    func(*custosv1.DecryptRequest) error
	key     string
	just    *custosv1.Justification
	encCtx  map[string]string
	probeCx map[string]string
	log     *slog.Logger
	now     func() time.Time

	ttl, errTTL, probeTimeout time.Duration

	mu       sync.Mutex
	last     *kmsapi.StatusResponse // last probe's answer
	lastAt   time.Time
	inflight chan struct{} // closed when the running probe ends
	ids      map[uint32]string
	logged   string // the last Status logged: a line for each change only
}

var _ kmsapi.KeyManagementServiceServer = (*Plugin)(nil)

// New checks cfg and returns a Plugin. It does not call custos.
func New(cfg Config) (*Plugin, error) {
	if cfg.Keys == nil {
		return nil, errors.New("kmsplugin: no custos key service")
	}
	if cfg.Key == "" {
		return nil, errors.New("kmsplugin: no custos key name")
	}
	p := &Plugin{
		keys:         cfg.Keys,
		sign:         cfg.Sign,
		key:          cfg.Key,
		log:          cfg.Logger,
		now:          cfg.Now,
		ttl:          orDefault(cfg.StatusTTL, DefaultStatusTTL),
		errTTL:       orDefault(cfg.StatusErrorTTL, DefaultStatusErrorTTL),
		probeTimeout: cfg.StatusTimeout,
		encCtx:       map[string]string{PurposeContextKey: PurposeContextValue},
		probeCx:      map[string]string{PurposeContextKey: probeContextValue},
		ids:          map[uint32]string{},
	}
	for k, v := range cfg.Context {
		if k == PurposeContextKey {
			return nil, fmt.Errorf("kmsplugin: the encryption context entry %q is the plugin's own", k)
		}
		p.encCtx[k], p.probeCx[k] = v, v
	}
	if p.probeTimeout <= 0 {
		p.probeTimeout = DefaultStatusTimeout
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.now == nil {
		p.now = time.Now
	}
	r := cfg.Reason
	if r == custosv1.Reason_REASON_UNSPECIFIED {
		r = DefaultReason
	}
	text := cfg.Text
	if text == "" {
		text = DefaultText
	}
	p.just = &custosv1.Justification{Reason: r, Text: text, Ticket: cfg.Ticket}
	return p, nil
}

func orDefault(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

// Key returns the name of the custos key the plugin uses.
func (p *Plugin) Key() string { return p.key }

// Encrypt seals the API server's seed under the custos key's primary
// version. custos records no decision for it: nothing is disclosed.
func (p *Plugin) Encrypt(ctx context.Context, req *kmsapi.EncryptRequest) (*kmsapi.EncryptResponse, error) {
	defer clear(req.Plaintext)
	if n := len(req.GetPlaintext()); n < MinSeedSize || n > MaxSeedSize {
		p.log.Warn("encrypt refused", "uid", req.GetUid(), "reason", "plaintext size", "bytes", n)
		return nil, status.Errorf(codes.InvalidArgument, "plaintext has %d bytes: a KMS v2 DEK seed has %d to %d", n, MinSeedSize, MaxSeedSize)
	}
	resp, err := p.keys.Encrypt(ctx, &custosv1.EncryptRequest{Key: p.key, Plaintext: req.GetPlaintext(), EncryptionContext: p.encCtx})
	if err != nil {
		p.invalidateOn(err)
		p.log.Warn("encrypt failed", "uid", req.GetUid(), "key", p.key, "code", status.Code(err).String(), "error", err)
		return nil, Map("encrypt", err)
	}
	id, err := p.keyID(ctx, resp.GetKeyVersion())
	if err != nil {
		p.log.Warn("encrypt failed", "uid", req.GetUid(), "key", p.key, "version", resp.GetKeyVersion(), "error", err)
		return nil, Map("encrypt: read the key version", err)
	}
	p.noteVersion(id)
	p.log.Info("encrypt", "uid", req.GetUid(), "key", p.key, "version", resp.GetKeyVersion(), "key_id", id)
	return &kmsapi.EncryptResponse{Ciphertext: resp.GetCiphertext(), KeyId: id}, nil
}

// Decrypt asks custos to decrypt a seed this plugin sealed. custos decides
// and records the request in its ledger before it releases anything.
func (p *Plugin) Decrypt(ctx context.Context, req *kmsapi.DecryptRequest) (*kmsapi.DecryptResponse, error) {
	h, err := ParseHeader(req.GetCiphertext())
	if err != nil {
		p.log.Warn("decrypt refused", "uid", req.GetUid(), "error", err)
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if h.Key != p.key {
		p.log.Warn("decrypt refused", "uid", req.GetUid(), "key", h.Key, "serves", p.key)
		return nil, status.Errorf(codes.FailedPrecondition, "the ciphertext was sealed under custos key %q; this plugin serves key %q only", h.Key, p.key)
	}
	j := &custosv1.Justification{Reason: p.just.Reason, Text: p.text(req.GetUid()), Ticket: p.just.Ticket}
	dr := &custosv1.DecryptRequest{Ciphertext: req.GetCiphertext(), EncryptionContext: p.encCtx, Justification: j}
	if p.sign != nil {
		if err := p.sign(dr); err != nil {
			p.log.Warn("decrypt not signed", "uid", req.GetUid(), "error", err)
			return nil, status.Errorf(codes.Internal, "sign the decrypt request: %v", err)
		}
	}
	resp, err := p.keys.Decrypt(ctx, dr)
	if err != nil {
		p.invalidateOn(err)
		p.log.Warn("decrypt failed", "uid", req.GetUid(), "key", h.Key, "version", h.Version, "key_id", req.GetKeyId(),
			"code", status.Code(err).String(), "error", err)
		return nil, Map("decrypt", err)
	}
	p.log.Info("decrypt", "uid", req.GetUid(), "key", resp.GetKey(), "version", resp.GetKeyVersion(), "key_id", req.GetKeyId(),
		"decision_seq", resp.GetDecisionSeq(), "request_id", resp.GetRequestId())
	return &kmsapi.DecryptResponse{Plaintext: resp.GetPlaintext()}, nil
}

// text is the justification text for one request: the configured text and
// the API server's request uid, which its own logs show.
func (p *Plugin) text(uid string) string {
	if uid == "" {
		return p.just.Text
	}
	uid = strings.ToValidUTF8(uid, "?")
	if len(uid) > maxUIDInText {
		uid = uid[:maxUIDInText]
		for !utf8.ValidString(uid) {
			uid = uid[:len(uid)-1]
		}
	}
	t := p.just.Text + " (uid " + uid + ")"
	if len(t) > 1024 {
		return p.just.Text
	}
	return t
}
