package qualify

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"sync"

	p11 "github.com/miekg/pkcs11"

	"github.com/custos-kms/custos/clients/go/keyimport"
)

// checkAESKeygen generates the AES-256 session key the GCM checks use:
// sensitive and non-extractable, as custos makes KEKs (docs/hsm-objects.md).
func checkAESKeygen(r *runner) Result {
	h, err := r.c.GenerateKey(r.s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)},
		aesTemplate(
			attr(p11.CKA_VALUE_LEN, 32),
			attr(p11.CKA_SENSITIVE, true),
			attr(p11.CKA_EXTRACTABLE, false),
			attr(p11.CKA_ENCRYPT, true),
			attr(p11.CKA_DECRYPT, true),
		))
	if err != nil {
		return failErr(err, "C_GenerateKey(CKM_AES_KEY_GEN, 32 bytes)")
	}
	r.aesKey = r.keep(h)
	return pass(code(nil), "session key, sensitive, non-extractable")
}

// gcm encrypts (or decrypts) in with key under an IV of ivLen bytes and a
// tag of tagBits, as custos calls C_Encrypt through miekg/pkcs11 (length
// query, then the call).
func (r *runner) gcm(s p11.SessionHandle, key p11.ObjectHandle, encrypt bool, iv, aad, in []byte, tagBits int) ([]byte, error) {
	params := p11.NewGCMParams(iv, aad, tagBits)
	defer params.Free()
	mech := []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}
	if encrypt {
		if err := r.c.EncryptInit(s, mech, key); err != nil {
			return nil, fmt.Errorf("C_EncryptInit: %w", err)
		}
		out, err := r.c.Encrypt(s, in)
		if err != nil {
			return nil, fmt.Errorf("C_Encrypt: %w", err)
		}
		return out, nil
	}
	if err := r.c.DecryptInit(s, mech, key); err != nil {
		return nil, fmt.Errorf("C_DecryptInit: %w", err)
	}
	out, err := r.c.Decrypt(s, in)
	if err != nil {
		return nil, fmt.Errorf("C_Decrypt: %w", err)
	}
	return out, nil
}

// checkGCM is a round trip with the only sizes custos uses
// (docs/envelope-format.md): 12-byte IV, 16-byte tag; a changed ciphertext
// must not decrypt.
func checkGCM(r *runner) Result {
	if r.aesKey == 0 {
		return skip("needs the AES key (%s failed)", idAESKeygen)
	}
	iv, aad, pt := random(12), []byte("custos-check"), random(32)
	ct, err := r.gcm(r.s, r.aesKey, true, iv, aad, pt, 128)
	if err != nil {
		return failErr(err, "encrypt 32 bytes")
	}
	if len(ct) != len(pt)+16 {
		return fail(code(nil), "ciphertext of %d bytes for 32 bytes of plaintext (want 48)", len(ct))
	}
	back, err := r.gcm(r.s, r.aesKey, false, iv, aad, ct, 128)
	if err != nil {
		return failErr(err, "decrypt")
	}
	if !bytes.Equal(back, pt) {
		return fail(code(nil), "decrypt gave other bytes than were encrypted")
	}
	ct[0] ^= 1
	if _, err := r.gcm(r.s, r.aesKey, false, iv, aad, ct, 128); err == nil {
		return fail(code(nil), "a changed ciphertext decrypted without error")
	} else {
		r.gcmOK = true
		return pass(code(nil), "48-byte ciphertext; changed ciphertext refused with %s", code(err))
	}
}

// checkGCMSizes encrypts with sizes custos never uses. A module that
// accepts them is a WARN, not a FAIL: hsm/pkcs11 refuses every IV but 12
// bytes and every tag but 16 before calling the module (docs/hsm-notes.md).
func checkGCMSizes(ivLen, tagBits int) func(r *runner) Result {
	return func(r *runner) Result {
		if !r.gcmOK {
			return skip("needs the GCM round trip (%s did not pass)", idGCM)
		}
		ct, err := r.gcm(r.s, r.aesKey, true, random(ivLen), nil, random(32), tagBits)
		if err != nil {
			return pass(code(err), "refused (%s)", code(err))
		}
		return warn(code(nil), "accepted (%d-byte IV, %d-bit tag: %d-byte output); custos refuses these sizes itself", ivLen, tagBits, len(ct))
	}
}

// kwpMech is AES key wrap with padding (RFC 5649), no IV given: the
// default alternative IV.
func kwpMech() []*p11.Mechanism {
	return []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_WRAP_PAD, nil)}
}

// checkKWP generates the AES wrapping key custos's domain key is like
// (docs/hsm-objects.md) and wraps and unwraps an AES-256 key with it.
func checkKWP(r *runner) Result {
	h, err := r.c.GenerateKey(r.s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)},
		aesTemplate(
			attr(p11.CKA_VALUE_LEN, 32),
			attr(p11.CKA_SENSITIVE, true),
			attr(p11.CKA_EXTRACTABLE, false),
			attr(p11.CKA_WRAP, true),
			attr(p11.CKA_UNWRAP, true),
		))
	if err != nil {
		return failErr(err, "C_GenerateKey of the wrapping key")
	}
	r.kwpKey = r.keep(h)
	value := random(32)
	src, err := r.createAES(value)
	if err != nil {
		return failErr(err, "C_CreateObject of the key to wrap")
	}
	wrapped, err := r.c.WrapKey(r.s, kwpMech(), r.kwpKey, src)
	if err != nil {
		return failErr(err, "C_WrapKey(CKM_AES_KEY_WRAP_PAD)")
	}
	u, err := r.c.UnwrapKey(r.s, kwpMech(), r.kwpKey, wrapped, aesTemplate(
		attr(p11.CKA_SENSITIVE, true),
		attr(p11.CKA_EXTRACTABLE, false),
		attr(p11.CKA_ENCRYPT, true),
	))
	if err != nil {
		return failErr(err, "C_UnwrapKey(CKM_AES_KEY_WRAP_PAD)")
	}
	r.keep(u)
	if err := r.kcv(u, value); err != nil {
		return failErr(err, "unwrapped key checked with AES-ECB")
	}
	r.kwpOK = true
	return pass(code(nil), "32-byte key wrapped to %d bytes and unwrapped to the same value", len(wrapped))
}

// checkKWPRFC5649 wraps a known key under a known key and compares with
// RFC 5649 computed in Go: the blob must be what another HSM expects.
func checkKWPRFC5649(r *runner) Result {
	kek, value := random(32), random(32)
	k, err := r.c.CreateObject(r.s, aesTemplate(
		attr(p11.CKA_VALUE, kek),
		attr(p11.CKA_WRAP, true),
		attr(p11.CKA_UNWRAP, true),
	))
	if err != nil {
		return failErr(err, "C_CreateObject of a wrapping key of known value")
	}
	r.keep(k)
	src, err := r.createAES(value)
	if err != nil {
		return failErr(err, "C_CreateObject of the key to wrap")
	}
	wrapped, err := r.c.WrapKey(r.s, kwpMech(), k, src)
	if err != nil {
		return failErr(err, "C_WrapKey(CKM_AES_KEY_WRAP_PAD)")
	}
	want, err := keyimport.WrapPad(kek, value)
	if err != nil {
		return fail("", "reference wrap: %v", err)
	}
	if len(wrapped) != len(want) {
		return fail(code(nil), "%d bytes for a 32-byte key (RFC 5649: %d): not interoperable", len(wrapped), len(want))
	}
	if !bytes.Equal(wrapped, want) {
		return fail(code(nil), "40 bytes, but not the RFC 5649 bytes: not interoperable")
	}
	return pass(code(nil), "40 bytes for a 32-byte key, equal to RFC 5649 computed in Go")
}

// checkGenerated reads CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE on
// the keys generated above: custos checks them on every key it generates
// (docs/hsm-objects.md).
func checkGenerated(r *runner) Result {
	keys := []struct {
		name string
		h    p11.ObjectHandle
	}{{"AES key", r.aesKey}, {"AES wrapping key", r.kwpKey}, {"RSA private key", r.rsaPriv}}
	n := 0
	for _, k := range keys {
		if k.h == 0 {
			continue
		}
		for _, a := range []struct {
			typ  uint
			name string
		}{{p11.CKA_ALWAYS_SENSITIVE, "CKA_ALWAYS_SENSITIVE"}, {p11.CKA_NEVER_EXTRACTABLE, "CKA_NEVER_EXTRACTABLE"}} {
			v, err := r.boolAttr(k.h, a.typ)
			if err != nil {
				return failErr(err, "C_GetAttributeValue(%s) of the %s", a.name, k.name)
			}
			if !v {
				return fail(code(nil), "%s reads false on the generated %s", a.name, k.name)
			}
		}
		n++
	}
	if n == 0 {
		return skip("no generated key to read (key generation failed)")
	}
	return pass(code(nil), "both true on %d generated key(s)", n)
}

// checkConcurrency runs AES-GCM encryptions from several goroutines, each
// on its own session, and compares every ciphertext with Go's: errors or
// wrong bytes mean custos must serialise calls on this module, as it does
// for SoftHSM (docs/hsm-notes.md, "Concurrency").
func checkConcurrency(r *runner) Result {
	if !r.gcmOK {
		return skip("needs the GCM round trip (%s did not pass)", idGCM)
	}
	value := random(32)
	key, err := r.createAES(value)
	if err != nil {
		return failErr(err, "C_CreateObject of a key of known value")
	}
	block, _ := aes.NewCipher(value)
	ref, _ := cipher.NewGCM(block)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		errs     int
		wrong    int
	)
	for w := 0; w < r.cfg.Workers; w++ {
		s, err := r.c.OpenSession(r.slot, p11.CKF_SERIAL_SESSION)
		if err != nil {
			return failErr(err, "C_OpenSession for worker %d", w)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { _ = r.c.CloseSession(s) }()
			for i := 0; i < r.cfg.OpsPerWorker; i++ {
				iv, pt := random(12), random(32)
				ct, err := r.gcm(s, key, true, iv, nil, pt, 128)
				mu.Lock()
				switch {
				case err != nil:
					errs++
					if firstErr == nil {
						firstErr = err
					}
				case !bytes.Equal(ct, ref.Seal(nil, iv, pt, nil)):
					wrong++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	total := r.cfg.Workers * r.cfg.OpsPerWorker
	switch {
	case errs > 0:
		return failErr(firstErr, "%d of %d encryptions failed, %d wrong; first error", errs, total, wrong)
	case wrong > 0:
		return fail(code(nil), "%d of %d ciphertexts differ from Go's AES-GCM", wrong, total)
	}
	return pass(code(nil), "%d goroutines × %d encryptions, all equal to Go's AES-GCM", r.cfg.Workers, r.cfg.OpsPerWorker)
}

// checkRandom asks the module for random bytes twice.
func checkRandom(r *runner) Result {
	a, err := r.c.GenerateRandom(r.s, 32)
	if err != nil {
		return failErr(err, "C_GenerateRandom(32)")
	}
	b, err := r.c.GenerateRandom(r.s, 32)
	if err != nil {
		return failErr(err, "C_GenerateRandom(32)")
	}
	if len(a) != 32 || bytes.Equal(a, b) || bytes.Equal(a, make([]byte, 32)) {
		return fail(code(nil), "32 bytes asked, got %d; two calls equal or zero", len(a))
	}
	return pass(code(nil), "two calls of 32 bytes, distinct")
}
