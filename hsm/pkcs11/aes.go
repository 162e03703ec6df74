package pkcs11

import (
	"context"
	"fmt"

	p11 "github.com/miekg/pkcs11"

	"github.com/custos-kms/custos/hsm"
)

// Wrapped-key sizes accepted by UnwrapKey: KWP output is a multiple of 8
// bytes, at least 16.
const maxWrappedLen = 1024

// usageAttrs returns the usage attributes for a persistent AES key.
func usageAttrs(u hsm.KeyUsage, extractableWrap bool) ([]*p11.Attribute, error) {
	switch u {
	case hsm.UsageEncrypt:
		// Copyable and modifiable, so each session can hold a session copy
		// (about twice as fast in SoftHSM; SoftHSM refuses to copy an
		// unmodifiable key into a session object). PKCS#11 still forbids
		// the changes that matter: CKA_EXTRACTABLE cannot become true nor
		// CKA_SENSITIVE false, on the key or on a copy
		// (TestKeyMaterialResistsPINHolder).
		return []*p11.Attribute{
			p11.NewAttribute(p11.CKA_ENCRYPT, true),
			p11.NewAttribute(p11.CKA_DECRYPT, true),
			p11.NewAttribute(p11.CKA_WRAP, false),
			p11.NewAttribute(p11.CKA_UNWRAP, false),
			p11.NewAttribute(p11.CKA_SIGN, false),
			p11.NewAttribute(p11.CKA_VERIFY, false),
			p11.NewAttribute(p11.CKA_DERIVE, false),
			p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		}, nil
	case hsm.UsageWrap:
		// What it unwraps must stay sensitive and non-extractable
		// (CKA_UNWRAP_TEMPLATE), and the key itself can be neither changed
		// (e.g. given CKA_DECRYPT) nor copied with other attributes.
		attrs := []*p11.Attribute{
			p11.NewAttribute(p11.CKA_ENCRYPT, false),
			p11.NewAttribute(p11.CKA_DECRYPT, false),
			p11.NewAttribute(p11.CKA_WRAP, true),
			p11.NewAttribute(p11.CKA_UNWRAP, true),
			// SoftHSM defaults SIGN/VERIFY to true: no CMAC under it.
			p11.NewAttribute(p11.CKA_SIGN, false),
			p11.NewAttribute(p11.CKA_VERIFY, false),
			p11.NewAttribute(p11.CKA_DERIVE, false),
			p11.NewAttribute(p11.CKA_UNWRAP_TEMPLATE, unwrapTemplate()),
			p11.NewAttribute(p11.CKA_MODIFIABLE, false),
			p11.NewAttribute(p11.CKA_COPYABLE, false),
		}
		if extractableWrap {
			// Extractable only by a trusted wrapping key (cluster admission).
			attrs = append(attrs,
				p11.NewAttribute(p11.CKA_EXTRACTABLE, true),
				p11.NewAttribute(p11.CKA_WRAP_WITH_TRUSTED, true))
		} else {
			attrs = append(attrs, p11.NewAttribute(p11.CKA_EXTRACTABLE, false))
		}
		return attrs, nil
	default:
		return nil, fmt.Errorf("%w: key usage %d", hsm.ErrInvalidInput, u)
	}
}

// checkSpec validates a KeySpec.
func checkSpec(spec hsm.KeySpec) error {
	if err := checkID(spec.ID); err != nil {
		return err
	}
	if len(spec.Label) > 255 {
		return fmt.Errorf("%w: label of %d bytes", hsm.ErrInvalidInput, len(spec.Label))
	}
	return nil
}

// keyTemplate is the common part of a persistent AES key template.
func keyTemplate(spec hsm.KeySpec) []*p11.Attribute {
	t := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_ID, spec.ID),
	}
	if spec.Label != "" {
		t = append(t, p11.NewAttribute(p11.CKA_LABEL, spec.Label))
	}
	return t
}

// errFunction maps "this key may not do that" return values to
// hsm.ErrInvalidInput and leaves others alone.
func errFunction(err error) error {
	if isCode(err, p11.CKR_KEY_FUNCTION_NOT_PERMITTED, p11.CKR_KEY_TYPE_INCONSISTENT,
		p11.CKR_WRAPPING_KEY_TYPE_INCONSISTENT, p11.CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT,
		p11.CKR_KEY_NOT_WRAPPABLE, p11.CKR_KEY_UNEXTRACTABLE) {
		return fmt.Errorf("%w: key does not allow this operation (%v)", hsm.ErrInvalidInput, err)
	}
	return err
}

// GenerateKey creates a persistent AES-256 key (CKM_AES_KEY_GEN) as spec
// says: token, private, sensitive; UsageEncrypt keys non-extractable,
// UsageWrap keys extractable only with a trusted key. It reads back
// CKA_ALWAYS_SENSITIVE (and CKA_NEVER_EXTRACTABLE for a non-extractable key)
// and returns the key check value; a key that fails the read-back is
// destroyed.
func (b *Backend) GenerateKey(ctx context.Context, spec hsm.KeySpec) ([]byte, error) {
	if err := checkSpec(spec); err != nil {
		return nil, err
	}
	kind, err := secretKind(spec.Usage)
	if err != nil {
		return nil, err
	}
	usage, err := usageAttrs(spec.Usage, true)
	if err != nil {
		return nil, err
	}
	tmpl := append(keyTemplate(spec), p11.NewAttribute(p11.CKA_VALUE_LEN, hsm.AESKeySize))
	tmpl = append(tmpl, usage...)
	var kcv []byte
	b.createMu.Lock()
	defer b.createMu.Unlock()
	err = b.do(ctx, "C_GenerateKey", func(s p11.SessionHandle) error {
		if ok, err := b.exists(s, spec.ID); err != nil || ok {
			if ok {
				return fmt.Errorf("%w: id %q", hsm.ErrKeyExists, spec.ID)
			}
			return err
		}
		var h p11.ObjectHandle
		err := b.createWithRetry(s, spec.ID, func() error {
			var err error
			h, err = b.ctx.GenerateKey(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)}, tmpl)
			return err
		})
		if err != nil {
			return err
		}
		if err = b.checkGenerated(s, h, kind == kindKEK); err == nil {
			if kcv, err = b.checkValue(s, h, kind); err == nil {
				// Found and verified like any later use of the key would.
				_, err = b.lookup(s, spec.ID, kind, kcv)
			}
		}
		if err != nil && !isSessionLoss(err) {
			_ = b.ctx.DestroyObject(s, h)
			b.cache.evictID(spec.ID)
		}
		return err
	})
	if err != nil {
		return nil, wrap("GenerateKey", err)
	}
	return kcv, nil
}

// GenerateWrappedKey creates a temporary, extractable AES-256 session key,
// computes its check value, wraps it under the wrapping key wrapKey with
// CKM_AES_KEY_WRAP_PAD and destroys it.
func (b *Backend) GenerateWrappedKey(ctx context.Context, wrapKey hsm.KeyRef) ([]byte, []byte, error) {
	if err := checkID(wrapKey.ID); err != nil {
		return nil, nil, err
	}
	tmpl := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_VALUE_LEN, hsm.AESKeySize),
		p11.NewAttribute(p11.CKA_TOKEN, false),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, true),
		p11.NewAttribute(p11.CKA_ENCRYPT, true), // for its check value
	}
	var out, kcv []byte
	err := b.withKey(ctx, "C_WrapKey", wrapKey.ID, kindWrap, wrapKey.CheckValue, func(s p11.SessionHandle, wh p11.ObjectHandle) error {
		var tmp p11.ObjectHandle
		err := b.createWithRetry(s, nil, func() error {
			var err error
			tmp, err = b.ctx.GenerateKey(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)}, tmpl)
			return err
		})
		if err != nil {
			return err
		}
		defer func() { _ = b.ctx.DestroyObject(s, tmp) }()
		if kcv, err = b.checkValue(s, tmp, kindKEK); err != nil {
			return err
		}
		out, err = b.ctx.WrapKey(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_WRAP_PAD, nil)}, wh, tmp)
		return errFunction(err)
	})
	if err != nil {
		return nil, nil, wrap("GenerateWrappedKey", err)
	}
	return out, kcv, nil
}

// UnwrapKey unwraps a GenerateWrappedKey result under wrapKey
// (CKM_AES_KEY_WRAP_PAD) into a persistent, sensitive, non-extractable key
// and checks that it is the key spec.CheckValue names; if it is not, the new
// object is destroyed and the error is hsm.ErrObjectMismatch.
func (b *Backend) UnwrapKey(ctx context.Context, wrapKey hsm.KeyRef, wrapped []byte, spec hsm.KeySpec) error {
	if err := checkID(wrapKey.ID); err != nil {
		return err
	}
	if err := checkSpec(spec); err != nil {
		return err
	}
	if len(wrapped) < 16 || len(wrapped)%8 != 0 || len(wrapped) > maxWrappedLen {
		return fmt.Errorf("%w: wrapped key of %d bytes", hsm.ErrInvalidInput, len(wrapped))
	}
	if spec.Usage != hsm.UsageEncrypt {
		return fmt.Errorf("%w: only encryption keys are unwrapped; a wrapping key is generated in the HSM", hsm.ErrInvalidInput)
	}
	if len(spec.CheckValue) != hsm.CheckValueSize {
		return fmt.Errorf("%w: key check value of %d bytes (want %d)", hsm.ErrInvalidInput, len(spec.CheckValue), hsm.CheckValueSize)
	}
	usage, err := usageAttrs(spec.Usage, false)
	if err != nil {
		return err
	}
	tmpl := append(keyTemplate(spec), usage...)
	b.createMu.Lock()
	defer b.createMu.Unlock()
	err = b.withKey(ctx, "C_UnwrapKey", wrapKey.ID, kindWrap, wrapKey.CheckValue, func(s p11.SessionHandle, wh p11.ObjectHandle) error {
		if ok, err := b.exists(s, spec.ID); err != nil || ok {
			if ok {
				return fmt.Errorf("%w: id %q", hsm.ErrKeyExists, spec.ID)
			}
			return err
		}
		var h p11.ObjectHandle
		err := b.createWithRetry(s, spec.ID, func() error {
			var err error
			h, err = b.ctx.UnwrapKey(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_WRAP_PAD, nil)}, wh, wrapped, tmpl)
			return err
		})
		if isCode(err, p11.CKR_WRAPPED_KEY_INVALID, p11.CKR_WRAPPED_KEY_LEN_RANGE,
			p11.CKR_ENCRYPTED_DATA_INVALID, p11.CKR_ENCRYPTED_DATA_LEN_RANGE,
			p11.CKR_DATA_INVALID, p11.CKR_DATA_LEN_RANGE, p11.CKR_KEY_SIZE_RANGE, p11.CKR_GENERAL_ERROR) {
			return hsm.ErrDecrypt
		}
		if err != nil {
			return errFunction(err)
		}
		// The object just made is the only one with the id (checked free
		// above, under createMu); verify finds it and checks its value.
		if _, err = b.lookup(s, spec.ID, kindKEK, spec.CheckValue); err != nil && !isSessionLoss(err) {
			_ = b.ctx.DestroyObject(s, h)
			b.cache.evictID(spec.ID)
		}
		return err
	})
	return wrap("UnwrapKey", err)
}

// EncryptGCM encrypts plaintext with AES-256-GCM (CKM_AES_GCM, 128-bit tag)
// under the verified KEK key and returns ciphertext||tag.
func (b *Backend) EncryptGCM(ctx context.Context, key hsm.KeyRef, iv, plaintext, aad []byte) ([]byte, error) {
	if err := checkID(key.ID); err != nil {
		return nil, err
	}
	if len(iv) != hsm.GCMIVSize {
		return nil, fmt.Errorf("%w: IV of %d bytes (want %d)", hsm.ErrInvalidInput, len(iv), hsm.GCMIVSize)
	}
	params := p11.NewGCMParams(iv, aad, hsm.GCMTagSize*8)
	defer params.Free()
	mech := []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}
	var out []byte
	err := b.withKeyCopy(ctx, "C_Encrypt", key, func(s p11.SessionHandle, h p11.ObjectHandle) error {
		if err := b.ctx.EncryptInit(s, mech, h); err != nil {
			return errFunction(err)
		}
		var err error
		out, err = b.ctx.Encrypt(s, plaintext)
		return err
	})
	if err != nil {
		return nil, wrap("EncryptGCM", err)
	}
	if len(out) != len(plaintext)+hsm.GCMTagSize {
		return nil, fmt.Errorf("pkcs11: EncryptGCM: module returned %d bytes for %d", len(out), len(plaintext))
	}
	return out, nil
}

// DecryptGCM decrypts ciphertext||tag with AES-256-GCM under the verified
// KEK key. Any
// authentication failure is hsm.ErrDecrypt, with no detail.
func (b *Backend) DecryptGCM(ctx context.Context, key hsm.KeyRef, iv, ciphertext, aad []byte) ([]byte, error) {
	if err := checkID(key.ID); err != nil {
		return nil, err
	}
	if len(iv) != hsm.GCMIVSize {
		return nil, fmt.Errorf("%w: IV of %d bytes (want %d)", hsm.ErrInvalidInput, len(iv), hsm.GCMIVSize)
	}
	if len(ciphertext) < hsm.GCMTagSize {
		return nil, fmt.Errorf("%w: ciphertext of %d bytes is shorter than the tag", hsm.ErrInvalidInput, len(ciphertext))
	}
	params := p11.NewGCMParams(iv, aad, hsm.GCMTagSize*8)
	defer params.Free()
	mech := []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}
	var out []byte
	err := b.withKeyCopy(ctx, "C_Decrypt", key, func(s p11.SessionHandle, h p11.ObjectHandle) error {
		if err := b.ctx.DecryptInit(s, mech, h); err != nil {
			return errFunction(err)
		}
		var err error
		out, err = b.ctx.Decrypt(s, ciphertext)
		if err != nil && !isSessionLoss(err) {
			return hsm.ErrDecrypt
		}
		return err
	})
	if err != nil {
		return nil, wrap("DecryptGCM", err)
	}
	if len(out) != len(ciphertext)-hsm.GCMTagSize {
		return nil, hsm.ErrDecrypt
	}
	return out, nil
}
