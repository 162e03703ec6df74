package qualify

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	_ "crypto/sha1" // OAEP-SHA1 reference
	_ "crypto/sha256"
	"fmt"
	"math/big"

	p11 "github.com/miekg/pkcs11"
)

// oaepVariant is RSA-OAEP with one hash (and MGF1 with the same hash).
type oaepVariant struct {
	name   string
	hash   uint
	mgf    uint
	goHash crypto.Hash
}

var (
	oaepSHA256 = &oaepVariant{"RSA-OAEP-SHA256", p11.CKM_SHA256, p11.CKG_MGF1_SHA256, crypto.SHA256}
	oaepSHA1   = &oaepVariant{"RSA-OAEP-SHA1", p11.CKM_SHA_1, p11.CKG_MGF1_SHA1, crypto.SHA1}
)

func (v *oaepVariant) mech() []*p11.Mechanism {
	return []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_PKCS_OAEP,
		p11.NewOAEPParams(v.hash, v.mgf, p11.CKZ_DATA_SPECIFIED, nil))}
}

// checkRSAKeygen generates the RSA-3072 transport key pair, as session
// objects: the private half sensitive, non-extractable, unwrap only.
func checkRSAKeygen(r *runner) Result {
	pub, priv, err := r.c.GenerateKeyPair(r.s,
		[]*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil)},
		[]*p11.Attribute{
			attr(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
			attr(p11.CKA_KEY_TYPE, p11.CKK_RSA),
			attr(p11.CKA_TOKEN, false),
			attr(p11.CKA_MODULUS_BITS, 3072),
			attr(p11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
			attr(p11.CKA_WRAP, true),
			attr(p11.CKA_ENCRYPT, true),
		},
		[]*p11.Attribute{
			attr(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY),
			attr(p11.CKA_KEY_TYPE, p11.CKK_RSA),
			attr(p11.CKA_TOKEN, false),
			attr(p11.CKA_PRIVATE, true),
			attr(p11.CKA_SENSITIVE, true),
			attr(p11.CKA_EXTRACTABLE, false),
			attr(p11.CKA_UNWRAP, true),
			attr(p11.CKA_DECRYPT, true),
		})
	if err != nil {
		return failErr(err, "C_GenerateKeyPair(CKM_RSA_PKCS_KEY_PAIR_GEN, 3072 bits)")
	}
	r.rsaPub, r.rsaPriv = r.keep(pub), r.keep(priv)
	as, err := r.c.GetAttributeValue(r.s, pub, []*p11.Attribute{attr(p11.CKA_MODULUS, nil), attr(p11.CKA_PUBLIC_EXPONENT, nil)})
	if err != nil {
		return failErr(err, "C_GetAttributeValue(CKA_MODULUS) of the public key")
	}
	r.rsaGo = &rsa.PublicKey{N: new(big.Int).SetBytes(as[0].Value), E: int(new(big.Int).SetBytes(as[1].Value).Int64())}
	if r.rsaGo.N.BitLen() != 3072 {
		return fail(code(nil), "modulus of %d bits", r.rsaGo.N.BitLen())
	}
	return pass(code(nil), "session key pair, 3072-bit modulus")
}

// checkOAEP wraps a known AES key with the HSM's public key and unwraps it
// with the private key, then unwraps a blob wrapped by Go (as a peer HSM or
// a customer importing a key would), checking the value and that the
// result is sensitive and non-extractable.
func checkOAEP(v *oaepVariant) func(r *runner) Result {
	return func(r *runner) Result {
		if r.rsaPriv == 0 {
			return skip("needs the RSA key pair (%s failed)", idRSAKeygen)
		}
		value := random(32)
		src, err := r.createAES(value)
		if err != nil {
			return failErr(err, "C_CreateObject of the key to wrap")
		}
		wrapped, wrapErr := r.c.WrapKey(r.s, v.mech(), r.rsaPub, src)
		goBlob, err := rsa.EncryptOAEP(v.goHash.New(), rand.Reader, r.rsaGo, value, nil)
		if err != nil {
			return fail("", "OAEP in Go: %v", err)
		}
		tmpl := aesTemplate(attr(p11.CKA_SENSITIVE, true), attr(p11.CKA_EXTRACTABLE, false), attr(p11.CKA_ENCRYPT, true))
		u, unwrapErr := r.c.UnwrapKey(r.s, v.mech(), r.rsaPriv, goBlob, tmpl)
		if wrapErr != nil || unwrapErr != nil {
			first := wrapErr
			if first == nil {
				first = unwrapErr
			}
			return fail(code(first), "C_WrapKey: %s; C_UnwrapKey of a blob wrapped in Go: %s", code(wrapErr), code(unwrapErr))
		}
		r.keep(u)
		if err := r.kcv(u, value); err != nil {
			return failErr(err, "key unwrapped from Go's blob")
		}
		u2, err := r.c.UnwrapKey(r.s, v.mech(), r.rsaPriv, wrapped, tmpl)
		if err != nil {
			return failErr(err, "C_UnwrapKey of the module's own blob")
		}
		r.keep(u2)
		if err := r.kcv(u2, value); err != nil {
			return failErr(err, "key unwrapped from the module's blob")
		}
		if ext, err := r.boolAttr(u2, p11.CKA_EXTRACTABLE); err != nil || ext {
			return fail(code(err), "the unwrapped key reads CKA_EXTRACTABLE=true (asked false)")
		}
		if r.oaep == nil {
			r.oaep = v
		}
		return pass(code(nil), "wrap and unwrap of a 32-byte key (%d-byte blob); Go's blob unwraps to the same key", len(wrapped))
	}
}

// wrapUntrusted wraps src under the untrusted RSA public key with the OAEP
// variant that works, or under the KWP key; it names what it used.
func (r *runner) wrapUntrusted(src p11.ObjectHandle) (string, error) {
	if r.oaep != nil {
		_, err := r.c.WrapKey(r.s, r.oaep.mech(), r.rsaPub, src)
		return r.oaep.name + " under an untrusted RSA key", err
	}
	_, err := r.c.WrapKey(r.s, kwpMech(), r.kwpKey, src)
	return "AES-KWP under an untrusted AES key", err
}

// checkWrapWithTrusted: custos's domain key is CKA_WRAP_WITH_TRUSTED
// (docs/hsm-objects.md); wrapping it under any key that is not CKA_TRUSTED
// must fail.
func checkWrapWithTrusted(r *runner) Result {
	if r.oaep == nil && !r.kwpOK {
		return skip("needs a wrapping mechanism that works (RSA-OAEP or AES-KWP)")
	}
	src, err := r.createAES(random(32), attr(p11.CKA_WRAP_WITH_TRUSTED, true))
	if err != nil {
		return failErr(err, "C_CreateObject with CKA_WRAP_WITH_TRUSTED=true")
	}
	if v, err := r.boolAttr(src, p11.CKA_WRAP_WITH_TRUSTED); err != nil || !v {
		return fail(code(err), "CKA_WRAP_WITH_TRUSTED does not read back true")
	}
	how, err := r.wrapUntrusted(src)
	if err == nil {
		return fail(code(nil), "%s: wrapped; the attribute is not enforced", how)
	}
	return pass(code(err), "%s: refused", how)
}

// goKey returns an RSA key generated in Go, for the public keys the checks
// create (the user's attempt at CKA_TRUSTED, the SO's trusted key).
func (r *runner) goKey() (*rsa.PrivateKey, error) {
	if r.goRSA == nil {
		k, err := rsa.GenerateKey(rand.Reader, 3072)
		if err != nil {
			return nil, fmt.Errorf("RSA key in Go: %w", err)
		}
		r.goRSA = k
	}
	return r.goRSA, nil
}

// publicKeyTemplate is an RSA public key object (modulus n, exponent e,
// big-endian), wrap only.
func publicKeyTemplate(n, e []byte, extra ...*p11.Attribute) []*p11.Attribute {
	return append([]*p11.Attribute{
		attr(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
		attr(p11.CKA_KEY_TYPE, p11.CKK_RSA),
		attr(p11.CKA_MODULUS, n),
		attr(p11.CKA_PUBLIC_EXPONENT, e),
		attr(p11.CKA_WRAP, true),
		attr(p11.CKA_ENCRYPT, true),
	}, extra...)
}

// checkTrustedByUser: if the user could mark a key CKA_TRUSTED, anyone with
// the PIN could wrap the domain key out to a key of their own.
func checkTrustedByUser(r *runner) Result {
	k, err := r.goKey()
	if err != nil {
		return fail("", "%v", err)
	}
	h, err := r.c.CreateObject(r.s, publicKeyTemplate(k.N.Bytes(), big.NewInt(int64(k.E)).Bytes(),
		attr(p11.CKA_TOKEN, false), attr(p11.CKA_PRIVATE, false), attr(p11.CKA_TRUSTED, true)))
	if err != nil {
		return pass(code(err), "C_CreateObject of a public key with CKA_TRUSTED=true as user: refused")
	}
	r.keep(h)
	v, _ := r.boolAttr(h, p11.CKA_TRUSTED)
	return fail(code(nil), "the user created a public key with CKA_TRUSTED=true (reads back %v)", v)
}

// checkTrustedBySO: the SO, logged in from a second process (one process
// cannot be user and SO at once), creates a public token key with
// CKA_TRUSTED=true; this process then wraps a CKA_WRAP_WITH_TRUSTED key to
// it, and Go decrypts the blob. This is how a domain key is sent to a
// joining node (docs/hsm-notes.md).
func checkTrustedBySO(r *runner) Result {
	switch {
	case r.cfg.SOPIN == "":
		return skip("no SO PIN given (--so-pin-file): the SO's CKA_TRUSTED marking was not tried")
	case len(r.cfg.ChildCommand) == 0:
		return skip("no child command to log in as SO from")
	case r.oaep == nil:
		return skip("needs an RSA-OAEP variant that works")
	}
	k, err := r.goKey()
	if err != nil {
		return fail("", "%v", err)
	}
	label := r.prefix + "-trusted"
	resp, err := r.child(childRequest{Op: opTrust, PIN: r.cfg.SOPIN, Label: label,
		Modulus: k.N.Bytes(), Exponent: big.NewInt(int64(k.E)).Bytes()})
	if err != nil {
		return fail("", "SO process: %v", err)
	}
	if resp.Error != "" {
		return fail(resp.Code, "SO process: %s", resp.Error)
	}
	hs, err := r.find([]*p11.Attribute{attr(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY), attr(p11.CKA_LABEL, label)})
	if err != nil || len(hs) != 1 {
		return fail(code(err), "the SO's key: found %d objects labelled %s", len(hs), label)
	}
	if v, err := r.boolAttr(hs[0], p11.CKA_TRUSTED); err != nil || !v {
		return fail(code(err), "the SO's key does not read CKA_TRUSTED=true")
	}
	value := random(32)
	src, err := r.createAES(value, attr(p11.CKA_WRAP_WITH_TRUSTED, true))
	if err != nil {
		return failErr(err, "C_CreateObject with CKA_WRAP_WITH_TRUSTED=true")
	}
	blob, err := r.c.WrapKey(r.s, r.oaep.mech(), hs[0], src)
	if err != nil {
		return failErr(err, "C_WrapKey(%s) under the trusted key", r.oaep.name)
	}
	got, err := rsa.DecryptOAEP(r.oaep.goHash.New(), nil, k, blob, nil)
	if err != nil || !bytes.Equal(got, value) {
		return fail(code(nil), "the blob does not decrypt in Go to the wrapped key")
	}
	return pass(code(nil), "the SO's trusted public token key (second process) reads CKA_TRUSTED; %s wrap to it decrypts in Go", r.oaep.name)
}

// checkUnwrapTemplate: custos's domain key carries CKA_UNWRAP_TEMPLATE
// {SENSITIVE=true, EXTRACTABLE=false} so that a PIN holder cannot unwrap a
// KEK from the Raft log as a readable key (docs/hsm-notes.md).
func checkUnwrapTemplate(r *runner) Result {
	if !r.kwpOK {
		return skip("needs AES-KWP (%s did not pass)", idKWP)
	}
	kek, err := r.c.GenerateKey(r.s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)},
		aesTemplate(
			attr(p11.CKA_VALUE_LEN, 32),
			attr(p11.CKA_SENSITIVE, true),
			attr(p11.CKA_EXTRACTABLE, false),
			attr(p11.CKA_WRAP, true),
			attr(p11.CKA_UNWRAP, true),
			attr(p11.CKA_UNWRAP_TEMPLATE, unwrapTemplate()),
		))
	if err != nil {
		return failErr(err, "C_GenerateKey with CKA_UNWRAP_TEMPLATE")
	}
	r.keep(kek)
	value := random(32)
	src, err := r.createAES(value)
	if err != nil {
		return failErr(err, "C_CreateObject of the key to wrap")
	}
	blob, err := r.c.WrapKey(r.s, kwpMech(), kek, src)
	if err != nil {
		return failErr(err, "C_WrapKey(CKM_AES_KEY_WRAP_PAD)")
	}
	bad, badErr := r.c.UnwrapKey(r.s, kwpMech(), kek, blob, aesTemplate(
		attr(p11.CKA_SENSITIVE, false), attr(p11.CKA_EXTRACTABLE, true), attr(p11.CKA_ENCRYPT, true)))
	if badErr == nil {
		r.keep(bad)
		detail := "unwrapped as SENSITIVE=false, EXTRACTABLE=true against the template"
		if as, err := r.c.GetAttributeValue(r.s, bad, []*p11.Attribute{attr(p11.CKA_VALUE, nil)}); err == nil && bytes.Equal(as[0].Value, value) {
			detail += "; the key's value was read back"
		}
		return fail(code(nil), "%s", detail)
	}
	good, err := r.c.UnwrapKey(r.s, kwpMech(), kek, blob, aesTemplate(
		attr(p11.CKA_SENSITIVE, true), attr(p11.CKA_EXTRACTABLE, false), attr(p11.CKA_ENCRYPT, true)))
	if err != nil {
		return failErr(err, "extractable unwrap refused (%s), but so is one matching the template", code(badErr))
	}
	r.keep(good)
	return pass(code(badErr), "extractable unwrap refused; one matching the template accepted")
}

// checkModifiable unwraps with CKA_MODIFIABLE=false as the last template
// attribute, as custos does, then with it first, to note whether the module
// refuses attributes after it (SoftHSM does: docs/hsm-notes.md).
func checkModifiable(r *runner) Result {
	if !r.kwpOK {
		return skip("needs AES-KWP (%s did not pass)", idKWP)
	}
	value := random(32)
	src, err := r.createAES(value)
	if err != nil {
		return failErr(err, "C_CreateObject of the key to wrap")
	}
	blob, err := r.c.WrapKey(r.s, kwpMech(), r.kwpKey, src)
	if err != nil {
		return failErr(err, "C_WrapKey(CKM_AES_KEY_WRAP_PAD)")
	}
	last, err := r.c.UnwrapKey(r.s, kwpMech(), r.kwpKey, blob, aesTemplate(
		attr(p11.CKA_SENSITIVE, true), attr(p11.CKA_EXTRACTABLE, false), attr(p11.CKA_ENCRYPT, true),
		attr(p11.CKA_MODIFIABLE, false)))
	if err != nil {
		return failErr(err, "C_UnwrapKey with CKA_MODIFIABLE=false last")
	}
	r.keep(last)
	if m, err := r.boolAttr(last, p11.CKA_MODIFIABLE); err != nil || m {
		return fail(code(err), "the unwrapped key reads CKA_MODIFIABLE=true (asked false)")
	}
	r.unwrapped, r.unwrappedValue = last, value
	first, err := r.c.UnwrapKey(r.s, kwpMech(), r.kwpKey, blob, aesTemplate(
		attr(p11.CKA_MODIFIABLE, false),
		attr(p11.CKA_SENSITIVE, true), attr(p11.CKA_EXTRACTABLE, false), attr(p11.CKA_ENCRYPT, true)))
	if err != nil {
		return pass(code(nil), "last: accepted; first: refused with %s (custos puts it last)", code(err))
	}
	r.keep(first)
	return pass(code(nil), "accepted last, and first too")
}

// checkUnwrapped reads back the key unwrapped with custos's template: it
// must be sensitive and non-extractable, its value unreadable and its
// attributes unchangeable (openCryptoki's unwrapped keys came out
// extractable and readable: docs/hsm-notes.md).
func checkUnwrapped(r *runner) Result {
	if r.unwrapped == 0 {
		return skip("needs the key unwrapped by %s", idModifiable)
	}
	h := r.unwrapped
	if v, err := r.boolAttr(h, p11.CKA_SENSITIVE); err != nil || !v {
		return fail(code(err), "CKA_SENSITIVE does not read true")
	}
	if v, err := r.boolAttr(h, p11.CKA_EXTRACTABLE); err != nil || v {
		return fail(code(err), "CKA_EXTRACTABLE does not read false")
	}
	as, readErr := r.c.GetAttributeValue(r.s, h, []*p11.Attribute{attr(p11.CKA_VALUE, nil)})
	if readErr == nil && len(as) == 1 && len(as[0].Value) > 0 {
		return fail(code(nil), "CKA_VALUE was read (%d bytes)", len(as[0].Value))
	}
	for _, a := range []struct {
		name string
		at   *p11.Attribute
	}{
		{"CKA_DECRYPT=true", attr(p11.CKA_DECRYPT, true)},
		{"CKA_EXTRACTABLE=true", attr(p11.CKA_EXTRACTABLE, true)},
		{"CKA_SENSITIVE=false", attr(p11.CKA_SENSITIVE, false)},
	} {
		if err := r.c.SetAttributeValue(r.s, h, []*p11.Attribute{a.at}); err == nil {
			return fail(code(nil), "C_SetAttributeValue(%s) accepted", a.name)
		}
	}
	if err := r.kcv(h, r.unwrappedValue); err != nil {
		return failErr(err, "the key no longer holds the unwrapped value")
	}
	return pass(code(readErr), "reading CKA_VALUE refused; DECRYPT, EXTRACTABLE, SENSITIVE cannot be changed")
}
