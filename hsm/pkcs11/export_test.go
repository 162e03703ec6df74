package pkcs11

import (
	"context"
	"fmt"

	p11 "github.com/miekg/pkcs11"

	"github.com/custos-kms/custos/hsm"
)

// Test-only hooks, exported to the external test package.
var (
	ImportAESKeyForTest     = (*Backend).importAESKeyForTest
	CloseAllSessionsForTest = (*Backend).closeAllSessionsForTest
	WrapTokenKeyForTest     = (*Backend).wrapTokenKeyForTest
	RawDecryptGCMForTest    = (*Backend).rawDecryptGCMForTest
	RawUnwrapForTest        = (*Backend).rawUnwrapForTest
	ModuleRefsForTest       = moduleRefs
	SerializedForTest       = func(b *Backend) bool { return b.tokenMu != nil }
)

// importAESKeyForTest creates a token AES key with a known value and every
// attribute of a KEK, and returns its reference (the check value computed
// in the HSM). For known-answer tests, and to play a holder of the user PIN
// planting a key whose value they know: real keys are generated or
// unwrapped in the HSM.
func (b *Backend) importAESKeyForTest(ctx context.Context, id, value []byte) (hsm.KeyRef, error) {
	var kcv []byte
	err := b.do(ctx, "C_CreateObject", func(s p11.SessionHandle) error {
		h, err := b.ctx.CreateObject(s, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
			p11.NewAttribute(p11.CKA_TOKEN, true),
			p11.NewAttribute(p11.CKA_PRIVATE, true),
			p11.NewAttribute(p11.CKA_SENSITIVE, true),
			p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
			p11.NewAttribute(p11.CKA_ENCRYPT, true),
			p11.NewAttribute(p11.CKA_DECRYPT, true),
			p11.NewAttribute(p11.CKA_WRAP, false),
			p11.NewAttribute(p11.CKA_UNWRAP, false),
			p11.NewAttribute(p11.CKA_ID, id),
			p11.NewAttribute(p11.CKA_VALUE, value),
		})
		if err != nil {
			return err
		}
		kcv, err = b.checkValue(s, h, kindKEK)
		return err
	})
	return hsm.KeyRef{ID: id, CheckValue: kcv}, err
}

// rawFind returns the one token object of that class with that id,
// whatever its attributes (test hooks play an attacker, who does not verify
// objects). Session copies of the key share its id and class, hence
// CKA_TOKEN.
func (b *Backend) rawFind(s p11.SessionHandle, id []byte, class uint) (p11.ObjectHandle, error) {
	hs, err := b.findObjects(s, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_ID, id),
		p11.NewAttribute(p11.CKA_CLASS, class),
		p11.NewAttribute(p11.CKA_TOKEN, true),
	}, 2)
	switch {
	case err != nil:
		return 0, err
	case len(hs) == 0:
		return 0, fmt.Errorf("%w: id %q", hsm.ErrKeyNotFound, id)
	case len(hs) > 1:
		return 0, fmt.Errorf("%w: %d objects of class %d with id %q", hsm.ErrObjectMismatch, len(hs), class, id)
	}
	return hs[0], nil
}

// closeAllSessionsForTest closes every session of this application on the
// token behind the backend's back (C_CloseAllSessions), which also logs the
// token out.
func (b *Backend) closeAllSessionsForTest() error {
	b.slotMu.Lock()
	defer b.slotMu.Unlock()
	return b.ctx.CloseAllSessions(b.slot)
}

// wrapTokenKeyForTest tries C_WrapKey (KWP) of the token key keyID under
// wrapID, to probe CKA_WRAP_WITH_TRUSTED enforcement.
func (b *Backend) wrapTokenKeyForTest(ctx context.Context, wrapID, keyID []byte) ([]byte, error) {
	var out []byte
	err := b.do(ctx, "C_WrapKey", func(s p11.SessionHandle) error {
		wh, err := b.rawFind(s, wrapID, p11.CKO_SECRET_KEY)
		if err != nil {
			return err
		}
		kh, err := b.rawFind(s, keyID, p11.CKO_SECRET_KEY)
		if err != nil {
			return err
		}
		out, err = b.ctx.WrapKey(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_WRAP_PAD, nil)}, wh, kh)
		return err
	})
	return out, err
}

// rawDecryptGCMForTest decrypts with any IV and tag size and returns the raw
// module error, to document SoftHSM's behaviour.
func (b *Backend) rawDecryptGCMForTest(ctx context.Context, id, iv, ct, aad []byte, tagBits int) ([]byte, error) {
	params := p11.NewGCMParams(iv, aad, tagBits)
	defer params.Free()
	var out []byte
	err := b.do(ctx, "C_Decrypt", func(s p11.SessionHandle) error {
		h, err := b.rawFind(s, id, p11.CKO_SECRET_KEY)
		if err != nil {
			return err
		}
		if err := b.ctx.DecryptInit(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}, h); err != nil {
			return err
		}
		out, err = b.ctx.Decrypt(s, ct)
		return err
	})
	return out, err
}

// rawUnwrapForTest unwraps into a session object and returns the raw module
// error.
func (b *Backend) rawUnwrapForTest(ctx context.Context, wrapID, wrapped []byte) error {
	return b.do(ctx, "C_UnwrapKey", func(s p11.SessionHandle) error {
		wh, err := b.rawFind(s, wrapID, p11.CKO_SECRET_KEY)
		if err != nil {
			return err
		}
		h, err := b.ctx.UnwrapKey(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_WRAP_PAD, nil)}, wh, wrapped, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
			p11.NewAttribute(p11.CKA_TOKEN, false),
		})
		if err == nil {
			_ = b.ctx.DestroyObject(s, h)
		}
		return err
	})
}

// moduleRefs returns the reference count of the module at path (0 if not
// loaded).
func moduleRefs(path string) int {
	modulesMu.Lock()
	defer modulesMu.Unlock()
	if m, ok := modules[path]; ok {
		return m.refs
	}
	return 0
}

// Attacks a holder of the user PIN could try with raw PKCS#11 calls.
var (
	UnwrapReadableForTest = (*Backend).unwrapReadableForTest
	SetAttrForTest        = (*Backend).setAttrForTest
	CopyWithForTest       = (*Backend).copyWithForTest
)

// unwrapReadableForTest unwraps a blob under wrapID as a session key that
// is not sensitive and is extractable, then reads its value.
func (b *Backend) unwrapReadableForTest(ctx context.Context, wrapID, blob []byte) ([]byte, error) {
	var value []byte
	err := b.do(ctx, "C_UnwrapKey", func(s p11.SessionHandle) error {
		wh, err := b.rawFind(s, wrapID, p11.CKO_SECRET_KEY)
		if err != nil {
			return err
		}
		h, err := b.ctx.UnwrapKey(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_WRAP_PAD, nil)}, wh, blob, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
			p11.NewAttribute(p11.CKA_TOKEN, false),
			p11.NewAttribute(p11.CKA_SENSITIVE, false),
			p11.NewAttribute(p11.CKA_EXTRACTABLE, true),
		})
		if err != nil {
			return err
		}
		defer func() { _ = b.ctx.DestroyObject(s, h) }()
		a, err := b.ctx.GetAttributeValue(s, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_VALUE, nil)})
		if err == nil {
			value = a[0].Value
		}
		return err
	})
	return value, err
}

// setAttrForTest sets one boolean attribute on the secret key id.
func (b *Backend) setAttrForTest(ctx context.Context, id []byte, attr uint, v bool) error {
	return b.do(ctx, "C_SetAttributeValue", func(s p11.SessionHandle) error {
		h, err := b.rawFind(s, id, p11.CKO_SECRET_KEY)
		if err != nil {
			return err
		}
		return b.ctx.SetAttributeValue(s, h, []*p11.Attribute{p11.NewAttribute(attr, v)})
	})
}

// copyWithForTest copies the secret key id as a session object with one
// boolean attribute changed, then destroys the copy.
func (b *Backend) copyWithForTest(ctx context.Context, id []byte, attr uint, v bool) error {
	return b.do(ctx, "C_CopyObject", func(s p11.SessionHandle) error {
		h, err := b.rawFind(s, id, p11.CKO_SECRET_KEY)
		if err != nil {
			return err
		}
		c, err := b.ctx.CopyObject(s, h, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_TOKEN, false), p11.NewAttribute(attr, v)})
		if err == nil {
			_ = b.ctx.DestroyObject(s, c)
		}
		return err
	})
}

// CopiesForTest reports how many session copies of id exist and whether
// the module refused to copy it.
func CopiesForTest(b *Backend, id []byte) (n int, refused bool) {
	b.copies.mu.Lock()
	defer b.copies.mu.Unlock()
	for _, m := range b.copies.bySess {
		if _, ok := m[string(id)]; ok {
			n++
		}
	}
	return n, b.copies.refused[string(id)]
}

// Planting: what someone who can write to the token could do behind the
// backend's back (invariant 9 of docs/architecture.md).
var (
	CreateObjectForTest        = (*Backend).createObjectForTest
	DestroyTokenObjectsForTest = (*Backend).destroyTokenObjectsForTest
	RawCheckValueForTest       = (*Backend).rawCheckValueForTest
)

// createObjectForTest runs C_CreateObject with that template on a pooled
// (so logged-in: the holder of the user PIN) session.
func (b *Backend) createObjectForTest(ctx context.Context, tmpl []*p11.Attribute) (p11.ObjectHandle, error) {
	var h p11.ObjectHandle
	err := b.do(ctx, "C_CreateObject", func(s p11.SessionHandle) error {
		var err error
		h, err = b.ctx.CreateObject(s, tmpl)
		return err
	})
	return h, err
}

// destroyTokenObjectsForTest destroys every token object of that class with
// that id with raw C_DestroyObject calls, leaving the backend's handle cache
// and session copies alone, and returns the handles it destroyed.
func (b *Backend) destroyTokenObjectsForTest(ctx context.Context, id []byte, class uint) ([]p11.ObjectHandle, error) {
	var hs []p11.ObjectHandle
	err := b.do(ctx, "C_DestroyObject", func(s p11.SessionHandle) error {
		var err error
		hs, err = b.findObjects(s, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_ID, id),
			p11.NewAttribute(p11.CKA_CLASS, class),
			p11.NewAttribute(p11.CKA_TOKEN, true),
		}, 16)
		if err != nil {
			return err
		}
		for _, h := range hs {
			if err := b.ctx.DestroyObject(s, h); err != nil {
				return err
			}
		}
		return nil
	})
	return hs, err
}

// rawCheckValueForTest computes the key check value of the one token secret
// key with that id, as a key of that usage, whatever its attributes.
func (b *Backend) rawCheckValueForTest(ctx context.Context, id []byte, usage hsm.KeyUsage) ([]byte, error) {
	kind, err := secretKind(usage)
	if err != nil {
		return nil, err
	}
	var kcv []byte
	err = b.do(ctx, "C_Encrypt", func(s p11.SessionHandle) error {
		hs, err := b.findObjects(s, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_ID, id),
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
			p11.NewAttribute(p11.CKA_TOKEN, true),
		}, 2)
		if err != nil {
			return err
		}
		if len(hs) != 1 {
			return fmt.Errorf("%d token secret keys with id %q", len(hs), id)
		}
		kcv, err = b.checkValue(s, hs[0], kind)
		return err
	})
	return kcv, err
}

// CachedHandlesForTest returns the object handles cached for id, any kind.
func CachedHandlesForTest(b *Backend, id []byte) []p11.ObjectHandle {
	b.cache.mu.RLock()
	defer b.cache.mu.RUnlock()
	var out []p11.ObjectHandle
	for k, h := range b.cache.m {
		if k.id == string(id) {
			out = append(out, h)
		}
	}
	return out
}

// SlotForTest returns the slot of the backend's token.
func SlotForTest(b *Backend) uint {
	b.slotMu.Lock()
	defer b.slotMu.Unlock()
	return b.slot
}

// RewrapUnwrapForTest unwraps blob under this process's rewrap key from
// with the template RewrapKey uses, changed by edit, and returns the raw
// module error (what it unwrapped is destroyed).
func RewrapUnwrapForTest(b *Backend, ctx context.Context, from, blob []byte, edit func([]*p11.Attribute) []*p11.Attribute) error {
	return b.do(ctx, "C_UnwrapKey", func(s p11.SessionHandle) error {
		rks, err := b.findObjects(s, rewrapKeyTemplate(from), 2)
		if err != nil || len(rks) != 1 {
			return fmt.Errorf("rewrap key %q: %d found, %v", from, len(rks), err)
		}
		h, err := b.ctx.UnwrapKey(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_WRAP_PAD, nil)}, rks[0], blob, edit(inFlightTemplate()))
		if err == nil {
			_ = b.ctx.DestroyObject(s, h)
		}
		return err
	})
}
