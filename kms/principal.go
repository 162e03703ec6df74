package kms

// Principal is the authenticated caller of an operation, taken from its mTLS
// client certificate by the API layer. It appears in every decision record.
type Principal struct {
	// Name is the certificate's identity (its subject common name).
	Name string
	// IssuerSHA256 and CertSHA256 are the SHA-256 of the issuing client
	// authority's certificate and of the caller's certificate (DER), as
	// the API layer verified them (ClientTrust.Identify); empty for a
	// principal authenticated otherwise (XKS SigV4) and for the nodes.
	IssuerSHA256 []byte
	CertSHA256   []byte
	// Certificate is the caller's certificate (DER): a follower forwards
	// it with the command so that the leader can check the two digests
	// (docs/identities.md); it enters the log only with a signed request
	// to a key that requires one (docs/signed-requests.md).
	Certificate []byte
	// ConsoleOfficer is the officer signed in to the officer console
	// (internal/console) with a WebAuthn credential the officers bound to
	// it; the console sets it, nothing on the wire does. Such a principal
	// reads what an auditor reads.
	ConsoleOfficer string
}
