package pkcs11_test

import (
	"context"
	"testing"
	"time"

	"github.com/custos-kms/custos/hsm/hsmtest"
	"github.com/custos-kms/custos/hsm/pkcs11"
	"github.com/custos-kms/custos/softhsm"
)

// open opens a Backend on a fresh SoftHSM token and closes it after the test.
func open(t testing.TB) (*pkcs11.Backend, *softhsm.Token) {
	t.Helper()
	tok := softhsm.TestToken(t)
	b, err := pkcs11.Open(context.Background(), pkcs11.Config{Module: tok.Module, TokenLabel: tok.Label, PIN: tok.PIN})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, tok
}

func testCtx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestConformance(t *testing.T) {
	b, _ := open(t)
	hsmtest.Run(t, b)
}
