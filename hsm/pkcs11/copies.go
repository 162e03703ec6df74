package pkcs11

import (
	"context"
	"crypto/subtle"
	"fmt"
	"sync"

	p11 "github.com/miekg/pkcs11"

	"github.com/custos-kms/custos/hsm"
)

// Session copies. AES-GCM with a token object costs SoftHSM a file lock and
// stat on every call; with a session-object copy of the key (C_CopyObject,
// CKA_TOKEN=false) the same call is about twice as fast (FIELD-NOTES,
// BenchmarkDecryptGCM32). A copy inherits the key's attributes, so it is as
// sensitive and non-extractable as the original; it lives only as long as
// the session that made it. Each pooled session keeps its own copies.

// sessionCopies maps a session to its copies of keys (by CKA_ID).
type sessionCopies struct {
	mu      sync.Mutex
	bySess  map[p11.SessionHandle]map[string]copyEntry
	refused map[string]bool // keys the module would not copy: use the token object
}

// copyEntry is a session copy and the check value its token object was
// verified against.
type copyEntry struct {
	h   p11.ObjectHandle
	kcv string
}

func (c *sessionCopies) get(s p11.SessionHandle, id, kcv []byte) (p11.ObjectHandle, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.bySess[s][string(id)]
	if !ok || e.kcv != string(kcv) {
		return 0, false
	}
	return e.h, true
}

func (c *sessionCopies) put(s p11.SessionHandle, id, kcv []byte, h p11.ObjectHandle) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bySess == nil {
		c.bySess = map[p11.SessionHandle]map[string]copyEntry{}
	}
	if c.bySess[s] == nil {
		c.bySess[s] = map[string]copyEntry{}
	}
	c.bySess[s][string(id)] = copyEntry{h: h, kcv: string(kcv)}
}

func (c *sessionCopies) isRefused(id []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refused[string(id)]
}

func (c *sessionCopies) refuse(id []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refused == nil {
		c.refused = map[string]bool{}
	}
	c.refused[string(id)] = true
}

// dropSession forgets a session's copies (the module destroyed them with it).
func (c *sessionCopies) dropSession(s p11.SessionHandle) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.bySess, s)
}

// takeAll removes and returns every session's copies.
func (c *sessionCopies) takeAll() map[p11.SessionHandle]map[string]copyEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.bySess
	c.bySess = nil
	return out
}

// dropCopies forgets every session copy and the object handle cache, so
// that the next use of a key goes to the token object again. The copies are
// not destroyed here (their sessions may be in use on other goroutines);
// they die with their sessions.
func (b *Backend) dropCopies() {
	b.cache.clear()
	b.copies.takeAll()
}

// takeID removes and returns every session's copy of a key.
func (c *sessionCopies) takeID(id []byte) map[p11.SessionHandle]p11.ObjectHandle {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[p11.SessionHandle]p11.ObjectHandle{}
	for s, m := range c.bySess {
		if e, ok := m[string(id)]; ok {
			out[s] = e.h
			delete(m, string(id))
		}
	}
	delete(c.refused, string(id))
	return out
}

// keyFor returns a handle of the KEK key usable in session s: this
// session's copy, made on first use from the verified token object, or the
// token object if the module does not copy it.
func (b *Backend) keyFor(s p11.SessionHandle, key hsm.KeyRef) (p11.ObjectHandle, error) {
	id := key.ID
	if h, ok := b.copies.get(s, id, key.CheckValue); ok {
		return h, nil
	}
	th, err := b.lookup(s, id, kindKEK, key.CheckValue)
	if err != nil || b.copies.isRefused(id) {
		return th, err
	}
	ch, err := b.ctx.CopyObject(s, th, []*p11.Attribute{p11.NewAttribute(p11.CKA_TOKEN, false)})
	if err != nil {
		if isSessionLoss(err) {
			return 0, err
		}
		b.copies.refuse(id)
		return th, nil
	}
	// The copy's check value too: on a module that reuses handle numbers a
	// cached handle could name another object by now. Once per session and
	// key.
	kcv, err := b.checkValue(s, ch, kindKEK)
	if err != nil || subtle.ConstantTimeCompare(kcv, key.CheckValue) != 1 {
		_ = b.ctx.DestroyObject(s, ch)
		b.cache.evict(cacheKey{id: string(id), kind: kindKEK, kcv: string(key.CheckValue)})
		if err != nil && isSessionLoss(err) {
			return 0, err
		}
		return 0, fmt.Errorf("%w: the copy of %q does not have the recorded key check value", hsm.ErrObjectMismatch, id)
	}
	b.copies.put(s, id, key.CheckValue, ch)
	return ch, nil
}

// destroyCopies destroys every session's copy of the key id: the token
// object went away or failed verification, and a copy must not keep the
// key usable (or in memory) after that. Session objects are visible to
// every session of the process, so any session can destroy them.
func (b *Backend) destroyCopies(s p11.SessionHandle, id []byte) {
	for _, h := range b.copies.takeID(id) {
		_ = b.ctx.DestroyObject(s, h)
	}
}

// withKeyCopy runs f with a session copy of the KEK key (see keyFor),
// retrying once with fresh handles (found and verified again) if a handle
// went stale.
func (b *Backend) withKeyCopy(ctx context.Context, op string, key hsm.KeyRef, f func(s p11.SessionHandle, h p11.ObjectHandle) error) error {
	id := key.ID
	return b.do(ctx, op, func(s p11.SessionHandle) error {
		h, err := b.keyFor(s, key)
		if err != nil {
			return err
		}
		err = f(s, h)
		if isCode(err, p11.CKR_OBJECT_HANDLE_INVALID, p11.CKR_KEY_HANDLE_INVALID) {
			b.destroyCopies(s, id)
			b.cache.evict(cacheKey{id: string(id), kind: kindKEK, kcv: string(key.CheckValue)})
			if h, err = b.keyFor(s, key); err != nil {
				return err
			}
			err = f(s, h)
		}
		return err
	})
}
