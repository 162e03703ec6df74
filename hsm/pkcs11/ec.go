package pkcs11

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/asn1"
	"fmt"
	"math/big"

	p11 "github.com/miekg/pkcs11"

	"github.com/custos-kms/custos/hsm"
)

// p256Params is CKA_EC_PARAMS for P-256: the DER encoding of the OID
// 1.2.840.10045.3.1.7 (prime256v1 / secp256r1).
var p256Params = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}

// GenerateECKey creates a persistent ECDSA P-256 key pair
// (CKM_EC_KEY_PAIR_GEN): the private key sensitive, non-extractable and
// CKA_SIGN only; the public key CKA_VERIFY. It returns the public key.
func (b *Backend) GenerateECKey(ctx context.Context, id []byte, label string) (*ecdsa.PublicKey, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	if len(label) > 255 {
		return nil, fmt.Errorf("%w: label of %d bytes", hsm.ErrInvalidInput, len(label))
	}
	pubT := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, false),
		p11.NewAttribute(p11.CKA_VERIFY, true),
		p11.NewAttribute(p11.CKA_EC_PARAMS, p256Params),
		p11.NewAttribute(p11.CKA_ID, id),
	}
	privT := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_SIGN, true),
		p11.NewAttribute(p11.CKA_ID, id),
	}
	if label != "" {
		pubT = append(pubT, p11.NewAttribute(p11.CKA_LABEL, label))
		privT = append(privT, p11.NewAttribute(p11.CKA_LABEL, label))
	}
	var pub *ecdsa.PublicKey
	b.createMu.Lock()
	defer b.createMu.Unlock()
	err := b.do(ctx, "C_GenerateKeyPair", func(s p11.SessionHandle) error {
		if ok, err := b.exists(s, id); err != nil || ok {
			if ok {
				return fmt.Errorf("%w: id %q", hsm.ErrKeyExists, id)
			}
			return err
		}
		var ph, kh p11.ObjectHandle
		err := b.createWithRetry(s, id, func() error {
			var err error
			ph, kh, err = b.ctx.GenerateKeyPair(s,
				[]*p11.Mechanism{p11.NewMechanism(p11.CKM_EC_KEY_PAIR_GEN, nil)}, pubT, privT)
			return err
		})
		if err != nil {
			return err
		}
		if err = b.checkGenerated(s, kh, true); err == nil {
			pub, err = b.readPublic(s, ph)
		}
		if err != nil && !isSessionLoss(err) {
			_ = b.ctx.DestroyObject(s, kh)
			_ = b.ctx.DestroyObject(s, ph)
		}
		return err
	})
	if err != nil {
		return nil, wrap("GenerateECKey", err)
	}
	return pub, nil
}

// readPublic reads CKA_EC_POINT of a public key object and parses it.
func (b *Backend) readPublic(s p11.SessionHandle, h p11.ObjectHandle) (*ecdsa.PublicKey, error) {
	attrs, err := b.ctx.GetAttributeValue(s, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_EC_POINT, nil)})
	if err != nil {
		return nil, err
	}
	if len(attrs) != 1 {
		return nil, fmt.Errorf("pkcs11: no CKA_EC_POINT")
	}
	return parseECPoint(attrs[0].Value)
}

// parseECPoint parses CKA_EC_POINT: a DER OCTET STRING wrapping the
// uncompressed P-256 point (some modules return the bare point; that is
// accepted too).
func parseECPoint(v []byte) (*ecdsa.PublicKey, error) {
	point := v
	if len(v) != 65 {
		var inner []byte
		rest, err := asn1.Unmarshal(v, &inner)
		if err != nil || len(rest) != 0 {
			return nil, fmt.Errorf("pkcs11: CKA_EC_POINT is not a DER OCTET STRING")
		}
		point = inner
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: CKA_EC_POINT: %v", err)
	}
	return pub, nil
}

// PublicKey returns the public key of the P-256 pair with that id. A public
// object can be replaced without the user PIN, so the key read is proved to
// be the private key's other half: the private key signs a fixed digest and
// the signature must verify under it.
func (b *Backend) PublicKey(ctx context.Context, id []byte) (*ecdsa.PublicKey, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	var pub *ecdsa.PublicKey
	err := b.withKey(ctx, "C_GetAttributeValue", id, kindECPublic, nil, func(s p11.SessionHandle, h p11.ObjectHandle) error {
		var err error
		pub, err = b.readPublic(s, h)
		return err
	})
	if err != nil {
		return nil, wrap("PublicKey", err)
	}
	digest := sha256.Sum256([]byte("custos/kcv/1 ec pair"))
	sig, err := b.SignECDSA(ctx, id, digest[:])
	if err != nil {
		return nil, err
	}
	if !ecdsa.VerifyASN1(pub, digest[:], sig) {
		return nil, fmt.Errorf("pkcs11: PublicKey: %w: the public key with id %q is not the private key's pair", hsm.ErrObjectMismatch, id)
	}
	return pub, nil
}

// SignECDSA signs a 32-byte SHA-256 digest with CKM_ECDSA under the private
// key id and returns an ASN.1 DER signature.
func (b *Backend) SignECDSA(ctx context.Context, id, digest []byte) ([]byte, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	if len(digest) != 32 {
		return nil, fmt.Errorf("%w: digest of %d bytes (want 32)", hsm.ErrInvalidInput, len(digest))
	}
	var raw []byte
	err := b.withKey(ctx, "C_Sign", id, kindECPrivate, nil, func(s p11.SessionHandle, h p11.ObjectHandle) error {
		if err := b.ctx.SignInit(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_ECDSA, nil)}, h); err != nil {
			return errFunction(err)
		}
		var err error
		raw, err = b.ctx.Sign(s, digest)
		return err
	})
	if err != nil {
		return nil, wrap("SignECDSA", err)
	}
	if len(raw) != 64 {
		return nil, fmt.Errorf("pkcs11: SignECDSA: module returned a %d-byte signature", len(raw))
	}
	sig, err := asn1.Marshal(struct{ R, S *big.Int }{
		new(big.Int).SetBytes(raw[:32]), new(big.Int).SetBytes(raw[32:]),
	})
	if err != nil {
		return nil, fmt.Errorf("pkcs11: SignECDSA: %v", err)
	}
	return sig, nil
}
