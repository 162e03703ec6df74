package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
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
	// maxAnonymous bounds the sessions no officer signed in to (anyone
	// who reaches the page makes one; the oldest goes first), and
	// maxSignedIn those an officer did (only a registered security key
	// makes one): a flood of anonymous sessions never signs an officer
	// out.
	maxAnonymous = 4096
	// maxAnonymousPerAddr bounds the anonymous sessions of one source
	// address (an IPv6 /64 counts as one): a flood from one place churns
	// only its own sessions, and when all anonymous sessions are taken the
	// oldest of the address holding most goes, so an officer's sign-in in
	// progress elsewhere survives.
	maxAnonymousPerAddr = 64
	maxSignedIn         = 256
	// maxPerOfficer bounds one officer's signed-in sessions (the oldest
	// goes first), so that one officer never signs another out.
	maxPerOfficer = 8
	// maxPrepared bounds the registration statements one session
	// prepared and may submit (register/statement, register/finish).
	maxPrepared = 4
)

type session struct {
	id, csrf   string
	officer    string
	addr       string // source address group (clientAddr)
	created    time.Time
	expires    time.Time
	challenges map[string]challenge // b64u challenge → what it is for
	// prepared: SHA-256 of the registration statements this session
	// prepared, the only ones its register/finish submits.
	prepared map[[32]byte]prepared
}

type challenge struct {
	purpose, officer string
	expires          time.Time
	// enrolment: a registration's enrolment code (register/begin).
	enrolment []byte
}

// prepared is a registration statement a session prepared.
type prepared struct {
	expires   time.Time
	enrolment []byte
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

// clientAddr groups a request's source address: the IPv4 address, or the
// IPv6 /64.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return host
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// create starts an anonymous session for a client at addr (clientAddr)
// and sets its cookie.
func (ss *sessions) create(w http.ResponseWriter, addr string) *session {
	now := time.Now()
	s := &session{id: randomB64(32), csrf: randomB64(32), addr: addr, created: now, expires: now.Add(ss.ttl), challenges: map[string]challenge{}}
	ss.mu.Lock()
	ss.add(s, "")
	ss.mu.Unlock()
	ss.setCookie(w, s)
	return s
}

// setCookie names s in the response's cookie.
func (ss *sessions) setCookie(w http.ResponseWriter, s *session) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: s.id, Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode, MaxAge: int(ss.ttl.Seconds())})
}

// add keeps s as officer's session ("" anonymous). It first drops expired
// sessions, then makes room: when s's group (its officer's sessions, or
// its source address's anonymous ones) is at its bound, the group's
// oldest goes; else, when its kind is at its bound, the oldest of the
// largest group of that kind. ss.mu is held.
func (ss *sessions) add(s *session, officer string) {
	now := time.Now()
	// group: the sessions of the same kind sharing s's officer (signed
	// in) or source address (anonymous); byGroup counts each group of
	// that kind, to find the largest when the kind is at its bound.
	group := func(o *session) string {
		if officer != "" {
			return o.officer
		}
		return o.addr
	}
	limit, groupLimit := maxAnonymous, maxAnonymousPerAddr
	if officer != "" {
		limit, groupLimit = maxSignedIn, maxPerOfficer
	}
	s.officer = officer
	n := 0
	byGroup := map[string]int{}
	oldestOf := map[string]*session{}
	for id, o := range ss.m {
		if now.After(o.expires) {
			delete(ss.m, id)
			continue
		}
		if (o.officer == "") != (officer == "") {
			continue
		}
		n++
		g := group(o)
		byGroup[g]++
		if old := oldestOf[g]; old == nil || o.created.Before(old.created) {
			oldestOf[g] = o
		}
	}
	switch {
	case byGroup[group(s)] >= groupLimit:
		delete(ss.m, oldestOf[group(s)].id)
	case n >= limit:
		largest := ""
		for g, c := range byGroup {
			if c > byGroup[largest] || (c == byGroup[largest] && g < largest) {
				largest = g
			}
		}
		delete(ss.m, oldestOf[largest].id)
	}
	ss.m[s.id] = s
}

// drop ends a session.
func (ss *sessions) drop(s *session) {
	ss.mu.Lock()
	delete(ss.m, s.id)
	ss.mu.Unlock()
}

// newChallenge returns a fresh challenge for purpose, kept in s.
func (ss *sessions) newChallenge(s *session, purpose, officer string) string {
	return ss.newChallengeWith(s, challenge{purpose: purpose, officer: officer})
}

// newChallengeWith returns a fresh challenge for what c says, kept in s.
func (ss *sessions) newChallengeWith(s *session, c0 challenge) string {
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
	c0.expires = now.Add(challengeTTL)
	s.challenges[c] = c0
	return c
}

// takeChallenge spends a challenge given for purpose and officer.
func (ss *sessions) takeChallenge(s *session, c, purpose, officer string) bool {
	_, ok := ss.takeChallengeWith(s, c, purpose, officer)
	return ok
}

// takeChallengeWith is takeChallenge, returning what the challenge was
// given with.
func (ss *sessions) takeChallengeWith(s *session, c, purpose, officer string) (challenge, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	v, ok := s.challenges[c]
	delete(s.challenges, c)
	return v, ok && v.purpose == purpose && v.officer == officer && time.Now().Before(v.expires)
}

// signIn makes s the officer's, with a new id and CSRF token (no session
// fixation), and sets the new cookie.
func (ss *sessions) signIn(w http.ResponseWriter, s *session, officer string) *session {
	now := time.Now()
	n := &session{id: randomB64(32), csrf: randomB64(32), addr: s.addr, created: now, expires: now.Add(ss.ttl), challenges: map[string]challenge{}}
	ss.mu.Lock()
	delete(ss.m, s.id)
	ss.add(n, officer)
	ss.mu.Unlock()
	ss.setCookie(w, n)
	return n
}

// prepare remembers that s prepared the registration statement b, with
// the officer's enrolment code.
func (ss *sessions) prepare(s *session, b, enrolment []byte) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	now := time.Now()
	for h, p := range s.prepared {
		if now.After(p.expires) || len(s.prepared) >= maxPrepared {
			delete(s.prepared, h)
		}
	}
	if s.prepared == nil {
		s.prepared = map[[32]byte]prepared{}
	}
	s.prepared[sha256.Sum256(b)] = prepared{expires: now.Add(challengeTTL), enrolment: enrolment}
}

// takePrepared spends s's note that it prepared b, returning the
// enrolment code it was prepared with.
func (ss *sessions) takePrepared(s *session, b []byte) ([]byte, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	h := sha256.Sum256(b)
	p, ok := s.prepared[h]
	delete(s.prepared, h)
	return p.enrolment, ok && time.Now().Before(p.expires)
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

// Anonymous registrations a console submits: registrationBurst at once,
// then one per registrationEvery. Each becomes a proposal on the cluster
// (which bounds them too, kms.applyPropose); a registration is rare, so a
// page that submits many is someone else.
const (
	registrationBurst = 5
	registrationEvery = 20 * time.Second
)

// bucket is a token bucket: burst tokens, one more every every.
type bucket struct {
	mu     sync.Mutex
	burst  float64
	every  time.Duration
	tokens float64
	last   time.Time
}

// take spends a token at now, if there is one.
func (b *bucket) take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last.IsZero() {
		b.tokens = b.burst
	} else if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.burst, b.tokens+float64(d)/float64(b.every))
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
