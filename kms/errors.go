package kms

import (
	"errors"
	"strconv"
)

// Domain errors. The gRPC layer maps them to status codes in one place
// (api.toStatus) with errors.Is; messages built on them name the offending
// field or key and never carry key material or plaintext.
var (
	// ErrInvalidArgument: a malformed request field (the message names it).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotFound: the named key (or version) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: a key with that name exists (or existed).
	ErrAlreadyExists = errors.New("already exists")
	// ErrFailedPrecondition: the key's state forbids the operation (disabled,
	// version below the minimum, cluster not initialised).
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrPermissionDenied: policy denies the principal.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrDecryptionFailed: the ciphertext did not authenticate (tampered,
	// wrong encryption context, wrong key). Nothing more is said.
	ErrDecryptionFailed = errors.New("decryption failed")
	// ErrUnavailable: the decision could not be committed or the HSM is not
	// reachable. Nothing was released (fail closed).
	ErrUnavailable = errors.New("unavailable")
	// ErrInternal: a bug or an inconsistency; details go to the log only.
	ErrInternal = errors.New("internal error")
)

// ErrResourceExhausted means a policy limit was reached (decrypts per hour,
// requests waiting for approval).
var ErrResourceExhausted = errors.New("resource exhausted")

// PendingError is returned for a decrypt that needs the officers' approval:
// the request was recorded as PENDING with RequestID, and the caller may
// retry once it is approved. It matches ErrFailedPrecondition.
type PendingError struct {
	RequestID string
	// Seq is the ledger position of the PENDING decision.
	Seq uint64
}

func (e *PendingError) Error() string {
	return "approval required: request " + e.RequestID + " is waiting for the security officers (decision " +
		strconv.FormatUint(e.Seq, 10) + ": PENDING)"
}

// Is makes errors.Is(err, ErrFailedPrecondition) true.
func (e *PendingError) Is(target error) bool { return target == ErrFailedPrecondition }
