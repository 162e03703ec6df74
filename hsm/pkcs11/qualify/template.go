package qualify

/*
// A CK_ATTRIBUTE as the PKCS#11 headers define it on this platform.
typedef struct {
	unsigned long type;
	void *pValue;
	unsigned long ulValueLen;
} qualify_attr;

static unsigned char qualify_true = 1;
static unsigned char qualify_false = 0;

// The CKA_UNWRAP_TEMPLATE custos gives its domain key
// (docs/hsm-objects.md): SENSITIVE=true, EXTRACTABLE=false. Static C
// memory, so the array can be handed over as bytes.
static qualify_attr qualify_unwrap_template[2] = {
	{0x103, &qualify_true, 1},  // CKA_SENSITIVE
	{0x162, &qualify_false, 1}, // CKA_EXTRACTABLE
};

static void *qualify_unwrap_template_ptr(void) { return qualify_unwrap_template; }
static int qualify_unwrap_template_size(void) { return (int)sizeof(qualify_unwrap_template); }
*/
import "C"

// unwrapTemplate returns the bytes of the CK_ATTRIBUTE array for
// CKA_UNWRAP_TEMPLATE: miekg/pkcs11 cannot build array attributes, and the
// values must live in C memory.
func unwrapTemplate() []byte {
	return C.GoBytes(C.qualify_unwrap_template_ptr(), C.qualify_unwrap_template_size())
}
