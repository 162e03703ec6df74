package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/hsm/pkcs11"
	"github.com/custos-kms/custos/softhsm"
)

// pemFile writes a public key as a PEM PUBLIC KEY file.
func pemFile(t *testing.T, pub any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "transport.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestHSMTrust: the SO marks the approved key trusted, and the holder's
// domain key then wraps to it and to nothing else; bad input creates
// nothing.
func TestHSMTrust(t *testing.T) {
	tok := softhsm.TestToken(t)
	so := pinFile(t, tok.SOPIN)
	k, err := rsa.GenerateKey(rand.Reader, hsm.TransportKeyBits)
	if err != nil {
		t.Fatal(err)
	}
	fp, err := hsm.TransportFingerprint(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubFile := pemFile(t, &k.PublicKey)
	base := []string{"hsm", "trust", "--module", tok.Module, "--token", tok.Label, "--so-pin-file", so}

	other, err := rsa.GenerateKey(rand.Reader, hsm.TransportKeyBits)
	if err != nil {
		t.Fatal(err)
	}
	small, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"fingerprint of another key", []string{"--public-key", pemFile(t, &other.PublicKey), "--fingerprint", fp}, "not the approved"},
		{"RSA-2048", []string{"--public-key", pemFile(t, &small.PublicKey), "--fingerprint", fp}, "2048 bits"},
		{"EC key", []string{"--public-key", pemFile(t, &ec.PublicKey), "--fingerprint", fp}, "not an RSA key"},
		{"no fingerprint", []string{"--public-key", pubFile}, "--fingerprint is required"}, // usage: exit code 2
		{"wrong SO PIN", []string{"--public-key", pubFile, "--fingerprint", fp, "--so-pin-file", pinFile(t, "87654321")}, "PIN refused"},
		{"no such token", []string{"--public-key", pubFile, "--fingerprint", fp, "--token", "no-such-token"}, "no token labelled"},
	} {
		r := runCLI(t, "", append(append([]string(nil), base...), tc.args...)...)
		code := 1
		if strings.HasPrefix(tc.want, "--") {
			code = 2
		}
		r.want(t, code, tc.want)
		if strings.Contains(r.stdout+r.stderr, tok.SOPIN) {
			t.Errorf("%s: the output shows the SO PIN", tc.name)
		}
	}
	r := runCLI(t, "", append(base, "--public-key", pubFile, "--fingerprint", strings.ToUpper(fp))...)
	r.want(t, 0, "trusted transport key "+fp)
	runCLI(t, "", append(base, "--public-key", pubFile, "--fingerprint", fp)...).want(t, 1, "already exists")

	// The holder (custosd, logged in as the user) wraps its domain key to
	// the trusted key, and refuses the other one.
	ctx := context.Background()
	b, err := pkcs11.Open(ctx, pkcs11.Config{Module: tok.Module, TokenLabel: tok.Label, PIN: tok.PIN})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	dk := hsm.KeySpec{ID: []byte("custos/domain/trust-test"), Usage: hsm.UsageWrap}
	kcv, err := b.GenerateKey(ctx, dk)
	if err != nil {
		t.Fatal(err)
	}
	ref := hsm.KeyRef{ID: dk.ID, CheckValue: kcv}
	trusted := []byte("custos/trusted/" + fp[:32])
	blob, err := b.WrapForTransport(ctx, ref, trusted, &k.PublicKey, hsm.OAEPSHA1)
	if err != nil || len(blob) != hsm.TransportKeyBits/8 {
		t.Fatalf("wrap to the trusted key: %d bytes, %v", len(blob), err)
	}
	if _, err := b.WrapForTransport(ctx, ref, trusted, &other.PublicKey, hsm.OAEPSHA1); err == nil {
		t.Fatal("wrapped to a key that is not the trusted one")
	}
}
