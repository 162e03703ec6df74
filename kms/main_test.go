package kms_test

import (
	"os"
	"testing"

	"github.com/custos-kms/custos/hsm/pkcs11/pkcs11test"
)

// TestMain lets pkcs11test re-run this binary as the attacker's process.
func TestMain(m *testing.M) {
	pkcs11test.MaybeChild()
	os.Exit(m.Run())
}
