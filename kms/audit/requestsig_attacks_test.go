package audit_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"runtime/debug"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/kms/requestsig"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// signedSetup: payroll requires signed requests; signed(outcome, rule)
// appends a decision carrying one fresh hr-app signature.
func signedSetup(t *testing.T) (*ledgerBuilder, *custosv1.KeyPolicy, func(custosv1.Outcome, string, *custosv1.RequestSignature) *custosv1.DecisionRecord) {
	b := attackSetup(t)
	p := &custosv1.KeyPolicy{DecryptPrincipals: []string{"hr-app"}, RequireRequestSignature: true,
		Reasons: []*custosv1.ReasonRule{reasonRule(initiated, custosv1.Action_ACTION_ALLOW)}}
	b.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "payroll", Policy: p}}
	})
	p.Version = 2
	cert, key := selfSigned(t, "hr-app", b)
	dd, cd := sha256.Sum256([]byte("wrapped")), sha256.Sum256(nil)
	signed := func(outcome custosv1.Outcome, rule string, sig *custosv1.RequestSignature) *custosv1.DecisionRecord {
		r := b.release("hr-app", "payroll", initiated, p)
		r.Outcome = outcome
		if rule != "" {
			r.MatchedRule = rule
		}
		r.DataDigest, r.ContextDigest, r.Ticket = dd[:], cd[:], "T-1"
		r.PrincipalCertificate, r.PrincipalCertSha256 = cert, sum256(cert)
		if sig == nil {
			var err error
			if sig, err = requestsig.Sign(key, requestsig.Request{Method: requestsig.MethodDecrypt,
				Header: requestsig.Headers(r.Operation, r.Key, r.KeyVersion)[0], DataDigest: dd[:], ContextDigest: cd[:],
				Reason: initiated, Ticket: "T-1"}, time.Unix(0, r.TimeUnixNano)); err != nil {
				t.Fatal(err)
			}
		}
		r.RequestSignature = sig
		return r
	}
	return b, p, signed
}

// The auditor remembers the nonce of every signed request the cluster
// decided, as the nodes do: a signed request the cluster refused (here by
// the time window; also PENDING, rate limit, witness), released later by
// modified node code under the same signature, is a replay.
func TestAttackAuditorForgetsNoncesOfRefusedSignedRequests(t *testing.T) {
	b, p, signed := signedSetup(t)
	refused := signed(custosv1.Outcome_OUTCOME_DENY, "policy/v2:time-window", nil)
	signed(custosv1.Outcome_OUTCOME_ALLOW, "", proto.Clone(refused.RequestSignature).(*custosv1.RequestSignature))
	_ = p
	wantCaught(t, b, "a release under the signature of a request the cluster refused")
}

// A release under a certificate the operator minted (CN = the principal,
// signed correctly with its own key) does not pass as a signed request,
// whether the record names no issuer or names the pinned authority: the
// auditor checks the chain to a pinned client authority as every replica
// does.
func TestAttackMintedCertificateSignedRequest(t *testing.T) {
	for _, name := range []string{"no issuer", "the pinned authority's digest"} {
		t.Run(name, func(t *testing.T) {
			b, p, _ := signedSetup(t)
			minted, mkey := selfSigned(t, "hr-app") // no authority of the officers'
			r := b.release("hr-app", "payroll", initiated, p)
			dd, cd := sha256.Sum256([]byte("wrapped")), sha256.Sum256(nil)
			r.DataDigest, r.ContextDigest = dd[:], cd[:]
			r.PrincipalCertificate, r.PrincipalCertSha256 = minted, sum256(minted)
			if name == "no issuer" {
				r.PrincipalIssuerSha256 = nil
			}
			sig, err := requestsig.Sign(mkey, requestsig.Request{Method: requestsig.MethodDecrypt,
				Header: requestsig.Headers(r.Operation, r.Key, r.KeyVersion)[0], DataDigest: dd[:], ContextDigest: cd[:],
				Reason: initiated}, time.Unix(0, r.TimeUnixNano))
			if err != nil {
				t.Fatal(err)
			}
			r.RequestSignature = sig
			wantCaught(t, b, "a signed release under a certificate no pinned authority issued")
		})
	}
}

// Crafted request_signature / principal_certificate fields never make
// Verify panic.
func TestAttackCraftedRequestSignatureNoPanic(t *testing.T) {
	rsaCert := func() []byte {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hr-app"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}()
	p384 := func() []byte {
		k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hr-app"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}()
	for name, mod := range map[string]func(r *custosv1.DecisionRecord){
		"empty sig": func(r *custosv1.DecisionRecord) { r.RequestSignature = &custosv1.RequestSignature{} },
		"no cert":   func(r *custosv1.DecisionRecord) { r.PrincipalCertificate, r.PrincipalCertSha256 = nil, sum256(nil) },
		"garbage cert": func(r *custosv1.DecisionRecord) {
			r.PrincipalCertificate, r.PrincipalCertSha256 = []byte{0x30, 0}, sum256([]byte{0x30, 0})
		},
		"rsa cert": func(r *custosv1.DecisionRecord) {
			r.PrincipalCertificate, r.PrincipalCertSha256 = rsaCert, sum256(rsaCert)
		},
		"p384 cert":      func(r *custosv1.DecisionRecord) { r.PrincipalCertificate, r.PrincipalCertSha256 = p384, sum256(p384) },
		"min time":       func(r *custosv1.DecisionRecord) { r.RequestSignature.TimeUnixNano = -1 << 63 },
		"huge signature": func(r *custosv1.DecisionRecord) { r.RequestSignature.Signature = make([]byte, 1<<16) },
		"no digests":     func(r *custosv1.DecisionRecord) { r.DataDigest, r.ContextDigest = nil, nil },
	} {
		for _, caDER := range [][]byte{nil, []byte("junk CA"), rsaCert, p384} {
			t.Run(name, func(t *testing.T) {
				b, _, signed := signedSetup(t)
				b.recs[0].Genesis.ClientAuthorities[0].Certificate = caDER
				r := signed(custosv1.Outcome_OUTCOME_ALLOW, "", nil)
				mod(r)
				defer func() {
					if x := recover(); x != nil {
						t.Fatalf("panic: %v\n%s", x, debug.Stack())
					}
				}()
				_, _ = b.verify()
			})
		}
	}
}
