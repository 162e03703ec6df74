package qualify

// The IDs of the checks, stable for scripts reading --json output.
const (
	idAESKeygen       = "aes-keygen"
	idGCM             = "gcm"
	idGCMIV1          = "gcm-iv-1"
	idGCMIV16         = "gcm-iv-16"
	idGCMTag8         = "gcm-tag-8"
	idKWP             = "kwp"
	idKWPRFC5649      = "kwp-rfc5649"
	idRSAKeygen       = "rsa-keygen"
	idOAEP256         = "oaep-sha256"
	idOAEP1           = "oaep-sha1"
	idWrapWithTrusted = "wrap-with-trusted"
	idTrustedByUser   = "trusted-user-refused"
	idTrustedBySO     = "trusted-by-so"
	idUnwrapTemplate  = "unwrap-template"
	idModifiable      = "modifiable-last"
	idUnwrapped       = "unwrapped-attrs"
	idGenerated       = "generated-attrs"
	idECDSA           = "ecdsa-p256"
	idIsolation       = "session-isolation"
	idConcurrency     = "concurrency"
	idRandom          = "random"
)

// checks are run in this order: later ones use what earlier ones made
// (the AES, KWP and RSA keys, the working OAEP variant).
var checks = []check{
	{idAESKeygen, "AES-256 key generation", checkAESKeygen, both},
	{idGCM, "AES-GCM 12-byte IV, 16-byte tag round trip", checkGCM, both},
	{idGCMIV1, "AES-GCM refuses a 1-byte IV", checkGCMSizes(1, 128), nil},
	{idGCMIV16, "AES-GCM refuses a 16-byte IV", checkGCMSizes(16, 128), nil},
	{idGCMTag8, "AES-GCM refuses an 8-byte tag", checkGCMSizes(12, 64), nil},
	{idKWP, "AES-KWP (CKM_AES_KEY_WRAP_PAD) wrap/unwrap", checkKWP, both},
	{idKWPRFC5649, "AES-KWP output is RFC 5649", checkKWPRFC5649, both},
	{idRSAKeygen, "RSA-3072 key pair generation", checkRSAKeygen, both},
	{idOAEP256, "RSA-OAEP-SHA256 wrap/unwrap of an AES key", checkOAEP(oaepSHA256), []Profile{Production}},
	{idOAEP1, "RSA-OAEP-SHA1 wrap/unwrap of an AES key", checkOAEP(oaepSHA1), nil},
	{idWrapWithTrusted, "CKA_WRAP_WITH_TRUSTED enforced (untrusted wrapping key refused)", checkWrapWithTrusted, both},
	{idTrustedByUser, "CKA_TRUSTED cannot be set by the user", checkTrustedByUser, both},
	{idTrustedBySO, "CKA_TRUSTED set by the SO; wrap to it works", checkTrustedBySO, both},
	{idUnwrapTemplate, "CKA_UNWRAP_TEMPLATE enforced (extractable unwrap refused)", checkUnwrapTemplate, both},
	{idModifiable, "CKA_MODIFIABLE=false last in an unwrap template", checkModifiable, both},
	{idUnwrapped, "Unwrapped key: sensitive, non-extractable, value unreadable, unmodifiable", checkUnwrapped, both},
	{idGenerated, "Generated keys: ALWAYS_SENSITIVE, NEVER_EXTRACTABLE", checkGenerated, both},
	{idECDSA, "ECDSA P-256 key generation and sign (verified in Go)", checkECDSA, both},
	{idIsolation, "Session objects invisible to a second process", checkIsolation, both},
	{idConcurrency, "Concurrent AES-GCM on separate sessions", checkConcurrency, both},
	{idRandom, "C_GenerateRandom", checkRandom, both},
}
