package console

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// b64u is binary data as base64url without padding in JSON, as WebAuthn
// gives it.
type b64u []byte

func (b b64u) MarshalJSON() ([]byte, error) {
	return json.Marshal(base64.RawURLEncoding.EncodeToString(b))
}

func (b *b64u) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	v, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// assertionJSON is an assertion as the page sends it.
type assertionJSON struct {
	CredentialID      b64u `json:"credential_id"`
	AuthenticatorData b64u `json:"authenticator_data"`
	ClientDataJSON    b64u `json:"client_data_json"`
	Signature         b64u `json:"signature"`
}

func (a *assertionJSON) proto() *custosv1.WebAuthnAssertion {
	if a == nil {
		return nil
	}
	return &custosv1.WebAuthnAssertion{CredentialId: a.CredentialID, AuthenticatorData: a.AuthenticatorData,
		ClientDataJson: a.ClientDataJSON, Signature: a.Signature}
}

// officerCredentials returns the named officer's credentials now.
func (s *Server) officerCredentials(name string) ([]*custosv1.WebAuthnCredential, bool) {
	for _, o := range s.d.Service.State().Governance().GetOfficers() {
		if o.GetName() == name {
			return o.GetCredentials(), true
		}
	}
	return nil, false
}

func (s *Server) userVerification() string {
	if s.cfg.RequireUserVerification {
		return "required"
	}
	return "preferred"
}

func (s *Server) getSession(w http.ResponseWriter, r *http.Request) {
	sess := s.sessions.get(r)
	if sess == nil {
		sess = s.sessions.create(w, clientAddr(r))
	}
	st := s.d.Service.State()
	writeJSON(w, map[string]any{"officer": sess.officer, "csrf": sess.csrf, "rp_id": s.cfg.RPID,
		"cluster_id": st.ClusterID(), "genesis": st.Governance().GetGenesisSha256(), "node": s.cfg.Node, "version": s.cfg.Version,
		"user_verification": s.userVerification()})
}

func (s *Server) signinBegin(w http.ResponseWriter, r *http.Request, sess *session, body []byte) (any, error) {
	var req struct {
		Officer string `json:"officer"`
	}
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	creds, ok := s.officerCredentials(req.Officer)
	if !ok || len(creds) == 0 {
		return nil, &apiError{status: http.StatusNotFound, code: codes.NotFound.String(),
			msg: "no officer " + quote(req.Officer) + " with a security key: register one first"}
	}
	var ids []b64u
	for _, c := range creds {
		ids = append(ids, c.GetCredentialId())
	}
	return map[string]any{"challenge": s.sessions.newChallenge(sess, "signin", req.Officer), "rp_id": s.cfg.RPID,
		"credential_ids": nonNil(ids), "user_verification": s.userVerification()}, nil
}

func (s *Server) signinFinish(w http.ResponseWriter, r *http.Request, sess *session, body []byte) (any, error) {
	var req struct {
		Officer   string         `json:"officer"`
		Assertion *assertionJSON `json:"assertion"`
	}
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	denied := &apiError{status: http.StatusUnauthorized, code: codes.Unauthenticated.String(), msg: "sign-in refused"}
	if req.Assertion == nil {
		return nil, denied
	}
	var cd struct {
		Challenge string `json:"challenge"`
	}
	if json.Unmarshal(req.Assertion.ClientDataJSON, &cd) != nil || !s.sessions.takeChallenge(sess, cd.Challenge, "signin", req.Officer) {
		return nil, &apiError{status: http.StatusUnauthorized, code: codes.Unauthenticated.String(), msg: "sign-in refused: the challenge is not one this page gave (or it expired)"}
	}
	ch, _ := base64.RawURLEncoding.DecodeString(cd.Challenge)
	creds, _ := s.officerCredentials(req.Officer)
	for _, c := range creds {
		if string(c.GetCredentialId()) != string(req.Assertion.CredentialID) {
			continue
		}
		if s.cfg.RequireUserVerification && !c.GetRequireUserVerification() {
			c = cloneWithUV(c)
		}
		n, err := governance.VerifyAssertion(c, ch, req.Assertion.proto())
		if err != nil {
			s.d.Log.Warn("console sign-in refused", "officer", req.Officer, "err", err)
			return nil, &apiError{status: http.StatusUnauthorized, code: codes.Unauthenticated.String(), msg: "sign-in refused: " + err.Error()}
		}
		if !s.counterAdvances(c.GetCredentialId(), n) {
			return nil, &apiError{status: http.StatusUnauthorized, code: codes.Unauthenticated.String(),
				msg: "sign-in refused: the security key's signature counter did not advance (a cloned key, or a replayed assertion)"}
		}
		ns := s.sessions.signIn(w, sess, req.Officer)
		s.d.Log.Info("console sign-in", "officer", req.Officer)
		return map[string]any{"officer": req.Officer, "csrf": ns.csrf}, nil
	}
	return nil, denied
}

// counterAdvances checks a sign-in's signature counter against the newest
// the cluster accepted (statements) and the newest this console saw
// (sign-ins, which are not replicated), and keeps it.
func (s *Server) counterAdvances(id []byte, n uint32) bool {
	s.countersMu.Lock()
	defer s.countersMu.Unlock()
	last := max(s.d.Service.State().CredentialCounter(id), s.counters[string(id)])
	if !governance.CounterAdvances(last, n) {
		return false
	}
	s.counters[string(id)] = n
	return true
}

// cloneWithUV returns c requiring user verification (the console's own
// policy for sign-in may be stricter than the credential's).
func cloneWithUV(c *custosv1.WebAuthnCredential) *custosv1.WebAuthnCredential {
	out := proto.Clone(c).(*custosv1.WebAuthnCredential)
	out.RequireUserVerification = true
	return out
}

func (s *Server) signout(w http.ResponseWriter, r *http.Request, sess *session, body []byte) (any, error) {
	s.sessions.drop(sess)
	s.sessions.create(w, clientAddr(r))
	return map[string]any{}, nil
}

func (s *Server) registerBegin(w http.ResponseWriter, r *http.Request, sess *session, body []byte) (any, error) {
	var req struct {
		Officer   string `json:"officer"`
		Enrolment string `json:"enrolment"`
	}
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	creds, ok := s.officerCredentials(req.Officer)
	if !ok {
		return nil, &apiError{status: http.StatusNotFound, code: codes.NotFound.String(), msg: "no officer " + quote(req.Officer)}
	}
	// The officer's enrolment code (custos officer enrol), checked now so
	// that a wrong one is said before any key is touched; the cluster
	// checks it again.
	code, err := governance.DecodeEnrolment(req.Enrolment)
	if err == nil {
		st := s.d.Service.State()
		err = governance.VerifyEnrolment(st.OfficerKey(req.Officer), st.ClusterID(), req.Officer, code, time.Now())
	}
	if err != nil {
		return nil, &apiError{status: http.StatusForbidden, code: codes.PermissionDenied.String(),
			msg: "registration refused: " + err.Error() + " — run custos officer enrol --officer " + req.Officer + " with your officer key and paste the code it prints"}
	}
	var exclude []b64u
	for _, c := range creds {
		exclude = append(exclude, c.GetCredentialId())
	}
	uid := sha256.Sum256([]byte(s.d.Service.State().ClusterID() + "\x00" + req.Officer))
	return map[string]any{"challenge": s.sessions.newChallengeWith(sess, challenge{purpose: "register", officer: req.Officer, enrolment: code}), "rp_id": s.cfg.RPID,
		"rp_name": "custos", "user_id": b64u(uid[:16]), "user_name": req.Officer, "exclude_credentials": nonNil(exclude)}, nil
}

// statementJSON is a statement prepared for signing.
type statementJSON struct {
	Statement   b64u   `json:"statement"`
	Challenge   b64u   `json:"challenge"`
	ID          string `json:"id"`
	Description string `json:"description"`
	Operation   string `json:"operation"`
	Needed      int    `json:"needed"`
}

// prepare marshals st for signing.
func (s *Server) prepare(st *custosv1.Statement) (*statementJSON, error) {
	b, err := governance.Marshal(st)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	needed := 1
	if g := s.d.Service.State().Governance(); governance.Need(st) == governance.Quorum {
		needed = int(g.GetQuorum())
	}
	return &statementJSON{Statement: b, Challenge: governance.SignedDigest(b), ID: kms.ProposalID(b),
		Description: governance.Describe(st), Operation: governance.OperationName(st), Needed: needed}, nil
}

// newStatement starts a statement for this cluster (and its restore).
func (s *Server) newStatement(comment string) (*custosv1.Statement, error) {
	g := s.d.Service.State().Governance()
	st, err := governance.NewStatement(g.GetClusterId(), s.cfg.StatementTTL, comment)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	st.RestoreId = g.GetRestoreId()
	return st, nil
}

func (s *Server) registerStatement(w http.ResponseWriter, r *http.Request, sess *session, body []byte) (any, error) {
	var req struct {
		Officer                 string `json:"officer"`
		Challenge               string `json:"challenge"`
		Label                   string `json:"label"`
		CredentialID            b64u   `json:"credential_id"`
		PublicKey               b64u   `json:"public_key"`
		RequireUserVerification bool   `json:"require_user_verification"`
	}
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	if _, ok := s.officerCredentials(req.Officer); !ok {
		return nil, &apiError{status: http.StatusNotFound, code: codes.NotFound.String(), msg: "no officer " + quote(req.Officer)}
	}
	ch, ok := s.sessions.takeChallengeWith(sess, req.Challenge, "register", req.Officer)
	if !ok {
		return nil, &apiError{status: http.StatusUnauthorized, code: codes.Unauthenticated.String(),
			msg: "registration refused: the challenge is not one this page gave for this officer (or it expired): start again"}
	}
	st, err := s.newStatement("security key registered in the officer console")
	if err != nil {
		return nil, err
	}
	c := &custosv1.WebAuthnCredential{CredentialId: req.CredentialID, PublicKey: req.PublicKey, RpId: s.cfg.RPID,
		RequireUserVerification: req.RequireUserVerification || s.cfg.RequireUserVerification, Label: req.Label}
	if err := governance.ValidateCredential(c); err != nil {
		return nil, badRequest("%v", err)
	}
	st.Operation = &custosv1.Statement_AddOfficerCredential{AddOfficerCredential: &custosv1.AddOfficerCredential{Officer: req.Officer, Credential: c}}
	out, err := s.prepare(st)
	if err != nil {
		return nil, err
	}
	s.sessions.prepare(sess, out.Statement, ch.enrolment)
	return out, nil
}

func (s *Server) registerFinish(w http.ResponseWriter, r *http.Request, sess *session, body []byte) (any, error) {
	var req struct {
		Statement b64u           `json:"statement"`
		Proof     *assertionJSON `json:"proof"`
	}
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	if req.Proof == nil {
		return nil, badRequest("register/finish takes the registration statement and the new key's proof")
	}
	enrolment, ok := s.sessions.takePrepared(sess, req.Statement)
	if !ok {
		// Only what register/statement wrote for this session (its
		// officer, this console's rpId, a fixed comment and lifetime):
		// the page is no way to propose anything else unsigned.
		return nil, &apiError{status: http.StatusForbidden, code: codes.PermissionDenied.String(),
			msg: "registration refused: the statement is not the one this page prepared for this session (or it expired): start again"}
	}
	// What the cluster would refuse (a proof by another key, no room for
	// this officer's registration) is refused before it costs a place in
	// the pace below.
	propose := &raftlogv1.Command{TimeUnixNano: time.Now().UnixNano(), Op: &raftlogv1.Command_Propose{Propose: &raftlogv1.Propose{
		Statement: &custosv1.SignedStatement{Statement: req.Statement}, Proof: req.Proof.proto(), Enrolment: enrolment}}}
	if err := s.d.Service.State().CheckPropose(propose); err != nil {
		return nil, err
	}
	if !s.registrations.take(time.Now()) {
		return nil, &apiError{status: http.StatusTooManyRequests, code: codes.ResourceExhausted.String(),
			msg: "registration refused: too many security keys were registered on this console just now; try again in a minute"}
	}
	// The proposer is the anonymous page: only the credential's proof
	// says who holds the key, and the officers who sign decide.
	p := kms.Principal{Name: "console:registration"}
	res, err := s.d.Service.Propose(r.Context(), p, &custosv1.ProposeRequest{
		Statement: &custosv1.SignedStatement{Statement: req.Statement}, Proof: req.Proof.proto(), Enrolment: enrolment})
	if err != nil {
		return nil, err
	}
	return proposeJSON(res), nil
}

func (s *Server) prepareStatement(w http.ResponseWriter, r *http.Request, sess *session, body []byte) (any, error) {
	var req struct {
		Operation    string          `json:"operation"`
		Comment      string          `json:"comment"`
		RequestID    string          `json:"request_id"`
		Uses         uint32          `json:"uses"`
		TTLSeconds   int64           `json:"ttl_seconds"`
		Key          string          `json:"key"`
		Policy       json.RawMessage `json:"policy"`
		Officer      string          `json:"officer"`
		CredentialID b64u            `json:"credential_id"`
		Node         string          `json:"node"`
		TransportKey string          `json:"transport_key_fingerprint"`
		IdentityKey  string          `json:"identity_key_fingerprint"`
		Hash         string          `json:"hash"`
	}
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	comment := req.Comment
	if comment == "" {
		comment = "signed in the officer console by " + sess.officer
	}
	st, err := s.newStatement(comment)
	if err != nil {
		return nil, err
	}
	switch req.Operation {
	case "approve_request":
		st.Operation = &custosv1.Statement_ApproveRequest{ApproveRequest: &custosv1.ApproveRequest{RequestId: req.RequestID, Uses: req.Uses, TtlSeconds: req.TTLSeconds}}
	case "deny_request":
		st.Operation = &custosv1.Statement_DenyRequest{DenyRequest: &custosv1.DenyRequest{RequestId: req.RequestID}}
	case "revoke_key":
		st.Operation = &custosv1.Statement_RevokeKey{RevokeKey: &custosv1.RevokeKey{Key: req.Key}}
	case "disable_key":
		st.Operation = &custosv1.Statement_DisableKey{DisableKey: &custosv1.DisableKey{Key: req.Key}}
	case "enable_key":
		st.Operation = &custosv1.Statement_EnableKey{EnableKey: &custosv1.EnableKey{Key: req.Key}}
	case "set_policy":
		pol := &custosv1.KeyPolicy{}
		if err := (protojson.UnmarshalOptions{}).Unmarshal(req.Policy, pol); err != nil {
			return nil, badRequest("policy: %v", err)
		}
		if err := kms.ValidatePolicy(pol); err != nil {
			return nil, err
		}
		st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: req.Key, Policy: pol}}
	case "admit_node":
		h := custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA256
		switch strings.ToLower(req.Hash) {
		case "", "sha256":
		case "sha1":
			h = custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA1
		default:
			return nil, badRequest("hash %q: sha256 or sha1", req.Hash)
		}
		norm := func(s string) string { return strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), ":", "")) }
		st.Operation = &custosv1.Statement_AdmitNode{AdmitNode: &custosv1.AdmitNode{Node: req.Node,
			TransportKeyFingerprint: norm(req.TransportKey), IdentityKeyFingerprint: norm(req.IdentityKey), Hash: h}}
	case "remove_officer_credential":
		st.Operation = &custosv1.Statement_RemoveOfficerCredential{RemoveOfficerCredential: &custosv1.RemoveOfficerCredential{Officer: req.Officer, CredentialId: req.CredentialID}}
	default:
		return nil, badRequest("unknown operation %q", req.Operation)
	}
	return s.prepare(st)
}

func (s *Server) signProposal(w http.ResponseWriter, r *http.Request, sess *session, body []byte) (any, error) {
	var req struct {
		Statement b64u           `json:"statement"`
		Assertion *assertionJSON `json:"assertion"`
	}
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	if len(req.Statement) == 0 || req.Assertion == nil {
		return nil, badRequest("a statement and an assertion are needed")
	}
	sig := &custosv1.OfficerSignature{Officer: sess.officer, Webauthn: req.Assertion.proto()}
	res, err := s.d.Service.Propose(r.Context(), officerPrincipal(sess.officer), &custosv1.ProposeRequest{
		Statement: &custosv1.SignedStatement{Statement: req.Statement, Signatures: []*custosv1.OfficerSignature{sig}}})
	if err != nil {
		return nil, err
	}
	s.d.Log.Info("console statement signed", "officer", sess.officer, "applied", res.GetApplied() != nil)
	return proposeJSON(res), nil
}

func proposeJSON(res *custosv1.ProposeResponse) map[string]any {
	out := map[string]any{}
	if p := res.GetProposal(); p != nil {
		out["proposal"] = proposalJSON(p)
	}
	if a := res.GetApplied(); a != nil {
		out["applied"] = map[string]any{"result": a.Result, "signers": a.Signers, "ledger_seq": a.LedgerSeq, "grant_id": a.GrantId}
	}
	return out
}

func quote(s string) string { b, _ := json.Marshal(s); return string(b) }
