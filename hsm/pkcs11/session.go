package pkcs11

import (
	"context"
	"errors"
	"fmt"

	p11 "github.com/miekg/pkcs11"

	"github.com/custos-kms/custos/hsm"
)

// lossCodes are the return values after which a session cannot be trusted
// any more: it is discarded, the object handle cache is dropped, and the
// call is retried once on a fresh, logged-in session.
var lossCodes = map[p11.Error]bool{
	p11.CKR_SESSION_HANDLE_INVALID:   true,
	p11.CKR_SESSION_CLOSED:           true,
	p11.CKR_DEVICE_ERROR:             true,
	p11.CKR_DEVICE_REMOVED:           true,
	p11.CKR_DEVICE_MEMORY:            true,
	p11.CKR_TOKEN_NOT_PRESENT:        true,
	p11.CKR_TOKEN_NOT_RECOGNIZED:     true,
	p11.CKR_USER_NOT_LOGGED_IN:       true,
	p11.CKR_SLOT_ID_INVALID:          true,
	p11.CKR_CRYPTOKI_NOT_INITIALIZED: true,
	// A session left with an operation in progress is useless too.
	p11.CKR_OPERATION_ACTIVE: true,
}

// pinCodes are the C_Login return values that mean the PIN was refused.
var pinCodes = map[p11.Error]bool{
	p11.CKR_PIN_INCORRECT:            true,
	p11.CKR_PIN_INVALID:              true,
	p11.CKR_PIN_LEN_RANGE:            true,
	p11.CKR_PIN_EXPIRED:              true,
	p11.CKR_PIN_LOCKED:               true,
	p11.CKR_USER_PIN_NOT_INITIALIZED: true,
}

// code returns the PKCS#11 return value inside err, if any.
func code(err error) (p11.Error, bool) {
	var e p11.Error
	if errors.As(err, &e) {
		return e, true
	}
	return 0, false
}

// isCode reports whether err carries one of the given return values.
func isCode(err error, codes ...uint) bool {
	c, ok := code(err)
	if !ok {
		return false
	}
	for _, want := range codes {
		if c == p11.Error(want) {
			return true
		}
	}
	return false
}

// isSessionLoss reports whether err means the session (or login, or token)
// was lost.
func isSessionLoss(err error) bool {
	c, ok := code(err)
	return ok && lossCodes[c]
}

// acquire takes a session from the pool, opening one if the pool slot is
// empty. It gives up when ctx ends or the backend is closed.
func (b *Backend) acquire(ctx context.Context) (p11.SessionHandle, error) {
	if b.closed.Load() {
		return 0, hsm.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("waiting for a session: %w", err)
	}
	var s p11.SessionHandle
	select {
	case <-ctx.Done():
		return 0, fmt.Errorf("waiting for a session: %w", ctx.Err())
	case <-b.done:
		return 0, hsm.ErrClosed
	case s = <-b.pool:
	}
	if b.closed.Load() {
		b.pool <- s
		return 0, hsm.ErrClosed
	}
	if s != 0 {
		return s, nil
	}
	s, err := b.openSession()
	if err != nil {
		b.pool <- 0
		return 0, err
	}
	return s, nil
}

// release puts a session (or 0, for "open a new one") back into the pool.
func (b *Backend) release(s p11.SessionHandle) { b.pool <- s }

// discard closes a session that failed and drops the object handle cache,
// since handles may have changed (e.g. the token was re-inserted).
func (b *Backend) discard(s p11.SessionHandle) {
	if s != 0 {
		b.closeSession(s)
	}
	b.cache.clear()
	b.copies.dropSession(s) // the module destroyed them with the session
}

// openSession opens a R/W session on the token and makes sure the token is
// logged in as CKU_USER. If the slot went away it looks for the token again
// by label.
func (b *Backend) openSession() (p11.SessionHandle, error) {
	if b.tokenMu != nil {
		b.tokenMu.Lock()
		defer b.tokenMu.Unlock()
	}
	b.slotMu.Lock()
	slot := b.slot
	b.slotMu.Unlock()
	s, err := b.ctx.OpenSession(slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil && isSessionLoss(err) && !isCode(err, p11.CKR_CRYPTOKI_NOT_INITIALIZED) {
		b.slotMu.Lock()
		newSlot, ferr := b.findSlot()
		if ferr == nil {
			b.slot = newSlot
		}
		b.slotMu.Unlock()
		if ferr == nil {
			s, err = b.ctx.OpenSession(newSlot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
		}
	}
	if err != nil {
		return 0, fmt.Errorf("%w: C_OpenSession on token %q: %v", hsm.ErrUnavailable, b.label, err)
	}
	info, err := b.ctx.GetSessionInfo(s)
	if err != nil {
		_ = b.ctx.CloseSession(s)
		return 0, fmt.Errorf("%w: C_GetSessionInfo on token %q: %v", hsm.ErrUnavailable, b.label, err)
	}
	if info.State == p11.CKS_RW_USER_FUNCTIONS {
		return s, nil
	}
	err = b.ctx.Login(s, p11.CKU_USER, b.pin)
	if err == nil || isCode(err, p11.CKR_USER_ALREADY_LOGGED_IN) {
		return s, nil
	}
	_ = b.ctx.CloseSession(s)
	if c, ok := code(err); ok && pinCodes[c] {
		// Never include the PIN.
		return 0, fmt.Errorf("%w: C_Login on token %q: %v", ErrPIN, b.label, c)
	}
	return 0, fmt.Errorf("%w: C_Login on token %q: %v", hsm.ErrUnavailable, b.label, err)
}

// do runs f on a pooled session. If f fails with a session-loss error, the
// session is replaced and f is retried once on the fresh one; a second loss
// becomes hsm.ErrUnavailable. f must be safe to run twice.
func (b *Backend) do(ctx context.Context, op string, f func(s p11.SessionHandle) error) error {
	s, err := b.acquire(ctx)
	if err != nil {
		return err
	}
	err = b.call(f, s)
	if !isSessionLoss(err) {
		b.release(s)
		return err
	}
	first := err
	b.discard(s)
	s, err = b.openSession()
	if err != nil {
		b.release(0)
		return fmt.Errorf("%w: %s: %v (first attempt: %v)", hsm.ErrUnavailable, op, err, first)
	}
	err = b.call(f, s)
	if isSessionLoss(err) {
		b.discard(s)
		b.release(0)
		return fmt.Errorf("%w: %s: %v", hsm.ErrUnavailable, op, err)
	}
	b.release(s)
	return err
}

// call runs f on session s, holding the token lock when calls on this token
// are serialised.
func (b *Backend) call(f func(s p11.SessionHandle) error, s p11.SessionHandle) error {
	if b.tokenMu != nil {
		b.tokenMu.Lock()
		defer b.tokenMu.Unlock()
	}
	return f(s)
}

// closeSession closes s (under the token lock when calls are serialised).
func (b *Backend) closeSession(s p11.SessionHandle) {
	if b.tokenMu != nil {
		b.tokenMu.Lock()
		defer b.tokenMu.Unlock()
	}
	_ = b.ctx.CloseSession(s)
}
