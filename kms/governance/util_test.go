package governance_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"testing"
)

func p384Key(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func p384PublicDER(t testing.TB) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&p384Key(t).PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func ed25519Key(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustECDSAPub(t testing.TB, pub any) *ecdsa.PublicKey {
	t.Helper()
	p, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("public key is %T", pub)
	}
	return p
}
