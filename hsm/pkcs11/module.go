package pkcs11

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	p11 "github.com/miekg/pkcs11"
)

// module is a PKCS#11 library loaded and initialised once per process and
// per path, shared by every Backend that uses it.
type module struct {
	path string
	ctx  *p11.Ctx
	refs int
	// owned is false when C_Initialize said CKR_CRYPTOKI_ALREADY_INITIALIZED:
	// someone else in the process initialised the library, so we must not
	// finalize it under them.
	owned bool
}

var (
	modulesMu sync.Mutex
	modules   = map[string]*module{}
	// tokenLocks holds the per-token locks of serialised tokens, by module
	// path and token serial number. They are never removed (a few bytes
	// per token ever opened).
	tokenLocks = map[string]*sync.Mutex{}
)

// tokenLock returns the process-wide lock that serialises calls on the token
// in slot, or nil when the token is safe for concurrent calls.
//
// SoftHSM2 (2.6.1, and its development branch at the time of writing) is not:
// each token's SecureDataManager runs one shared AES object, without a lock,
// to decrypt and encrypt the attributes of CKA_PRIVATE objects (key values,
// CKA_ID, labels) and at C_Login. Concurrent calls on one token corrupt that
// state: under 16 goroutines, C_UnwrapKey failed with CKR_GENERAL_ERROR or
// CKR_TEMPLATE_INCONSISTENT in about one run in six, and a key value could be
// decrypted wrongly without any error. So every call on a SoftHSM token is
// serialised (SoftHSM's throughput is flat from 1 to 16 sessions anyway);
// other modules are called concurrently.
func tokenLock(m *module, slot uint) *sync.Mutex {
	ti, err := m.ctx.GetTokenInfo(slot)
	if err != nil || !isSoftHSM(ti) {
		return nil
	}
	key := m.path + "\x00" + ti.SerialNumber
	modulesMu.Lock()
	defer modulesMu.Unlock()
	mu, ok := tokenLocks[key]
	if !ok {
		mu = new(sync.Mutex)
		tokenLocks[key] = mu
	}
	return mu
}

// isSoftHSM reports whether the token is a SoftHSM2 token.
func isSoftHSM(ti p11.TokenInfo) bool {
	return strings.HasPrefix(ti.Model, "SoftHSM") || strings.HasPrefix(ti.ManufacturerID, "SoftHSM")
}

// acquireModule loads and initialises the module at path, or takes another
// reference on the one already loaded.
func acquireModule(path string) (*module, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: no module path given", ErrModule)
	}
	modulesMu.Lock()
	defer modulesMu.Unlock()
	if m, ok := modules[path]; ok {
		m.refs++
		return m, nil
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrModule, path, err)
	}
	ctx := p11.New(path)
	if ctx == nil {
		return nil, fmt.Errorf("%w: %s: cannot load the library", ErrModule, path)
	}
	owned := true
	// The default Initialize passes CKF_OS_LOCKING_OK: SoftHSM must do its own
	// locking, since sessions are used from many goroutines.
	if err := ctx.Initialize(); err != nil {
		if !errors.Is(err, p11.Error(p11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
			ctx.Destroy()
			return nil, fmt.Errorf("%w: %s: C_Initialize: %v", ErrModule, path, err)
		}
		owned = false
	}
	m := &module{path: path, ctx: ctx, refs: 1, owned: owned}
	modules[path] = m
	return m, nil
}

// release drops a reference; the last one finalizes and unloads the module.
func (m *module) release() {
	modulesMu.Lock()
	defer modulesMu.Unlock()
	m.refs--
	if m.refs > 0 {
		return
	}
	delete(modules, m.path)
	if m.owned {
		_ = m.ctx.Finalize()
	}
	m.ctx.Destroy()
}
