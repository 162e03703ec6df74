package pkcs11

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"sync"

	p11 "github.com/miekg/pkcs11"

	"github.com/custos-kms/custos/hsm"
)

// maxIDLen bounds CKA_ID values.
const maxIDLen = 255

// checkID refuses empty and oversized ids.
func checkID(id []byte) error {
	if len(id) == 0 || len(id) > maxIDLen {
		return fmt.Errorf("%w: key id of %d bytes (want 1 to %d)", hsm.ErrInvalidInput, len(id), maxIDLen)
	}
	return nil
}

// cacheKey addresses a cached object handle: the id, the kind of object and
// the check value it was verified against (empty for kinds without one).
type cacheKey struct {
	id   string
	kind objKind
	kcv  string
}

// objectCache maps verified objects to their handles, because
// C_FindObjects slows down with the number of objects on the token and a
// check value costs an HSM operation. A handle is cached only after its
// object passed verify; a stale handle is evicted and the object found and
// verified again.
type objectCache struct {
	mu sync.RWMutex
	m  map[cacheKey]p11.ObjectHandle
}

func (c *objectCache) init() { c.m = map[cacheKey]p11.ObjectHandle{} }

func (c *objectCache) get(k cacheKey) (p11.ObjectHandle, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	h, ok := c.m[k]
	return h, ok
}

func (c *objectCache) put(k cacheKey, h p11.ObjectHandle) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[k] = h
}

func (c *objectCache) evict(k cacheKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, k)
}

// evictID drops every entry cached for id.
func (c *objectCache) evictID(id []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.m {
		if k.id == string(id) {
			delete(c.m, k)
		}
	}
}

func (c *objectCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.m)
}

// findObjects returns up to max handles of the objects matching tmpl.
func (b *Backend) findObjects(s p11.SessionHandle, tmpl []*p11.Attribute, max int) ([]p11.ObjectHandle, error) {
	if err := b.ctx.FindObjectsInit(s, tmpl); err != nil {
		return nil, err
	}
	var all []p11.ObjectHandle
	var err error
	for len(all) < max {
		var hs []p11.ObjectHandle
		hs, _, err = b.ctx.FindObjects(s, min(max-len(all), 64))
		if err != nil || len(hs) == 0 {
			break
		}
		all = append(all, hs...)
	}
	if ferr := b.ctx.FindObjectsFinal(s); err == nil {
		err = ferr
	}
	if err != nil {
		return nil, err
	}
	return all, nil
}

// lookup returns the handle of the one object of kind with id whose check
// value (for kinds that have one) is kcv, from the cache or from the token
// (verify). hsm.ErrKeyNotFound if no object of that class holds the id;
// hsm.ErrObjectMismatch if one does but it is not the recorded key.
func (b *Backend) lookup(s p11.SessionHandle, id []byte, kind objKind, kcv []byte) (p11.ObjectHandle, error) {
	k := cacheKey{id: string(id), kind: kind, kcv: string(kcv)}
	if h, ok := b.cache.get(k); ok {
		return h, nil
	}
	h, err := b.verify(s, id, kind, kcv)
	if err != nil {
		return 0, err
	}
	b.cache.put(k, h)
	return h, nil
}

// verify finds the object of kind with id on the token and proves it is the
// recorded key: exactly one object carries the id in that class, it has every
// attribute custos gives that kind (kind.template), and its check value,
// computed now in the HSM, equals kcv. A planted object — public, or made
// with a value its planter knows, or a second object under the same id — is
// never returned (invariant 9 of docs/architecture.md).
func (b *Backend) verify(s p11.SessionHandle, id []byte, kind objKind, kcv []byte) (p11.ObjectHandle, error) {
	if kind.hasCheckValue() && len(kcv) != hsm.CheckValueSize {
		return 0, fmt.Errorf("%w: key check value of %d bytes (want %d)", hsm.ErrInvalidInput, len(kcv), hsm.CheckValueSize)
	}
	// Every token object of the class under this id: more than the one
	// custos made means someone else made one (C_FindObjects with a partial
	// template would silently pick). Token objects only: the session copies
	// of a KEK (copies.go) share its id and class and are visible to every
	// session of this process; session objects of other processes are not.
	all, err := b.findObjects(s, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_ID, id),
		p11.NewAttribute(p11.CKA_CLASS, kind.class()),
		p11.NewAttribute(p11.CKA_TOKEN, true),
	}, 2)
	if err != nil {
		return 0, err
	}
	switch len(all) {
	case 0:
		return 0, fmt.Errorf("%w: id %q", hsm.ErrKeyNotFound, id)
	case 1:
	default:
		return 0, fmt.Errorf("%w: more than one %s object has id %q", hsm.ErrObjectMismatch, kind, id)
	}
	strict, err := b.findObjects(s, kind.template(id), 2)
	if err != nil {
		return 0, err
	}
	if len(strict) != 1 || strict[0] != all[0] {
		return 0, fmt.Errorf("%w: the %s object with id %q lacks the attributes custos sets", hsm.ErrObjectMismatch, kind, id)
	}
	if !kind.hasCheckValue() {
		return all[0], nil
	}
	got, err := b.checkValue(s, all[0], kind)
	if err != nil {
		if isSessionLoss(err) {
			return 0, err
		}
		return 0, fmt.Errorf("%w: key check value of %q: %v", hsm.ErrObjectMismatch, id, err)
	}
	if subtle.ConstantTimeCompare(got, kcv) != 1 {
		return 0, fmt.Errorf("%w: the key check value of %q is not the recorded one", hsm.ErrObjectMismatch, id)
	}
	return all[0], nil
}

// exists reports whether any object (any class) has that id.
func (b *Backend) exists(s p11.SessionHandle, id []byte) (bool, error) {
	hs, err := b.findObjects(s, []*p11.Attribute{p11.NewAttribute(p11.CKA_ID, id)}, 1)
	return len(hs) > 0, err
}

// withKey runs f on a session with the handle of the verified object (see
// lookup). A stale cached handle is evicted, and the object found and
// verified once more.
func (b *Backend) withKey(ctx context.Context, op string, id []byte, kind objKind, kcv []byte,
	f func(s p11.SessionHandle, h p11.ObjectHandle) error) error {
	return b.do(ctx, op, func(s p11.SessionHandle) error {
		if kind == kindWrap {
			// The wrapping key is used rarely (a new key version, a KEK's
			// first load on this node): verify it on every use, so no
			// cached handle is trusted on a module that reuses handles.
			b.cache.evict(cacheKey{id: string(id), kind: kind, kcv: string(kcv)})
		}
		h, err := b.lookup(s, id, kind, kcv)
		if err != nil {
			return err
		}
		err = f(s, h)
		// C_WrapKey and C_UnwrapKey name a stale wrapping key with their own
		// return values.
		if isCode(err, p11.CKR_OBJECT_HANDLE_INVALID, p11.CKR_KEY_HANDLE_INVALID,
			p11.CKR_WRAPPING_KEY_HANDLE_INVALID, p11.CKR_UNWRAPPING_KEY_HANDLE_INVALID) {
			b.cache.evict(cacheKey{id: string(id), kind: kind, kcv: string(kcv)})
			if h, err = b.lookup(s, id, kind, kcv); err != nil {
				return err
			}
			err = f(s, h)
		}
		return err
	})
}

// VerifyKey implements hsm.Backend: the object is found and verified on the
// token, never taken from the cache.
func (b *Backend) VerifyKey(ctx context.Context, key hsm.KeyRef, usage hsm.KeyUsage) error {
	if err := checkID(key.ID); err != nil {
		return err
	}
	kind, err := secretKind(usage)
	if err != nil {
		return err
	}
	err = b.do(ctx, "C_FindObjects", func(s p11.SessionHandle) error {
		b.cache.evict(cacheKey{id: string(key.ID), kind: kind, kcv: string(key.CheckValue)})
		_, err := b.lookup(s, key.ID, kind, key.CheckValue)
		if err != nil && !isSessionLoss(err) {
			// The token object is gone or is not the recorded key: no
			// session copy may keep the key usable.
			b.destroyCopies(s, key.ID)
		}
		return err
	})
	return wrap("VerifyKey", err)
}

// keyObject returns the handle and class of the secret key, or else the
// private key, with that id, whatever its attributes (KeyAttributes and
// HasKey report on what is there). hsm.ErrObjectMismatch if more than one
// object of the class has the id.
func (b *Backend) keyObject(s p11.SessionHandle, id []byte) (p11.ObjectHandle, uint, error) {
	for _, class := range []uint{p11.CKO_SECRET_KEY, p11.CKO_PRIVATE_KEY} {
		hs, err := b.findObjects(s, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_ID, id),
			p11.NewAttribute(p11.CKA_CLASS, class),
			p11.NewAttribute(p11.CKA_TOKEN, true),
		}, 2)
		switch {
		case err != nil:
			return 0, 0, err
		case len(hs) > 1:
			return 0, 0, fmt.Errorf("%w: more than one key has id %q", hsm.ErrObjectMismatch, id)
		case len(hs) == 1:
			return hs[0], class, nil
		}
	}
	return 0, 0, fmt.Errorf("%w: id %q", hsm.ErrKeyNotFound, id)
}

// KeyAttributes reads back the security attributes of the secret key, or
// else the private key, with that id.
func (b *Backend) KeyAttributes(ctx context.Context, id []byte) (hsm.Attributes, error) {
	if err := checkID(id); err != nil {
		return hsm.Attributes{}, err
	}
	var out hsm.Attributes
	err := b.do(ctx, "C_GetAttributeValue", func(s p11.SessionHandle) error {
		for attempt := 0; ; attempt++ {
			h, _, err := b.keyObject(s, id)
			if err != nil {
				return err
			}
			attrs, err := b.ctx.GetAttributeValue(s, h, []*p11.Attribute{
				p11.NewAttribute(p11.CKA_TOKEN, nil),
				p11.NewAttribute(p11.CKA_SENSITIVE, nil),
				p11.NewAttribute(p11.CKA_EXTRACTABLE, nil),
				p11.NewAttribute(p11.CKA_ALWAYS_SENSITIVE, nil),
				p11.NewAttribute(p11.CKA_NEVER_EXTRACTABLE, nil),
				p11.NewAttribute(p11.CKA_WRAP_WITH_TRUSTED, nil),
				p11.NewAttribute(p11.CKA_SIGN, nil),
				p11.NewAttribute(p11.CKA_LABEL, nil),
				p11.NewAttribute(p11.CKA_LOCAL, nil),
			})
			if attempt == 0 && isCode(err, p11.CKR_OBJECT_HANDLE_INVALID) {
				continue
			}
			if err != nil {
				return err
			}
			out = hsm.Attributes{}
			for _, a := range attrs {
				v := len(a.Value) > 0 && a.Value[0] != 0
				switch a.Type {
				case p11.CKA_TOKEN:
					out.Token = v
				case p11.CKA_SENSITIVE:
					out.Sensitive = v
				case p11.CKA_EXTRACTABLE:
					out.Extractable = v
				case p11.CKA_ALWAYS_SENSITIVE:
					out.AlwaysSensitive = v
				case p11.CKA_LOCAL:
					out.Local = v
				case p11.CKA_NEVER_EXTRACTABLE:
					out.NeverExtractable = v
				case p11.CKA_WRAP_WITH_TRUSTED:
					out.WrapWithTrusted = v
				case p11.CKA_SIGN:
					out.Sign = v
				case p11.CKA_LABEL:
					out.Label = string(a.Value)
				}
			}
			return nil
		}
	})
	return out, wrap("KeyAttributes", err)
}

// HasKey reports whether a secret or private key with that id exists.
func (b *Backend) HasKey(ctx context.Context, id []byte) (bool, error) {
	if err := checkID(id); err != nil {
		return false, err
	}
	var found bool
	err := b.do(ctx, "C_FindObjects", func(s p11.SessionHandle) error {
		_, _, err := b.keyObject(s, id)
		found = err == nil
		if errors.Is(err, hsm.ErrKeyNotFound) {
			err = nil
		}
		return err
	})
	return found, wrap("HasKey", err)
}

// DestroyKey destroys every object (any class) with that id. A missing key
// is not an error.
func (b *Backend) DestroyKey(ctx context.Context, id []byte) error {
	if err := checkID(id); err != nil {
		return err
	}
	b.createMu.Lock()
	defer b.createMu.Unlock()
	err := b.do(ctx, "C_DestroyObject", func(s p11.SessionHandle) error {
		b.cache.evictID(id)
		// Session copies first: a destroyed key must not stay usable.
		for _, h := range b.copies.takeID(id) {
			if err := b.ctx.DestroyObject(s, h); err != nil && !isCode(err, p11.CKR_OBJECT_HANDLE_INVALID) {
				return err
			}
		}
		hs, err := b.findObjects(s, []*p11.Attribute{p11.NewAttribute(p11.CKA_ID, id)}, 1<<16)
		if err != nil {
			return err
		}
		for _, h := range hs {
			if err := b.ctx.DestroyObject(s, h); err != nil && !isCode(err, p11.CKR_OBJECT_HANDLE_INVALID) {
				return err
			}
		}
		return nil
	})
	b.cache.evictID(id)
	return wrap("DestroyKey", err)
}

// createWithRetry runs a C_GenerateKey / C_GenerateKeyPair / C_UnwrapKey
// call that creates objects with that id (checked free beforehand, under
// createMu). Before calls on SoftHSM tokens were serialised (see tokenLock),
// concurrent creations there failed now and then with
// CKR_TEMPLATE_INCONSISTENT, the new object read back without its
// attributes. A correct template does not fail twice in a row, so, as a
// safety net, the call is retried after removing whatever half-created object
// carries the id.
func (b *Backend) createWithRetry(s p11.SessionHandle, id []byte, create func() error) error {
	err := create()
	for i := 0; i < 2 && isCode(err, p11.CKR_TEMPLATE_INCONSISTENT); i++ {
		if len(id) > 0 {
			hs, ferr := b.findObjects(s, []*p11.Attribute{p11.NewAttribute(p11.CKA_ID, id)}, 16)
			if ferr != nil {
				return ferr
			}
			for _, h := range hs {
				_ = b.ctx.DestroyObject(s, h)
			}
		}
		err = create()
	}
	return err
}
