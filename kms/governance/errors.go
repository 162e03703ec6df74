package governance

import "errors"

// Errors. Test with errors.Is; the messages built on them name the officer or
// field at fault and never carry key material.
var (
	// ErrMalformed: the statement bytes (or a signed statement, key or file)
	// do not parse or miss a required field.
	ErrMalformed = errors.New("governance: malformed statement")
	// ErrBadSignature: a signature does not verify under the officer's key.
	ErrBadSignature = errors.New("governance: bad signature")
	// ErrUnknownOfficer: a signature names an officer not in the set.
	ErrUnknownOfficer = errors.New("governance: unknown officer")
	// ErrDuplicateSigner: one officer signed the same statement twice.
	ErrDuplicateSigner = errors.New("governance: duplicate signer")
	// ErrInsufficientSignatures: fewer valid signatures than the operation
	// needs.
	ErrInsufficientSignatures = errors.New("governance: insufficient signatures")
	// ErrExpired: the statement's not_after is in the past.
	ErrExpired = errors.New("governance: statement expired")
	// ErrWrongCluster: the statement names another cluster.
	ErrWrongCluster = errors.New("governance: statement is for another cluster")
	// ErrTooFarAhead: not_after is more than MaxLifetime after now.
	ErrTooFarAhead = errors.New("governance: statement expiry too far ahead")
	// ErrWrongPassphrase: an encrypted key file did not decrypt (wrong
	// passphrase, or the file was altered). Nothing more is said.
	ErrWrongPassphrase = errors.New("governance: wrong passphrase")
	// ErrBadKey: a key is not an ECDSA P-256 key, or a key file is unusable.
	ErrBadKey = errors.New("governance: unusable officer key")
)
