package pkcs11

import (
	"crypto/sha256"
	"fmt"

	p11 "github.com/miekg/pkcs11"

	"github.com/custos-kms/custos/hsm"
)

// Object authentication (invariant 9 of docs/architecture.md;
// docs/hsm-objects.md). Anyone who can write to the token — even without the
// user PIN: SoftHSM lets a read/write public session create public token
// objects — can create a key with a value they chose under an id custos
// looks up. custos therefore uses an object only if
//   - it is the only object of its class with that id,
//   - it has every attribute custos gives that kind of key (template), and
//   - its key check value, computed in the HSM now, is the one recorded in
//     the log when the key was made.
//
// Key check value, version 1 (16 bytes):
//
//	KEK (CKA_ENCRYPT):      SHA-256("custos/kcv/1" || AES-256-GCM(key, IV="custos/kcv/1", 16 zero bytes, no AAD))[:16]
//	wrapping key (CKA_WRAP): SHA-256("custos/kcv/1" || AES-KWP(key, kcvWrapValue))[:16]
//
// "custos/kcv/1" is 12 bytes, the GCM IV size. GCM under a fixed IV is safe
// here because the input never changes: the same IV and the same message
// give the same output and reveal nothing new; data and data keys are
// encrypted under IVs from the HSM's RNG. KWP is deterministic; kcvWrapValue
// is a public constant, so wrapping it reveals nothing about the wrapping
// key. Only a key with the recorded value gives the recorded check value,
// and finding another would break AES.

// kcvLabel is the check value's domain separator and, for KEKs, its GCM IV.
var kcvLabel = []byte("custos/kcv/1")

// kcvWrapValue is the public AES-256 key value a wrapping key's check value
// wraps: SHA-256 of "custos/kcv/1 wrap".
var kcvWrapValue = func() []byte {
	h := sha256.Sum256([]byte("custos/kcv/1 wrap"))
	return h[:]
}()

// objKind is a kind of object custos relies on; it fixes the object's class,
// the attributes it must have and how its check value is computed.
type objKind int

const (
	// kindKEK: a key version's KEK (AES-256, GCM encrypt/decrypt, token,
	// private, sensitive, non-extractable).
	kindKEK objKind = iota + 1
	// kindWrap: the cluster's domain key (AES-256, wrap/unwrap only,
	// unmodifiable, extractable only with a trusted key).
	kindWrap
	// kindECPrivate: a checkpoint signing key (P-256, sign only, private,
	// sensitive, non-extractable).
	kindECPrivate
	// kindECPublic: the public half of a checkpoint signing key.
	kindECPublic
)

func (k objKind) String() string {
	switch k {
	case kindKEK:
		return "key-encryption key"
	case kindWrap:
		return "wrapping key"
	case kindECPrivate:
		return "EC private key"
	case kindECPublic:
		return "EC public key"
	}
	return fmt.Sprintf("object kind %d", int(k))
}

// secretKind maps a secret key's usage to its kind.
func secretKind(u hsm.KeyUsage) (objKind, error) {
	switch u {
	case hsm.UsageEncrypt:
		return kindKEK, nil
	case hsm.UsageWrap:
		return kindWrap, nil
	}
	return 0, fmt.Errorf("%w: key usage %d", hsm.ErrInvalidInput, u)
}

func (k objKind) class() uint {
	switch k {
	case kindECPrivate:
		return p11.CKO_PRIVATE_KEY
	case kindECPublic:
		return p11.CKO_PUBLIC_KEY
	}
	return p11.CKO_SECRET_KEY
}

func (k objKind) hasCheckValue() bool { return k == kindKEK || k == kindWrap }

// template returns the attributes an object of kind k with that id must
// have, as a C_FindObjects template.
func (k objKind) template(id []byte) []*p11.Attribute {
	a := func(t uint, v any) *p11.Attribute { return p11.NewAttribute(t, v) }
	t := []*p11.Attribute{a(p11.CKA_ID, id), a(p11.CKA_CLASS, k.class()), a(p11.CKA_TOKEN, true)}
	switch k {
	case kindKEK:
		return append(t, a(p11.CKA_KEY_TYPE, p11.CKK_AES), a(p11.CKA_PRIVATE, true),
			a(p11.CKA_SENSITIVE, true), a(p11.CKA_EXTRACTABLE, false),
			a(p11.CKA_ENCRYPT, true), a(p11.CKA_DECRYPT, true),
			a(p11.CKA_WRAP, false), a(p11.CKA_UNWRAP, false))
	case kindWrap:
		return append(t, a(p11.CKA_KEY_TYPE, p11.CKK_AES), a(p11.CKA_PRIVATE, true),
			a(p11.CKA_SENSITIVE, true), a(p11.CKA_EXTRACTABLE, true), a(p11.CKA_WRAP_WITH_TRUSTED, true),
			a(p11.CKA_WRAP, true), a(p11.CKA_UNWRAP, true),
			a(p11.CKA_ENCRYPT, false), a(p11.CKA_DECRYPT, false),
			a(p11.CKA_MODIFIABLE, false))
	case kindECPrivate:
		return append(t, a(p11.CKA_KEY_TYPE, p11.CKK_EC), a(p11.CKA_PRIVATE, true),
			a(p11.CKA_SENSITIVE, true), a(p11.CKA_EXTRACTABLE, false), a(p11.CKA_SIGN, true),
			a(p11.CKA_EC_PARAMS, p256Params))
	case kindECPublic:
		return append(t, a(p11.CKA_KEY_TYPE, p11.CKK_EC), a(p11.CKA_EC_PARAMS, p256Params))
	}
	return t
}

// checkValue computes the key check value of the secret key h of kind k in
// the HSM (see the format above).
func (b *Backend) checkValue(s p11.SessionHandle, h p11.ObjectHandle, k objKind) ([]byte, error) {
	var out []byte
	switch k {
	case kindKEK:
		params := p11.NewGCMParams(kcvLabel, nil, hsm.GCMTagSize*8)
		defer params.Free()
		if err := b.ctx.EncryptInit(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}, h); err != nil {
			return nil, errFunction(err)
		}
		var err error
		if out, err = b.ctx.Encrypt(s, make([]byte, 16)); err != nil {
			return nil, err
		}
	case kindWrap:
		// A public key value as a session object, wrapped and destroyed.
		tmp, err := b.ctx.CreateObject(s, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
			p11.NewAttribute(p11.CKA_TOKEN, false),
			p11.NewAttribute(p11.CKA_SENSITIVE, false),
			p11.NewAttribute(p11.CKA_EXTRACTABLE, true),
			p11.NewAttribute(p11.CKA_VALUE, kcvWrapValue),
		})
		if err != nil {
			return nil, err
		}
		defer func() { _ = b.ctx.DestroyObject(s, tmp) }()
		if out, err = b.ctx.WrapKey(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_WRAP_PAD, nil)}, h, tmp); err != nil {
			return nil, errFunction(err)
		}
	default:
		return nil, fmt.Errorf("%w: a %s has no key check value", hsm.ErrInvalidInput, k)
	}
	sum := sha256.Sum256(append(append([]byte(nil), kcvLabel...), out...))
	return sum[:hsm.CheckValueSize], nil
}

// checkGenerated reads back CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE of
// a key the HSM just generated: a key that was ever readable is not one the
// HSM made for custos. neverExtractable is false for keys that are
// extractable by design (the domain key: only with a trusted key).
func (b *Backend) checkGenerated(s p11.SessionHandle, h p11.ObjectHandle, neverExtractable bool) error {
	attrs, err := b.ctx.GetAttributeValue(s, h, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_ALWAYS_SENSITIVE, nil),
		p11.NewAttribute(p11.CKA_NEVER_EXTRACTABLE, nil),
	})
	if err != nil {
		return err
	}
	for _, a := range attrs {
		v := len(a.Value) > 0 && a.Value[0] != 0
		switch {
		case a.Type == p11.CKA_ALWAYS_SENSITIVE && !v:
			return fmt.Errorf("%w: generated key does not read CKA_ALWAYS_SENSITIVE=true", hsm.ErrObjectMismatch)
		case a.Type == p11.CKA_NEVER_EXTRACTABLE && neverExtractable && !v:
			return fmt.Errorf("%w: generated key does not read CKA_NEVER_EXTRACTABLE=true", hsm.ErrObjectMismatch)
		}
	}
	return nil
}
