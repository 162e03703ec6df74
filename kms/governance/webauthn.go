package governance

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// WebAuthn officer credentials (docs/console.md, *Signing with a security
// key*). An assertion signs authenticatorData || SHA-256(clientDataJSON)
// with the credential's ES256 key (ECDSA P-256 / SHA-256, CRYPTREC-listed);
// its challenge is the statement's signing digest, SHA-256(SignatureContext
// || statement), so the authenticator signs exactly what a PEM officer key
// would.

const (
	// flagUP and flagUV are authenticatorData's user-present and
	// user-verified bits.
	flagUP = 0x01
	flagUV = 0x04
	// authDataMin is rpIdHash (32) + flags (1) + signCount (4).
	authDataMin = 37
	// Bounds on what an assertion may carry.
	maxAuthData     = 1024
	maxClientData   = 4096
	maxAssertionSig = 80
	minCredentialID = 16
	maxCredentialID = 1023
	maxOrigins      = 16
	maxRPIDLen      = 253
)

// ValidateCredential checks a credential as a statement carries it: an id of
// 16 to 1023 bytes, a P-256 public key, a relying party id that is a host
// name, at most 16 origins, each https on the rp_id's host or a subdomain
// of it, and a label of at most 256 bytes of printable text.
func ValidateCredential(c *custosv1.WebAuthnCredential) error {
	if c == nil {
		return fmt.Errorf("%w: credential is empty", ErrMalformed)
	}
	if n := len(c.GetCredentialId()); n < minCredentialID || n > maxCredentialID {
		return fmt.Errorf("%w: credential_id is %d bytes, not %d to %d", ErrMalformed, n, minCredentialID, maxCredentialID)
	}
	if _, err := ParsePublicKey(c.GetPublicKey()); err != nil {
		return fmt.Errorf("%w: credential public_key: %v", ErrMalformed, err)
	}
	if err := checkHost(c.GetRpId()); err != nil {
		return fmt.Errorf("%w: credential rp_id: %v", ErrMalformed, err)
	}
	if len(c.GetOrigins()) > maxOrigins {
		return fmt.Errorf("%w: credential has more than %d origins", ErrMalformed, maxOrigins)
	}
	for _, o := range c.GetOrigins() {
		if !originOnHost(o, c.GetRpId()) {
			return fmt.Errorf("%w: credential origin %q is not https on %q or a subdomain", ErrMalformed, o, c.GetRpId())
		}
	}
	if c.GetLabel() != "" {
		if err := checkIdent("credential label", c.GetLabel()); err != nil {
			return err
		}
	}
	return nil
}

// checkHost accepts a lower-case DNS host name (letters, digits, '-' and
// '.', labels of 1 to 63) or "localhost".
func checkHost(h string) error {
	if h == "" || len(h) > maxRPIDLen {
		return fmt.Errorf("%q is empty or longer than %d", h, maxRPIDLen)
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%q is not a host name", h)
		}
		for _, r := range label {
			if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
				return fmt.Errorf("%q is not a lower-case host name", h)
			}
		}
	}
	return nil
}

// originOnHost reports whether origin is "https://H" or "https://H:port"
// with H equal to rpID or a subdomain of it, and nothing else (no path,
// user, query or fragment), as WebAuthn relates origins to relying party
// ids.
func originOnHost(origin, rpID string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Scheme != "https" || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return false
	}
	if u.String() != origin {
		return false
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != p {
			return false
		}
	}
	h := u.Hostname()
	return h == rpID || strings.HasSuffix(h, "."+rpID)
}

// clientData is the part of clientDataJSON an assertion is checked on.
type clientData struct {
	Type        string `json:"type"`
	Challenge   string `json:"challenge"`
	Origin      string `json:"origin"`
	CrossOrigin bool   `json:"crossOrigin"`
}

// SignedDigest returns the digest an officer signs for statement bytes,
// SHA-256(SignatureContext || statement): a WebAuthn assertion's challenge.
func SignedDigest(statement []byte) []byte { return digest(statement) }

// VerifyAssertion checks a WebAuthn assertion by credential c over challenge
// and returns the authenticator's signature counter. In order, it refuses
// (ErrBadSignature, saying which check failed): another credential's id,
// oversized or short fields, authenticatorData for another rp_id, user
// presence (UP) not set, user verification (UV) not set when c requires it,
// clientDataJSON that is not JSON, not of type "webauthn.get", for another
// challenge, from an origin c does not allow or cross-origin, and a
// signature that does not verify under c's key.
func VerifyAssertion(c *custosv1.WebAuthnCredential, challenge []byte, a *custosv1.WebAuthnAssertion) (uint32, error) {
	fail := func(format string, args ...any) (uint32, error) {
		return 0, fmt.Errorf("%w: webauthn: "+format, append([]any{ErrBadSignature}, args...)...)
	}
	if c == nil || a == nil {
		return fail("no credential or no assertion")
	}
	if !bytes.Equal(a.GetCredentialId(), c.GetCredentialId()) {
		return fail("the assertion is by another credential")
	}
	ad, cd, sig := a.GetAuthenticatorData(), a.GetClientDataJson(), a.GetSignature()
	switch {
	case len(ad) < authDataMin || len(ad) > maxAuthData:
		return fail("authenticator data is %d bytes", len(ad))
	case len(cd) == 0 || len(cd) > maxClientData:
		return fail("client data is %d bytes", len(cd))
	case len(sig) == 0 || len(sig) > maxAssertionSig:
		return fail("signature is %d bytes", len(sig))
	}
	rpHash := sha256.Sum256([]byte(c.GetRpId()))
	if !bytes.Equal(ad[:32], rpHash[:]) {
		return fail("authenticator data is for another relying party than %q", c.GetRpId())
	}
	flags := ad[32]
	if flags&flagUP == 0 {
		return fail("user presence (UP) not set")
	}
	if c.GetRequireUserVerification() && flags&flagUV == 0 {
		return fail("user verification (UV) not set and the credential requires it")
	}
	var d clientData
	if err := json.Unmarshal(cd, &d); err != nil {
		return fail("client data is not JSON: %v", err)
	}
	if d.Type != "webauthn.get" {
		return fail("client data type %q is not webauthn.get", d.Type)
	}
	got, err := base64.RawURLEncoding.DecodeString(d.Challenge)
	if err != nil || !bytes.Equal(got, challenge) {
		return fail("the challenge is not this statement's digest")
	}
	if d.CrossOrigin {
		return fail("cross-origin assertion")
	}
	if !originAllowed(c, d.Origin) {
		return fail("origin %q is not one the credential allows", d.Origin)
	}
	pub, err := ParsePublicKey(c.GetPublicKey())
	if err != nil {
		return fail("credential public key: %v", err)
	}
	cdHash := sha256.Sum256(cd)
	signed := make([]byte, 0, len(ad)+len(cdHash))
	signed = append(append(signed, ad...), cdHash[:]...)
	h := sha256.Sum256(signed)
	if !ecdsa.VerifyASN1(pub, h[:], sig) {
		return fail("signature does not verify")
	}
	return binary.BigEndian.Uint32(ad[33:37]), nil
}

// originAllowed applies the credential's origins, or, when it lists none,
// https on its rp_id host at any port.
func originAllowed(c *custosv1.WebAuthnCredential, origin string) bool {
	if len(c.GetOrigins()) == 0 {
		if !originOnHost(origin, c.GetRpId()) {
			return false
		}
		u, _ := url.Parse(origin)
		return u.Hostname() == c.GetRpId()
	}
	for _, o := range c.GetOrigins() {
		if o == origin {
			return true
		}
	}
	return false
}

// CredentialIDString is how credential ids are shown: base64url without
// padding, as WebAuthn's id.
func CredentialIDString(id []byte) string { return base64.RawURLEncoding.EncodeToString(id) }

// CounterAdvances reports whether a signature counter got may follow the
// newest one accepted from the credential, last: it must be larger, unless
// both are 0 (an authenticator that keeps no counter). A counter that does
// not advance means a cloned authenticator or a replayed assertion.
func CounterAdvances(last, got uint32) bool {
	if last == 0 && got == 0 {
		return true
	}
	return got > last
}

// maxOfficerSignature bounds a PEM or PKCS#11 officer signature: an ECDSA
// P-256 signature in ASN.1 DER is at most 72 bytes.
const maxOfficerSignature = 80

// CheckSignatureSize refuses an officer signature larger than any that
// could verify (its officer name, signature and assertion fields), so that
// the service can refuse it before it enters the log.
func CheckSignatureSize(sig *custosv1.OfficerSignature) error {
	switch {
	case sig == nil:
		return fmt.Errorf("%w: empty signature", ErrMalformed)
	case len(sig.GetOfficer()) > maxNameLen:
		return fmt.Errorf("%w: officer name longer than %d bytes", ErrMalformed, maxNameLen)
	case len(sig.GetSignature()) > maxOfficerSignature:
		return fmt.Errorf("%w: signature is %d bytes, at most %d", ErrMalformed, len(sig.GetSignature()), maxOfficerSignature)
	}
	if a := sig.GetWebauthn(); a != nil {
		return CheckAssertionSize(a)
	}
	return nil
}

// CheckAssertionSize refuses a WebAuthn assertion larger than any that
// could verify.
func CheckAssertionSize(a *custosv1.WebAuthnAssertion) error {
	switch {
	case len(a.GetCredentialId()) > maxCredentialID:
		return fmt.Errorf("%w: credential_id is %d bytes, at most %d", ErrMalformed, len(a.GetCredentialId()), maxCredentialID)
	case len(a.GetAuthenticatorData()) > maxAuthData:
		return fmt.Errorf("%w: authenticator_data is %d bytes, at most %d", ErrMalformed, len(a.GetAuthenticatorData()), maxAuthData)
	case len(a.GetClientDataJson()) > maxClientData:
		return fmt.Errorf("%w: client_data_json is %d bytes, at most %d", ErrMalformed, len(a.GetClientDataJson()), maxClientData)
	case len(a.GetSignature()) > maxAssertionSig:
		return fmt.Errorf("%w: signature is %d bytes, at most %d", ErrMalformed, len(a.GetSignature()), maxAssertionSig)
	}
	return nil
}
