package pkcs11

import (
	"context"
	"crypto/rsa"
	"fmt"
	"math/big"

	p11 "github.com/miekg/pkcs11"

	"github.com/custos-kms/custos/hsm"
)

// Key transport (hsm/transport.go, docs/key-transport.md): RSA-OAEP from a
// holder HSM to a receiving one. The receiver's private transport key is a
// session object; the holder wraps only to a public key its security
// officer marked CKA_TRUSTED, and the domain key's CKA_WRAP_WITH_TRUSTED
// makes the HSM refuse any other.

// transportBlobLen is the size of an RSA-3072 OAEP ciphertext.
const transportBlobLen = hsm.TransportKeyBits / 8

// oaepMech returns the CKM_RSA_PKCS_OAEP mechanism for hash (no label).
func oaepMech(h hsm.OAEPHash) ([]*p11.Mechanism, error) {
	var hash, mgf uint
	switch h {
	case hsm.OAEPSHA256:
		hash, mgf = p11.CKM_SHA256, p11.CKG_MGF1_SHA256
	case hsm.OAEPSHA1:
		hash, mgf = p11.CKM_SHA_1, p11.CKG_MGF1_SHA1
	default:
		return nil, fmt.Errorf("%w: OAEP hash %v", hsm.ErrInvalidInput, h)
	}
	return []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_PKCS_OAEP,
		p11.NewOAEPParams(hash, mgf, p11.CKZ_DATA_SPECIFIED, nil))}, nil
}

// transportTemplate finds this process's transport private key id.
func transportTemplate(id []byte) []*p11.Attribute {
	return []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_RSA),
		p11.NewAttribute(p11.CKA_TOKEN, false),
		p11.NewAttribute(p11.CKA_ID, id),
	}
}

// GenerateTransportKey implements hsm.Backend.
func (b *Backend) GenerateTransportKey(ctx context.Context, id []byte) (*rsa.PublicKey, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	pubTmpl := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_RSA),
		p11.NewAttribute(p11.CKA_TOKEN, false),
		p11.NewAttribute(p11.CKA_MODULUS_BITS, hsm.TransportKeyBits),
		p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
		p11.NewAttribute(p11.CKA_ENCRYPT, false),
		p11.NewAttribute(p11.CKA_VERIFY, false),
		p11.NewAttribute(p11.CKA_WRAP, false),
	}
	privTmpl := append(transportTemplate(id),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_UNWRAP, true),
		p11.NewAttribute(p11.CKA_DECRYPT, false),
		p11.NewAttribute(p11.CKA_SIGN, false),
		p11.NewAttribute(p11.CKA_LABEL, "custos transport key"),
	)
	var pub *rsa.PublicKey
	b.createMu.Lock()
	defer b.createMu.Unlock()
	err := b.do(ctx, "C_GenerateKeyPair", func(s p11.SessionHandle) error {
		if hs, err := b.findObjects(s, transportTemplate(id), 1); err != nil || len(hs) > 0 {
			if err == nil {
				err = fmt.Errorf("%w: transport key %q", hsm.ErrKeyExists, id)
			}
			return err
		}
		ph, sh, err := b.ctx.GenerateKeyPair(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil)}, pubTmpl, privTmpl)
		if err != nil {
			return err
		}
		// Only its modulus is needed: the public half is handed out, not kept.
		defer func() { _ = b.ctx.DestroyObject(s, ph) }()
		pub, err = b.rsaPublic(s, ph)
		if err == nil {
			err = hsm.CheckTransportKey(pub)
		}
		if err != nil {
			_ = b.ctx.DestroyObject(s, sh)
		}
		return err
	})
	if err != nil {
		return nil, wrap("GenerateTransportKey", err)
	}
	return pub, nil
}

// rsaPublic reads an RSA public key object's modulus and exponent.
func (b *Backend) rsaPublic(s p11.SessionHandle, h p11.ObjectHandle) (*rsa.PublicKey, error) {
	as, err := b.ctx.GetAttributeValue(s, h, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_MODULUS, nil),
		p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, nil),
	})
	if err != nil {
		return nil, err
	}
	e := new(big.Int).SetBytes(as[1].Value)
	if !e.IsInt64() || e.Int64() > 1<<31-1 {
		return nil, fmt.Errorf("%w: RSA public exponent of %d bits", hsm.ErrObjectMismatch, e.BitLen())
	}
	return &rsa.PublicKey{N: new(big.Int).SetBytes(as[0].Value), E: int(e.Int64())}, nil
}

// trustedKey finds the token public key trusted: the only public key
// object with the id, RSA, CKA_TRUSTED and CKA_WRAP true, equal to pub.
func (b *Backend) trustedKey(s p11.SessionHandle, trusted []byte, pub *rsa.PublicKey) (p11.ObjectHandle, error) {
	hs, err := b.findObjects(s, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
		p11.NewAttribute(p11.CKA_ID, trusted),
		p11.NewAttribute(p11.CKA_TOKEN, true),
	}, 2)
	switch {
	case err != nil:
		return 0, err
	case len(hs) == 0:
		return 0, fmt.Errorf("%w: no trusted public key %q on the token (has its security officer run custos hsm trust?)", hsm.ErrKeyNotFound, trusted)
	case len(hs) > 1:
		return 0, fmt.Errorf("%w: more than one public key has id %q", hsm.ErrObjectMismatch, trusted)
	}
	as, err := b.ctx.GetAttributeValue(s, hs[0], []*p11.Attribute{
		p11.NewAttribute(p11.CKA_KEY_TYPE, nil),
		p11.NewAttribute(p11.CKA_TRUSTED, nil),
		p11.NewAttribute(p11.CKA_WRAP, nil),
	})
	if err != nil {
		return 0, err
	}
	if ulongValue(as[0].Value) != p11.CKK_RSA {
		return 0, fmt.Errorf("%w: public key %q is not an RSA key", hsm.ErrObjectMismatch, trusted)
	}
	if !attrTrue(as[1]) {
		return 0, fmt.Errorf("%w: public key %q is not marked CKA_TRUSTED by the token's security officer", hsm.ErrObjectMismatch, trusted)
	}
	if !attrTrue(as[2]) {
		return 0, fmt.Errorf("%w: public key %q may not wrap (CKA_WRAP false)", hsm.ErrObjectMismatch, trusted)
	}
	got, err := b.rsaPublic(s, hs[0])
	if err != nil {
		return 0, err
	}
	if !got.Equal(pub) {
		return 0, fmt.Errorf("%w: public key %q is not the approved transport key", hsm.ErrObjectMismatch, trusted)
	}
	return hs[0], nil
}

// attrTrue reads a CK_BBOOL attribute.
func attrTrue(a *p11.Attribute) bool { return len(a.Value) > 0 && a.Value[0] != 0 }

// WrapForTransport implements hsm.Backend.
func (b *Backend) WrapForTransport(ctx context.Context, key hsm.KeyRef, trusted []byte, pub *rsa.PublicKey, hash hsm.OAEPHash) ([]byte, error) {
	if err := checkID(key.ID); err != nil {
		return nil, err
	}
	if err := checkID(trusted); err != nil {
		return nil, err
	}
	if err := hsm.CheckTransportKey(pub); err != nil {
		return nil, err
	}
	mech, err := oaepMech(hash)
	if err != nil {
		return nil, err
	}
	var out []byte
	err = b.withKey(ctx, "C_WrapKey", key.ID, kindWrap, key.CheckValue, func(s p11.SessionHandle, wh p11.ObjectHandle) error {
		th, err := b.trustedKey(s, trusted, pub)
		if err != nil {
			return err
		}
		out, err = b.ctx.WrapKey(s, mech, th, wh)
		if isCode(err, p11.CKR_MECHANISM_INVALID, p11.CKR_MECHANISM_PARAM_INVALID, p11.CKR_ARGUMENTS_BAD) {
			return fmt.Errorf("%w: the module does not wrap with %v (%v)", hsm.ErrInvalidInput, hash, err)
		}
		return errFunction(err)
	})
	if err != nil {
		return nil, wrap("WrapForTransport", err)
	}
	if len(out) != transportBlobLen {
		return nil, fmt.Errorf("pkcs11: WrapForTransport: module returned %d bytes (want %d)", len(out), transportBlobLen)
	}
	return out, nil
}

// receivedTemplate is the unwrap template of a received wrapping key: the
// attributes GenerateKey gives a UsageWrap key, with CKA_MODIFIABLE=false
// last (SoftHSM refuses every attribute after it in C_UnwrapKey,
// docs/hsm-notes.md). Without the full template a holder of the user PIN
// could give the received key CKA_DECRYPT and read KEKs with it.
func receivedTemplate(spec hsm.KeySpec) ([]*p11.Attribute, error) {
	usage, err := usageAttrs(hsm.UsageWrap, true)
	if err != nil {
		return nil, err
	}
	t := keyTemplate(spec)
	var last *p11.Attribute
	for _, a := range usage {
		if a.Type == p11.CKA_MODIFIABLE {
			last = a
			continue
		}
		t = append(t, a)
	}
	return append(t, last), nil
}

// ReceiveWrappingKey implements hsm.Backend.
func (b *Backend) ReceiveWrappingKey(ctx context.Context, transport, wrapped []byte, hash hsm.OAEPHash, spec hsm.KeySpec) error {
	if err := checkID(transport); err != nil {
		return err
	}
	if err := checkSpec(spec); err != nil {
		return err
	}
	if spec.Usage != hsm.UsageWrap {
		return fmt.Errorf("%w: only a wrapping key is received by key transport", hsm.ErrInvalidInput)
	}
	if len(spec.CheckValue) != hsm.CheckValueSize {
		return fmt.Errorf("%w: key check value of %d bytes (want %d)", hsm.ErrInvalidInput, len(spec.CheckValue), hsm.CheckValueSize)
	}
	if len(wrapped) != transportBlobLen {
		return fmt.Errorf("%w: transported key of %d bytes (want %d)", hsm.ErrInvalidInput, len(wrapped), transportBlobLen)
	}
	mech, err := oaepMech(hash)
	if err != nil {
		return err
	}
	tmpl, err := receivedTemplate(spec)
	if err != nil {
		return err
	}
	b.createMu.Lock()
	defer b.createMu.Unlock()
	err = b.do(ctx, "C_UnwrapKey", func(s p11.SessionHandle) error {
		if ok, err := b.exists(s, spec.ID); err != nil || ok {
			if ok {
				return fmt.Errorf("%w: id %q", hsm.ErrKeyExists, spec.ID)
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
		var h p11.ObjectHandle
		err = b.createWithRetry(s, spec.ID, func() error {
			var err error
			h, err = b.ctx.UnwrapKey(s, mech, tks[0], wrapped, tmpl)
			return err
		})
		if err != nil {
			// A failed token unwrap can leave an object behind (SoftHSM):
			// nothing but this call uses the fresh id.
			b.destroyID(s, spec.ID)
			if isCode(err, p11.CKR_WRAPPED_KEY_INVALID, p11.CKR_WRAPPED_KEY_LEN_RANGE,
				p11.CKR_ENCRYPTED_DATA_INVALID, p11.CKR_ENCRYPTED_DATA_LEN_RANGE,
				p11.CKR_DATA_INVALID, p11.CKR_DATA_LEN_RANGE, p11.CKR_KEY_SIZE_RANGE, p11.CKR_GENERAL_ERROR) {
				return hsm.ErrDecrypt
			}
			if isCode(err, p11.CKR_MECHANISM_INVALID, p11.CKR_MECHANISM_PARAM_INVALID, p11.CKR_ARGUMENTS_BAD) {
				return fmt.Errorf("%w: the module does not unwrap with %v (%v)", hsm.ErrInvalidInput, hash, err)
			}
			return errFunction(err)
		}
		if _, err = b.lookup(s, spec.ID, kindWrap, spec.CheckValue); err != nil {
			if !isSessionLoss(err) {
				_ = b.ctx.DestroyObject(s, h)
				b.cache.evictID(spec.ID)
			}
			return err
		}
		// One key, one transport: the private half goes now.
		_ = b.ctx.DestroyObject(s, tks[0])
		return nil
	})
	return wrap("ReceiveWrappingKey", err)
}

// destroyID destroys every object with the id, best effort.
func (b *Backend) destroyID(s p11.SessionHandle, id []byte) {
	hs, err := b.findObjects(s, []*p11.Attribute{p11.NewAttribute(p11.CKA_ID, id)}, 16)
	if err != nil {
		return
	}
	for _, h := range hs {
		_ = b.ctx.DestroyObject(s, h)
	}
	b.cache.evictID(id)
}

// DestroyTransportKey implements hsm.Backend: the transport (or import)
// private key id, and the rewrap key id, of this process.
func (b *Backend) DestroyTransportKey(ctx context.Context, id []byte) error {
	if err := checkID(id); err != nil {
		return err
	}
	err := b.do(ctx, "C_DestroyObject", func(s p11.SessionHandle) error {
		hs, err := b.findObjects(s, transportTemplate(id), 16)
		if err != nil {
			return err
		}
		// ... and a rewrap key (rewrap.go) with the id.
		rks, err := b.findObjects(s, rewrapKeyFind(id), 16)
		if err != nil {
			return err
		}
		for _, h := range append(hs, rks...) {
			if err := b.ctx.DestroyObject(s, h); err != nil && !isCode(err, p11.CKR_OBJECT_HANDLE_INVALID) {
				return err
			}
		}
		return nil
	})
	return wrap("DestroyTransportKey", err)
}

// SOConfig names a token and its security officer's PIN, for the one step
// of key transport that is the customer's SO's to take (TrustPublicKey).
type SOConfig struct {
	Module     string
	TokenLabel string
	// SOPIN is the security officer's PIN; it is used for one login and
	// never stored or logged.
	SOPIN string
}

// TrustPublicKey logs in to the token as its security officer and creates
// a public, unmodifiable token RSA key with id and label, CKA_TRUSTED=true
// and CKA_WRAP=true: the one key the holder may wrap the domain key to
// (WrapForTransport). It refuses anything but an RSA-3072 key. It must run
// in a process with no user logged in to the token (the custos command,
// not custosd): PKCS#11 login state is per process. An existing object
// with the id is an error.
func TrustPublicKey(ctx context.Context, cfg SOConfig, id []byte, label string, pub *rsa.PublicKey) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := hsm.CheckTransportKey(pub); err != nil {
		return err
	}
	if cfg.SOPIN == "" {
		return fmt.Errorf("%w: empty SO PIN", ErrPIN)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	mod, err := acquireModule(cfg.Module)
	if err != nil {
		return err
	}
	defer mod.release()
	c := mod.ctx
	slot, err := findTokenSlot(c, cfg.Module, cfg.TokenLabel)
	if err != nil {
		return err
	}
	s, err := c.OpenSession(slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("%w: C_OpenSession: %v", hsm.ErrUnavailable, err)
	}
	defer func() { _ = c.CloseSession(s) }()
	if err := c.Login(s, p11.CKU_SO, cfg.SOPIN); err != nil {
		if isCode(err, p11.CKR_USER_ANOTHER_ALREADY_LOGGED_IN, p11.CKR_USER_ALREADY_LOGGED_IN) {
			return fmt.Errorf("pkcs11: TrustPublicKey: the user is logged in to %q in this process; run it from a separate process", cfg.TokenLabel)
		}
		return fmt.Errorf("%w: C_Login(SO) on %q: %v", ErrPIN, cfg.TokenLabel, err)
	}
	defer func() { _ = c.Logout(s) }()
	if err := c.FindObjectsInit(s, []*p11.Attribute{p11.NewAttribute(p11.CKA_ID, id)}); err != nil {
		return fmt.Errorf("pkcs11: TrustPublicKey: C_FindObjectsInit: %w", err)
	}
	found, _, err := c.FindObjects(s, 1)
	_ = c.FindObjectsFinal(s)
	if err != nil {
		return fmt.Errorf("pkcs11: TrustPublicKey: C_FindObjects: %w", err)
	}
	if len(found) > 0 {
		return fmt.Errorf("%w: id %q", hsm.ErrKeyExists, id)
	}
	_, err = c.CreateObject(s, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_RSA),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, false),
		p11.NewAttribute(p11.CKA_ID, id),
		p11.NewAttribute(p11.CKA_LABEL, label),
		p11.NewAttribute(p11.CKA_MODULUS, pub.N.Bytes()),
		p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, big.NewInt(int64(pub.E)).Bytes()),
		p11.NewAttribute(p11.CKA_WRAP, true),
		p11.NewAttribute(p11.CKA_ENCRYPT, false),
		p11.NewAttribute(p11.CKA_VERIFY, false),
		p11.NewAttribute(p11.CKA_TRUSTED, true),
		p11.NewAttribute(p11.CKA_MODIFIABLE, false),
	})
	if err != nil {
		return fmt.Errorf("pkcs11: TrustPublicKey: C_CreateObject: %w", err)
	}
	return nil
}
