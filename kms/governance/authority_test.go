package governance_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

func certDER(t *testing.T, isCA bool, usage x509.KeyUsage) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "customer CA"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: isCA, BasicConstraintsValid: true, KeyUsage: usage}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestParseClientAuthority(t *testing.T) {
	ca := certDER(t, true, x509.KeyUsageCertSign)
	got, err := governance.ParseClientAuthority(ca)
	if err != nil {
		t.Fatalf("a CA certificate: %v", err)
	}
	if got.Sha256 != governance.CertSHA256(ca) || got.Subject != "CN=customer CA" {
		t.Fatalf("parsed %v", got)
	}
	for name, der := range map[string][]byte{
		"empty":                  nil,
		"garbage":                []byte("not a certificate"),
		"oversize":               make([]byte, 17<<10),
		"leaf certificate":       certDER(t, false, x509.KeyUsageDigitalSignature),
		"CA that may not sign":   certDER(t, true, x509.KeyUsageDigitalSignature),
		"certificate + trailing": append(append([]byte{}, ca...), 0),
	} {
		if _, err := governance.ParseClientAuthority(der); !errors.Is(err, governance.ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}

	add := &custosv1.Statement{Operation: &custosv1.Statement_AddClientAuthority{AddClientAuthority: &custosv1.AddClientAuthority{Certificate: ca}}}
	remove := &custosv1.Statement{Operation: &custosv1.Statement_RemoveClientAuthority{RemoveClientAuthority: &custosv1.RemoveClientAuthority{Sha256: got.Sha256}}}
	if governance.Need(add) != governance.Quorum || governance.Need(remove) != governance.One {
		t.Errorf("add needs %s, remove %s; want quorum and one", governance.Need(add), governance.Need(remove))
	}
	if d := governance.Describe(add); !strings.Contains(d, got.Sha256) || !strings.Contains(d, "customer CA") {
		t.Errorf("Describe(add) = %q: want the CA's SHA-256 and subject", d)
	}
}
