package custos

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"time"

	"github.com/custos-kms/custos/clients/go/envelope"
	"github.com/custos-kms/custos/kms/requestsig"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// requestSigner returns the private key of t's client certificate when it
// can sign requests (an ECDSA P-256 crypto.Signer), else nil: requests
// then go unsigned, and keys whose policy requires signed requests refuse
// them (docs/signed-requests.md).
func requestSigner(t *tls.Config) crypto.Signer {
	if t == nil || len(t.Certificates) == 0 {
		return nil
	}
	s, ok := t.Certificates[0].PrivateKey.(crypto.Signer)
	if !ok {
		return nil
	}
	if pub, ok := s.Public().(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		return nil
	}
	return s
}

// SignsRequests reports whether the client signs its decrypt requests
// with its certificate's key (docs/signed-requests.md): it does when the
// certificate's key is ECDSA P-256 and was given as a key file or in
// Config.TLS.Certificates.
func (c *Client) SignsRequests() bool { return c.signer != nil }

// SignDecryptRequest signs a DecryptRequest built by hand (for calls
// through Keys()) as Decrypt signs its own: with the client certificate's
// key, when it is ECDSA P-256; otherwise it leaves req unsigned. A call
// repeated on another node is signed again.
func (c *Client) SignDecryptRequest(req *custosv1.DecryptRequest) error { return c.sign(req) }

// sign signs a decrypt request, freshly each time it is sent: the cluster
// decides a signed request once.
func (c *Client) sign(req *custosv1.DecryptRequest) error {
	if c.signer == nil {
		return nil
	}
	data := sha256.Sum256(req.GetCiphertext())
	cd := envelope.ContextDigest(req.GetEncryptionContext())
	j := req.GetJustification()
	sig, err := requestsig.Sign(c.signer, requestsig.Request{Method: requestsig.MethodDecrypt,
		Header: requestsig.HeaderOf(req.GetCiphertext()), DataDigest: data[:], ContextDigest: cd[:],
		Reason: j.GetReason(), Text: j.GetText(), Ticket: j.GetTicket()}, time.Now())
	if err != nil {
		return fmt.Errorf("custos: sign request: %w", err)
	}
	req.RequestSignature = sig
	return nil
}

// resign signs again the decrypt requests in args that were signed, before
// the call is repeated on another node.
func (c *Client) resign(args any) error {
	switch r := args.(type) {
	case *custosv1.DecryptRequest:
		if r.GetRequestSignature() != nil {
			return c.sign(r)
		}
	case *custosv1.BatchDecryptRequest:
		for _, item := range r.GetRequests() {
			if item.GetRequestSignature() != nil {
				if err := c.sign(item); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
