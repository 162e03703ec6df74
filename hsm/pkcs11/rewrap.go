package pkcs11

/*
// A CK_ATTRIBUTE as the PKCS#11 headers define it on this platform (as in
// template.go).
typedef struct {
	unsigned long type;
	void *pValue;
	unsigned long ulValueLen;
} custos_rw_attr;

static unsigned char custos_rw_true = 1;
static unsigned char custos_rw_false = 0;
static unsigned long custos_rw_secret = 4; // CKO_SECRET_KEY
static unsigned long custos_rw_aes = 0x1f; // CKK_AES

// custos_rewrap_template is the CKA_UNWRAP_TEMPLATE of a rewrap key: what it
// unwraps is a session AES key, sensitive, extractable without
// CKA_WRAP_WITH_TRUSTED, allowed no operation (it can only be wrapped).
static custos_rw_attr custos_rewrap_template[13] = {
	{0x000, &custos_rw_secret, sizeof(unsigned long)}, // CKA_CLASS
	{0x100, &custos_rw_aes, sizeof(unsigned long)},    // CKA_KEY_TYPE
	{0x001, &custos_rw_false, 1},                      // CKA_TOKEN
	{0x103, &custos_rw_true, 1},                       // CKA_SENSITIVE
	{0x162, &custos_rw_true, 1},                       // CKA_EXTRACTABLE
	{0x210, &custos_rw_false, 1},                      // CKA_WRAP_WITH_TRUSTED
	{0x104, &custos_rw_false, 1},                      // CKA_ENCRYPT
	{0x105, &custos_rw_false, 1},                      // CKA_DECRYPT
	{0x106, &custos_rw_false, 1},                      // CKA_WRAP
	{0x107, &custos_rw_false, 1},                      // CKA_UNWRAP
	{0x10c, &custos_rw_false, 1},                      // CKA_DERIVE
	{0x108, &custos_rw_false, 1},                      // CKA_SIGN
	{0x10a, &custos_rw_false, 1},                      // CKA_VERIFY
};

static void *custos_rewrap_template_ptr(void) { return custos_rewrap_template; }
static int custos_rewrap_template_size(void) { return (int)sizeof(custos_rewrap_template); }
*/
import "C"

import (
	"context"
	"crypto/subtle"
	"fmt"

	p11 "github.com/miekg/pkcs11"

	"github.com/custos-kms/custos/hsm"
)

// Domain-key rotation (docs/key-destruction.md). The rotating node receives
// the current domain key by key transport a second time, into a session
// object of its own process, the rewrap key: it can unwrap, nothing else,
// and its own CKA_UNWRAP_TEMPLATE makes every KEK it unwraps a session key
// that is extractable without CKA_WRAP_WITH_TRUSTED and allows no operation.
// Such a key can go under the new domain key (which is not trusted, so no
// WWT key ever goes under it), and nowhere readable. Every unwrap anyone
// else can do under the old or the new domain key stays non-extractable
// (their CKA_UNWRAP_TEMPLATE), so a KEK copy made by a PIN holder never
// reaches the new domain key.

// rewrapUnwrapTemplate returns the bytes of the CK_ATTRIBUTE array that
// becomes the CKA_UNWRAP_TEMPLATE of a rewrap key (C memory: see
// unwrapTemplate).
func rewrapUnwrapTemplate() []byte {
	return C.GoBytes(C.custos_rewrap_template_ptr(), C.custos_rewrap_template_size())
}

// rewrapKeyTemplate finds this process's rewrap key id with every attribute
// ReceiveRewrapKey gives it.
func rewrapKeyTemplate(id []byte) []*p11.Attribute {
	return append(rewrapKeyFind(id),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_ENCRYPT, false),
		p11.NewAttribute(p11.CKA_DECRYPT, false),
		p11.NewAttribute(p11.CKA_WRAP, false),
		p11.NewAttribute(p11.CKA_MODIFIABLE, false),
	)
}

// rewrapKeyFind matches a rewrap key id, for DestroyTransportKey: a secret
// session key that may unwrap (session copies of KEKs may not).
func rewrapKeyFind(id []byte) []*p11.Attribute {
	return []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_TOKEN, false),
		p11.NewAttribute(p11.CKA_ID, id),
		p11.NewAttribute(p11.CKA_UNWRAP, true),
	}
}

// rewrapKeyCreate is the C_UnwrapKey template of a rewrap key, with
// CKA_MODIFIABLE=false last (docs/hsm-notes.md).
func rewrapKeyCreate(id []byte) []*p11.Attribute {
	a := p11.NewAttribute
	return []*p11.Attribute{
		a(p11.CKA_CLASS, p11.CKO_SECRET_KEY), a(p11.CKA_KEY_TYPE, p11.CKK_AES),
		a(p11.CKA_TOKEN, false), a(p11.CKA_PRIVATE, true), a(p11.CKA_ID, id),
		a(p11.CKA_LABEL, "custos rewrap key"),
		a(p11.CKA_SENSITIVE, true), a(p11.CKA_EXTRACTABLE, false),
		a(p11.CKA_ENCRYPT, false), a(p11.CKA_DECRYPT, false),
		a(p11.CKA_WRAP, false), a(p11.CKA_UNWRAP, true),
		a(p11.CKA_SIGN, false), a(p11.CKA_VERIFY, false), a(p11.CKA_DERIVE, false),
		a(p11.CKA_COPYABLE, false),
		a(p11.CKA_UNWRAP_TEMPLATE, rewrapUnwrapTemplate()),
		a(p11.CKA_MODIFIABLE, false),
	}
}

// inFlightTemplate is the C_UnwrapKey template of a KEK under a rewrap key:
// exactly what the rewrap key's unwrap template pins (SoftHSM refuses a
// template that omits a pinned attribute), and CKA_PRIVATE.
func inFlightTemplate() []*p11.Attribute {
	a := p11.NewAttribute
	return []*p11.Attribute{
		a(p11.CKA_CLASS, p11.CKO_SECRET_KEY), a(p11.CKA_KEY_TYPE, p11.CKK_AES),
		a(p11.CKA_TOKEN, false), a(p11.CKA_PRIVATE, true),
		a(p11.CKA_SENSITIVE, true), a(p11.CKA_EXTRACTABLE, true), a(p11.CKA_WRAP_WITH_TRUSTED, false),
		a(p11.CKA_ENCRYPT, false), a(p11.CKA_DECRYPT, false), a(p11.CKA_WRAP, false), a(p11.CKA_UNWRAP, false),
		a(p11.CKA_DERIVE, false), a(p11.CKA_SIGN, false), a(p11.CKA_VERIFY, false),
	}
}

// checkKEKTemplate is the C_UnwrapKey template of the session KEK that
// checks a new blob: what the domain key's unwrap template allows
// (sensitive, non-extractable; it does not pin CKA_TOKEN), able to encrypt
// for its check value.
func checkKEKTemplate() []*p11.Attribute {
	a := p11.NewAttribute
	return []*p11.Attribute{
		a(p11.CKA_CLASS, p11.CKO_SECRET_KEY), a(p11.CKA_KEY_TYPE, p11.CKK_AES),
		a(p11.CKA_TOKEN, false), a(p11.CKA_PRIVATE, true),
		a(p11.CKA_SENSITIVE, true), a(p11.CKA_EXTRACTABLE, false),
		a(p11.CKA_ENCRYPT, true), a(p11.CKA_DECRYPT, false), a(p11.CKA_WRAP, false), a(p11.CKA_UNWRAP, false),
		a(p11.CKA_DERIVE, false), a(p11.CKA_SIGN, false), a(p11.CKA_VERIFY, false),
	}
}

// unwrapFailed reports whether a C_UnwrapKey error means the wrapped bytes
// do not unwrap under the key (as UnwrapKey maps them to hsm.ErrDecrypt).
func unwrapFailed(err error) bool {
	return isCode(err, p11.CKR_WRAPPED_KEY_INVALID, p11.CKR_WRAPPED_KEY_LEN_RANGE,
		p11.CKR_ENCRYPTED_DATA_INVALID, p11.CKR_ENCRYPTED_DATA_LEN_RANGE,
		p11.CKR_DATA_INVALID, p11.CKR_DATA_LEN_RANGE, p11.CKR_KEY_SIZE_RANGE, p11.CKR_GENERAL_ERROR)
}

// ReceiveRewrapKey implements hsm.Backend.
func (b *Backend) ReceiveRewrapKey(ctx context.Context, transport, wrapped []byte, hash hsm.OAEPHash, id []byte) error {
	if err := checkID(transport); err != nil {
		return err
	}
	if err := checkID(id); err != nil {
		return err
	}
	if len(wrapped) != transportBlobLen {
		return fmt.Errorf("%w: transported key of %d bytes (want %d)", hsm.ErrInvalidInput, len(wrapped), transportBlobLen)
	}
	mech, err := oaepMech(hash)
	if err != nil {
		return err
	}
	tmpl := rewrapKeyCreate(id)
	b.createMu.Lock()
	defer b.createMu.Unlock()
	err = b.do(ctx, "C_UnwrapKey", func(s p11.SessionHandle) error {
		if ok, err := b.exists(s, id); err != nil || ok {
			if ok {
				return fmt.Errorf("%w: id %q", hsm.ErrKeyExists, id)
			}
			return err
		}
		tks, err := b.findObjects(s, transportTemplate(transport), 2)
		switch {
		case err != nil:
			return err
		case len(tks) != 1:
			return fmt.Errorf("%w: transport key %q (%d found): generate one and have it approved again", hsm.ErrKeyNotFound, transport, len(tks))
		}
		err = b.createWithRetry(s, id, func() error {
			_, err := b.ctx.UnwrapKey(s, mech, tks[0], wrapped, tmpl)
			return err
		})
		if err != nil {
			b.destroyID(s, id) // nothing but this call uses the fresh id
			if unwrapFailed(err) {
				return hsm.ErrDecrypt
			}
			if isCode(err, p11.CKR_MECHANISM_INVALID, p11.CKR_MECHANISM_PARAM_INVALID, p11.CKR_ARGUMENTS_BAD) {
				return fmt.Errorf("%w: the module does not unwrap with %v (%v)", hsm.ErrInvalidInput, hash, err)
			}
			return errFunction(err)
		}
		// One key, one transport: the private half goes now.
		_ = b.ctx.DestroyObject(s, tks[0])
		return nil
	})
	return wrap("ReceiveRewrapKey", err)
}

// RewrapKey implements hsm.Backend.
func (b *Backend) RewrapKey(ctx context.Context, from, wrapped []byte, to hsm.KeyRef, checkValue []byte) ([]byte, error) {
	if err := checkID(from); err != nil {
		return nil, err
	}
	if err := checkID(to.ID); err != nil {
		return nil, err
	}
	if len(wrapped) < 16 || len(wrapped)%8 != 0 || len(wrapped) > maxWrappedLen {
		return nil, fmt.Errorf("%w: wrapped key of %d bytes", hsm.ErrInvalidInput, len(wrapped))
	}
	if len(checkValue) != hsm.CheckValueSize {
		return nil, fmt.Errorf("%w: key check value of %d bytes (want %d)", hsm.ErrInvalidInput, len(checkValue), hsm.CheckValueSize)
	}
	kwp := []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_WRAP_PAD, nil)}
	var out []byte
	err := b.withKey(ctx, "C_WrapKey", to.ID, kindWrap, to.CheckValue, func(s p11.SessionHandle, wh p11.ObjectHandle) error {
		out = nil
		rks, err := b.findObjects(s, rewrapKeyTemplate(from), 2)
		switch {
		case err != nil:
			return err
		case len(rks) == 0:
			return fmt.Errorf("%w: no rewrap key %q in this process", hsm.ErrKeyNotFound, from)
		case len(rks) > 1:
			return fmt.Errorf("%w: more than one rewrap key has id %q", hsm.ErrObjectMismatch, from)
		}
		blob, err := b.rewrapOnce(s, rks[0], wh, wrapped)
		if err != nil {
			return err
		}
		// The new blob must give the recorded KEK under the new domain key.
		h, err := b.ctx.UnwrapKey(s, kwp, wh, blob, checkKEKTemplate())
		if err != nil {
			if unwrapFailed(err) {
				return fmt.Errorf("%w: the new blob does not unwrap under %q (%v)", hsm.ErrObjectMismatch, to.ID, err)
			}
			return errFunction(err)
		}
		defer func() { _ = b.ctx.DestroyObject(s, h) }()
		got, err := b.checkValue(s, h, kindKEK)
		if err != nil {
			return err
		}
		if subtle.ConstantTimeCompare(got, checkValue) != 1 {
			return fmt.Errorf("%w: the re-wrapped key's check value is not the recorded one", hsm.ErrObjectMismatch)
		}
		out = blob
		return nil
	})
	if err != nil {
		return nil, wrap("RewrapKey", err)
	}
	return out, nil
}

// rewrapOnce unwraps wrapped with the rewrap key rk into a temporary session
// key, wraps it (KWP) under wh and destroys it.
func (b *Backend) rewrapOnce(s p11.SessionHandle, rk, wh p11.ObjectHandle, wrapped []byte) ([]byte, error) {
	kwp := []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_WRAP_PAD, nil)}
	k, err := b.ctx.UnwrapKey(s, kwp, rk, wrapped, inFlightTemplate())
	if err != nil {
		if unwrapFailed(err) {
			return nil, hsm.ErrDecrypt
		}
		if isCode(err, p11.CKR_UNWRAPPING_KEY_HANDLE_INVALID, p11.CKR_OBJECT_HANDLE_INVALID, p11.CKR_KEY_HANDLE_INVALID) {
			// Destroyed since it was found (DestroyTransportKey).
			return nil, fmt.Errorf("%w: rewrap key destroyed (%v)", hsm.ErrKeyNotFound, err)
		}
		return nil, errFunction(err)
	}
	defer func() { _ = b.ctx.DestroyObject(s, k) }()
	blob, err := b.ctx.WrapKey(s, kwp, wh, k)
	return blob, errFunction(err)
}
