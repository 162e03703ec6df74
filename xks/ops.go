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

func (h *Handler) metadata(ctx context.Context, p kms.Principal, k xksKey) (any, *apiError) {
	info, err := h.svc.XKSKeyMetadata(ctx, p, k.name)
	if err != nil {
		return nil, fromDomain(err)
	}
	resp := metadataResponse{KeySpec: "AES_256", KeyUsage: []string{}, KeyStatus: "DISABLED"}
	if info.Encrypt {
		resp.KeyUsage = append(resp.KeyUsage, "ENCRYPT")
	}
	if info.Decrypt {
		resp.KeyUsage = append(resp.KeyUsage, "DECRYPT")
	}
	if info.Enabled {
		resp.KeyStatus = "ENABLED"
	}
	return resp, nil
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

func (h *Handler) encrypt(ctx context.Context, p kms.Principal, k xksKey, req *request) (any, *apiError) {
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
		if info, err := h.svc.XKSKeyMetadata(ctx, p, k.name); err == nil && info.Encrypt && !info.Decrypt {
			return nil, fail(errInvalidKeyUsage, "key %q is encrypt-only for this key store: no CDIV (it needs a verifying decrypt)", k.id)
		}
	}
	out, err := h.svc.XKSEncrypt(ctx, p, k.name, pt, aad, cdiv)
	if err != nil {
		return nil, h.usageError(ctx, p, k.name, true, err)
	}
	enc := base64.StdEncoding.EncodeToString
	resp := encryptResponse{Ciphertext: enc(out.Ciphertext), CiphertextMeta: enc(out.Metadata),
		IV: enc(out.IV), Tag: enc(out.Tag)}
	if cdiv {
		resp.CDIV = enc(out.CDIV)
	}
	return resp, nil
}

// decrypt also returns the decision record, if one was committed.
func (h *Handler) decrypt(ctx context.Context, px *prefix, md *requestMetadata, p kms.Principal, k xksKey, req *request) (any, *apiError, *custosv1.DecisionRecord) {
	ct, iv, tag, aad, version, aerr := decryptInput(req)
	if aerr != nil {
		return nil, aerr, nil
	}
	pt, rec, err := h.svc.XKSDecrypt(ctx, p, k.name, version, iv, ct, tag, aad, justification(px, md, k))
	if err != nil {
		aerr := h.usageError(ctx, p, k.name, false, err)
		var pe *kms.PendingError
		if errors.As(err, &pe) {
			aerr.msg += " (kmsRequestId " + md.KMSRequestID + ")"
		}
		return nil, aerr, rec
	}
	defer clear(pt)
	return map[string]string{"plaintext": base64.StdEncoding.EncodeToString(pt)}, nil, rec
}

// decryptInput decodes and checks a decrypt request's fields.
func decryptInput(req *request) (ct, iv, tag, aad []byte, version uint32, _ *apiError) {
	bad := func(e *apiError) ([]byte, []byte, []byte, []byte, uint32, *apiError) { return nil, nil, nil, nil, 0, e }
	if err := checkAlgorithm(req.EncryptionAlg); err != nil {
		return bad(err)
	}
	var aerr *apiError
	var meta []byte
	for _, f := range []struct {
		name string
		v    *string
		dst  *[]byte
		req  bool
	}{{"ciphertext", req.Ciphertext, &ct, true}, {"initializationVector", req.IV, &iv, true},
		{"authenticationTag", req.Tag, &tag, true}, {"additionalAuthenticatedData", req.AAD, &aad, false},
		{"ciphertextMetadata", req.CiphertextMeta, &meta, false}} {
		if f.req {
			*f.dst, aerr = required(f.name, f.v)
		} else {
			*f.dst, aerr = field(f.name, f.v)
		}
		if aerr != nil {
			return bad(aerr)
		}
	}
	switch {
	case len(iv) != 12 && len(iv) != 16:
		return bad(fail(errValidation, "initializationVector must be 12 or 16 bytes"))
	case len(tag) != 16:
		return bad(fail(errValidation, "authenticationTag must be 16 bytes"))
	case len(meta) > maxMetadataLen:
		return bad(fail(errValidation, "ciphertextMetadata is longer than 20 bytes"))
	case req.CiphertextMeta == nil:
		return bad(fail(errInvalidCT, "ciphertextMetadata is missing: custos always returns it from encrypt"))
	}
	version, err := kms.ParseXKSMetadata(meta)
	if err != nil {
		return bad(fromDomain(err))
	}
	return ct, iv, tag, aad, version, nil
}

// justification maps a decrypt's requestMetadata to a custos justification:
// the reason from the prefix's ReasonMap, the kmsRequestId as the ticket,
// and the metadata as the text, so the ledger record carries them.
func justification(p *prefix, md *requestMetadata, k xksKey) *custosv1.Justification {
	reason, ok := p.reasons["kmsViaService="+md.KMSViaService]
	if !ok || md.KMSViaService == "" {
		if reason, ok = p.reasons["kmsOperation="+md.KMSOperation]; !ok {
			reason = p.dflt
		}
	}
	var b strings.Builder
	b.WriteString("AWS KMS XKS decrypt")
	if k.id != k.name {
		// A mapped key id (kms.XKSKeyName): the record names the key by
		// its custos name, the text by the id AWS KMS knows it by.
		b.WriteString(" externalKeyId=" + k.id)
	}
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
