package pkcs11

import (
	"context"
	"sync"

	p11 "github.com/miekg/pkcs11"
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
	bySess  map[p11.SessionHandle]map[string]p11.ObjectHandle
	refused map[string]bool // keys the module would not copy: use the token object
}

func (c *sessionCopies) get(s p11.SessionHandle, id []byte) (p11.ObjectHandle, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.bySess[s][string(id)]
	return h, ok
}

func (c *sessionCopies) put(s p11.SessionHandle, id []byte, h p11.ObjectHandle) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bySess == nil {
		c.bySess = map[p11.SessionHandle]map[string]p11.ObjectHandle{}
	}
	if c.bySess[s] == nil {
		c.bySess[s] = map[string]p11.ObjectHandle{}
	}
	c.bySess[s][string(id)] = h
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
func (c *sessionCopies) takeAll() map[p11.SessionHandle]map[string]p11.ObjectHandle {
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
		if h, ok := m[string(id)]; ok {
			out[s] = h
			delete(m, string(id))
		}
	}
	delete(c.refused, string(id))
	return out
}

// keyFor returns a handle of the secret key id usable in session s: this
// session's copy, made on first use, or the token object if the module does
// not copy it.
func (b *Backend) keyFor(s p11.SessionHandle, id []byte) (p11.ObjectHandle, error) {
	if h, ok := b.copies.get(s, id); ok {
		return h, nil
	}
	th, err := b.lookup(s, id, p11.CKO_SECRET_KEY)
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
	b.copies.put(s, id, ch)
	return ch, nil
}

// withKeyCopy runs f with a session copy of the secret key id (see keyFor),
// retrying once with fresh handles if a handle went stale.
func (b *Backend) withKeyCopy(ctx context.Context, op string, id []byte, f func(s p11.SessionHandle, h p11.ObjectHandle) error) error {
	return b.do(ctx, op, func(s p11.SessionHandle) error {
		h, err := b.keyFor(s, id)
		if err != nil {
			return err
		}
		err = f(s, h)
		if isCode(err, p11.CKR_OBJECT_HANDLE_INVALID, p11.CKR_KEY_HANDLE_INVALID) {
			b.copies.takeID(id)
			b.cache.evict(id, p11.CKO_SECRET_KEY)
			if h, err = b.keyFor(s, id); err != nil {
				return err
			}
			err = f(s, h)
		}
		return err
	})
}
