package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/custos-kms/custos/kms"
)

// Sessions: a cookie (HttpOnly, Secure, SameSite=Strict) names a session,
// made by GET /api/session before sign-in; the session holds the CSRF token
// every POST must echo in X-Custos-CSRF, the challenges it was given
// (single use, five minutes), and, after sign-in, the officer.

const (
	cookieName   = "custos_console"
	csrfHeader   = "X-Custos-CSRF"
	challengeTTL = 5 * time.Minute
	maxBody      = 256 << 10
	// maxSessions bounds the sessions kept (the oldest anonymous ones go
	// first).
	maxSessions = 4096
)

type session struct {
	id, csrf   string
	officer    string
	created    time.Time
	expires    time.Time
	challenges map[string]challenge // b64u challenge → what it is for
}

type challenge struct {
	purpose, officer string
	expires          time.Time
}

type sessions struct {
	mu  sync.Mutex
	ttl time.Duration
	m   map[string]*session
}

func newSessions(ttl time.Duration) *sessions {
	return &sessions{ttl: ttl, m: map[string]*session{}}
}

func randomB64(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("console: reading random bytes: %v", err))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// get returns the request's live session, or nil.
func (ss *sessions) get(r *http.Request) *session {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return nil
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.m[c.Value]
	if s == nil || time.Now().After(s.expires) {
		delete(ss.m, c.Value)
		return nil
	}
	return s
}

// create starts an anonymous session and sets its cookie.
func (ss *sessions) create(w http.ResponseWriter) *session {
	now := time.Now()
	s := &session{id: randomB64(32), csrf: randomB64(32), created: now, expires: now.Add(ss.ttl), challenges: map[string]challenge{}}
	ss.mu.Lock()
	for id, o := range ss.m {
		if now.After(o.expires) {
			delete(ss.m, id)
		}
	}
	if len(ss.m) >= maxSessions {
		var oldest *session
		for _, o := range ss.m {
			if oldest == nil || o.created.Before(oldest.created) {
				oldest = o
			}
		}
		delete(ss.m, oldest.id)
	}
	ss.m[s.id] = s
	ss.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: s.id, Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode, MaxAge: int(ss.ttl.Seconds())})
	return s
}

// drop ends a session.
func (ss *sessions) drop(s *session) {
	ss.mu.Lock()
	delete(ss.m, s.id)
	ss.mu.Unlock()
}

// newChallenge returns a fresh challenge for purpose, kept in s.
func (ss *sessions) newChallenge(s *session, purpose, officer string) string {
	c := randomB64(32)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	now := time.Now()
	for k, v := range s.challenges {
		if now.After(v.expires) {
			delete(s.challenges, k)
		}
	}
	if len(s.challenges) >= 16 {
		clear(s.challenges)
	}
	s.challenges[c] = challenge{purpose: purpose, officer: officer, expires: now.Add(challengeTTL)}
	return c
}

// takeChallenge spends a challenge given for purpose and officer.
func (ss *sessions) takeChallenge(s *session, c, purpose, officer string) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	v, ok := s.challenges[c]
	delete(s.challenges, c)
	return ok && v.purpose == purpose && v.officer == officer && time.Now().Before(v.expires)
}

// signIn makes s the officer's, with a new id and CSRF token (no session
// fixation), and sets the new cookie.
func (ss *sessions) signIn(w http.ResponseWriter, s *session, officer string) *session {
	ss.drop(s)
	n := ss.create(w)
	ss.mu.Lock()
	n.officer = officer
	ss.mu.Unlock()
	return n
}

// apiError is an error with the HTTP status and the gRPC code name the page
// shows.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &apiError{status: http.StatusBadRequest, code: codes.InvalidArgument.String(), msg: fmt.Sprintf(format, args...)}
}

// writeJSON writes v as JSON.
func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(v)
}

// writeError writes err as {"error","code"} with the matching status.
func writeError(w http.ResponseWriter, err error) {
	status, code := http.StatusInternalServerError, codes.Internal.String()
	var ae *apiError
	if errors.As(err, &ae) {
		status, code = ae.status, ae.code
	} else if k := kms.ErrorKindOf(err); k != nil {
		code = k.Code.String()
		switch k.Code {
		case codes.InvalidArgument, codes.OutOfRange:
			status = http.StatusBadRequest
		case codes.NotFound:
			status = http.StatusNotFound
		case codes.AlreadyExists, codes.Aborted:
			status = http.StatusConflict
		case codes.FailedPrecondition:
			status = http.StatusPreconditionFailed
		case codes.PermissionDenied:
			status = http.StatusForbidden
		case codes.Unauthenticated:
			status = http.StatusUnauthorized
		case codes.ResourceExhausted:
			status = http.StatusTooManyRequests
		case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
			status = http.StatusServiceUnavailable
		}
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error(), "code": code})
}

// sameOrigin checks the Origin header of a state-changing request.
func (s *Server) sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	return o != "" && s.origins[o]
}

type postHandler func(w http.ResponseWriter, r *http.Request, sess *session, body []byte) (any, error)

// post wraps a POST handler: JSON only, from the console's own origin, in a
// session whose CSRF token the request echoes.
func (s *Server) post(h postHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		sess := s.sessions.get(r)
		switch {
		case mt != "application/json":
			writeError(w, &apiError{status: http.StatusUnsupportedMediaType, code: codes.InvalidArgument.String(), msg: "send application/json"})
			return
		case !s.sameOrigin(r):
			writeError(w, &apiError{status: http.StatusForbidden, code: codes.PermissionDenied.String(), msg: "request from another origin"})
			return
		case sess == nil || subtle.ConstantTimeCompare([]byte(r.Header.Get(csrfHeader)), []byte(sess.csrf)) != 1:
			writeError(w, &apiError{status: http.StatusForbidden, code: codes.PermissionDenied.String(), msg: "no session or a wrong CSRF token: reload the page"})
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		if err != nil || len(body) > maxBody {
			writeError(w, badRequest("the request body is unreadable or larger than %d bytes", maxBody))
			return
		}
		v, err := h(w, r, sess, body)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, v)
	}
}

// signedIn makes a post handler refuse a session with no officer.
func (s *Server) signedIn(h postHandler) postHandler {
	return func(w http.ResponseWriter, r *http.Request, sess *session, body []byte) (any, error) {
		if sess.officer == "" {
			return nil, &apiError{status: http.StatusUnauthorized, code: codes.Unauthenticated.String(), msg: "sign in"}
		}
		return h(w, r, sess, body)
	}
}

// get wraps a read: it needs a signed-in officer.
func (s *Server) get(h func(r *http.Request, p kms.Principal) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, ok := s.principal(r)
		if !ok {
			writeError(w, &apiError{status: http.StatusUnauthorized, code: codes.Unauthenticated.String(), msg: "sign in"})
			return
		}
		v, err := h(r, p)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, v)
	}
}

// principal is the signed-in officer as the service sees it.
func (s *Server) principal(r *http.Request) (kms.Principal, bool) {
	sess := s.sessions.get(r)
	if sess == nil || sess.officer == "" {
		return kms.Principal{}, false
	}
	return officerPrincipal(sess.officer), true
}

func officerPrincipal(officer string) kms.Principal {
	return kms.Principal{Name: "console:" + officer, ConsoleOfficer: officer}
}

// decode unmarshals a request body strictly.
func decode(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return badRequest("the request is not the JSON expected: %v", err)
	}
	return nil
}
