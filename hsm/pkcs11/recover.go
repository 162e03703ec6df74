package pkcs11

import (
	"context"
	"errors"
	"fmt"

	p11 "github.com/miekg/pkcs11"

	"github.com/custos-kms/custos/hsm"
)

// ErrSharedModule means the module cannot be re-initialised to recover a token
// because other Backends in the process (or code outside custos that
// initialised it first) use it too; only a restart of the process recovers.
var ErrSharedModule = errors.New("pkcs11: module shared in this process")

// reinitialize recovers from a token the module no longer serves by
// finalizing and initialising the module again, then finding the token by
// label, logging in and refilling the session pool.
//
// Some modules keep a token they lost for the life of the initialisation:
// SoftHSM 2.6.1 marks a token whose directory disappeared as invalid, and
// even when the directory is back, C_GetTokenInfo and C_Login fail
// (CKR_GENERAL_ERROR) until C_Finalize + C_Initialize (measured in
// internal/security TestHSMFault). Re-opening sessions alone cannot help.
//
// C_Finalize ends every session of the process on every token of the
// module, so this is done only when b is the module's only user and b
// initialised it; otherwise it returns ErrSharedModule. While it runs, b
// holds every pooled session, so no other call of b is in the module; it
// waits for calls in flight to return them, until ctx ends.
func (b *Backend) reinitialize(ctx context.Context) error {
	// One recovery at a time: two would each hold part of the pool and
	// wait for the rest until their deadlines, stalling every HSM call.
	if !b.recoverMu.TryLock() {
		return fmt.Errorf("%w: a recovery of token %q is already running", hsm.ErrUnavailable, b.label)
	}
	defer b.recoverMu.Unlock()
	if b.sharedModule() {
		return fmt.Errorf("%w: cannot re-initialise %s to recover token %q; restart the process", ErrSharedModule, b.mod.path, b.label)
	}
	// Take every session out of the pool.
	held := make([]p11.SessionHandle, 0, cap(b.pool))
	giveBack := func() {
		for _, s := range held {
			b.pool <- s
		}
	}
	for len(held) < cap(b.pool) {
		select {
		case s := <-b.pool:
			held = append(held, s)
		case <-ctx.Done():
			giveBack()
			return fmt.Errorf("pkcs11: re-initialise: waiting for sessions: %w", ctx.Err())
		case <-b.done:
			giveBack()
			return hsm.ErrClosed
		}
	}
	// No other Backend may open on the module between the check and the
	// re-initialisation (it would lose its sessions): hold the module table.
	modulesMu.Lock()
	defer modulesMu.Unlock()
	if b.mod.refs != 1 || !b.mod.owned {
		giveBack()
		return fmt.Errorf("%w: cannot re-initialise %s to recover token %q; restart the process", ErrSharedModule, b.mod.path, b.label)
	}
	sessions := append([]p11.SessionHandle(nil), held...)
	for i := range held {
		held[i] = 0 // closed below; reopened (and logged in) lazily by acquire
	}
	defer giveBack()
	b.dropCopies()
	if b.tokenMu != nil {
		b.tokenMu.Lock()
	}
	for _, s := range sessions {
		if s != 0 {
			_ = b.ctx.CloseSession(s)
		}
	}
	_ = b.ctx.Finalize()
	err := b.ctx.Initialize()
	if b.tokenMu != nil {
		b.tokenMu.Unlock()
	}
	if err != nil && !errors.Is(err, p11.Error(p11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		return fmt.Errorf("%w: re-initialise %s: C_Initialize: %v", hsm.ErrUnavailable, b.mod.path, err)
	}
	b.slotMu.Lock()
	slot, err := b.findSlot()
	if err == nil {
		b.slot = slot
	}
	b.slotMu.Unlock()
	if err != nil {
		return fmt.Errorf("%w: after re-initialising %s: %w", hsm.ErrUnavailable, b.mod.path, err)
	}
	// Open and log in one session now, so a PIN problem shows here.
	s, err := b.openSession()
	if err != nil {
		return err
	}
	held[0] = s
	return nil
}

// sharedModule reports whether another Backend (or code outside custos)
// uses b's module.
func (b *Backend) sharedModule() bool {
	modulesMu.Lock()
	defer modulesMu.Unlock()
	return b.mod.refs != 1 || !b.mod.owned
}
