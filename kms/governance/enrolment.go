package governance

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"
	"time"
)

// Enrolment codes (docs/console.md, *Enrolment codes*): before registering
// a security key with no officer signature on the proposal, the officer it
// is for signs, with their officer key, that they are enrolling one:
//
//	SHA-256("custos-enrolment-v1\x00" || cluster id || "\x00" || officer || "\x00" || not_after (8 bytes, big-endian Unix seconds))
//
// The code is not_after followed by the ECDSA P-256 signature (ASN.1 DER)
// over that digest; it is shown base64url (no padding). Its context string
// differs from SignatureContext, so no code is a statement signature and
// no statement signature is a code.

// EnrolmentContext prefixes what an enrolment code signs.
const EnrolmentContext = "custos-enrolment-v1\x00"

// MaxEnrolmentLifetime bounds how far ahead an enrolment code's not_after
// may be when it is used.
const MaxEnrolmentLifetime = 24 * time.Hour

// maxEnrolmentCode bounds a code's length: 8 bytes of time and a DER
// signature.
const maxEnrolmentCode = 8 + maxOfficerSignature

func enrolmentDigest(clusterID, officer string, notAfter int64) []byte {
	h := sha256.New()
	h.Write([]byte(EnrolmentContext))
	h.Write([]byte(clusterID))
	h.Write([]byte{0})
	h.Write([]byte(officer))
	h.Write([]byte{0})
	var t [8]byte
	binary.BigEndian.PutUint64(t[:], uint64(notAfter))
	h.Write(t[:])
	return h.Sum(nil)
}

// MakeEnrolment returns officer's enrolment code for cluster clusterID,
// valid until notAfter, signed by signer (the officer's key).
func MakeEnrolment(signer crypto.Signer, clusterID, officer string, notAfter time.Time) ([]byte, error) {
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
	d := enrolmentDigest(clusterID, officer, notAfter.Unix())
	sig, err := signer.Sign(rand.Reader, d, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("governance: officer %q: signing the enrolment code: %w", officer, err)
	}
	if !ecdsa.VerifyASN1(pub, d, sig) {
		return nil, fmt.Errorf("%w: officer %q: the signer returned a signature that does not verify", ErrBadSignature, officer)
	}
	code := binary.BigEndian.AppendUint64(nil, uint64(notAfter.Unix()))
	return append(code, sig...), nil
}

// EncodeEnrolment and DecodeEnrolment convert a code to and from the text
// officers copy (base64url, no padding).
func EncodeEnrolment(code []byte) string { return base64.RawURLEncoding.EncodeToString(code) }

// DecodeEnrolment is the inverse of EncodeEnrolment (spaces and newlines
// around it ignored).
func DecodeEnrolment(s string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) <= 8 || len(b) > maxEnrolmentCode {
		return nil, fmt.Errorf("%w: not an enrolment code (custos officer enrol prints one)", ErrMalformed)
	}
	return b, nil
}

// VerifyEnrolment checks that code is officer's enrolment code for cluster
// clusterID, signed by pub, valid at now and not valid for more than
// MaxEnrolmentLifetime after it.
func VerifyEnrolment(pub *ecdsa.PublicKey, clusterID, officer string, code []byte, now time.Time) error {
	if len(code) <= 8 || len(code) > maxEnrolmentCode {
		return fmt.Errorf("%w: no enrolment code of officer %q (custos officer enrol)", ErrBadSignature, officer)
	}
	notAfter := int64(binary.BigEndian.Uint64(code[:8]))
	switch na := time.Unix(notAfter, 0); {
	case now.After(na):
		return fmt.Errorf("%w: officer %q's enrolment code expired at %s", ErrBadSignature, officer, na.UTC().Format(time.RFC3339))
	case na.Sub(now) > MaxEnrolmentLifetime:
		return fmt.Errorf("%w: officer %q's enrolment code is valid for more than %s", ErrBadSignature, officer, MaxEnrolmentLifetime)
	}
	if pub == nil || !ecdsa.VerifyASN1(pub, enrolmentDigest(clusterID, officer, notAfter), code[8:]) {
		return fmt.Errorf("%w: the enrolment code is not officer %q's for this cluster", ErrBadSignature, officer)
	}
	return nil
}
