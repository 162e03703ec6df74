package audit

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/kms/governance"
	"github.com/custos-kms/custos/kms/keypolicy"
	"github.com/custos-kms/custos/kms/ledger"
	"github.com/custos-kms/custos/kms/requestsig"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// The checks of the recomputed state (recompute.go) on what records carry
// beyond the statements: witnesses' cosignatures, the requests PENDING
// records raise, signed requests' proofs, and the grants statements create.

// cosignature checks a witness's cosignature record: a witness the
// officers registered, newer than its last one, signed with its key over
// what the record says (the node also checked that the head is this
// ledger's chain hash at that position; the witness itself reports a
// history it did not see).
func (b *stateBook) cosignature(rec *custosv1.DecisionRecord) string {
	cs := rec.GetCosignature()
	if cs == nil {
		return "a cosignature record carries no cosignature"
	}
	w := b.witnesses[cs.Witness]
	switch {
	case w == nil:
		return fmt.Sprintf("it records a cosignature of %q, not a witness the officers registered", cs.Witness)
	case w.has && (cs.Seq < w.seq || cs.TimeUnixNano <= w.cosignedAtNano):
		return fmt.Sprintf("witness %s's cosignature is not newer than its last one", cs.Witness)
	case cs.ClusterId != b.cluster || cs.Seq >= rec.Seq:
		return fmt.Sprintf("witness %s's cosignature does not name an earlier record of this cluster", cs.Witness)
	case w.pub == nil || !verifySignature(w.pub, ledger.CosignatureMessage(cs.ClusterId, cs.Witness, cs.Seq, cs.Head, cs.TimeUnixNano), cs.Signature):
		return fmt.Sprintf("witness %s's cosignature does not verify under the key the officers registered", cs.Witness)
	}
	w.has, w.seq, w.cosignedAtNano = true, cs.Seq, cs.TimeUnixNano
	return ""
}

// raise remembers a request a PENDING record raised, for its approval.
func (b *stateBook) raise(rec *custosv1.DecisionRecord) {
	for len(b.pendingOrder) > 0 {
		old := b.pending[b.pendingOrder[0]]
		if old != nil && rec.TimeUnixNano-old.at <= int64(requestLifetime+time.Minute) {
			break
		}
		if old != nil {
			delete(b.pending, b.pendingOrder[0])
		}
		b.pendingOrder = b.pendingOrder[1:]
	}
	if _, ok := b.pending[rec.RequestId]; !ok {
		b.pendingOrder = append(b.pendingOrder, rec.RequestId)
	}
	b.pending[rec.RequestId] = &pendingRequest{principal: rec.Principal, key: rec.Key, reason: rec.Reason,
		context: rec.ContextDigest, data: rec.DataDigest, at: rec.TimeUnixNano}
}

// requestSignature checks the caller's signature a release record carries
// (docs/signed-requests.md): the certificate is the principal's, issued
// by the client authority the record names, the signature covers exactly
// what the record says was asked, within the allowed skew, and its nonce
// released nothing before.
func (b *stateBook) requestSignature(rec *custosv1.DecisionRecord) string {
	sig := rec.GetRequestSignature()
	der := rec.GetPrincipalCertificate()
	if h := sha256.Sum256(der); len(der) == 0 || !bytes.Equal(h[:], rec.GetPrincipalCertSha256()) {
		return "its request signature comes without the certificate the record names"
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil || cert.Subject.CommonName != rec.Principal {
		return fmt.Sprintf("its request signature's certificate is not principal %q's", rec.Principal)
	}
	// As every replica checks it: a client certificate the client
	// authority the record names issued, one the officers pinned (its
	// certificate is in the genesis or the add_client_authority
	// statement), valid at the record's time.
	caDER := b.authorities[hex.EncodeToString(rec.GetPrincipalIssuerSha256())]
	if !b.pinned || len(rec.GetPrincipalIssuerSha256()) == 0 || caDER == nil {
		return "its request signature's certificate names no client authority the officers pinned"
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return "its request signature's certificate was not issued by the client authority the record names"
	}
	if err := governance.CheckClientCertificate(cert, ca, time.Unix(0, rec.TimeUnixNano)); err != nil {
		return fmt.Sprintf("its request signature's certificate is not a client certificate of the client authority the record names, valid then: %v", err)
	}
	if skew := time.Duration(sig.GetTimeUnixNano() - rec.TimeUnixNano).Abs(); skew > requestsig.MaxSkew {
		return fmt.Sprintf("its request was signed %s away from the decision", skew.Round(time.Second))
	}
	r := requestsig.Request{Method: requestsig.MethodOf(rec.Operation), DataDigest: rec.DataDigest, ContextDigest: rec.ContextDigest,
		Reason: rec.Reason, Text: rec.JustificationText, Ticket: rec.Ticket}
	if err := requestsig.VerifyDecision(cert.PublicKey, r, rec.Operation, rec.Key, rec.KeyVersion, sig); err != nil {
		return fmt.Sprintf("principal %q did not sign what the record says it asked: %v", rec.Principal, err)
	}
	for len(b.nonceOrder) > 0 && b.nonces[b.nonceOrder[0]] < rec.TimeUnixNano {
		delete(b.nonces, b.nonceOrder[0])
		b.nonceOrder = b.nonceOrder[1:]
	}
	n := string(sig.GetNonce())
	if _, seen := b.nonces[n]; seen {
		return "its signed request was decided before (a replay)"
	}
	b.nonces[n] = rec.TimeUnixNano + int64(2*requestsig.MaxSkew)
	b.nonceOrder = append(b.nonceOrder, n)
	return ""
}

// grantOf checks the grant a GOVERNANCE record says its statement created
// (or revoked) against the statement: only approve_request and
// create_grant create one, with the terms the statement (and, for an
// approval, the PENDING record of the request) give; only revoke_grant
// revokes one.
func (b *stateBook) grantOf(rec *custosv1.DecisionRecord, st *custosv1.Statement) string {
	var want *custosv1.Grant
	now := rec.TimeUnixNano
	switch op := st.Operation.(type) {
	case *custosv1.Statement_ApproveRequest:
		id := op.ApproveRequest.GetRequestId()
		r := b.pending[id]
		if r == nil {
			return fmt.Sprintf("it approves request %s, which no PENDING record in the last %s raised", id, requestLifetime)
		}
		uses, ttl := keypolicy.GrantTerms(op.ApproveRequest.GetUses(), op.ApproveRequest.GetTtlSeconds())
		want = &custosv1.Grant{GrantId: "g-" + id, Principal: r.principal, Key: r.key, Reason: r.reason, ContextDigest: r.context,
			UsesLeft: uses, ExpireTimeUnixNano: now + ttl.Nanoseconds(), RequestId: id}
		if len(r.data) > 0 {
			want.DataDigests = [][]byte{r.data}
		}
	case *custosv1.Statement_CreateGrant:
		g := op.CreateGrant
		if len(st.GetNonce()) < 8 {
			return "its create_grant statement has no nonce"
		}
		uses, ttl := keypolicy.GrantTerms(g.GetUses(), g.GetTtlSeconds())
		want = &custosv1.Grant{GrantId: "g-" + hex.EncodeToString(st.GetNonce()[:8]), Principal: g.GetPrincipal(), Key: g.GetKey(),
			Reason: g.GetReason(), ContextDigest: g.GetContextDigest(), UsesLeft: uses, ExpireTimeUnixNano: now + ttl.Nanoseconds(),
			DataDigests: g.GetDataDigests()}
	}
	switch {
	case want == nil && rec.GetGrant() != nil:
		return fmt.Sprintf("it carries grant %s, which its %s statement does not create", rec.GetGrant().GetGrantId(), strings.TrimPrefix(rec.MatchedRule, "governance:"))
	case want != nil && !proto.Equal(want, rec.GetGrant()):
		return fmt.Sprintf("the grant it carries is not the one its statement creates (%s)", want.GrantId)
	case rec.GetRevokedGrantId() != "" && rec.GetRevokedGrantId() != st.GetRevokeGrant().GetGrantId():
		return fmt.Sprintf("it says it revoked grant %s, which its statement does not revoke", rec.GetRevokedGrantId())
	}
	return ""
}

// parseP256 parses a PKIX DER ECDSA P-256 public key.
func parseP256(der []byte) (*ecdsa.PublicKey, error) {
	keys, err := ParseKeys([][]byte{der})
	if err != nil {
		return nil, err
	}
	return keys[0], nil
}
