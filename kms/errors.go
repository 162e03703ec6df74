package kms

import "errors"

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
