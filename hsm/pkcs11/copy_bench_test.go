package pkcs11_test

import (
	"testing"

	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/hsm/pkcs11"
	p11 "github.com/miekg/pkcs11"
)

// BenchmarkDecryptGCM32 measures the HSM's AES-256-GCM decrypt of a 32-byte
// data key through the backend (one caller: SoftHSM calls are serialised).
func BenchmarkDecryptGCM32(b *testing.B) {
	be, _ := open(b)
	c := testCtx(b)
	kcv, err := be.GenerateKey(c, hsm.KeySpec{ID: []byte("bench-kek"), Usage: hsm.UsageEncrypt})
	if err != nil {
		b.Fatal(err)
	}
	key := hsm.KeyRef{ID: []byte("bench-kek"), CheckValue: kcv}
	iv := make([]byte, hsm.GCMIVSize)
	ct, err := be.EncryptGCM(c, key, iv, make([]byte, 32), []byte("aad"))
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := be.DecryptGCM(c, key, iv, ct, []byte("aad")); err != nil {
			b.Fatal(err)
		}
	}
}

var _ = p11.CKA_TOKEN
var _ = pkcs11.ErrPIN
