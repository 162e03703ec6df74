package pkcs11

import (
	"context"
	"fmt"

	p11 "github.com/miekg/pkcs11"

	"github.com/custos-kms/custos/hsm"
)

// Key import (bring your own key): material the customer wrapped under an
// import key (a session RSA key from GenerateTransportKey) is unwrapped in
// the HSM into a temporary session key, which is then wrapped under the
// domain key exactly as a generated KEK is (GenerateWrappedKey), so that
// every node loads it from the log the same way.

// kwpLen32 is the KWP output size for a 32-byte key.
const kwpLen32 = hsm.AESKeySize + 8

// ImportWrappedKey implements hsm.Backend.
func (b *Backend) ImportWrappedKey(ctx context.Context, importKey, material []byte, format hsm.ImportFormat, hash hsm.OAEPHash,
	wrapKey hsm.KeyRef) ([]byte, []byte, error) {
	if err := checkID(importKey); err != nil {
		return nil, nil, err
	}
	if err := checkID(wrapKey.ID); err != nil {
		return nil, nil, err
	}
	want := hsm.ImportSize(format)
	if want == 0 {
		return nil, nil, fmt.Errorf("%w: import format %v", hsm.ErrInvalidInput, format)
	}
	if len(material) != want {
		return nil, nil, fmt.Errorf("%w: %v material of %d bytes (want %d: an AES-256 key under an RSA-%d import key)",
			hsm.ErrInvalidInput, format, len(material), want, hsm.TransportKeyBits)
	}
	oaep, err := oaepMech(hash)
	if err != nil {
		return nil, nil, err
	}
	// The imported key: a session key, sensitive, extractable only to be
	// wrapped under the domain key, able to encrypt for its check value.
	tmpTmpl := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_TOKEN, false),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, true),
		p11.NewAttribute(p11.CKA_ENCRYPT, true),
		p11.NewAttribute(p11.CKA_DECRYPT, false),
		p11.NewAttribute(p11.CKA_WRAP, false),
		p11.NewAttribute(p11.CKA_UNWRAP, false),
	}
	// The ephemeral key of RSA_AES_KEY_WRAP: unwraps the key, nothing else.
	ephTmpl := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_TOKEN, false),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_UNWRAP, true),
		p11.NewAttribute(p11.CKA_WRAP, false),
		p11.NewAttribute(p11.CKA_ENCRYPT, false),
		p11.NewAttribute(p11.CKA_DECRYPT, false),
	}
	var out, kcv []byte
	err = b.withKey(ctx, "C_UnwrapKey", wrapKey.ID, kindWrap, wrapKey.CheckValue, func(s p11.SessionHandle, wh p11.ObjectHandle) error {
		iks, err := b.findObjects(s, transportTemplate(importKey), 2)
		switch {
		case err != nil:
			return err
		case len(iks) != 1:
			return fmt.Errorf("%w: import key %q (%d found): it expired, was used, or the node restarted; get new import parameters",
				hsm.ErrKeyNotFound, importKey, len(iks))
		}
		rsaPart := material[:hsm.TransportKeyBits/8]
		var tmp p11.ObjectHandle
		if format == hsm.ImportRSAOAEP {
			tmp, err = b.ctx.UnwrapKey(s, oaep, iks[0], rsaPart, tmpTmpl)
			if err != nil {
				return importUnwrapError(err, hash)
			}
		} else {
			eph, err := b.ctx.UnwrapKey(s, oaep, iks[0], rsaPart, ephTmpl)
			if err != nil {
				return importUnwrapError(err, hash)
			}
			defer func() { _ = b.ctx.DestroyObject(s, eph) }()
			tmp, err = b.ctx.UnwrapKey(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_WRAP_PAD, nil)}, eph,
				material[hsm.TransportKeyBits/8:], tmpTmpl)
			if err != nil {
				return importUnwrapError(err, hash)
			}
		}
		defer func() { _ = b.ctx.DestroyObject(s, tmp) }()
		if kcv, err = b.checkValue(s, tmp, kindKEK); err != nil {
			if isCode(err, p11.CKR_KEY_SIZE_RANGE, p11.CKR_KEY_TYPE_INCONSISTENT) {
				return fmt.Errorf("%w: the imported key is not an AES key (%v)", hsm.ErrInvalidInput, err)
			}
			return err
		}
		if out, err = b.ctx.WrapKey(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_WRAP_PAD, nil)}, wh, tmp); err != nil {
			return errFunction(err)
		}
		// The module may not report CKA_VALUE_LEN of an unwrapped key
		// (SoftHSM reads 0): KWP's output says the length instead. 40 bytes
		// hold 25 to 32; of those, only 32 is an AES key size.
		if len(out) != kwpLen32 {
			return fmt.Errorf("%w: the imported key is not 32 bytes; custos imports AES-256 keys only", hsm.ErrInvalidInput)
		}
		// One import per import key.
		_ = b.ctx.DestroyObject(s, iks[0])
		return nil
	})
	if err != nil {
		return nil, nil, wrap("ImportWrappedKey", err)
	}
	return out, kcv, nil
}

// ulongValue reads a CK_ULONG attribute value (native, little-endian byte
// order); a value of another size reads as 0.
func ulongValue(v []byte) uint64 {
	if len(v) != 8 && len(v) != 4 {
		return 0
	}
	var n uint64
	for i := len(v) - 1; i >= 0; i-- {
		n = n<<8 | uint64(v[i])
	}
	return n
}

// importUnwrapError maps a failed unwrap of imported material.
func importUnwrapError(err error, hash hsm.OAEPHash) error {
	switch {
	case isCode(err, p11.CKR_WRAPPED_KEY_INVALID, p11.CKR_WRAPPED_KEY_LEN_RANGE,
		p11.CKR_ENCRYPTED_DATA_INVALID, p11.CKR_ENCRYPTED_DATA_LEN_RANGE,
		p11.CKR_DATA_INVALID, p11.CKR_DATA_LEN_RANGE, p11.CKR_GENERAL_ERROR):
		return hsm.ErrDecrypt
	case isCode(err, p11.CKR_KEY_SIZE_RANGE, p11.CKR_TEMPLATE_INCONSISTENT):
		return fmt.Errorf("%w: the imported key is not an AES-256 key (%v)", hsm.ErrInvalidInput, err)
	case isCode(err, p11.CKR_MECHANISM_INVALID, p11.CKR_MECHANISM_PARAM_INVALID, p11.CKR_ARGUMENTS_BAD):
		return fmt.Errorf("%w: the module does not unwrap with %v (%v)", hsm.ErrInvalidInput, hash, err)
	}
	return errFunction(err)
}
