package pkcs11

import (
	"context"
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

// cacheKey addresses a cached object handle.
type cacheKey struct {
	id    string
	class uint
}

// objectCache maps (CKA_ID, CKA_CLASS) to object handles, because
// C_FindObjects slows down with the number of objects on the token.
type objectCache struct {
	mu sync.RWMutex
	m  map[cacheKey]p11.ObjectHandle
}

func (c *objectCache) init() { c.m = map[cacheKey]p11.ObjectHandle{} }

func (c *objectCache) get(id []byte, class uint) (p11.ObjectHandle, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	h, ok := c.m[cacheKey{string(id), class}]
	return h, ok
}

func (c *objectCache) put(id []byte, class uint, h p11.ObjectHandle) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[cacheKey{string(id), class}] = h
}

func (c *objectCache) evict(id []byte, class uint) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, cacheKey{string(id), class})
}

// evictID drops every class cached for id.
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

// lookup returns the handle of the object with that id and class, from the
// cache or from the token. hsm.ErrKeyNotFound if there is none.
func (b *Backend) lookup(s p11.SessionHandle, id []byte, class uint) (p11.ObjectHandle, error) {
	if h, ok := b.cache.get(id, class); ok {
		return h, nil
	}
	hs, err := b.findObjects(s, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_ID, id),
		p11.NewAttribute(p11.CKA_CLASS, class),
		p11.NewAttribute(p11.CKA_TOKEN, true), // never a session copy
	}, 1)
	if err != nil {
		return 0, err
	}
	if len(hs) == 0 {
		return 0, fmt.Errorf("%w: id %x", hsm.ErrKeyNotFound, id)
	}
	b.cache.put(id, class, hs[0])
	return hs[0], nil
}

// exists reports whether any object (any class) has that id.
func (b *Backend) exists(s p11.SessionHandle, id []byte) (bool, error) {
	hs, err := b.findObjects(s, []*p11.Attribute{p11.NewAttribute(p11.CKA_ID, id)}, 1)
	return len(hs) > 0, err
}

// withKey runs f on a session with the handle of the object (id, class). A
// stale cached handle is evicted and looked up once more.
func (b *Backend) withKey(ctx context.Context, op string, id []byte, class uint,
	f func(s p11.SessionHandle, h p11.ObjectHandle) error) error {
	return b.do(ctx, op, func(s p11.SessionHandle) error {
		h, err := b.lookup(s, id, class)
		if err != nil {
			return err
		}
		err = f(s, h)
		if isCode(err, p11.CKR_OBJECT_HANDLE_INVALID, p11.CKR_KEY_HANDLE_INVALID) {
			b.cache.evict(id, class)
			if h, err = b.lookup(s, id, class); err != nil {
				return err
			}
			err = f(s, h)
		}
		return err
	})
}

// keyObject returns the handle and class of the secret key, or else the
// private key, with that id.
func (b *Backend) keyObject(s p11.SessionHandle, id []byte) (p11.ObjectHandle, uint, error) {
	h, err := b.lookup(s, id, p11.CKO_SECRET_KEY)
	if err == nil {
		return h, p11.CKO_SECRET_KEY, nil
	}
	if !errors.Is(err, hsm.ErrKeyNotFound) {
		return 0, 0, err
	}
	h, err = b.lookup(s, id, p11.CKO_PRIVATE_KEY)
	return h, p11.CKO_PRIVATE_KEY, err
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
			h, class, err := b.keyObject(s, id)
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
				p11.NewAttribute(p11.CKA_LABEL, nil),
			})
			if attempt == 0 && isCode(err, p11.CKR_OBJECT_HANDLE_INVALID) {
				b.cache.evict(id, class)
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
				case p11.CKA_NEVER_EXTRACTABLE:
					out.NeverExtractable = v
				case p11.CKA_WRAP_WITH_TRUSTED:
					out.WrapWithTrusted = v
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
