package xks

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

type metadataResponse struct {
	KeySpec   string   `json:"keySpec"`
	KeyUsage  []string `json:"keyUsage"`
	KeyStatus string   `json:"keyStatus"`
}

// field decodes an optional Base64 field; name is for the error message.
func field(name string, v *string) ([]byte, *apiError) {
	if v == nil {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(*v)
	if err != nil {
		return nil, fail(errValidation, "%s is not valid Base64", name)
	}
	return b, nil
}

func required(name string, v *string) ([]byte, *apiError) {
	if v == nil {
		return nil, fail(errValidation, "%s is missing", name)
	}
	return field(name, v)
}

func checkAlgorithm(v *string) *apiError {
	switch {
	case v == nil:
		return fail(errValidation, "encryptionAlgorithm is missing")
	case *v != "AES_GCM":
		return fail(errUnsupported, "encryptionAlgorithm must be AES_GCM")
	}
	return nil
}

type encryptResponse struct {
	Ciphertext     string `json:"ciphertext"`
	CiphertextMeta string `json:"ciphertextMetadata"`
	IV             string `json:"initializationVector"`
	Tag            string `json:"authenticationTag"`
	CDIV           string `json:"ciphertextDataIntegrityValue,omitempty"`
}

func (h *Handler) encrypt(ctx context.Context, p kms.Principal, key string, req *request) (any, *apiError) {
	if err := checkAlgorithm(req.EncryptionAlg); err != nil {
		return nil, err
	}
	pt, aerr := required("plaintext", req.Plaintext)
	if aerr != nil {
		return nil, aerr
	}
	defer clear(pt)
	aad, aerr := field("additionalAuthenticatedData", req.AAD)
	if aerr != nil {
		return nil, aerr
	}
	cdiv := false
	if req.CDIVAlg != nil {
		if *req.CDIVAlg != "SHA_256" {
			return nil, fail(errUnsupported, "ciphertextDataIntegrityValueAlgorithm must be SHA_256")
		}
		cdiv = true
		// The CDIV is only given after a verifying decryption, which an
		// encrypt-only key does not allow (as the AWS test client expects).
		if info, err := h.svc.XKSKeyMetadata(ctx, p, key); err == nil && info.Encrypt && !info.Decrypt {
			return nil, fail(errInvalidKeyUsage, "key %q is encrypt-only for this key store: no CDIV (it needs a verifying decrypt)", key)
		}
	}
	out, err := h.svc.XKSEncrypt(ctx, p, key, pt, aad, cdiv)
	if err != nil {
		return nil, h.usageError(ctx, p, key, true, err)
	}
	enc := base64.StdEncoding.EncodeToString
	resp := encryptResponse{Ciphertext: enc(out.Ciphertext), CiphertextMeta: enc(out.Metadata),
		IV: enc(out.IV), Tag: enc(out.Tag)}
	if cdiv {
		resp.CDIV = enc(out.CDIV)
	}
	return resp, nil
}

func (h *Handler) decrypt(ctx context.Context, cl *call, px *prefix, p kms.Principal, key string, req *request) (any, *apiError) {
	if err := checkAlgorithm(req.EncryptionAlg); err != nil {
		return nil, err
	}
	ct, aerr := required("ciphertext", req.Ciphertext)
	if aerr != nil {
		return nil, aerr
	}
	iv, aerr := required("initializationVector", req.IV)
	if aerr != nil {
		return nil, aerr
	}
	tag, aerr := required("authenticationTag", req.Tag)
	if aerr != nil {
		return nil, aerr
	}
	aad, aerr := field("additionalAuthenticatedData", req.AAD)
	if aerr != nil {
		return nil, aerr
	}
	meta, aerr := field("ciphertextMetadata", req.CiphertextMeta)
	if aerr != nil {
		return nil, aerr
	}
	switch {
	case len(iv) != 12 && len(iv) != 16:
		return nil, fail(errValidation, "initializationVector must be 12 or 16 bytes")
	case len(tag) != 16:
		return nil, fail(errValidation, "authenticationTag must be 16 bytes")
	case len(meta) > maxMetadataLen:
		return nil, fail(errValidation, "ciphertextMetadata is longer than %d bytes", maxMetadataLen)
	case req.CiphertextMeta == nil:
		return nil, fail(errInvalidCT, "ciphertextMetadata is missing: custos always returns it from encrypt")
	}
	version, err := kms.ParseXKSMetadata(meta)
	if err != nil {
		return nil, fromDomain(err)
	}
	pt, rec, err := h.svc.XKSDecrypt(ctx, p, key, version, iv, ct, tag, aad, justification(px, cl.md))
	if rec != nil {
		cl.seq, cl.reqID = rec.Seq, rec.RequestId
	}
	if err != nil {
		aerr := h.usageError(ctx, p, key, false, err)
		var pe *kms.PendingError
		if errors.As(err, &pe) {
			aerr.msg += " (kmsRequestId " + cl.md.KMSRequestID + ")"
		}
		return nil, aerr
	}
	defer clear(pt)
	return map[string]string{"plaintext": base64.StdEncoding.EncodeToString(pt)}, nil
}

// justification maps a decrypt's requestMetadata to a custos justification:
// the reason from the prefix's ReasonMap, the kmsRequestId as the ticket,
// and the metadata as the text, so the ledger record carries them.
func justification(p *prefix, md *requestMetadata) *custosv1.Justification {
	reason, ok := p.reasons["kmsViaService="+md.KMSViaService]
	if !ok || md.KMSViaService == "" {
		if reason, ok = p.reasons["kmsOperation="+md.KMSOperation]; !ok {
			reason = p.dflt
		}
	}
	var b strings.Builder
	b.WriteString("AWS KMS XKS decrypt")
	for _, kv := range [][2]string{{"kmsOperation", md.KMSOperation}, {"kmsRequestId", md.KMSRequestID},
		{"kmsViaService", md.KMSViaService}, {"awsPrincipalArn", md.AWSPrincipalARN}, {"kmsKeyArn", md.KMSKeyARN},
		{"awsSourceVpc", md.AWSSourceVPC}, {"awsSourceVpce", md.AWSSourceVPCE}} {
		if kv[1] != "" {
			b.WriteString(" " + kv[0] + "=" + kv[1])
		}
	}
	return &custosv1.Justification{Reason: reason, Text: truncate(b.String(), kms.MaxJustificationText),
		Ticket: truncate(md.KMSRequestID, kms.MaxTicket)}
}

// truncate cuts s to at most n bytes of valid UTF-8.
func truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
