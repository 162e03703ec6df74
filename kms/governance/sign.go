package governance

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"sort"
	"time"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// digest returns SHA-256(SignatureContext || statement).
func digest(statement []byte) []byte {
	h := sha256.New()
	h.Write([]byte(SignatureContext))
	h.Write(statement)
	return h.Sum(nil)
}

// Sign signs statement bytes as officer with signer, which must hold an ECDSA
// P-256 key (a key file's *ecdsa.PrivateKey or a PKCS#11 token's
// crypto11.Signer). It refuses bytes that do not Parse, and checks the
// signature it got against the signer's public key before returning it.
func Sign(signer crypto.Signer, officer string, statement []byte) (*custosv1.OfficerSignature, error) {
	pub, err := officerSigner(signer, officer)
	if err != nil {
		return nil, err
	}
	if _, err := Parse(statement); err != nil {
		return nil, err
	}
	sig, err := signer.Sign(rand.Reader, digest(statement), crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("governance: officer %q: signing: %w", officer, err)
	}
	if !ecdsa.VerifyASN1(pub, digest(statement), sig) {
		return nil, fmt.Errorf("%w: officer %q: the signer returned a signature that does not verify", ErrBadSignature, officer)
	}
	return &custosv1.OfficerSignature{Officer: officer, Signature: sig}, nil
}

// VerifyECDSA reports whether sig, an ASN.1 DER ECDSA signature, is valid for
// message under pub with SHA-256. pub must be a P-256 key. This is the
// primitive OfficerSet.Verify applies to SignatureContext || statement.
func VerifyECDSA(pub *ecdsa.PublicKey, message, sig []byte) bool {
	if pub == nil || pub.Curve != elliptic.P256() {
		return false
	}
	h := sha256.Sum256(message)
	return ecdsa.VerifyASN1(pub, h[:], sig)
}

// OfficerSet is an immutable set of officers (name → P-256 public key and
// WebAuthn credentials) and the quorum M of the N officers.
type OfficerSet struct {
	keys   map[string]*ecdsa.PublicKey
	creds  map[string]*custosv1.WebAuthnCredential // by string(credential id)
	owner  map[string]string                       // credential id → officer
	names  []string                                // sorted
	quorum uint32
}

// SignatureUse is one signature that counted: the officer and, for a
// WebAuthn assertion, the credential and the signature counter it carried.
type SignatureUse struct {
	Officer      string
	CredentialID []byte // nil for the officer's public_key
	SignCount    uint32
}

// NewOfficerSet checks officers and quorum: at least one officer, each with a
// unique valid name and a unique parseable P-256 public key, valid WebAuthn
// credentials (ValidateCredential) whose ids no other credential has, and
// 1 <= quorum <= len(officers).
func NewOfficerSet(officers []*custosv1.Officer, quorum uint32) (*OfficerSet, error) {
	return newOfficerSet("officers", officers, quorum)
}

// NewOfficerSetFromGovernance is NewOfficerSet(g.Officers, g.Quorum).
func NewOfficerSetFromGovernance(g *custosv1.Governance) (*OfficerSet, error) {
	return newOfficerSet("governance.officers", g.GetOfficers(), g.GetQuorum())
}

func newOfficerSet(field string, officers []*custosv1.Officer, quorum uint32) (*OfficerSet, error) {
	if len(officers) == 0 {
		return nil, fmt.Errorf("%w: %s is empty", ErrMalformed, field)
	}
	s := &OfficerSet{keys: make(map[string]*ecdsa.PublicKey, len(officers)), quorum: quorum,
		creds: map[string]*custosv1.WebAuthnCredential{}, owner: map[string]string{}}
	// ders: every officer key and credential key seen, each naming whose
	// it is. One key bound twice would let one signature count for two
	// officers (or twice for one), so every key appears once.
	var ders [][]byte
	var whose []string
	for i, o := range officers {
		if o == nil {
			return nil, fmt.Errorf("%w: %s[%d] is empty", ErrMalformed, field, i)
		}
		if err := checkIdent(fmt.Sprintf("%s[%d].name", field, i), o.GetName()); err != nil {
			return nil, err
		}
		if _, dup := s.keys[o.GetName()]; dup {
			return nil, fmt.Errorf("%w: %s: officer %q listed twice", ErrMalformed, field, o.GetName())
		}
		pub, err := ParsePublicKey(o.GetPublicKey())
		if err != nil {
			return nil, fmt.Errorf("%w: %s: officer %q: public key: %v", ErrMalformed, field, o.GetName(), err)
		}
		der := MarshalPublicKey(pub)
		for j, d := range ders {
			if bytes.Equal(d, der) {
				return nil, fmt.Errorf("%w: %s: officer %q's public key is also %s", ErrMalformed, field, o.GetName(), whose[j])
			}
		}
		ders, whose = append(ders, der), append(whose, fmt.Sprintf("officer %q's key", o.GetName()))
		s.keys[o.GetName()] = pub
		s.names = append(s.names, o.GetName())
		if len(o.GetCredentials()) > MaxCredentialsPerOfficer {
			return nil, fmt.Errorf("%w: %s: officer %q has more than %d credentials", ErrMalformed, field, o.GetName(), MaxCredentialsPerOfficer)
		}
		for _, c := range o.GetCredentials() {
			if err := ValidateCredential(c); err != nil {
				return nil, fmt.Errorf("%s: officer %q: %w", field, o.GetName(), err)
			}
			id := string(c.GetCredentialId())
			if other, dup := s.owner[id]; dup {
				return nil, fmt.Errorf("%w: %s: officers %q and %q have the same credential id", ErrMalformed, field, other, o.GetName())
			}
			cpub, err := ParsePublicKey(c.GetPublicKey())
			if err != nil {
				return nil, fmt.Errorf("%w: %s: officer %q: credential %s: %v", ErrMalformed, field, o.GetName(), CredentialIDString(c.GetCredentialId()), err)
			}
			cder := MarshalPublicKey(cpub)
			for j, d := range ders {
				if bytes.Equal(d, cder) {
					return nil, fmt.Errorf("%w: %s: officer %q: the public key of credential %s is also %s",
						ErrMalformed, field, o.GetName(), CredentialIDString(c.GetCredentialId()), whose[j])
				}
			}
			ders = append(ders, cder)
			whose = append(whose, fmt.Sprintf("officer %q's credential %s", o.GetName(), CredentialIDString(c.GetCredentialId())))
			s.creds[id], s.owner[id] = c, o.GetName()
		}
	}
	if quorum < 1 || int(quorum) > len(officers) {
		return nil, fmt.Errorf("%w: %s: quorum %d is not in 1..%d", ErrMalformed, field, quorum, len(officers))
	}
	sort.Strings(s.names)
	return s, nil
}

// MaxCredentialsPerOfficer bounds the WebAuthn credentials of one officer.
const MaxCredentialsPerOfficer = 16

// Quorum returns M, the signatures a loosening statement needs.
func (s *OfficerSet) Quorum() uint32 { return s.quorum }

// Names returns the officers' names, sorted.
func (s *OfficerSet) Names() []string { return append([]string(nil), s.names...) }

// PublicKey returns the named officer's key, or nil.
func (s *OfficerSet) PublicKey(name string) *ecdsa.PublicKey { return s.keys[name] }

// Credential returns the WebAuthn credential with the given id and the
// officer it is bound to, or nil.
func (s *OfficerSet) Credential(id []byte) (*custosv1.WebAuthnCredential, string) {
	c := s.creds[string(id)]
	if c == nil {
		return nil, ""
	}
	return c, s.owner[string(id)]
}

// Needed returns how many signatures st needs from this set.
func (s *OfficerSet) Needed(st *custosv1.Statement) int {
	if Need(st) == Quorum {
		return int(s.quorum)
	}
	return 1
}

// CheckSignature checks one signature over statement bytes: by the
// officer's public_key, or, when it carries a WebAuthn assertion, by one of
// that officer's credentials (VerifyAssertion). It refuses an unknown
// officer (ErrUnknownOfficer), a credential that is not the officer's, a
// signature with both or neither form, and an invalid signature
// (ErrBadSignature). It checks no counter: the caller keeps them
// (CounterAdvances).
func (s *OfficerSet) CheckSignature(statement []byte, sig *custosv1.OfficerSignature) (SignatureUse, error) {
	if s == nil || len(s.keys) == 0 {
		return SignatureUse{}, fmt.Errorf("%w: no officer set", ErrUnknownOfficer)
	}
	if sig == nil {
		return SignatureUse{}, fmt.Errorf("%w: empty signature", ErrMalformed)
	}
	return s.check(digest(statement), sig)
}

func (s *OfficerSet) check(d []byte, sig *custosv1.OfficerSignature) (SignatureUse, error) {
	name := sig.GetOfficer()
	pub := s.keys[name]
	if pub == nil {
		return SignatureUse{}, fmt.Errorf("%w: %q", ErrUnknownOfficer, name)
	}
	use := SignatureUse{Officer: name}
	if a := sig.GetWebauthn(); a != nil {
		if len(sig.GetSignature()) != 0 {
			return use, fmt.Errorf("%w: officer %q: a signature and a WebAuthn assertion in one", ErrMalformed, name)
		}
		c, owner := s.Credential(a.GetCredentialId())
		if c == nil || owner != name {
			return use, fmt.Errorf("%w: officer %q: the credential is not one of the officer's", ErrBadSignature, name)
		}
		n, err := VerifyAssertion(c, d, a)
		if err != nil {
			return use, fmt.Errorf("officer %q: %w", name, err)
		}
		use.CredentialID, use.SignCount = bytes.Clone(c.GetCredentialId()), n
		return use, nil
	}
	if !ecdsa.VerifyASN1(pub, d, sig.GetSignature()) {
		return use, fmt.Errorf("%w: officer %q", ErrBadSignature, name)
	}
	return use, nil
}

// Verify checks a signed statement for the cluster clusterID at time now and
// returns the parsed statement and the names (sorted) of the officers whose
// signatures counted. In order, it refuses: bytes that do not Parse
// (ErrMalformed); another cluster (ErrWrongCluster); now after not_after
// (ErrExpired); then, signature by signature, an unknown officer (ErrUnknownOfficer), an
// officer who already signed (ErrDuplicateSigner), an invalid signature
// or WebAuthn assertion (ErrBadSignature); fewer signers than Need(st) asks for
// (ErrInsufficientSignatures); finally not_after more than MaxLifetime
// after now (ErrTooFarAhead). One bad signature refuses the whole statement.
// Only with ErrTooFarAhead are the statement and its signers returned along
// with the error: the statement carries a quorum, and whoever keeps used
// nonces must spend its nonce so that no copy applies later.
//
// Verify is deterministic given its arguments; it does not check replays
// or WebAuthn signature counters (VerifyUses returns them).
func (s *OfficerSet) Verify(ss *custosv1.SignedStatement, clusterID string, now time.Time) (*custosv1.Statement, []string, error) {
	st, uses, err := s.VerifyUses(ss, clusterID, now)
	var signers []string
	if st != nil {
		for _, u := range uses {
			signers = append(signers, u.Officer)
		}
		sort.Strings(signers)
	}
	return st, signers, err
}

// VerifyUses is Verify returning each signature that counted, in the
// statement's order, with its WebAuthn counter.
func (s *OfficerSet) VerifyUses(ss *custosv1.SignedStatement, clusterID string, now time.Time) (*custosv1.Statement, []SignatureUse, error) {
	return s.VerifyUsesAt(ss, clusterID, now, SignedRequestsVersion)
}

// WebAuthnVersion is the state machine version from which officers'
// WebAuthn credentials, the statements that bind them and WebAuthn
// signatures exist.
const WebAuthnVersion = 3

// SignedRequestsVersion is the state machine version from which a key's
// policy may require signed requests (docs/signed-requests.md).
const SignedRequestsVersion = 4

// VerifyUsesAt is VerifyUses as a cluster at state machine version smv
// verifies: below WebAuthnVersion it sees what a release of that version
// saw — the credential operations and an officer's credentials are unknown
// fields, a signature's WebAuthn assertion is not there — and refuses with
// the very errors that release gave, so that replicas of the old and the
// new release write the same records during a rolling upgrade.
func (s *OfficerSet) VerifyUsesAt(ss *custosv1.SignedStatement, clusterID string, now time.Time, smv uint32) (*custosv1.Statement, []SignatureUse, error) {
	if s == nil || len(s.keys) == 0 {
		return nil, nil, fmt.Errorf("%w: no officer set", ErrUnknownOfficer)
	}
	if ss == nil {
		return nil, nil, fmt.Errorf("%w: no signed statement", ErrMalformed)
	}
	st, err := ParseAt(ss.GetStatement(), smv)
	if err != nil {
		return nil, nil, err
	}
	if smv < WebAuthnVersion {
		ss = withoutWebAuthn(ss)
	}
	if st.GetClusterId() != clusterID {
		return nil, nil, fmt.Errorf("%w: statement names cluster %q, this is %q", ErrWrongCluster, st.GetClusterId(), clusterID)
	}
	notAfter := time.Unix(st.GetNotAfterUnix(), 0)
	if now.After(notAfter) {
		return nil, nil, fmt.Errorf("%w: not_after %s is before %s", ErrExpired,
			notAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	tooFar := notAfter.Sub(now) > MaxLifetime
	// At most len(s.keys)+1 signatures are checked before an unknown or
	// repeated officer stops the loop, however many are attached.
	d := digest(ss.GetStatement())
	uses := make([]SignatureUse, 0, len(ss.GetSignatures()))
	seen := make(map[string]bool, len(ss.GetSignatures()))
	for i, sig := range ss.GetSignatures() {
		if sig == nil {
			return nil, nil, fmt.Errorf("%w: signature %d is empty", ErrMalformed, i)
		}
		name := sig.GetOfficer()
		if s.keys[name] == nil {
			return nil, nil, fmt.Errorf("%w: %q", ErrUnknownOfficer, name)
		}
		if seen[name] {
			return nil, nil, fmt.Errorf("%w: officer %q signed twice", ErrDuplicateSigner, name)
		}
		seen[name] = true
		u, err := s.check(d, sig)
		if err != nil {
			return nil, nil, err
		}
		uses = append(uses, u)
	}
	if need := s.Needed(st); len(uses) < need {
		return nil, nil, fmt.Errorf("%w: %s needs %d officer signature(s) (%s), has %d",
			ErrInsufficientSignatures, OperationName(st), need, Need(st), len(uses))
	}
	if tooFar {
		// Fully signed, refused for its lifetime only: returned with the
		// error so that the caller can spend its nonce (a copy must not
		// apply later, once not_after has come within MaxLifetime).
		return st, uses, fmt.Errorf("%w: not_after %s is more than %s after %s", ErrTooFarAhead,
			notAfter.UTC().Format(time.RFC3339), MaxLifetime, now.UTC().Format(time.RFC3339))
	}
	return st, uses, nil
}

// beforeWebAuthn returns where a release before WebAuthnVersion would have
// found an unknown field in st (as Parse names it), or "".
func beforeWebAuthn(st *custosv1.Statement) string {
	var officers []*custosv1.Officer
	field := ""
	switch op := st.GetOperation().(type) {
	case *custosv1.Statement_AddOfficerCredential, *custosv1.Statement_RemoveOfficerCredential:
		return "statement"
	case *custosv1.Statement_SetOfficers:
		officers, field = op.SetOfficers.GetOfficers(), "statement.set_officers.officers"
	case *custosv1.Statement_CreateCluster:
		officers, field = op.CreateCluster.GetOfficers(), "statement.create_cluster.officers"
	}
	for i, o := range officers {
		if len(o.GetCredentials()) > 0 {
			return fmt.Sprintf("%s[%d]", field, i)
		}
	}
	return ""
}

// withoutWebAuthn returns ss with no signature's WebAuthn assertion.
func withoutWebAuthn(ss *custosv1.SignedStatement) *custosv1.SignedStatement {
	out := &custosv1.SignedStatement{Statement: ss.GetStatement()}
	for _, sig := range ss.GetSignatures() {
		if sig == nil {
			out.Signatures = append(out.Signatures, nil)
			continue
		}
		out.Signatures = append(out.Signatures, &custosv1.OfficerSignature{Officer: sig.GetOfficer(), Signature: sig.GetSignature()})
	}
	return out
}

// officerSigner checks an officer's name and that signer is an ECDSA P-256
// key, and returns its public key.
func officerSigner(signer crypto.Signer, officer string) (*ecdsa.PublicKey, error) {
	if signer == nil {
		return nil, fmt.Errorf("%w: no signer", ErrBadKey)
	}
	if err := checkIdent("officer name", officer); err != nil {
		return nil, err
	}
	pub, ok := signer.Public().(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: officer %q: signer is not an ECDSA P-256 key", ErrBadKey, officer)
	}
	return pub, nil
}
