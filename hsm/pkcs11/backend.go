// Package pkcs11 implements hsm.Backend over a PKCS#11 module with
// github.com/miekg/pkcs11: SoftHSM2 in development and tests, any PKCS#11 HSM
// in production.
//
// A Backend is bound to one token (found by label), logs in once as CKU_USER
// and keeps a pool of read/write sessions, safe for concurrent use. The module
// itself is loaded and initialised once per process and per path, and shared
// by every Backend on that path (several tokens, or a test cluster in one
// process); the last Backend to close finalizes it.
//
// A call that fails because its session, the login or the token went away is
// retried once on a fresh session; if that fails too the error wraps
// hsm.ErrUnavailable.
//
// miekg/pkcs11 calls C_Encrypt, C_Decrypt, C_Sign and C_WrapKey twice (a
// length query, then the call); with SoftHSM this costs a little CPU but is
// otherwise harmless, and miekg offers no way around it.
package pkcs11

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	p11 "github.com/miekg/pkcs11"

	"github.com/custos-kms/custos/hsm"
)

// Errors returned by Open, matched with errors.Is.
var (
	// ErrModule: the PKCS#11 module cannot be loaded or initialised. The
	// message names the path.
	ErrModule = errors.New("pkcs11: cannot load module")
	// ErrTokenNotFound: no initialised token has the configured label. The
	// message lists the labels present.
	ErrTokenNotFound = errors.New("pkcs11: token not found")
	// ErrPIN: the token refused the PIN (incorrect, wrong length, locked,
	// expired). The PIN itself is never part of a message.
	ErrPIN = errors.New("pkcs11: PIN refused")
)

// Config says which module and token a Backend uses.
type Config struct {
	// Module is the path of the PKCS#11 library, e.g.
	// /usr/lib/softhsm/libsofthsm2.so.
	Module string
	// TokenLabel is the label of the token to use.
	TokenLabel string
	// PIN is the user (CKU_USER) PIN.
	PIN string
	// Sessions is the size of the session pool: default 2*runtime.NumCPU(),
	// at least 2.
	Sessions int
}

// Backend is an hsm.Backend over one PKCS#11 token. It is safe for
// concurrent use.
type Backend struct {
	mod   *module
	ctx   *p11.Ctx
	label string
	pin   string

	slotMu sync.Mutex
	slot   uint

	// pool holds the session handles; 0 stands for a session still to be
	// opened (after one was lost).
	pool   chan p11.SessionHandle
	closed atomic.Bool
	done   chan struct{}

	// tokenMu, when not nil, serialises every module call on this token
	// (shared by all Backends on it); see serialize.
	tokenMu *sync.Mutex

	cache  objectCache
	copies sessionCopies
	// createMu serialises "check the id is free, then create" sequences.
	createMu sync.Mutex
	// recoverMu: one reinitialize at a time.
	recoverMu sync.Mutex
}

var _ hsm.Backend = (*Backend)(nil)

// Open loads the module (or shares it with other Backends in the process),
// finds the token labelled cfg.TokenLabel, logs in with cfg.PIN and opens the
// session pool. Errors wrap ErrModule, ErrTokenNotFound, ErrPIN or
// hsm.ErrUnavailable.
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	if cfg.TokenLabel == "" {
		return nil, fmt.Errorf("%w: empty token label", ErrTokenNotFound)
	}
	if cfg.PIN == "" {
		return nil, fmt.Errorf("%w: empty PIN for token %q", ErrPIN, cfg.TokenLabel)
	}
	n := cfg.Sessions
	if n <= 0 {
		n = 2 * runtime.NumCPU()
	}
	n = max(n, 2)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	mod, err := acquireModule(cfg.Module)
	if err != nil {
		return nil, err
	}
	b := &Backend{
		mod:   mod,
		ctx:   mod.ctx,
		label: cfg.TokenLabel,
		pin:   cfg.PIN,
		pool:  make(chan p11.SessionHandle, n),
		done:  make(chan struct{}),
	}
	b.cache.init()
	if b.slot, err = b.findSlot(); err != nil {
		mod.release()
		return nil, err
	}
	b.tokenMu = tokenLock(mod, b.slot)
	for range n {
		s, err := b.openSession()
		if err != nil {
			b.closeSessions(len(b.pool))
			mod.release()
			return nil, err
		}
		b.pool <- s
	}
	return b, nil
}

// findSlot returns the slot of the initialised token labelled b.label.
func (b *Backend) findSlot() (uint, error) { return findTokenSlot(b.ctx, b.mod.path, b.label) }

// findTokenSlot returns the slot of the initialised token labelled label in
// the module at path.
func findTokenSlot(c *p11.Ctx, path, label string) (uint, error) {
	slots, err := c.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("%w: C_GetSlotList: %v", hsm.ErrUnavailable, err)
	}
	var labels []string
	for _, slot := range slots {
		ti, err := c.GetTokenInfo(slot)
		if err != nil || ti.Flags&p11.CKF_TOKEN_INITIALIZED == 0 {
			continue
		}
		l := strings.TrimRight(ti.Label, " \x00")
		if l == label {
			return slot, nil
		}
		labels = append(labels, fmt.Sprintf("%q", l))
	}
	return 0, fmt.Errorf("%w: no token labelled %q in %s (tokens present: [%s])",
		ErrTokenNotFound, label, path, strings.Join(labels, ", "))
}

// Close closes every session (waiting for calls in flight to finish) and
// releases the module. It is idempotent; every other method returns
// hsm.ErrClosed afterwards.
func (b *Backend) Close() error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(b.done)
	b.closeSessions(cap(b.pool))
	b.cache.clear()
	b.mod.release()
	return nil
}

// closeSessions takes n sessions from the pool and closes them.
func (b *Backend) closeSessions(n int) {
	for range n {
		if s := <-b.pool; s != 0 {
			b.closeSession(s)
		}
	}
}

// Random returns n bytes from the token's random number generator
// (1 <= n <= 1 MiB).
func (b *Backend) Random(ctx context.Context, n int) ([]byte, error) {
	if n < 1 || n > 1<<20 {
		return nil, fmt.Errorf("%w: random length %d", hsm.ErrInvalidInput, n)
	}
	var out []byte
	err := b.do(ctx, "C_GenerateRandom", func(s p11.SessionHandle) error {
		var err error
		out, err = b.ctx.GenerateRandom(s, n)
		return err
	})
	if err != nil {
		return nil, wrap("Random", err)
	}
	if len(out) != n {
		return nil, fmt.Errorf("pkcs11: Random: module returned %d bytes, want %d", len(out), n)
	}
	return out, nil
}

// Health checks that a pooled session is still open and logged in and that
// the token itself still answers, and returns an error wrapping
// hsm.ErrUnavailable when it is not and cannot be replaced. When the token
// does not answer, Health re-initialises the module (reinitialize: only when
// this Backend is its only user in the process) so the token is served
// again as soon as it is back, without a restart.
//
// C_GetSessionInfo alone is not enough: SoftHSM answers it from memory even
// when the token's object store has gone (its directory removed), while every
// object lookup then finds nothing; C_GetTokenInfo reads the token and fails
// (CKR_GENERAL_ERROR) — measured in internal/security TestHSMFault.
func (b *Backend) Health(ctx context.Context) error { return b.health(ctx, true) }

// health is Health; mayRecover says whether a failure may re-initialise the
// module (once per call).
func (b *Backend) health(ctx context.Context, mayRecover bool) error {
	err := b.do(ctx, "C_GetSessionInfo", func(s p11.SessionHandle) error {
		info, err := b.ctx.GetSessionInfo(s)
		if err != nil {
			return err
		}
		if info.State != p11.CKS_RW_USER_FUNCTIONS {
			return p11.Error(p11.CKR_USER_NOT_LOGGED_IN)
		}
		ti, err := b.ctx.GetTokenInfo(info.SlotID)
		if err != nil {
			return fmt.Errorf("%w: %w: C_GetTokenInfo: %v", hsm.ErrUnavailable, errTokenGone, err)
		}
		if ti.Flags&p11.CKF_TOKEN_INITIALIZED == 0 || strings.TrimRight(ti.Label, " \x00") != b.label {
			return fmt.Errorf("%w: %w: C_GetTokenInfo: slot %d no longer holds initialised token %q", hsm.ErrUnavailable, errTokenGone, info.SlotID, b.label)
		}
		return nil
	})
	if errors.Is(err, errTokenGone) {
		// Session copies of keys live in memory and would keep working
		// without the token: stop using them until the token answers.
		b.dropCopies()
	}
	if mayRecover && errors.Is(err, hsm.ErrUnavailable) && !b.closed.Load() && ctx.Err() == nil {
		// Sessions could not be replaced: re-initialise the module (the
		// only way some modules serve a lost token again), then check once
		// more. While the token stays away, every health check tries again.
		if rerr := b.reinitialize(ctx); rerr != nil {
			return fmt.Errorf("%w (recovery: %v)", err, rerr)
		}
		return b.health(ctx, false)
	}
	if err != nil && !errors.Is(err, hsm.ErrUnavailable) && !errors.Is(err, hsm.ErrClosed) &&
		!errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: Health: %v", hsm.ErrUnavailable, err)
	}
	return err
}

// errTokenGone marks a Health failure of the token itself (not of a
// session).
var errTokenGone = errors.New("token not answering")

// wrap prefixes an error with the operation name, keeping it matchable.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("pkcs11: %s: %w", op, err)
}
