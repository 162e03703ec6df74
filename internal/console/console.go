// Package console is the officer console: a web page, served by custosd on
// its own TLS listener, where the customer's security officers sign in with
// a WebAuthn credential (a FIDO2 security key, a platform authenticator),
// review pending requests, keys, evidence and the cluster, and sign officer
// statements with the same credential (docs/console.md).
//
// The console holds no authority of its own. Every action is an officer
// statement whose WebAuthn assertion the state machine verifies against the
// credentials the officers bound (governance.VerifyAssertion), through
// GovernanceService.Propose; every read is one an auditor could make. A
// console session only decides who may read through this page.
package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

//go:embed assets/*.html assets/*.js assets/*.css
var assets embed.FS

// Config configures the console.
type Config struct {
	// RPID is the WebAuthn relying party id: the host name officers reach
	// the console at ("localhost" in development).
	RPID string
	// Origins are the console's origins ("https://host:port"); requests
	// from any other origin are refused (CSRF), and credentials registered
	// here are bound to the rp_id host at any port unless the officers
	// list origins in the statement.
	Origins []string
	// RequireUserVerification makes sign-in and new credentials require
	// the user verified (PIN or biometric), not only present.
	RequireUserVerification bool
	// SessionTTL bounds a sign-in (default 1 hour).
	SessionTTL time.Duration
	// StatementTTL is the lifetime of statements the console prepares
	// (default 24 hours): how long the other officers have to sign.
	StatementTTL time.Duration
	// Node and Version are shown on the page.
	Node, Version string
}

// Deps is what the console reads and acts through.
type Deps struct {
	Service *kms.Service
	// Status returns this node's view of the cluster.
	Status func(ctx context.Context) *custosv1.ClusterStatus
	Log    *slog.Logger
}

// Server serves the console.
type Server struct {
	cfg      Config
	d        Deps
	sessions *sessions
	evidence *evidenceCache
	origins  map[string]bool

	// registrations paces anonymous registrations (register/finish).
	registrations *bucket
	countersMu    sync.Mutex
	counters      map[string]uint32 // credential id → newest sign-in counter seen here
}

// New returns a console server.
func New(cfg Config, d Deps) (*Server, error) {
	if d.Service == nil || d.Status == nil {
		return nil, errors.New("console: a service and a status function are needed")
	}
	if cfg.RPID == "" {
		return nil, errors.New("console: rp_id is empty")
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = time.Hour
	}
	if cfg.StatementTTL <= 0 {
		cfg.StatementTTL = 24 * time.Hour
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, d: d, sessions: newSessions(cfg.SessionTTL), evidence: &evidenceCache{}, origins: map[string]bool{},
		counters: map[string]uint32{}, registrations: &bucket{burst: registrationBurst, every: registrationEvery}}
	for _, o := range cfg.Origins {
		u, err := url.Parse(o)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("console: origin %q is not https://host[:port]", o)
		}
		s.origins[o] = true
	}
	return s, nil
}

// AddOrigin allows one more origin (the listener's, once its port is
// known).
func (s *Server) AddOrigin(o string) { s.origins[o] = true }

// Handler returns the console's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "assets")
	files := http.FileServerFS(static)
	mux.Handle("GET /{$}", files)
	mux.Handle("GET /app.js", files)
	mux.Handle("GET /app.css", files)
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("GET /api/session", s.getSession)
	mux.HandleFunc("POST /api/signin/begin", s.post(s.signinBegin))
	mux.HandleFunc("POST /api/signin/finish", s.post(s.signinFinish))
	mux.HandleFunc("POST /api/signout", s.post(s.signout))
	mux.HandleFunc("POST /api/register/begin", s.post(s.registerBegin))
	mux.HandleFunc("POST /api/register/statement", s.post(s.registerStatement))
	mux.HandleFunc("POST /api/register/finish", s.post(s.registerFinish))
	mux.HandleFunc("POST /api/statements", s.post(s.signedIn(s.prepareStatement)))
	mux.HandleFunc("POST /api/proposals/sign", s.post(s.signedIn(s.signProposal)))
	mux.HandleFunc("GET /api/overview", s.get(s.overview))
	mux.HandleFunc("GET /api/pending", s.get(s.pending))
	mux.HandleFunc("GET /api/keys", s.get(s.keys))
	mux.HandleFunc("GET /api/decisions", s.get(s.decisions))
	mux.HandleFunc("GET /api/report", s.report)
	mux.HandleFunc("GET /api/chain", s.get(s.chain))
	mux.HandleFunc("GET /api/cluster", s.get(s.cluster))
	mux.HandleFunc("GET /api/events", s.events)
	return securityHeaders(mux)
}

// Serve serves the console on l (a TLS listener) until ctx ends.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(s.d.Log.Handler(), slog.LevelWarn)}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	err := hs.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// csp is the Content-Security-Policy of every response: the page's own
// script and style only, no inline code, no other host.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", csp)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		hd.Set("Cross-Origin-Resource-Policy", "same-origin")
		hd.Set("Strict-Transport-Security", "max-age=31536000")
		hd.Set("Permissions-Policy", "publickey-credentials-get=(self), publickey-credentials-create=(self)")
		if strings.HasPrefix(r.URL.Path, "/api/") {
			hd.Set("Cache-Control", "no-store")
		}
		h.ServeHTTP(w, r)
	})
}
