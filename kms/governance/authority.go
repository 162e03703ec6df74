package governance

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// maxAuthorityCertSize bounds a client authority's certificate.
const maxAuthorityCertSize = 16 << 10

// CertSHA256 returns the lower-case hex SHA-256 of a certificate's DER, the
// fingerprint that names a client authority.
func CertSHA256(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// ParseClientAuthority checks that der is one X.509 CA certificate that may
// sign certificates and returns it as a ClientAuthority (docs/identities.md).
func ParseClientAuthority(der []byte) (*custosv1.ClientAuthority, error) {
	if len(der) == 0 {
		return nil, fmt.Errorf("%w: client authority certificate is empty", ErrMalformed)
	}
	if len(der) > maxAuthorityCertSize {
		return nil, fmt.Errorf("%w: client authority certificate is larger than %d bytes", ErrMalformed, maxAuthorityCertSize)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: client authority certificate: %v", ErrMalformed, err)
	}
	if !c.BasicConstraintsValid || !c.IsCA {
		return nil, fmt.Errorf("%w: client authority certificate %q is not a CA certificate (basic constraints)", ErrMalformed, c.Subject.String())
	}
	if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("%w: client authority certificate %q may not sign certificates (key usage)", ErrMalformed, c.Subject.String())
	}
	return &custosv1.ClientAuthority{Sha256: CertSHA256(der), Subject: c.Subject.String(), Certificate: append([]byte(nil), der...)}, nil
}

// ErrCACertificate is CheckClientCertificate's refusal of a CA certificate
// presented as a principal's.
var ErrCACertificate = errors.New("a CA certificate, not a client certificate")

// CheckClientCertificate checks that leaf is a client certificate (not a
// CA, extended key usage client authentication) that the client authority
// ca issued directly, valid at time at: what a forwarded command's
// certificate, a signed request's at apply and one on record must be
// (docs/identities.md, docs/signed-requests.md). The officers pin the CA
// that issues leaves, so no intermediate is accepted.
func CheckClientCertificate(leaf, ca *x509.Certificate, at time.Time) error {
	if leaf.IsCA {
		return ErrCACertificate
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err
}
