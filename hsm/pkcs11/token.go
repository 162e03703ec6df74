package pkcs11

import (
	"context"
	"fmt"
	"strings"
	"sync"

	p11 "github.com/miekg/pkcs11"

	"github.com/custos-kms/custos/hsm"
)

// initTokenMu serialises InitToken calls in the process, so that two calls
// never pick the same free slot.
var initTokenMu sync.Mutex

// InitToken initialises a token labelled label in the first free
// (uninitialised) slot of the module, through the module itself, and sets its
// user PIN. It is meant for development and test tokens (SoftHSM2).
//
// Unlike running softhsm2-util, this works while the module is already
// initialised in this process: SoftHSM reads its token directory once, at
// C_Initialize, so a token created by another process afterwards stays
// invisible until every Backend on the module is closed, whereas a token
// created here is visible at once. If a token with that label already exists
// InitToken does nothing.
func InitToken(ctx context.Context, module, label, soPIN, userPIN string) error {
	if label == "" || len(label) > 32 {
		return fmt.Errorf("%w: token label of %d bytes (want 1 to 32)", hsm.ErrInvalidInput, len(label))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	initTokenMu.Lock()
	defer initTokenMu.Unlock()
	mod, err := acquireModule(module)
	if err != nil {
		return err
	}
	defer mod.release()
	c := mod.ctx
	slots, err := c.GetSlotList(false)
	if err != nil {
		return fmt.Errorf("%w: C_GetSlotList: %v", hsm.ErrUnavailable, err)
	}
	free, found := uint(0), false
	for _, slot := range slots {
		ti, err := c.GetTokenInfo(slot)
		if err != nil {
			continue
		}
		if ti.Flags&p11.CKF_TOKEN_INITIALIZED == 0 {
			if !found {
				free, found = slot, true
			}
			continue
		}
		if strings.TrimRight(ti.Label, " \x00") == label {
			return nil
		}
	}
	if !found {
		return fmt.Errorf("pkcs11: InitToken: no free slot in %s", module)
	}
	if err := c.InitToken(free, soPIN, label); err != nil {
		return fmt.Errorf("pkcs11: InitToken %q: C_InitToken: %v", label, err)
	}
	s, err := c.OpenSession(free, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("pkcs11: InitToken %q: C_OpenSession: %v", label, err)
	}
	defer func() { _ = c.CloseSession(s) }()
	if err := c.Login(s, p11.CKU_SO, soPIN); err != nil {
		return fmt.Errorf("pkcs11: InitToken %q: C_Login(SO): %v", label, err)
	}
	defer func() { _ = c.Logout(s) }()
	if err := c.InitPIN(s, userPIN); err != nil {
		return fmt.Errorf("pkcs11: InitToken %q: C_InitPIN: %v", label, err)
	}
	return nil
}
