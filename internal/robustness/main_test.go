package robustness

import (
	"os"
	"testing"

	"github.com/custos-kms/custos/hsm/pkcs11/pkcs11test"
)

// TestMain lets pkcs11test re-run this binary as node 1's HSM security
// officer (the trust step of admitting nodes 2 and 3, nodetest's Admit).
func TestMain(m *testing.M) {
	pkcs11test.MaybeChild()
	os.Exit(m.Run())
}
