package xks

import (
	"context"
	"errors"
	"fmt"

	"github.com/custos-kms/custos/kms"
)

// Error names and codes from the specification's error table.
const (
	errValidation      = "ValidationException"
	errInvalidState    = "InvalidStateException"
	errInvalidCT       = "InvalidCiphertextException"
	errInvalidKeyUsage = "InvalidKeyUsageException"
	errAuthFailed      = "AuthenticationFailedException"
	errAccessDenied    = "AccessDeniedException"
	errKeyNotFound     = "KeyNotFoundException"
	errInvalidURI      = "InvalidUriPathException"
	errThrottling      = "ThrottlingException"
	errUnsupported     = "UnsupportedOperationException"
	errTimeout         = "DependencyTimeoutException"
	errInternal        = "InternalException"
)

var errStatus = map[string]int{
	errValidation: 400, errInvalidState: 400, errInvalidCT: 400, errInvalidKeyUsage: 400,
	errAuthFailed: 401, errAccessDenied: 403, errKeyNotFound: 404, errInvalidURI: 404,
	errThrottling: 429, errUnsupported: 501, errTimeout: 503, errInternal: 500,
}

// apiError is an XKS error response.
type apiError struct {
	name, msg string
}

func (e *apiError) Error() string { return e.name + ": " + e.msg }

func fail(name, format string, args ...any) *apiError {
	return &apiError{name: name, msg: fmt.Sprintf(format, args...)}
}

// privateMessages are what the XKS caller is told for the kinds whose own
// messages are not shown (kms.ErrorKind.Public false).
var privateMessages = map[*kms.ErrorKind]string{
	kms.ErrorKindDecryptionFailed: "the ciphertext, IV, tag, AAD or ciphertextMetadata is corrupted or does not match",
	kms.ErrorKindDeadlineExceeded: "custos did not answer in time",
	kms.ErrorKindCanceled:         "the request was cancelled before custos answered",
	kms.ErrorKindInternal:         "custos could not complete the request",
}

// fromDomain maps a kms error to the XKS error table by its kind
// (kms.ErrorKinds): a fail-closed ErrUnavailable (not committed, HSM down,
// notification not delivered, node not admitted, HSM object rejected) is
// DependencyTimeoutException (503), which AWS KMS may retry.
func fromDomain(err error) *apiError {
	k := kms.ErrorKindOf(err)
	var pe *kms.PendingError
	switch {
	case errors.As(err, &pe):
		return fail(k.XKS, "approval required: custos request %s is waiting for the security officers", pe.RequestID)
	case k.Public:
		return fail(k.XKS, "%v", err)
	default:
		msg, ok := privateMessages[k]
		if !ok {
			msg = privateMessages[kms.ErrorKindInternal]
		}
		return fail(k.XKS, "%s", msg)
	}
}

// usageError maps err like fromDomain, except that a principal that the
// key's policy does not name for this operation gets
// InvalidKeyUsageException: to this key store the key is decrypt-only,
// encrypt-only or usable for neither, in the specification's terms.
func (h *Handler) usageError(ctx context.Context, p kms.Principal, key string, encrypt bool, err error) *apiError {
	var pe *kms.PendingError
	if errors.Is(err, kms.ErrPermissionDenied) && !errors.As(err, &pe) {
		if info, merr := h.svc.XKSKeyMetadata(ctx, p, key); merr == nil && (encrypt && !info.Encrypt || !encrypt && !info.Decrypt) {
			return fail(errInvalidKeyUsage, "%v", err)
		}
	}
	return fromDomain(err)
}

// printable makes an errorMessage as the specification requires: printable
// ASCII, fewer than 512 characters.
func printable(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	if len(b) > 511 {
		b = b[:511]
	}
	return string(b)
}
