package xks

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func testCert(t *testing.T, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	signer := key
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		parent, signer = tmpl, key
	} else {
		signer = parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestMTLSConfig(t *testing.T) {
	ca, caKey, _ := testCert(t, "test CA", nil, nil)
	otherCA, otherKey, _ := testCert(t, "other CA", nil, nil)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})
	const kmsCN = "cks.kms.us-east-1.amazonaws.com"
	_, _, good := testCert(t, kmsCN, ca, caKey)
	_, _, wrongCN := testCert(t, "cks.kms.eu-west-1.amazonaws.com", ca, caKey)
	_, _, wrongCA := testCert(t, kmsCN, otherCA, otherKey)

	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	cfg, err := MTLSConfig(&tls.Config{}, caPEM, kmsCN)
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = cfg
	srv.StartTLS()
	defer srv.Close()
	get := func(certs ...tls.Certificate) error {
		tr := srv.Client().Transport.(*http.Transport).Clone()
		tr.TLSClientConfig.Certificates = certs
		resp, err := (&http.Client{Transport: tr}).Post(srv.URL, "application/json", nil)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := get(good); err != nil {
		t.Fatalf("KMS certificate refused: %v", err)
	}
	for name, certs := range map[string][]tls.Certificate{"no certificate": nil, "wrong subject": {wrongCN}, "wrong CA": {wrongCA}} {
		if err := get(certs...); err == nil {
			t.Errorf("%s: handshake succeeded", name)
		}
	}
	if _, err := MTLSConfig(&tls.Config{}, []byte("junk"), kmsCN); err == nil {
		t.Error("junk CA accepted")
	}
	if _, err := MTLSConfig(&tls.Config{}, caPEM); err == nil {
		t.Error("no subjects accepted")
	}
}
