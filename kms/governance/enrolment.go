package governance

import (
	"crypto"
	"crypto/ecdsa"
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
//	SHA-256("custos-enrolment-v1\x00" || cluster id || "\x00" || officer || "\x00" || issued_at || not_after)
//
// (issued_at and not_after: 8 bytes each, big-endian Unix seconds). The
// code is issued_at, not_after, then the ECDSA P-256 signature (ASN.1 DER)
// over that digest; it is shown base64url (no padding). Its context string
// differs from SignatureContext, so no code is a statement signature and
// no statement signature is a code. A code serves for at most
// MaxEnrolmentLifetime from its issue, and the cluster takes it once.

// EnrolmentContext prefixes what an enrolment code signs.
const EnrolmentContext = "custos-enrolment-v1\x00"

// MaxEnrolmentLifetime bounds how far ahead an enrolment code's not_after
// may be when it is used.
const MaxEnrolmentLifetime = 24 * time.Hour

// enrolmentHeader is the length of a code's two times; maxEnrolmentCode
// bounds a code's length (the times and a DER signature).
const (
	enrolmentHeader  = 16
	maxEnrolmentCode = enrolmentHeader + maxOfficerSignature
)

// enrolmentIssueSkew is how far ahead of the verifier's clock a code's
// issue time may be (the officer's clock ahead of the cluster's).
const enrolmentIssueSkew = 5 * time.Minute

func enrolmentDigest(clusterID, officer string, times []byte) []byte {
	h := sha256.New()
	h.Write([]byte(EnrolmentContext))
	h.Write([]byte(clusterID))
	h.Write([]byte{0})
	h.Write([]byte(officer))
	h.Write([]byte{0})
	h.Write(times)
	return h.Sum(nil)
}

// EnrolmentNotAfter returns a code's not_after (Unix seconds), 0 for
// something too short to be a code.
func EnrolmentNotAfter(code []byte) int64 {
	if len(code) < enrolmentHeader {
		return 0
	}
	return int64(binary.BigEndian.Uint64(code[8:16]))
}

// MakeEnrolment returns officer's enrolment code for cluster clusterID,
// issued now and valid until notAfter, signed by signer (the officer's
// key).
func MakeEnrolment(signer crypto.Signer, clusterID, officer string, notAfter time.Time) ([]byte, error) {
	pub, err := officerSigner(signer, officer)
	if err != nil {
		return nil, err
	}
	times := binary.BigEndian.AppendUint64(nil, uint64(time.Now().Unix()))
	times = binary.BigEndian.AppendUint64(times, uint64(notAfter.Unix()))
	d := enrolmentDigest(clusterID, officer, times)
	sig, err := signer.Sign(rand.Reader, d, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("governance: officer %q: signing the enrolment code: %w", officer, err)
	}
	if !ecdsa.VerifyASN1(pub, d, sig) {
		return nil, fmt.Errorf("%w: officer %q: the signer returned a signature that does not verify", ErrBadSignature, officer)
	}
	return append(times, sig...), nil
}

// EncodeEnrolment and DecodeEnrolment convert a code to and from the text
// officers copy (base64url, no padding).
func EncodeEnrolment(code []byte) string { return base64.RawURLEncoding.EncodeToString(code) }

// DecodeEnrolment is the inverse of EncodeEnrolment (spaces and newlines
// around it ignored).
func DecodeEnrolment(s string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) <= enrolmentHeader || len(b) > maxEnrolmentCode {
		return nil, fmt.Errorf("%w: not an enrolment code (custos officer enrol prints one)", ErrMalformed)
	}
	return b, nil
}

// VerifyEnrolment checks that code is officer's enrolment code for cluster
// clusterID, signed by pub, issued before now (allowing a small skew),
// valid at now, and for at most MaxEnrolmentLifetime from its issue.
func VerifyEnrolment(pub *ecdsa.PublicKey, clusterID, officer string, code []byte, now time.Time) error {
	if len(code) <= enrolmentHeader || len(code) > maxEnrolmentCode {
		return fmt.Errorf("%w: no enrolment code of officer %q (custos officer enrol)", ErrBadSignature, officer)
	}
	issued := time.Unix(int64(binary.BigEndian.Uint64(code[:8])), 0)
	notAfter := time.Unix(EnrolmentNotAfter(code), 0)
	switch {
	case now.After(notAfter):
		return fmt.Errorf("%w: officer %q's enrolment code expired at %s", ErrBadSignature, officer, notAfter.UTC().Format(time.RFC3339))
	case notAfter.Sub(issued) > MaxEnrolmentLifetime || notAfter.Before(issued):
		return fmt.Errorf("%w: officer %q's enrolment code is valid for more than %s", ErrBadSignature, officer, MaxEnrolmentLifetime)
	case issued.Sub(now) > enrolmentIssueSkew:
		return fmt.Errorf("%w: officer %q's enrolment code is issued in the future (%s)", ErrBadSignature, officer, issued.UTC().Format(time.RFC3339))
	}
	if pub == nil || !ecdsa.VerifyASN1(pub, enrolmentDigest(clusterID, officer, code[:enrolmentHeader]), code[enrolmentHeader:]) {
		return fmt.Errorf("%w: the enrolment code is not officer %q's for this cluster", ErrBadSignature, officer)
	}
	return nil
}
