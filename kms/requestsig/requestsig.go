// Package requestsig is the caller's signature over a decrypt-type request
// (docs/signed-requests.md): clients sign what they ask with the private
// key of their mTLS certificate, and every replica (at apply) and every
// auditor (on the record) checks it, so that no node can decide in a
// principal's name what the principal did not ask.
//
// The signed message is
//
//	"custos-request-v2\x00" || field(method) || field(ciphertext header)
//	|| field(ciphertext SHA-256) || field(encryption context digest)
//	|| field(reason) || field(text) || field(ticket) || field(nonce)
//	|| field(time)
//
// where field(x) is the big-endian uint32 length of x followed by x, method
// is "Decrypt" or "ReEncrypt", the ciphertext header is the ciphertext's
// first bytes up to and including its key version (format version, kind,
// key name length, key name, key version: docs/wrapped-data-key.md), so
// that the signature names the key, the version and the kind the replicas
// decide on (they never see the ciphertext, only its digest), the two
// digests are 32 bytes, reason is the decimal number of the
// custos.v1.Reason, and time the decimal Unix nanoseconds of
// RequestSignature.time_unix_nano. The signature is ASN.1
// DER ECDSA P-256 over SHA-256 of the message (CRYPTREC: ECDSA P-256 with
// SHA-256).
package requestsig

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Context starts every signed request message.
const Context = "custos-request-v2\x00"

// The methods a signature names.
const (
	MethodDecrypt   = "Decrypt"
	MethodReEncrypt = "ReEncrypt"
)

// NonceSize is the size of a request nonce.
const NonceSize = 16

// MaxSkew is how far a signed request's time may be from the cluster's
// clock; its nonce is remembered for twice as long.
const MaxSkew = 2 * time.Minute

// MaxSignature bounds the signature's size (a DER P-256 signature is at
// most 72 bytes).
const MaxSignature = 80

// ErrInvalid is wrapped by every error Verify returns.
var ErrInvalid = errors.New("request signature does not hold")

// Request is what a caller signs.
type Request struct {
	// Method is MethodDecrypt or MethodReEncrypt.
	Method string
	// Header is the ciphertext's header (HeaderOf).
	Header []byte
	// DataDigest is SHA-256 of the ciphertext as sent, ContextDigest that
	// of the canonical encryption context (32 bytes each).
	DataDigest, ContextDigest []byte
	Reason                    custosv1.Reason
	Text, Ticket              string
}

// Message returns the bytes whose SHA-256 a request signature signs.
func Message(r Request, nonce []byte, timeUnixNano int64) []byte {
	fields := [][]byte{[]byte(r.Method), r.Header, r.DataDigest, r.ContextDigest,
		[]byte(strconv.FormatInt(int64(r.Reason), 10)), []byte(r.Text), []byte(r.Ticket), nonce,
		[]byte(strconv.FormatInt(timeUnixNano, 10))}
	n := len(Context)
	for _, f := range fields {
		n += 4 + len(f)
	}
	b := make([]byte, 0, n)
	b = append(b, Context...)
	for _, f := range fields {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

// Sign signs r at now with signer, the private key of the caller's
// certificate (an ECDSA P-256 key), under a fresh nonce.
func Sign(signer crypto.Signer, r Request, now time.Time) (*custosv1.RequestSignature, error) {
	pub, ok := signer.Public().(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("requestsig: the certificate key is not ECDSA P-256: requests are signed with P-256 keys only")
	}
	nonce := make([]byte, NonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("requestsig: nonce: %w", err)
	}
	t := now.UnixNano()
	d := sha256.Sum256(Message(r, nonce, t))
	sig, err := signer.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("requestsig: sign: %w", err)
	}
	return &custosv1.RequestSignature{Nonce: nonce, TimeUnixNano: t, Signature: sig}, nil
}

// Verify checks sig over r under pub, the public key of the principal's
// certificate. It checks the form and the signature, not the time or the
// nonce's freshness, which are the cluster's to judge.
func Verify(pub crypto.PublicKey, r Request, sig *custosv1.RequestSignature) error {
	switch {
	case sig == nil:
		return fmt.Errorf("%w: none", ErrInvalid)
	case len(sig.Nonce) != NonceSize:
		return fmt.Errorf("%w: the nonce is not %d bytes", ErrInvalid, NonceSize)
	case len(sig.Signature) == 0 || len(sig.Signature) > MaxSignature:
		return fmt.Errorf("%w: the signature is empty or longer than %d bytes", ErrInvalid, MaxSignature)
	case len(r.DataDigest) != sha256.Size || len(r.ContextDigest) != sha256.Size:
		return fmt.Errorf("%w: the request has no ciphertext or context digest", ErrInvalid)
	}
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok || k.Curve != elliptic.P256() {
		return fmt.Errorf("%w: the certificate key is not ECDSA P-256", ErrInvalid)
	}
	d := sha256.Sum256(Message(r, sig.Nonce, sig.TimeUnixNano))
	if !ecdsa.VerifyASN1(k, d[:], sig.Signature) {
		return fmt.Errorf("%w: the signature does not verify under the certificate's key", ErrInvalid)
	}
	return nil
}

// Wrapped ciphertext kinds (docs/wrapped-data-key.md).
const (
	kindDataKey = 0x01
	kindPayload = 0x02
)

// HeaderOf returns a ciphertext's header: its bytes up to and including
// the key version (3 + name length + 4 bytes), or all of a ciphertext too
// short to hold one (which no node accepts).
func HeaderOf(ciphertext []byte) []byte {
	if len(ciphertext) < 3 {
		return ciphertext
	}
	n := 3 + int(ciphertext[2]) + 4
	if len(ciphertext) < n {
		return ciphertext
	}
	return ciphertext[:n]
}

// Headers returns the ciphertext headers a decision of operation op on
// version of key can have been asked with: a Decrypt decision names the
// kind (DECRYPT_DATA_KEY a data key, DECRYPT an Encrypt payload); a
// ReEncrypt decision either. A request signature must cover one of them.
func Headers(op custosv1.Operation, key string, version uint32) [][]byte {
	h := func(kind byte) []byte {
		b := append([]byte{0x01, kind, byte(len(key))}, key...)
		return binary.BigEndian.AppendUint32(b, version)
	}
	switch op {
	case custosv1.Operation_OPERATION_DECRYPT_DATA_KEY:
		return [][]byte{h(kindDataKey)}
	case custosv1.Operation_OPERATION_DECRYPT:
		return [][]byte{h(kindPayload)}
	case custosv1.Operation_OPERATION_REENCRYPT:
		return [][]byte{h(kindDataKey), h(kindPayload)}
	}
	return nil
}

// VerifyDecision checks sig over a decision: r without its method and
// header, which come from the decision's operation, key and version (the
// method MethodOf names, a header Headers names).
func VerifyDecision(pub crypto.PublicKey, r Request, op custosv1.Operation, key string, version uint32, sig *custosv1.RequestSignature) error {
	hs := Headers(op, key, version)
	if len(hs) == 0 || len(key) == 0 || len(key) > 255 {
		return fmt.Errorf("%w: operation %s is not a signed one", ErrInvalid, op)
	}
	r.Method = MethodOf(op)
	var err error
	for _, h := range hs {
		r.Header = h
		if err = Verify(pub, r, sig); err == nil {
			return nil
		}
	}
	return err
}

// MethodOf returns the method a decision's operation was asked by:
// Decrypt for DECRYPT and DECRYPT_DATA_KEY, ReEncrypt for REENCRYPT, ""
// otherwise.
func MethodOf(op custosv1.Operation) string {
	switch op {
	case custosv1.Operation_OPERATION_DECRYPT, custosv1.Operation_OPERATION_DECRYPT_DATA_KEY:
		return MethodDecrypt
	case custosv1.Operation_OPERATION_REENCRYPT:
		return MethodReEncrypt
	}
	return ""
}
