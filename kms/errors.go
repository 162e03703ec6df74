package kms

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"google.golang.org/grpc/codes"
)

// Domain errors. Every front door (gRPC in package api, XKS in package xks,
// forwarding between nodes in forward.go) maps them through one table,
// ErrorKinds, with errors.Is; messages built on them name the offending field or
// key and never carry key material or plaintext.
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

// ErrApprovalRequired is what every *PendingError matches (besides
// ErrFailedPrecondition): the decrypt was recorded as PENDING and waits for
// the security officers.
var ErrApprovalRequired = fmt.Errorf("%w: approval required", ErrFailedPrecondition)

// ErrHSMObjectRejected means an HSM object this node looked up (a key
// version's KEK, the domain key) is not the one the log records: its key
// check value, attributes or uniqueness do not match. Nothing was done with
// it, nothing was released. It matches ErrUnavailable: the request fails
// closed and may succeed on another node.
var ErrHSMObjectRejected = fmt.Errorf("%w: an HSM object is not the one the log records; nothing was done with it", ErrUnavailable)

// ErrHSMFailed means this node's HSM failed a call (device or session
// error, token gone, login lost). It matches ErrUnavailable: the request
// fails closed and may succeed on another node. Callers see only this
// sentence; the PKCS#11 function and return value go to the node's log.
var ErrHSMFailed = fmt.Errorf("%w: this node's HSM failed the request", ErrUnavailable)

// ErrNotificationFailed means a key's policy requires notification before
// release (docs/architecture.md, invariant 6) and the notification could
// not be delivered: nothing was released. It matches ErrUnavailable.
var ErrNotificationFailed = fmt.Errorf("%w: the notification required before release could not be delivered", ErrUnavailable)

// PendingError is returned for a decrypt that needs the officers' approval:
// the request was recorded as PENDING with RequestID, and the caller may
// retry once it is approved. It matches ErrApprovalRequired and
// ErrFailedPrecondition.
type PendingError struct {
	RequestID string
	// Seq is the ledger position of the PENDING decision.
	Seq uint64
}

func (e *PendingError) Error() string {
	return "approval required: request " + e.RequestID + " is waiting for the security officers (decision " +
		strconv.FormatUint(e.Seq, 10) + ": PENDING)"
}

// Is makes errors.Is(err, ErrApprovalRequired) and errors.Is(err,
// ErrFailedPrecondition) true.
func (e *PendingError) Is(target error) bool {
	return target == ErrApprovalRequired || target == ErrFailedPrecondition
}

// Causes of a RELEASE_BLOCKED record (BlockRelease.cause): why an ALLOW
// decision released nothing (docs/architecture.md, invariant 2; docs/audit.md).
const (
	// BlockCauseNotify: the notification the key's policy requires before
	// release could not be delivered (invariant 6).
	BlockCauseNotify = "notify"
	// BlockCauseHSM: the HSM failed (unreachable, key material missing).
	BlockCauseHSM = "hsm"
	// BlockCauseNotAdmitted: this node's HSM does not hold the cluster's
	// domain key (ErrNotAdmitted).
	BlockCauseNotAdmitted = "not-admitted"
	// BlockCauseHSMObject: an HSM object was rejected (ErrHSMObjectRejected).
	BlockCauseHSMObject = "hsm-object"
	// BlockCauseDecryptionFailed: the ciphertext did not authenticate in
	// the HSM, so there was nothing to release.
	BlockCauseDecryptionFailed = "decryption-failed"
	// BlockCauseCancelled: the caller cancelled, or its deadline passed,
	// after the decision and before the plaintext was handed back to it.
	BlockCauseCancelled = "cancelled"
	// BlockCauseError: anything else (the record's detail says what), e.g.
	// this node could not catch up with the decision.
	BlockCauseError = "error"
)

// ErrorKind is one class of error as every front door sees it: the sentinel it
// is recognised by, its name on the wire between nodes, the gRPC status,
// the XKS error and the cause it gives a blocked release. ErrorKinds lists them
// all; ErrorKindOf finds an error's.
type ErrorKind struct {
	// Name identifies the kind on the wire between nodes (forward.go).
	Name string
	// Err is the sentinel: an error is of this kind if errors.Is(err, Err)
	// and no earlier kind in ErrorKinds matches.
	Err error
	// Code is the gRPC status code.
	Code codes.Code
	// Reason, if set, is the reason of the google.rpc.ErrorInfo detail the
	// gRPC status carries (domain "custos").
	Reason string
	// XKS is the error name of the AWS KMS External Key Store API (its
	// table fixes the HTTP status).
	XKS string
	// Public says front doors may show the error's own message (kms keeps
	// secrets out of them); otherwise they show only a fixed text, Text
	// (or one of their own).
	Public bool
	// Text is the fixed message of a kind that is not Public.
	Text string
	// BlockCause is the cause of the RELEASE_BLOCKED record written when an
	// error of this kind stops a release after an ALLOW; "" lets the step
	// that failed decide (BlockCauseHSM for an HSM call, else
	// BlockCauseError).
	BlockCause string
	// context marks the context errors: not domain errors (IsDomainError).
	context bool
}

// The kinds, most specific first (an error matching several is of the
// first: ErrNotAdmitted also matches ErrFailedPrecondition).
var (
	ErrorKindCanceled           = &ErrorKind{Name: "canceled", Err: context.Canceled, Code: codes.Canceled, Text: "canceled", XKS: "DependencyTimeoutException", BlockCause: BlockCauseCancelled, context: true}
	ErrorKindDeadlineExceeded   = &ErrorKind{Name: "deadline_exceeded", Err: context.DeadlineExceeded, Code: codes.DeadlineExceeded, Text: "deadline exceeded", XKS: "DependencyTimeoutException", BlockCause: BlockCauseCancelled, context: true}
	ErrorKindPending            = &ErrorKind{Name: "pending", Err: ErrApprovalRequired, Code: codes.FailedPrecondition, Reason: "APPROVAL_REQUIRED", XKS: "AccessDeniedException", Public: true}
	ErrorKindNotAdmitted        = &ErrorKind{Name: "not_admitted", Err: ErrNotAdmitted, Code: codes.FailedPrecondition, Reason: "NOT_ADMITTED", XKS: "DependencyTimeoutException", Public: true, BlockCause: BlockCauseNotAdmitted}
	ErrorKindHSMObjectRejected  = &ErrorKind{Name: "hsm_object_rejected", Err: ErrHSMObjectRejected, Code: codes.Unavailable, Reason: "HSM_OBJECT_REJECTED", XKS: "DependencyTimeoutException", Public: true, BlockCause: BlockCauseHSMObject}
	ErrorKindHSMFailed          = &ErrorKind{Name: "hsm_failed", Err: ErrHSMFailed, Code: codes.Unavailable, XKS: "DependencyTimeoutException", Text: "this node's HSM failed the request; another node may serve it (the node's log says why)", BlockCause: BlockCauseHSM}
	ErrorKindNotificationFailed = &ErrorKind{Name: "notification_failed", Err: ErrNotificationFailed, Code: codes.Unavailable, XKS: "DependencyTimeoutException", Public: true, BlockCause: BlockCauseNotify}
	ErrorKindTooLarge           = &ErrorKind{Name: "too_large", Err: ErrXKSTooLarge, Code: codes.InvalidArgument, XKS: "UnsupportedOperationException", Public: true}
	ErrorKindDecryptionFailed   = &ErrorKind{Name: "decryption_failed", Err: ErrDecryptionFailed, Code: codes.InvalidArgument, Text: "decryption failed", XKS: "InvalidCiphertextException", BlockCause: BlockCauseDecryptionFailed}
	ErrorKindInvalidArgument    = &ErrorKind{Name: "invalid_argument", Err: ErrInvalidArgument, Code: codes.InvalidArgument, XKS: "ValidationException", Public: true}
	ErrorKindNotFound           = &ErrorKind{Name: "not_found", Err: ErrNotFound, Code: codes.NotFound, XKS: "KeyNotFoundException", Public: true}
	ErrorKindAlreadyExists      = &ErrorKind{Name: "already_exists", Err: ErrAlreadyExists, Code: codes.AlreadyExists, XKS: "InvalidStateException", Public: true}
	ErrorKindFailedPrecondition = &ErrorKind{Name: "failed_precondition", Err: ErrFailedPrecondition, Code: codes.FailedPrecondition, XKS: "InvalidStateException", Public: true}
	ErrorKindPermissionDenied   = &ErrorKind{Name: "permission_denied", Err: ErrPermissionDenied, Code: codes.PermissionDenied, XKS: "AccessDeniedException", Public: true}
	ErrorKindResourceExhausted  = &ErrorKind{Name: "resource_exhausted", Err: ErrResourceExhausted, Code: codes.ResourceExhausted, XKS: "ThrottlingException", Public: true}
	ErrorKindUnavailable        = &ErrorKind{Name: "unavailable", Err: ErrUnavailable, Code: codes.Unavailable, XKS: "DependencyTimeoutException", Public: true}
	ErrorKindInternal           = &ErrorKind{Name: "internal", Err: ErrInternal, Code: codes.Internal, Text: "internal error", XKS: "InternalException"}
)

// ErrorKinds is the one error table, most specific first. Front doors derive
// their mapping from it; a test checks that each covers every kind.
var ErrorKinds = []*ErrorKind{
	ErrorKindCanceled, ErrorKindDeadlineExceeded,
	ErrorKindPending, ErrorKindNotAdmitted, ErrorKindHSMObjectRejected, ErrorKindHSMFailed, ErrorKindNotificationFailed, ErrorKindTooLarge,
	ErrorKindDecryptionFailed, ErrorKindInvalidArgument, ErrorKindNotFound, ErrorKindAlreadyExists, ErrorKindFailedPrecondition,
	ErrorKindPermissionDenied, ErrorKindResourceExhausted, ErrorKindUnavailable, ErrorKindInternal,
}

// ErrorKindOf returns the kind of err: the first in ErrorKinds whose sentinel it
// matches, ErrorKindInternal for any other error, nil for nil.
func ErrorKindOf(err error) *ErrorKind {
	if err == nil {
		return nil
	}
	for _, k := range ErrorKinds {
		if errors.Is(err, k.Err) {
			return k
		}
	}
	return ErrorKindInternal
}

// ErrorKindNamed returns the kind with this wire name, or nil.
func ErrorKindNamed(name string) *ErrorKind {
	for _, k := range ErrorKinds {
		if k.Name == name {
			return k
		}
	}
	return nil
}

// IsDomainError reports whether err matches one of the kms sentinels (not
// only a context error): an outcome to pass on as it is, rather than a
// failure to commit.
func IsDomainError(err error) bool {
	for _, k := range ErrorKinds {
		if !k.context && errors.Is(err, k.Err) {
			return true
		}
	}
	return false
}
