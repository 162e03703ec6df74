package kms

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/custos-kms/custos/hsm"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// AWS KMS External Key Store (XKS) support, below the HTTP layer (package
// xks). An XKS key id names a custos key (XKSKeyName); AWS KMS sends the plaintext
// (a data key, at most XKSMaxPlaintext bytes) and gets back the AES-256-GCM
// ciphertext, IV and tag computed in the HSM under the key's primary KEK.
//
// ciphertextMetadata, format 1 (docs/xks.md), 5 bytes:
//
//	offset  size  field
//	0       1     format, 0x01
//	1       4     key version, big-endian, >= 1
//
// The AES-GCM additional data given to the HSM is, as the XKS specification
// requires,
//
//	uint16 BE len(aad) || aad || uint8 len(metadata) || metadata
//
// where aad is the request's additionalAuthenticatedData (empty if absent),
// so the tag covers the AAD, the key version and the format.
const (
	// XKSMaxPlaintext is the largest plaintext (and so ciphertext) accepted:
	// the specification's minimum, 4300 bytes.
	XKSMaxPlaintext = 4300
	// XKSMaxAAD is the largest additionalAuthenticatedData: the
	// specification's minimum, 8192 bytes.
	XKSMaxAAD = 8192
	// XKSMetadataLen is the length of custos's ciphertextMetadata.
	XKSMetadataLen = 5

	xksMetadataFormat1 = 0x01
)

// XKSCiphertext is the result of XKSEncrypt.
type XKSCiphertext struct {
	KeyVersion uint32
	Metadata   []byte // ciphertextMetadata
	IV         []byte // 12 bytes, from the HSM's RNG
	Ciphertext []byte // same length as the plaintext
	Tag        []byte // 16 bytes
	// CDIV is the XKS ciphertextDataIntegrityValue (SHA-256 over AAD,
	// metadata, IV, ciphertext and tag), set when XKSEncrypt was asked to
	// verify. It is computed before the verifying decryption, as the
	// specification recommends.
	CDIV []byte
}

// XKSKeyInfo is what GetKeyMetadata reports about a key.
type XKSKeyInfo struct {
	// Enabled is false for a disabled or revoked key, and for one that is
	// destroyed or scheduled for destruction as a whole.
	Enabled bool
	// Revoked says the key was revoked by a security officer.
	Revoked bool
	// Encrypt and Decrypt say whether the principal is named in the key's
	// policy for that use.
	Encrypt, Decrypt bool
}

// XKS key ids (the specification's externalKeyId) are 1 to XKSMaxKeyIDLen
// characters of [A-Za-z0-9._-]; custos key names are 1 to MaxKeyNameLen of
// the same set starting with a letter or digit. XKSKeyName maps the first
// onto the second (docs/xks.md, "Key ids"):
//
//   - an id that is a custos key name names that key, unless it has the
//     form of a mapped name (below);
//   - any other id (a leading '_', '.' or '-', more than 64 characters, or
//     the form of a mapped name) names the key
//     "xks-" + the first 60 hex digits of SHA-256(id), exactly 64
//     characters.
//
// The two images are disjoint (no identity-mapped id has the mapped form)
// and distinct ids of the second kind differ in their 240-bit SHA-256
// prefix, so two ids never name one key; the ledger records the id of a
// mapped key beside its name (XKSDecrypt's justification text).
const (
	// XKSMaxKeyIDLen is the longest externalKeyId the specification allows.
	XKSMaxKeyIDLen = 128

	xksMappedPrefix = "xks-"
	xksMappedHex    = MaxKeyNameLen - len(xksMappedPrefix)
)

// ErrXKSKeyID means a string is not an externalKeyId the XKS specification
// allows. It matches ErrInvalidArgument too.
var ErrXKSKeyID = fmt.Errorf("%w: not an XKS key id", ErrInvalidArgument)

// XKSKeyName returns the custos key name of the XKS key id id, and whether
// the name is mapped (differs from id). An id the specification does not
// allow is ErrXKSKeyID.
func XKSKeyName(id string) (name string, mapped bool, err error) {
	if id == "" || len(id) > XKSMaxKeyIDLen {
		return "", false, fmt.Errorf("%w: %d characters, want 1 to %d", ErrXKSKeyID, len(id), XKSMaxKeyIDLen)
	}
	for _, c := range []byte(id) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return "", false, fmt.Errorf("%w: use letters, digits, '_', '.' and '-' only", ErrXKSKeyID)
		}
	}
	if ValidateKeyName(id) == nil && !xksMappedForm(id) {
		return id, false, nil
	}
	sum := sha256.Sum256([]byte(id))
	return xksMappedPrefix + hex.EncodeToString(sum[:])[:xksMappedHex], true, nil
}

// xksMappedForm reports whether name has the form of a mapped name: "xks-"
// and 60 lower-case hex digits.
func xksMappedForm(name string) bool {
	h, ok := strings.CutPrefix(name, xksMappedPrefix)
	if !ok || len(h) != xksMappedHex {
		return false
	}
	for _, c := range []byte(h) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// XKSMetadata returns the ciphertextMetadata for a key version.
func XKSMetadata(version uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{xksMetadataFormat1}, version)
}

// ParseXKSMetadata returns the key version in a ciphertextMetadata. Any
// other format or length is ErrDecryptionFailed: custos never produced it.
func ParseXKSMetadata(b []byte) (uint32, error) {
	if len(b) != XKSMetadataLen || b[0] != xksMetadataFormat1 {
		return 0, fmt.Errorf("%w: ciphertextMetadata was not produced by custos", ErrDecryptionFailed)
	}
	v := binary.BigEndian.Uint32(b[1:])
	if v == 0 {
		return 0, fmt.Errorf("%w: ciphertextMetadata names key version 0", ErrDecryptionFailed)
	}
	return v, nil
}

// XKSAAD returns the additional data given to the HSM for a request AAD and
// a ciphertextMetadata, as the XKS specification defines it.
func XKSAAD(aad, metadata []byte) []byte {
	b := make([]byte, 0, 2+len(aad)+1+len(metadata))
	b = binary.BigEndian.AppendUint16(b, uint16(len(aad)))
	b = append(b, aad...)
	b = append(b, byte(len(metadata)))
	return append(b, metadata...)
}

// XKSContextDigest is the context digest written in the decision record of
// an XKS decrypt: SHA-256 of the request's additionalAuthenticatedData.
func XKSContextDigest(aad []byte) [32]byte { return sha256.Sum256(aad) }

// XKSDataDigest is the data digest written in the decision record of an
// XKS decrypt: SHA-256 of IV || ciphertext || tag.
func XKSDataDigest(iv, ct, tag []byte) [32]byte {
	h := sha256.New()
	h.Write(iv)
	h.Write(ct)
	h.Write(tag)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func checkXKSSizes(plaintextOrCT, aad []byte) error {
	switch {
	case len(plaintextOrCT) == 0:
		return fmt.Errorf("%w: plaintext or ciphertext is empty", ErrInvalidArgument)
	case len(plaintextOrCT) > XKSMaxPlaintext:
		return fmt.Errorf("%w: %d bytes, at most %d", ErrXKSTooLarge, len(plaintextOrCT), XKSMaxPlaintext)
	case len(aad) > XKSMaxAAD:
		return fmt.Errorf("%w: additionalAuthenticatedData has %d bytes, at most %d", ErrXKSTooLarge, len(aad), XKSMaxAAD)
	}
	return nil
}

// ErrXKSTooLarge means a plaintext, ciphertext or AAD is larger than custos
// supports (the XKS specification's minimum sizes). It matches
// ErrInvalidArgument too.
var ErrXKSTooLarge = fmt.Errorf("%w: larger than supported", ErrInvalidArgument)

// XKSKeyMetadata reports a key's state and what principal p may do with it
// (a key whose policy names p for neither reports neither). ErrNotFound if
// there is no such key.
func (s *Service) XKSKeyMetadata(ctx context.Context, p Principal, key string) (*XKSKeyInfo, error) {
	if err := validateName("key id", key); err != nil {
		return nil, err
	}
	k, err := s.state.Key(key)
	if err != nil {
		return nil, err
	}
	info := &XKSKeyInfo{
		Enabled: k.Enabled && !k.Revoked && !k.Destroyed && k.DestroyAfterUnixNano == 0, Revoked: k.Revoked,
		Encrypt: slices.Contains(k.Policy.GetEncryptPrincipals(), p.Name),
		Decrypt: slices.Contains(k.Policy.GetDecryptPrincipals(), p.Name),
	}
	return info, nil
}

// XKSEncrypt encrypts plaintext with AES-256-GCM in the HSM under the
// primary version of key, for a principal the key's policy allows to
// encrypt, with a fresh 12-byte IV from the HSM. A disabled or revoked key
// is ErrFailedPrecondition. With verify, it also computes the CDIV and then
// decrypts the result in the HSM and compares it with the plaintext (the
// result is not returned, so no decision is needed); a mismatch is
// ErrInternal.
func (s *Service) XKSEncrypt(ctx context.Context, p Principal, key string, plaintext, aad []byte, verify bool) (*XKSCiphertext, error) {
	if err := validateName("key id", key); err != nil {
		return nil, err
	}
	if err := checkXKSSizes(plaintext, aad); err != nil {
		return nil, err
	}
	// Like seal: read the key's state only once this node has caught up with
	// everything acknowledged before the request (docs/robustness.md, KI-2).
	if err := s.linearize(ctx); err != nil {
		return nil, err
	}
	kv, id, iv, err := s.encryptingVersion(ctx, p, key)
	if err != nil {
		return nil, err
	}
	meta := XKSMetadata(kv.Version)
	out, err := s.hsm.EncryptGCM(ctx, id, iv, plaintext, XKSAAD(aad, meta))
	if err != nil {
		return nil, s.kekError(ctx, id, "encrypt", err)
	}
	if len(out) != len(plaintext)+hsm.GCMTagSize {
		return nil, fmt.Errorf("%w: hsm returned %d bytes for %d of plaintext", ErrInternal, len(out), len(plaintext))
	}
	n := len(plaintext)
	c := &XKSCiphertext{KeyVersion: kv.Version, Metadata: meta, IV: iv, Ciphertext: out[:n:n], Tag: out[n:]}
	if !verify {
		return c, nil
	}
	h := sha256.New()
	for _, b := range [][]byte{aad, c.Metadata, c.IV, c.Ciphertext, c.Tag} {
		h.Write(b)
	}
	c.CDIV = h.Sum(nil)
	back, err := s.hsm.DecryptGCM(ctx, id, iv, out, XKSAAD(aad, meta))
	if err != nil {
		return nil, fmt.Errorf("%w: verifying decryption failed: %v", ErrInternal, err)
	}
	defer clear(back)
	if subtle.ConstantTimeCompare(back, plaintext) != 1 {
		return nil, fmt.Errorf("%w: verifying decryption returned different bytes", ErrInternal)
	}
	return c, nil
}

// XKSDecrypt is Decrypt for AWS KMS: it builds the Decide command from the
// XKS request (principal p, the key and version, the justification j, the
// context digest of the request AAD) and hands it to the same pipeline as
// Decrypt (decideRelease): the decision is evaluated against the policy at
// its log position and recorded in the ledger, this node catches up with
// it, and only then, for an ALLOW, come the notification before release
// the key's policy may ask for and the HSM decryption (docs/architecture.md,
// invariants 2, 3 and 6). It returns the committed record with the
// plaintext. A PENDING decision is a *PendingError; DENY is the policy's
// error (the record is committed all the same). An authentication failure
// (wrong AAD, IV, tag, ciphertext or metadata) is ErrDecryptionFailed,
// after an ALLOW record and its RELEASE_BLOCKED record; so is a key version
// that does not exist (to AWS KMS, a ciphertext custos did not produce).
func (s *Service) XKSDecrypt(ctx context.Context, p Principal, key string, version uint32, iv, ct, tag, aad []byte,
	j *custosv1.Justification) ([]byte, *custosv1.DecisionRecord, error) {
	if err := validateName("key id", key); err != nil {
		return nil, nil, err
	}
	if err := checkXKSSizes(ct, aad); err != nil {
		return nil, nil, err
	}
	if len(iv) != hsm.GCMIVSize || len(tag) != hsm.GCMTagSize {
		// custos only ever produces 12-byte IVs and 16-byte tags.
		return nil, nil, fmt.Errorf("%w: IV or tag length", ErrDecryptionFailed)
	}
	if version == 0 {
		return nil, nil, fmt.Errorf("%w: key version 0", ErrDecryptionFailed)
	}
	if err := validateJustification(j); err != nil {
		return nil, nil, err
	}
	digest := XKSContextDigest(aad)
	data := XKSDataDigest(iv, ct, tag)
	cmd := &raftlogv1.Command{Op: &raftlogv1.Command_Decide{Decide: &raftlogv1.Decide{
		Key: key, KeyVersion: version, Operation: custosv1.Operation_OPERATION_DECRYPT,
		Reason: j.GetReason(), JustificationText: j.GetText(), Ticket: j.GetTicket(),
		ContextDigest: digest[:], RequestId: newRequestID(), DataDigest: data[:],
	}}}
	in := make([]byte, 0, len(ct)+len(tag))
	in = append(append(in, ct...), tag...)
	rel := releasing{key: key, version: version, open: func(ctx context.Context, kek hsm.KeyRef) ([]byte, error) {
		return s.openGCM(ctx, kek, iv, in, XKSAAD(aad, XKSMetadata(version)))
	}}
	rec, pt, err := s.decideRelease(ctx, p, s.proposer(ctx, p, cmd), rel)
	if err != nil && rec != nil && rec.Outcome != custosv1.Outcome_OUTCOME_ALLOW && rec.MatchedRule == "key-version:not-found" {
		// The key exists but not the version the metadata names: to AWS
		// KMS that is a ciphertext custos did not produce.
		return nil, rec, fmt.Errorf("%w: %v", ErrDecryptionFailed, err)
	}
	return pt, rec, err
}
