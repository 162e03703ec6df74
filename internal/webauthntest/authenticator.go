// Package webauthntest is a software WebAuthn authenticator for tests: it
// makes ES256 credentials and signs assertions the way a security key does
// (authenticatorData || SHA-256(clientDataJSON)), so that statement signing
// by officers' credentials can be tested below the browser. The browser
// tests use Chromium's virtual authenticator instead.
package webauthntest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"sync"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Flags of authenticatorData.
const (
	FlagUP = 0x01 // user present
	FlagUV = 0x04 // user verified
)

// Authenticator holds one credential and its signature counter.
type Authenticator struct {
	Key *ecdsa.PrivateKey
	ID  []byte

	mu    sync.Mutex
	count uint32
}

// New makes a credential with a random 32-byte id.
func New() *Authenticator {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	id := make([]byte, 32)
	if _, err := rand.Read(id); err != nil {
		panic(err)
	}
	return &Authenticator{Key: k, ID: id}
}

// Credential returns the credential as an officer statement binds it.
func (a *Authenticator) Credential(rpID string, requireUV bool, origins ...string) *custosv1.WebAuthnCredential {
	pub, err := x509.MarshalPKIXPublicKey(&a.Key.PublicKey)
	if err != nil {
		panic(err)
	}
	return &custosv1.WebAuthnCredential{CredentialId: a.ID, PublicKey: pub, RpId: rpID, Origins: origins,
		RequireUserVerification: requireUV, Label: "software test key"}
}

// Params are what a browser and the authenticator put in an assertion.
type Params struct {
	RPID, Origin string
	// Type defaults to "webauthn.get".
	Type        string
	Challenge   []byte
	Flags       byte
	Count       uint32
	CrossOrigin bool
}

// AssertWith signs an assertion with exactly the given parameters.
func (a *Authenticator) AssertWith(p Params) *custosv1.WebAuthnAssertion {
	if p.Type == "" {
		p.Type = "webauthn.get"
	}
	rp := sha256.Sum256([]byte(p.RPID))
	ad := append(rp[:], p.Flags)
	ad = binary.BigEndian.AppendUint32(ad, p.Count)
	cd, err := json.Marshal(map[string]any{"type": p.Type, "challenge": base64.RawURLEncoding.EncodeToString(p.Challenge),
		"origin": p.Origin, "crossOrigin": p.CrossOrigin})
	if err != nil {
		panic(err)
	}
	cdh := sha256.Sum256(cd)
	h := sha256.Sum256(append(append([]byte(nil), ad...), cdh[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, a.Key, h[:])
	if err != nil {
		panic(err)
	}
	return &custosv1.WebAuthnAssertion{CredentialId: a.ID, AuthenticatorData: ad, ClientDataJson: cd, Signature: sig}
}

// Assert signs challenge for rpID and origin with UP and UV set and the
// next counter value.
func (a *Authenticator) Assert(rpID, origin string, challenge []byte) *custosv1.WebAuthnAssertion {
	a.mu.Lock()
	a.count++
	n := a.count
	a.mu.Unlock()
	return a.AssertWith(Params{RPID: rpID, Origin: origin, Challenge: challenge, Flags: FlagUP | FlagUV, Count: n})
}

// SetCount sets the counter the next Assert increments (to replay or
// clone).
func (a *Authenticator) SetCount(n uint32) {
	a.mu.Lock()
	a.count = n
	a.mu.Unlock()
}
