package kms

// Principal is the authenticated caller of an operation, taken from its mTLS
// client certificate by the API layer. It appears in every decision record.
type Principal struct {
	// Name is the certificate's identity (its subject common name).
	Name string
}
