package qualify

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/asn1"
	"fmt"
	"math/big"

	p11 "github.com/miekg/pkcs11"
)

// oidP256 is the DER of the P-256 curve's OID (CKA_EC_PARAMS).
var oidP256 = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}

// checkECDSA generates a P-256 key pair (session objects), signs a SHA-256
// digest with CKM_ECDSA, as custos signs checkpoints and statements
// (docs/hsm-objects.md), and verifies the signature in Go.
func checkECDSA(r *runner) Result {
	pub, priv, err := r.c.GenerateKeyPair(r.s,
		[]*p11.Mechanism{p11.NewMechanism(p11.CKM_EC_KEY_PAIR_GEN, nil)},
		[]*p11.Attribute{
			attr(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
			attr(p11.CKA_KEY_TYPE, p11.CKK_EC),
			attr(p11.CKA_TOKEN, false),
			attr(p11.CKA_EC_PARAMS, oidP256),
			attr(p11.CKA_VERIFY, true),
		},
		[]*p11.Attribute{
			attr(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY),
			attr(p11.CKA_KEY_TYPE, p11.CKK_EC),
			attr(p11.CKA_TOKEN, false),
			attr(p11.CKA_PRIVATE, true),
			attr(p11.CKA_SENSITIVE, true),
			attr(p11.CKA_EXTRACTABLE, false),
			attr(p11.CKA_SIGN, true),
		})
	if err != nil {
		return failErr(err, "C_GenerateKeyPair(CKM_EC_KEY_PAIR_GEN, P-256)")
	}
	r.keep(pub)
	r.keep(priv)
	as, err := r.c.GetAttributeValue(r.s, pub, []*p11.Attribute{attr(p11.CKA_EC_POINT, nil)})
	if err != nil {
		return failErr(err, "C_GetAttributeValue(CKA_EC_POINT)")
	}
	key, err := parsePoint(as[0].Value)
	if err != nil {
		return fail(code(nil), "CKA_EC_POINT: %v", err)
	}
	digest := sha256.Sum256([]byte("custos hsm check"))
	if err := r.c.SignInit(r.s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_ECDSA, nil)}, priv); err != nil {
		return failErr(err, "C_SignInit(CKM_ECDSA)")
	}
	sig, err := r.c.Sign(r.s, digest[:])
	if err != nil {
		return failErr(err, "C_Sign(CKM_ECDSA)")
	}
	if len(sig) != 64 {
		return fail(code(nil), "signature of %d bytes (want r||s, 64)", len(sig))
	}
	rr, ss := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(key, digest[:], rr, ss) {
		return fail(code(nil), "the signature does not verify in Go")
	}
	return pass(code(nil), "signature over a SHA-256 digest verifies in Go")
}

// parsePoint reads CKA_EC_POINT: a DER OCTET STRING holding the
// uncompressed point, or (some modules) the bare point.
func parsePoint(v []byte) (*ecdsa.PublicKey, error) {
	var inner []byte
	if rest, err := asn1.Unmarshal(v, &inner); err == nil && len(rest) == 0 {
		v = inner
	}
	k, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), v)
	if err != nil {
		return nil, fmt.Errorf("not an uncompressed P-256 point (%d bytes): %w", len(v), err)
	}
	return k, nil
}
