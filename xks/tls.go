package xks

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// MTLSConfig returns a copy of base (the listener's server TLS
// configuration) that requires a client certificate chained to one of the
// roots in caPEM and whose subject common name is one of subjects, as the
// XKS specification asks of a proxy with mutual TLS (AWS KMS presents
// CN=cks.kms.<region>.amazonaws.com). Any other client fails the handshake.
func MTLSConfig(base *tls.Config, caPEM []byte, subjects ...string) (*tls.Config, error) {
	if base == nil {
		return nil, errors.New("xks: MTLSConfig needs the server TLS configuration")
	}
	if len(subjects) == 0 {
		return nil, errors.New("xks: MTLSConfig needs at least one allowed client subject")
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("xks: no CA certificate in the mTLS CA file")
	}
	allowed := map[string]bool{}
	for _, s := range subjects {
		allowed[s] = true
	}
	c := base.Clone()
	c.ClientAuth = tls.RequireAndVerifyClientCert
	c.ClientCAs = pool
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("xks: no client certificate")
		}
		if cn := cs.PeerCertificates[0].Subject.CommonName; !allowed[cn] {
			return fmt.Errorf("xks: client certificate subject %q is not allowed", cn)
		}
		return nil
	}
	return c, nil
}
