package kms

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// Client authorities: the CA certificates the officers trust to identify
// principals (docs/identities.md). They are governance state: pinned at
// genesis from the bootstrap node's CA bundle, added by a quorum, removed by
// one officer. Once pinned, a certificate that does not chain to one of them
// identifies nobody, whatever CA file a node reads: the operator who appends
// a CA to a node's bundle can mint certificates, but they authenticate no
// one. A cluster created before this existed is not pinned (its CA bundle
// decides, as it did) until the officers add an authority.

// maxClientAuthorities bounds the officers' client authorities.
const maxClientAuthorities = 16

// genesisAuthorities parses the CA certificates a genesis names.
func genesisAuthorities(ders [][]byte) ([]*custosv1.ClientAuthority, error) {
	if len(ders) > maxClientAuthorities {
		return nil, fmt.Errorf("%w: at most %d client authorities", ErrInvalidArgument, maxClientAuthorities)
	}
	var out []*custosv1.ClientAuthority
	for _, der := range ders {
		ca, err := governance.ParseClientAuthority(der)
		if err != nil {
			return nil, fmt.Errorf("%w: genesis client authority: %v", ErrInvalidArgument, err)
		}
		if !slices.ContainsFunc(out, func(x *custosv1.ClientAuthority) bool { return x.Sha256 == ca.Sha256 }) {
			out = append(out, ca)
		}
	}
	return out, nil
}

func (s *State) applyAddClientAuthority(op *custosv1.AddClientAuthority) (string, error) {
	ca, err := governance.ParseClientAuthority(op.Certificate)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	if slices.ContainsFunc(s.gov.ClientAuthorities, func(x *custosv1.ClientAuthority) bool { return x.Sha256 == ca.Sha256 }) {
		return "", fmt.Errorf("%w: client authority %s", ErrAlreadyExists, ca.Sha256)
	}
	if len(s.gov.ClientAuthorities) >= maxClientAuthorities {
		return "", fmt.Errorf("%w: at most %d client authorities", ErrResourceExhausted, maxClientAuthorities)
	}
	was := s.gov.ClientAuthoritiesPinned
	s.gov.ClientAuthorities = append(s.gov.ClientAuthorities, ca)
	s.gov.ClientAuthoritiesPinned = true
	s.authoritiesVersion++
	r := fmt.Sprintf("client authority %s (%s) trusted", ca.Sha256, ca.Subject)
	if !was {
		r += "; client authorities are now pinned: certificates from any other CA identify nobody"
	}
	return r, nil
}

func (s *State) applyRemoveClientAuthority(op *custosv1.RemoveClientAuthority) (string, error) {
	i := slices.IndexFunc(s.gov.ClientAuthorities, func(x *custosv1.ClientAuthority) bool { return x.Sha256 == op.Sha256 })
	if i < 0 {
		return "", fmt.Errorf("%w: client authority %s", ErrNotFound, op.Sha256)
	}
	ca := s.gov.ClientAuthorities[i]
	s.gov.ClientAuthorities = slices.Delete(s.gov.ClientAuthorities, i, i+1)
	// Removing the last one leaves the cluster pinned to none: nobody is
	// identified until a quorum adds one (a revocation never loosens).
	s.gov.ClientAuthoritiesPinned = true
	s.authoritiesVersion++
	r := fmt.Sprintf("client authority %s (%s) no longer trusted", ca.Sha256, ca.Subject)
	if len(s.gov.ClientAuthorities) == 0 {
		r += "; no client authority is left: no certificate identifies anyone until officers add one"
	}
	return r, nil
}

// ClientTrust is the officers' client authorities at one log position, as
// the API layer checks a caller's certificate against them.
type ClientTrust struct {
	// Pinned is false for a cluster whose officers never pinned
	// authorities: the node's CA bundle alone decides.
	Pinned bool
	byHash map[[32]byte]*x509.Certificate
	pool   *x509.CertPool
}

// ClientTrust returns the client authorities as of the last applied entry
// (nil before the cluster is initialised). It is rebuilt only when they
// change.
func (s *State) ClientTrust() *ClientTrust {
	s.mu.RLock()
	t, v, gov := s.trust, s.authoritiesVersion, s.gov
	built := s.trustVersion
	s.mu.RUnlock()
	if gov == nil {
		return nil
	}
	if t != nil && built == v {
		return t
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.trust != nil && s.trustVersion == s.authoritiesVersion {
		return s.trust
	}
	t = &ClientTrust{Pinned: s.gov.GetClientAuthoritiesPinned(), byHash: map[[32]byte]*x509.Certificate{}, pool: x509.NewCertPool()}
	for _, ca := range s.gov.GetClientAuthorities() {
		c, err := x509.ParseCertificate(ca.Certificate)
		if err != nil {
			continue // checked when it was added
		}
		t.byHash[sha256.Sum256(ca.Certificate)] = c
		t.pool.AddCert(c)
	}
	s.trust, s.trustVersion = t, s.authoritiesVersion
	return t
}

// ErrUntrustedIssuer is returned for a certificate that chains to no client
// authority the officers trust. The API layer answers Unauthenticated.
var ErrUntrustedIssuer = errors.New("certificate not issued by a client authority the officers trust")

// Identify names the client authority behind a certificate chain the TLS
// layer verified (leaf first): the SHA-256 of the issuing CA certificate
// and of the leaf: the leaf's direct issuer, which, once the authorities
// are pinned, must be one of them (the officers pin the CA that issues
// certificates, an intermediate if there is one); otherwise the chain is
// ErrUntrustedIssuer.
func (t *ClientTrust) Identify(chains [][]*x509.Certificate) (issuer, cert []byte, err error) {
	if len(chains) == 0 || len(chains[0]) == 0 {
		return nil, nil, errors.New("no verified certificate")
	}
	leaf := sha256.Sum256(chains[0][0].Raw)
	if t == nil || !t.Pinned {
		if len(chains[0]) < 2 {
			return nil, leaf[:], nil
		}
		iss := sha256.Sum256(chains[0][1].Raw)
		return iss[:], leaf[:], nil
	}
	for _, chain := range chains {
		if len(chain) < 2 {
			continue
		}
		if h := sha256.Sum256(chain[1].Raw); t.byHash[h] != nil {
			return h[:], leaf[:], nil
		}
	}
	return nil, nil, fmt.Errorf("%w (issuer %q)", ErrUntrustedIssuer, chains[0][0].Issuer.String())
}

// VerifyForwarded checks the certificate a follower forwarded with a
// command (raftlogv1.Command.principal_certificate): that it is the
// certificate the command's digests name, that its common name is the
// command's principal, and, when pinned, that it was issued by the client
// authority the command names. The TLS handshake that presented it
// happened on the follower; what the leader checks is that the follower
// proposes for a principal whose certificate a trusted authority issued.
func (t *ClientTrust) VerifyForwarded(cmd *raftlogv1.Command, commonName func(*x509.Certificate) string) error {
	der := cmd.GetPrincipalCertificate()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("%w: forwarded principal certificate: %v", ErrPermissionDenied, err)
	}
	if h := sha256.Sum256(der); !bytes.Equal(h[:], cmd.GetPrincipalCertSha256()) {
		return fmt.Errorf("%w: forwarded principal certificate is not the one the command names", ErrPermissionDenied)
	}
	if cn := commonName(c); cn != cmd.GetPrincipal() {
		return fmt.Errorf("%w: forwarded principal certificate names %q, not %q", ErrPermissionDenied, cn, cmd.GetPrincipal())
	}
	if t == nil || !t.Pinned {
		return nil
	}
	var h [32]byte
	copy(h[:], cmd.GetPrincipalIssuerSha256())
	ca, ok := t.byHash[h]
	if !ok || len(cmd.GetPrincipalIssuerSha256()) != sha256.Size {
		return fmt.Errorf("%w: forwarded principal's issuer %s is not a client authority the officers trust",
			ErrPermissionDenied, hex.EncodeToString(cmd.GetPrincipalIssuerSha256()))
	}
	// The leaf must be a client certificate that authority issued, valid
	// at the command's time (intermediates are not forwarded: the
	// officers pin the CA that issues leaves).
	switch err := governance.CheckClientCertificate(c, ca, time.Unix(0, cmd.GetTimeUnixNano())); {
	case errors.Is(err, governance.ErrCACertificate):
		return fmt.Errorf("%w: forwarded principal certificate is a CA certificate", ErrPermissionDenied)
	case err != nil:
		return fmt.Errorf("%w: forwarded principal certificate is not a client certificate client authority %s issued, valid now: %v",
			ErrPermissionDenied, hex.EncodeToString(h[:]), err)
	}
	return nil
}

// checkIssuer refuses a command whose principal's certificate the proposer
// says an untrusted authority issued (a node whose view of the
// authorities lagged, or that lies): decided against the authorities at
// this log position, so every replica agrees. Commands without an issuer
// (XKS principals, the nodes' own) pass.
func (s *State) checkIssuer(c *raftlogv1.Command) error {
	iss := c.GetPrincipalIssuerSha256()
	if len(iss) == 0 || s.gov == nil || !s.gov.ClientAuthoritiesPinned {
		return nil
	}
	h := hex.EncodeToString(iss)
	if slices.ContainsFunc(s.gov.ClientAuthorities, func(x *custosv1.ClientAuthority) bool { return x.Sha256 == h }) {
		return nil
	}
	return fmt.Errorf("%w: principal %q's certificate issuer %s is not a client authority the officers trust", ErrPermissionDenied, c.Principal, h)
}
