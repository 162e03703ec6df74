package governance

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"fmt"
	"io"

	"github.com/ThalesGroup/crypto11"
)

// OpenPKCS11Signer opens the officer's own PKCS#11 token (module path, token
// label, user PIN) and finds the ECDSA P-256 key pair labelled keyLabel (the
// private key needs a CKA_ID, which pkcs11-tool --keypairgen sets). It
// returns the key as a crypto.Signer for Sign, and a Closer that logs out
// and finalizes the module; close it when done.
//
// crypto11 calls C_Initialize and C_Finalize on the module itself, so this
// must not run in a process that also uses the project's hsm/pkcs11 Backend
// on the same module (custosd never does; the officer CLI is its own
// process). For SoftHSM2, SOFTHSM2_CONF must be set before the call.
func OpenPKCS11Signer(module, tokenLabel, pin, keyLabel string) (crypto.Signer, io.Closer, error) {
	if module == "" || tokenLabel == "" || keyLabel == "" {
		return nil, nil, fmt.Errorf("%w: PKCS#11 module, token label and key label are required", ErrBadKey)
	}
	ctx, err := crypto11.Configure(&crypto11.Config{Path: module, TokenLabel: tokenLabel, Pin: pin})
	if err != nil {
		return nil, nil, fmt.Errorf("governance: opening token %q with %s: %w", tokenLabel, module, err)
	}
	signer, err := ctx.FindKeyPair(nil, []byte(keyLabel))
	if err != nil || signer == nil {
		ctx.Close()
		if err == nil {
			err = fmt.Errorf("not found")
		}
		return nil, nil, fmt.Errorf("%w: key %q on token %q: %v", ErrBadKey, keyLabel, tokenLabel, err)
	}
	pub, ok := signer.Public().(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		ctx.Close()
		return nil, nil, fmt.Errorf("%w: key %q on token %q is not ECDSA P-256", ErrBadKey, keyLabel, tokenLabel)
	}
	return signer, ctx, nil
}
