// Package governance implements the customer's security officers' signed
// statements: their canonical bytes, the officers' ECDSA P-256 keys (PEM key
// files and PKCS#11 tokens), signing, and verification against the officer set
// and quorum (invariant 4 of docs/architecture.md: loosening needs a quorum, tightening needs
// one). docs/governance-statements.md describes every format.
//
// The package holds no cluster state. Verification is deterministic given its
// inputs, so the state machine calls OfficerSet.Verify inside Raft Apply with
// the command's time. Replays are the state machine's business: it keeps the
// nonces of applied statements until they expire.
//
// # Signing format
//
// A statement (custosv1.Statement) is serialized once, by Marshal
// (deterministic protobuf), and from then on its bytes are signed, stored and
// transported verbatim (SignedStatement.statement); nobody re-encodes it.
// Each officer signs
//
//	SHA-256("custos-statement-v1\x00" || statement bytes)
//
// with ECDSA over P-256; the signature is the ASN.1 DER SEQUENCE{r, s}
// (OfficerSignature.signature), next to the officer's registered name.
//
// Parse accepts statement bytes only if they are at most 64 KiB, carry no
// unknown fields anywhere, repeat no singular field and set at most one member
// of the operation, have a 16-byte nonce, a cluster id, an expiry and exactly
// one operation whose required fields are set. What an officer sees before
// signing (Describe of Parse of the bytes) is therefore what the cluster
// applies.
//
// # Tightening and loosening
//
// RevokeKey, DisableKey, DenyRequest and RevokeGrant need one valid officer
// signature (Need returns One); EnableKey, SetPolicy, ApproveRequest,
// CreateGrant and SetOfficers need the quorum (Need returns Quorum). A
// statement is refused as a whole if any signature on it is invalid, from an
// unknown officer, or from an officer who already signed it.
//
// # PKCS#11
//
// OpenPKCS11Signer uses crypto11, which calls C_Initialize and C_Finalize on
// the module itself. It must therefore not share a process with the
// project's own hsm/pkcs11 Backend on the same module: the officer CLI
// (`custos officer ...`) runs in its own process, and custosd never opens an
// officer's token.
package governance
