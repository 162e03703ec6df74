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
	"github.com/custos-kms/custos/kms/requestsig"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// Signed requests (docs/signed-requests.md): from state machine version 4
// a decrypt-type request may carry the caller's signature over what it
// asks, by the key of its mTLS certificate, and the certificate; every
// replica checks both at apply, so a member node that forwards a request,
// or proposes one of its own, cannot decide in a principal's name what the
// principal did not sign. A key whose policy sets require_request_signature
// releases only to such requests.

// SignedRequestsVersion is the state machine version from which signed
// requests are checked and recorded, and policies may require them.
const SignedRequestsVersion = governance.SignedRequestsVersion

// maxRequestNonces bounds the signed-request nonces remembered at once
// (2 × requestsig.MaxSkew's worth), maxRequestNoncesPerPrincipal those of
// one principal: beyond them a signed request is refused
// (ResourceExhausted) until older nonces expire, so that no one
// principal's flood stops the others' signed requests.
const (
	maxRequestNonces             = 1 << 20
	maxRequestNoncesPerPrincipal = 1 << 19
)

// proofChecked reports whether a Decide's request signature is checked at
// this log position: it carries one, the cluster runs
// SignedRequestsVersion, the key's policy requires signed requests and
// names the principal among its decrypt principals. Elsewhere the fields
// are neither checked (at their cost: a certificate chain and an ECDSA
// verification on every replica) nor recorded, and a principal the
// policy does not name (refused anyway) spends no nonce.
func (s *State) proofChecked(c *raftlogv1.Command, op *raftlogv1.Decide) bool {
	k := s.keys[op.GetKey()]
	return op.GetRequestSignature() != nil && s.smv() >= SignedRequestsVersion && k != nil &&
		k.Policy.GetRequireRequestSignature() && slices.Contains(k.Policy.GetDecryptPrincipals(), c.GetPrincipal())
}

// checkRequestSignature checks a Decide's request signature at this log
// position (when proofChecked; else it drops the fields, as the release
// before SignedRequestsVersion ignored them): whether the request is
// signed, or why the signature does not hold. A signature that holds
// spends its nonce, whatever the decision.
func (s *State) checkRequestSignature(c *raftlogv1.Command, op *raftlogv1.Decide) (bool, error) {
	if !s.proofChecked(c, op) {
		op.RequestSignature, op.PrincipalCertificate = nil, nil
		return false, nil
	}
	s.pruneRequestNonces()
	if err := s.verifyRequestSignature(c, op); err != nil {
		return false, err
	}
	switch {
	case len(s.requestNonces) >= maxRequestNonces:
		return false, fmt.Errorf("%w: %d signed requests in %s", ErrResourceExhausted, maxRequestNonces, 2*requestsig.MaxSkew)
	case s.requestNoncesBy[c.GetPrincipal()] >= maxRequestNoncesPerPrincipal:
		return false, fmt.Errorf("%w: principal %q made %d signed requests in %s", ErrResourceExhausted, c.GetPrincipal(), maxRequestNoncesPerPrincipal, 2*requestsig.MaxSkew)
	}
	key := string(op.GetRequestSignature().GetNonce())
	s.requestNonces[key] = time.Unix(0, s.clock).Add(2*requestsig.MaxSkew).Unix() + 1
	s.requestNonceOrder = append(s.requestNonceOrder, key+c.GetPrincipal())
	s.requestNoncesBy[c.GetPrincipal()]++
	return true, nil
}

// verifyRequestSignature checks a Decide's request signature and
// certificate against the state, changing nothing.
func (s *State) verifyRequestSignature(c *raftlogv1.Command, op *raftlogv1.Decide) error {
	sig := op.GetRequestSignature()
	der := op.GetPrincipalCertificate()
	method := requestsig.MethodOf(op.GetOperation())
	switch {
	case method == "":
		return fmt.Errorf("%w: operation %s is not signed", ErrInvalidArgument, op.GetOperation())
	case len(der) == 0:
		return fmt.Errorf("%w: a signed request needs the principal's certificate", ErrPermissionDenied)
	case s.gov == nil || !s.gov.ClientAuthoritiesPinned:
		// A certificate from any CA would do: a signature proves nothing.
		return fmt.Errorf("%w: signed requests need client authorities pinned by the officers", ErrFailedPrecondition)
	}
	if h := sha256.Sum256(der); !bytes.Equal(h[:], c.GetPrincipalCertSha256()) {
		return fmt.Errorf("%w: the signed request's certificate is not the one the command names", ErrPermissionDenied)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("%w: the signed request's certificate: %v", ErrPermissionDenied, err)
	}
	if cert.Subject.CommonName != c.GetPrincipal() {
		return fmt.Errorf("%w: the signed request's certificate names %q, not %q", ErrPermissionDenied, cert.Subject.CommonName, c.GetPrincipal())
	}
	if err := s.issuedByAuthority(cert, c); err != nil {
		return err
	}
	if skew := time.Duration(sig.GetTimeUnixNano() - c.GetTimeUnixNano()).Abs(); skew > requestsig.MaxSkew {
		return fmt.Errorf("%w: the signed request's time is %s from the cluster's clock (at most %s)", ErrPermissionDenied, skew.Round(time.Second), requestsig.MaxSkew)
	}
	if _, spent := s.requestNonces[string(sig.GetNonce())]; spent {
		return fmt.Errorf("%w: the signed request was decided before (its nonce is spent): a replay", ErrPermissionDenied)
	}
	r := requestsig.Request{Method: method, DataDigest: op.GetDataDigest(), ContextDigest: op.GetContextDigest(),
		Reason: op.GetReason(), Text: op.GetJustificationText(), Ticket: op.GetTicket()}
	if err := requestsig.VerifyDecision(cert.PublicKey, r, op.GetOperation(), op.GetKey(), op.GetKeyVersion(), sig); err != nil {
		return fmt.Errorf("%w: %v", ErrPermissionDenied, err)
	}
	return nil
}

// issuedByAuthority checks that cert is a client certificate the client
// authority the command names issued, valid at the command's time.
func (s *State) issuedByAuthority(cert *x509.Certificate, c *raftlogv1.Command) error {
	want := hex.EncodeToString(c.GetPrincipalIssuerSha256())
	for _, ca := range s.gov.GetClientAuthorities() {
		if ca.GetSha256() != want {
			continue
		}
		caCert, err := x509.ParseCertificate(ca.GetCertificate())
		if err != nil {
			break
		}
		switch err := governance.CheckClientCertificate(cert, caCert, time.Unix(0, c.GetTimeUnixNano())); {
		case errors.Is(err, governance.ErrCACertificate):
			return fmt.Errorf("%w: the signed request's certificate is a CA certificate", ErrPermissionDenied)
		case err != nil:
			return fmt.Errorf("%w: the signed request's certificate is not a client certificate of client authority %s valid now: %v", ErrPermissionDenied, want, err)
		}
		return nil
	}
	return fmt.Errorf("%w: the signed request's issuer %s is not a client authority the officers trust", ErrPermissionDenied, want)
}

// pruneRequestNonces forgets the nonces of signed requests whose time can
// no longer be within MaxSkew of the clock, oldest first (they were spent
// in clock order), in amortised constant time.
func (s *State) pruneRequestNonces() {
	for s.requestNonceHead < len(s.requestNonceOrder) {
		e := s.requestNonceOrder[s.requestNonceHead]
		k, principal := e[:requestsig.NonceSize], e[requestsig.NonceSize:]
		if !nonceExpired(s.requestNonces[k], s.clock) {
			break
		}
		delete(s.requestNonces, k)
		if s.requestNoncesBy[principal]--; s.requestNoncesBy[principal] <= 0 {
			delete(s.requestNoncesBy, principal)
		}
		s.requestNonceOrder[s.requestNonceHead] = ""
		s.requestNonceHead++
	}
	if s.requestNonceHead > 1024 && 2*s.requestNonceHead > len(s.requestNonceOrder) {
		s.requestNonceOrder = append([]string(nil), s.requestNonceOrder[s.requestNonceHead:]...)
		s.requestNonceHead = 0
	}
}

// RequiresSignedRequests reports whether key's policy requires signed
// requests (as of the last applied entry): the API layer sends a
// request's signature and certificate into the log only then.
func (s *State) RequiresSignedRequests(key string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k := s.keys[key]
	return k != nil && k.Policy.GetRequireRequestSignature() && s.smv() >= SignedRequestsVersion
}
