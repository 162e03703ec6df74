// Package kms is custos's key service: the replicated state machine (State:
// keys, policies, officers, grants, the hash-chained decision ledger) and
// the Service that runs every request as decide → record → release — a
// decision is committed through the Raft log before any key material leaves
// the HSM (docs/architecture.md, docs/ledger.md, docs/governance.md).
package kms
