package hsm_test

import (
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"math/big"
	"testing"

	"github.com/custos-kms/custos/hsm"
)

func TestCheckTransportKey(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, hsm.TransportKeyBits)
	if err != nil {
		t.Fatal(err)
	}
	if err := hsm.CheckTransportKey(&k.PublicKey); err != nil {
		t.Fatal(err)
	}
	neg := &rsa.PublicKey{N: new(big.Int).Neg(k.N), E: k.E}
	even := &rsa.PublicKey{N: new(big.Int).Add(k.N, big.NewInt(1)), E: k.E}
	small, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for name, pub := range map[string]*rsa.PublicKey{
		"nil": nil, "no modulus": {E: 65537}, "negative modulus": neg, "even modulus": even,
		"2048 bits": &small.PublicKey, "exponent 3": {N: k.N, E: 3},
	} {
		if err := hsm.CheckTransportKey(pub); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Errorf("%s: %v, want ErrInvalidInput", name, err)
		}
		if _, err := hsm.TransportFingerprint(pub); err == nil {
			t.Errorf("%s: a fingerprint was computed", name)
		}
	}
}
