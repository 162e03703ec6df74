package pkcs11

/*
#include <stdlib.h>

// A CK_ATTRIBUTE as the PKCS#11 headers define it on this platform
// (natural alignment: CK_ULONG type, void* pValue, CK_ULONG ulValueLen).
typedef struct {
	unsigned long type;
	void *pValue;
	unsigned long ulValueLen;
} custos_attr;

static unsigned char custos_true = 1;
static unsigned char custos_false = 0;

// custos_unwrap_template is the CKA_UNWRAP_TEMPLATE of a wrapping key:
// every key unwrapped with it must be CKA_SENSITIVE=true and
// CKA_EXTRACTABLE=false. The values live in static C memory, so the array
// can be copied as bytes into an attribute value.
static custos_attr custos_unwrap_template[2] = {
	{0x103, &custos_true, 1},  // CKA_SENSITIVE
	{0x162, &custos_false, 1}, // CKA_EXTRACTABLE
};

static void *custos_unwrap_template_ptr(void) { return custos_unwrap_template; }
static int custos_unwrap_template_size(void) { return (int)sizeof(custos_unwrap_template); }
*/
import "C"

// unwrapTemplate returns the bytes of the CK_ATTRIBUTE array that becomes
// the CKA_UNWRAP_TEMPLATE of wrapping keys. miekg/pkcs11 cannot express
// array-valued attributes, and the array must point at C memory, hence cgo.
//
// With it, a holder of the user PIN cannot unwrap a KEK blob from the Raft
// log as a readable key: C_UnwrapKey with any other sensitivity or
// extractability fails with CKR_TEMPLATE_INCONSISTENT (measured on SoftHSM
// 2.6.1; see docs/hsm-notes.md).
func unwrapTemplate() []byte {
	return C.GoBytes(C.custos_unwrap_template_ptr(), C.custos_unwrap_template_size())
}
