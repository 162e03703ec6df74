package kms

import (
	"bytes"
	"cmp"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/custos-kms/custos/kms/governance"
	"github.com/custos-kms/custos/kms/keypolicy"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"google.golang.org/protobuf/proto"
)

// applyGovern verifies an officer-signed statement against the officer set
// at this log position and applies it. Applied or refused, it becomes a
// ledger record naming the signers and the statement's hash.
//
// The statement is verified at the state's clock, which is the command's
// effective time (advanceClock), never at a stamp behind it: a statement
// whose not_after is behind the clock can never apply again, and its nonce
// is kept until then (pruneNonces). So a statement applies at most once,
// however old the copy that is replayed and whatever time its proposer
// claims (invariants 4 and 8, docs/architecture.md).
func (s *State) applyGovern(index uint64, c *raftlogv1.Command, op *raftlogv1.Govern) any {
	return s.applyGovernChecked(index, c, op, false)
}

// applyGovernChecked is applyGovern; countersChecked says the WebAuthn
// signature counters were checked and kept as each signature was added to
// a proposal (applyPropose).
func (s *State) applyGovernChecked(index uint64, c *raftlogv1.Command, op *raftlogv1.Govern, countersChecked bool) any {
	now := time.Unix(0, s.clock)
	var stmtHash [32]byte
	if op.Statement != nil {
		stmtHash = sha256.Sum256(op.Statement.Statement)
	}
	d := &Decision{}
	var st *custosv1.Statement
	var signers []string
	var uses []governance.SignatureUse
	var err error
	switch {
	case s.officers == nil:
		err = fmt.Errorf("%w: cluster not initialised", ErrFailedPrecondition)
	default:
		st, uses, err = s.officers.VerifyUsesAt(op.Statement, s.clusterID, now, s.smv())
		err = governanceError(err)
		if st != nil {
			for _, u := range uses {
				signers = append(signers, u.Officer)
			}
			slices.Sort(signers)
		}
	}
	if st != nil && !countersChecked {
		if cerr := s.checkCounters(uses); cerr != nil {
			// A cloned authenticator or a replayed assertion: refused
			// like a bad signature, and the statement is not spent.
			st, signers, err = nil, nil, cerr
		} else {
			s.keepCounters(uses)
		}
	}
	// signed: the statement carries the signatures it needs, so this
	// decision is its only one (spendNonce below), applied or refused.
	signed := st != nil
	if signed {
		if s.spent(st, op.Statement.Statement) {
			err = fmt.Errorf("%w: statement already decided (replayed nonce)", ErrFailedPrecondition)
			signed = false // its first decision spent the nonce
		}
	}
	if err == nil {
		err = s.checkRestoreID(st)
	}
	var key string
	if err == nil {
		key = s.statementKey(st) // before applying: revoke_grant deletes what names the key
		d.Result, d.GrantID, err = s.applyStatement(c, st)
	}
	rec := &custosv1.DecisionRecord{
		Seq:                   s.seq + 1,
		TimeUnixNano:          s.clock,
		Node:                  c.Node,
		Principal:             c.Principal,
		PrincipalIssuerSha256: c.PrincipalIssuerSha256,
		PrincipalCertSha256:   c.PrincipalCertSha256,
		Operation:             custosv1.Operation_OPERATION_GOVERNANCE,
		Outcome:               custosv1.Outcome_OUTCOME_ALLOW,
		RequestId:             hex.EncodeToString(stmtHash[:8]),
		PrevHash:              append([]byte(nil), s.head[:]...),
		RaftIndex:             index,
		Signers:               signers,
		StatementHash:         stmtHash[:],
		Detail:                d.Result,
	}
	if st == nil && op.Statement != nil {
		// Refused before it was accepted: still name what it asked for.
		st, _ = governance.ParseAt(op.Statement.Statement, s.smv())
	}
	if st != nil {
		if key == "" {
			key = s.statementKey(st)
		}
		rec.MatchedRule = "governance:" + governance.OperationName(st)
		rec.Key = key
		rec.JustificationText = st.Comment
	}
	if err != nil {
		rec.Outcome = custosv1.Outcome_OUTCOME_DENY
		rec.Detail = err.Error()
		d.Err = err
	} else if s.smv() >= 2 {
		// The statement itself, so that auditors follow the officer set
		// (audit.Verify); the grant as created (audit.Verify checks each
		// use against it), or the one revoked; version 1 recorded none.
		rec.SignedStatement = &custosv1.SignedStatement{Statement: slices.Clone(op.Statement.Statement)}
		for _, sig := range op.Statement.Signatures {
			// Only what was signed and checked, no other fields.
			rs := &custosv1.OfficerSignature{Officer: sig.GetOfficer(), Signature: slices.Clone(sig.GetSignature())}
			if a := sig.GetWebauthn(); a != nil && s.smv() >= governance.WebAuthnVersion {
				// (Below version 3 an assertion was ignored, and a
				// release of that version recorded none.)
				rs.Webauthn = &custosv1.WebAuthnAssertion{CredentialId: slices.Clone(a.CredentialId),
					AuthenticatorData: slices.Clone(a.AuthenticatorData), ClientDataJson: slices.Clone(a.ClientDataJson),
					Signature: slices.Clone(a.Signature)}
			}
			rec.SignedStatement.Signatures = append(rec.SignedStatement.Signatures, rs)
		}
		if g := s.grants[d.GrantID]; g != nil {
			rec.Grant = proto.Clone(g).(*custosv1.Grant)
		} else if rg := st.GetRevokeGrant(); rg != nil {
			rec.RevokedGrantId = rg.GrantId
		}
	}
	if signed {
		// Spent whether it applied or was refused (a key it names did not
		// exist yet, its lifetime was too long): a signed statement is
		// decided once, so a copy cannot be replayed later when it would
		// apply. Only a statement short of signatures, or already past
		// not_after, leaves no nonce (signatures may still be added; an
		// expired one can never verify again).
		s.nonces[s.spentKey(st, op.Statement.Statement)] = st.NotAfterUnix
		s.pruneNonces()
		// Decided: no longer a proposal, however it arrived.
		delete(s.proposals, ProposalID(op.Statement.Statement))
	}
	s.seq++
	d.Record = rec
	return d
}

// governanceError maps a signature-check failure to a domain error.
func governanceError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, governance.ErrBadSignature), errors.Is(err, governance.ErrUnknownOfficer),
		errors.Is(err, governance.ErrInsufficientSignatures):
		return fmt.Errorf("%w: %v", ErrPermissionDenied, err)
	case errors.Is(err, governance.ErrExpired):
		return fmt.Errorf("%w: %v", ErrFailedPrecondition, err)
	default:
		return fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
}

// applyStatement carries out a verified statement. It checks everything
// before changing anything, so a refused statement changes nothing.
func (s *State) applyStatement(c *raftlogv1.Command, st *custosv1.Statement) (result, grantID string, err error) {
	now := c.TimeUnixNano
	key := func(name string) (*raftlogv1.KeyRecord, error) {
		k, ok := s.keys[name]
		if !ok {
			return nil, fmt.Errorf("%w: key %q", ErrNotFound, name)
		}
		return k, nil
	}
	switch op := st.Operation.(type) {
	case *custosv1.Statement_RevokeKey:
		k, err := key(op.RevokeKey.Key)
		if err != nil {
			return "", "", err
		}
		k.Revoked, k.UpdateTimeUnixNano = true, now
		return fmt.Sprintf("key %s revoked", k.Name), "", nil
	case *custosv1.Statement_DisableKey:
		k, err := key(op.DisableKey.Key)
		if err != nil {
			return "", "", err
		}
		k.Enabled, k.UpdateTimeUnixNano = false, now
		return fmt.Sprintf("key %s disabled", k.Name), "", nil
	case *custosv1.Statement_EnableKey:
		k, err := key(op.EnableKey.Key)
		if err != nil {
			return "", "", err
		}
		k.Enabled, k.Revoked, k.UpdateTimeUnixNano = true, false, now
		return fmt.Sprintf("key %s enabled", k.Name), "", nil
	case *custosv1.Statement_SetPolicy:
		k, err := key(op.SetPolicy.Key)
		if err != nil {
			return "", "", err
		}
		if err := ValidatePolicy(op.SetPolicy.Policy); err != nil {
			return "", "", err
		}
		p := proto.Clone(op.SetPolicy.Policy).(*custosv1.KeyPolicy)
		p.Version = k.Policy.GetVersion() + 1
		k.Policy, k.UpdateTimeUnixNano = p, now
		return fmt.Sprintf("key %s policy set to version %d", k.Name, p.Version), "", nil
	case *custosv1.Statement_ApproveRequest:
		r, err := s.pendingRequest(op.ApproveRequest.RequestId, now)
		if err != nil {
			return "", "", err
		}
		uses, ttl, err := grantBounds(op.ApproveRequest.Uses, op.ApproveRequest.TtlSeconds)
		if err != nil {
			return "", "", err
		}
		if _, taken := s.grants["g-"+r.RequestId]; taken && s.smv() >= 2 {
			return "", "", fmt.Errorf("%w: grant id g-%s is taken", ErrFailedPrecondition, r.RequestId)
		}
		g := &custosv1.Grant{GrantId: "g-" + r.RequestId, Principal: r.Principal, Key: r.Key, Reason: r.Reason,
			ContextDigest: r.ContextDigest, UsesLeft: uses, ExpireTimeUnixNano: now + ttl.Nanoseconds(), RequestId: r.RequestId}
		if len(r.DataDigest) > 0 {
			// The approval covers the ciphertext the request was for, not
			// every other one under the same key and context.
			g.DataDigests = [][]byte{slices.Clone(r.DataDigest)}
		}
		s.grants[g.GrantId] = g
		r.State, r.GrantId = custosv1.RequestState_REQUEST_STATE_APPROVED, g.GrantId
		return fmt.Sprintf("request %s approved as grant %s (%d uses, until %s)", r.RequestId, g.GrantId, uses,
			time.Unix(0, g.ExpireTimeUnixNano).UTC().Format(time.RFC3339)), g.GrantId, nil
	case *custosv1.Statement_DenyRequest:
		r, err := s.pendingRequest(op.DenyRequest.RequestId, now)
		if err != nil {
			return "", "", err
		}
		r.State = custosv1.RequestState_REQUEST_STATE_DENIED
		return fmt.Sprintf("request %s denied", r.RequestId), "", nil
	case *custosv1.Statement_CreateGrant:
		g := op.CreateGrant
		if _, err := key(g.Key); err != nil {
			return "", "", err
		}
		if g.Principal == "" || len(g.Principal) > maxPrincipalLen {
			return "", "", fmt.Errorf("%w: create_grant.principal is empty or too long", ErrInvalidArgument)
		}
		if len(g.ContextDigest) != 0 && len(g.ContextDigest) != sha256.Size {
			return "", "", fmt.Errorf("%w: create_grant.context_digest must be 32 bytes", ErrInvalidArgument)
		}
		if len(g.DataDigests) > maxGrantDataDigests || slices.ContainsFunc(g.DataDigests, func(d []byte) bool { return len(d) != sha256.Size }) {
			return "", "", fmt.Errorf("%w: create_grant.data_digests: at most %d, each 32 bytes", ErrInvalidArgument, maxGrantDataDigests)
		}
		uses, ttl, err := grantBounds(g.Uses, g.TtlSeconds)
		if err != nil {
			return "", "", err
		}
		id := "g-" + hex.EncodeToString(st.Nonce[:8])
		if _, taken := s.grants[id]; taken && s.smv() >= 2 {
			return "", "", fmt.Errorf("%w: grant id %s is taken", ErrFailedPrecondition, id)
		}
		s.grants[id] = &custosv1.Grant{GrantId: id, Principal: g.Principal, Key: g.Key, Reason: g.Reason,
			ContextDigest: g.ContextDigest, UsesLeft: uses, ExpireTimeUnixNano: now + ttl.Nanoseconds(), DataDigests: g.DataDigests}
		return fmt.Sprintf("grant %s created for %s on key %s (%d uses)", id, g.Principal, g.Key, uses), id, nil
	case *custosv1.Statement_RevokeGrant:
		if _, ok := s.grants[op.RevokeGrant.GrantId]; !ok {
			return "", "", fmt.Errorf("%w: grant %q", ErrNotFound, op.RevokeGrant.GrantId)
		}
		delete(s.grants, op.RevokeGrant.GrantId)
		return fmt.Sprintf("grant %s revoked", op.RevokeGrant.GrantId), "", nil
	case *custosv1.Statement_SetOfficers, *custosv1.Statement_AddOfficerCredential, *custosv1.Statement_RemoveOfficerCredential:
		if _, sets := op.(*custosv1.Statement_SetOfficers); !sets && s.smv() < 3 {
			return "", "", fmt.Errorf("%w: %s needs state machine version 3 (the cluster runs %d; docs/upgrades.md)",
				ErrFailedPrecondition, governance.OperationName(st), s.smv())
		}
		// Everything else (sinks, rules, profile, client authorities)
		// stays as it is.
		officers, quorum, _, err := governance.NextOfficers(s.gov.GetOfficers(), s.gov.GetQuorum(), st)
		if err != nil {
			return "", "", fmt.Errorf("%w: %s: %v", ErrInvalidArgument, governance.OperationName(st), err)
		}
		gov := proto.Clone(s.gov).(*custosv1.Governance)
		gov.ClusterId, gov.Officers, gov.Quorum, gov.Version = s.clusterID, officers, quorum, s.gov.GetVersion()+1
		set, err := governance.NewOfficerSetFromGovernance(gov)
		if err != nil {
			return "", "", fmt.Errorf("%w: %s: %v", ErrInvalidArgument, governance.OperationName(st), err)
		}
		prev := s.officers
		s.gov, s.officers = gov, set
		s.recheckProposals(prev)
		switch op := op.(type) {
		case *custosv1.Statement_AddOfficerCredential:
			return fmt.Sprintf("credential %s bound to officer %s", governance.CredentialIDString(op.AddOfficerCredential.Credential.GetCredentialId()),
				op.AddOfficerCredential.Officer), "", nil
		case *custosv1.Statement_RemoveOfficerCredential:
			// Its counter stays (s.credCounters): bound again, the
			// credential's old assertions remain behind it.
			return fmt.Sprintf("credential %s of officer %s removed", governance.CredentialIDString(op.RemoveOfficerCredential.CredentialId),
				op.RemoveOfficerCredential.Officer), "", nil
		}
		return fmt.Sprintf("officers set: %d officers, quorum %d", len(gov.Officers), gov.Quorum), "", nil
	case *custosv1.Statement_AddSink:
		sk := proto.Clone(op.AddSink.Sink).(*custosv1.Sink)
		if err := validateSink(sk); err != nil {
			return "", "", err
		}
		if s.sink(sk.Name) != nil {
			return "", "", fmt.Errorf("%w: sink %q", ErrAlreadyExists, sk.Name)
		}
		if len(s.gov.Sinks) >= maxSinks {
			return "", "", fmt.Errorf("%w: at most %d sinks", ErrResourceExhausted, maxSinks)
		}
		// Deliver from now on: earlier records are in the ledger export.
		sk.DeliveredSeq = s.seq
		s.gov.Sinks = append(s.gov.Sinks, sk)
		return fmt.Sprintf("sink %s added (%s)", sk.Name, sk.Type), "", nil
	case *custosv1.Statement_RemoveSink:
		i := slices.IndexFunc(s.gov.Sinks, func(x *custosv1.Sink) bool { return x.Name == op.RemoveSink.Name })
		if i < 0 {
			return "", "", fmt.Errorf("%w: sink %q", ErrNotFound, op.RemoveSink.Name)
		}
		s.gov.Sinks = slices.Delete(s.gov.Sinks, i, i+1)
		return fmt.Sprintf("sink %s removed", op.RemoveSink.Name), "", nil
	case *custosv1.Statement_SetNotifyRules:
		if err := validateNotifyRules(op.SetNotifyRules.Rules); err != nil {
			return "", "", err
		}
		s.gov.NotifyRules = proto.Clone(op.SetNotifyRules.Rules).(*custosv1.NotifyRules)
		return "notify rules set", "", nil
	case *custosv1.Statement_AdmitNode:
		r, err := s.applyAdmitNode(c, op.AdmitNode)
		return r, "", err
	case *custosv1.Statement_RevokeAdmission:
		r, err := s.applyRevokeAdmission(c, op.RevokeAdmission)
		return r, "", err
	case *custosv1.Statement_ScheduleKeyDestruction:
		r, err := s.applyScheduleDestruction(c, op.ScheduleKeyDestruction)
		return r, "", err
	case *custosv1.Statement_CancelKeyDestruction:
		r, err := s.applyCancelDestruction(c, op.CancelKeyDestruction)
		return r, "", err
	case *custosv1.Statement_AcceptRestore:
		r, err := s.applyAcceptRestore(c, op.AcceptRestore)
		return r, "", err
	case *custosv1.Statement_SetKeyMinVersion:
		k, err := key(op.SetKeyMinVersion.Key)
		if err != nil {
			return "", "", err
		}
		v := op.SetKeyMinVersion.MinDecryptionVersion
		if v < 1 || v > k.PrimaryVersion {
			return "", "", fmt.Errorf("%w: min_decryption_version %d: must be between 1 and the primary version %d", ErrInvalidArgument, v, k.PrimaryVersion)
		}
		was := k.MinDecryptionVersion
		k.MinDecryptionVersion, k.UpdateTimeUnixNano = v, now
		return fmt.Sprintf("key %s minimum decryption version set from %d to %d", k.Name, was, v), "", nil
	case *custosv1.Statement_SetQuotas:
		r, err := s.applySetQuotas(op.SetQuotas)
		return r, "", err
	case *custosv1.Statement_AddWitness:
		r, err := s.applyAddWitness(op.AddWitness)
		return r, "", err
	case *custosv1.Statement_RemoveWitness:
		r, err := s.applyRemoveWitness(op.RemoveWitness)
		return r, "", err
	case *custosv1.Statement_AddClientAuthority:
		r, err := s.applyAddClientAuthority(op.AddClientAuthority)
		return r, "", err
	case *custosv1.Statement_RemoveClientAuthority:
		r, err := s.applyRemoveClientAuthority(op.RemoveClientAuthority)
		return r, "", err
	case *custosv1.Statement_RotateDomainKey:
		r, err := s.applyRotateDomainKey(c)
		return r, "", err
	case *custosv1.Statement_CancelDomainKeyRotation:
		r, err := s.applyCancelRotation()
		return r, "", err
	default:
		return "", "", fmt.Errorf("%w: unknown statement operation", ErrInvalidArgument)
	}
}

func grantBounds(uses uint32, ttlSeconds int64) (uint32, time.Duration, error) {
	uses, ttl := keypolicy.GrantTerms(uses, ttlSeconds)
	if uses > maxGrantUses || ttlSeconds < 0 || ttl > maxGrantTTL {
		return 0, 0, fmt.Errorf("%w: grant uses must be at most %d and ttl_seconds between 0 and %d",
			ErrInvalidArgument, maxGrantUses, int64(maxGrantTTL/time.Second))
	}
	return uses, ttl, nil
}

// statementKey returns the key a statement is about, if any (for requests,
// the key of the request), so per-key reports include it.
func (s *State) statementKey(st *custosv1.Statement) string {
	switch op := st.Operation.(type) {
	case *custosv1.Statement_ApproveRequest:
		if r := s.requests[op.ApproveRequest.RequestId]; r != nil {
			return r.Key
		}
	case *custosv1.Statement_DenyRequest:
		if r := s.requests[op.DenyRequest.RequestId]; r != nil {
			return r.Key
		}
	case *custosv1.Statement_RevokeGrant:
		if g := s.grants[op.RevokeGrant.GrantId]; g != nil {
			return g.Key
		}
	case *custosv1.Statement_RevokeKey:
		return op.RevokeKey.Key
	case *custosv1.Statement_DisableKey:
		return op.DisableKey.Key
	case *custosv1.Statement_EnableKey:
		return op.EnableKey.Key
	case *custosv1.Statement_SetPolicy:
		return op.SetPolicy.Key
	case *custosv1.Statement_CreateGrant:
		return op.CreateGrant.Key
	case *custosv1.Statement_ScheduleKeyDestruction:
		return op.ScheduleKeyDestruction.Key
	case *custosv1.Statement_SetKeyMinVersion:
		return op.SetKeyMinVersion.Key
	case *custosv1.Statement_CancelKeyDestruction:
		return op.CancelKeyDestruction.Key
	}
	return ""
}

// pendingRequest returns a request that is still waiting at time now.
func (s *State) pendingRequest(id string, now int64) (*custosv1.ApprovalRequest, error) {
	r, ok := s.requests[id]
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: request %q", ErrNotFound, id)
	case r.State != custosv1.RequestState_REQUEST_STATE_PENDING:
		return nil, fmt.Errorf("%w: request %q was already decided (%s)", ErrFailedPrecondition, id, r.State)
	case now >= r.ExpireTimeUnixNano:
		r.State = custosv1.RequestState_REQUEST_STATE_EXPIRED
		return nil, fmt.Errorf("%w: request %q expired", ErrFailedPrecondition, id)
	}
	return r, nil
}

// addRequest records a PENDING decision as an approval request, and prunes
// requests decided or expired long ago.
func (s *State) addRequest(c *raftlogv1.Command, op *raftlogv1.Decide, seq uint64) {
	for id, r := range s.requests {
		if c.TimeUnixNano-r.ExpireTimeUnixNano > requestRetention.Nanoseconds() {
			delete(s.requests, id)
		}
	}
	s.requests[op.RequestId] = &custosv1.ApprovalRequest{
		RequestId: op.RequestId, Principal: c.Principal, Key: op.Key, KeyVersion: op.KeyVersion,
		Reason: op.Reason, JustificationText: op.JustificationText, Ticket: op.Ticket,
		ContextDigest: op.ContextDigest, DataDigest: op.DataDigest, CreateTimeUnixNano: c.TimeUnixNano,
		ExpireTimeUnixNano: c.TimeUnixNano + requestLifetime.Nanoseconds(),
		State:              custosv1.RequestState_REQUEST_STATE_PENDING, DecisionSeq: seq,
	}
}

// sameRequest reports whether a Decide asks again what request r asked:
// the same principal, key, version, reason, context and ciphertext (a
// caller retrying while it waits for approval).
func sameRequest(r *custosv1.ApprovalRequest, c *raftlogv1.Command, op *raftlogv1.Decide) bool {
	return r.Principal == c.Principal && r.Key == op.Key && r.KeyVersion == op.KeyVersion && r.Reason == op.Reason &&
		bytes.Equal(r.ContextDigest, op.ContextDigest) && bytes.Equal(r.DataDigest, op.DataDigest)
}

// pendingOf counts the principal's requests still waiting.
func (s *State) pendingOf(principal string) uint32 {
	var n uint32
	for _, r := range s.requests {
		if r.Principal == principal && r.State == custosv1.RequestState_REQUEST_STATE_PENDING {
			n++
		}
	}
	return n
}

// matchGrant returns the grant (lowest id first, for determinism) that
// covers this decrypt, or nil.
func (s *State) matchGrant(c *raftlogv1.Command, op *raftlogv1.Decide) *custosv1.Grant {
	var best *custosv1.Grant
	for _, g := range s.grants {
		if g.Principal != c.Principal || g.Key != op.Key || g.Reason != op.Reason || g.UsesLeft == 0 ||
			c.TimeUnixNano >= g.ExpireTimeUnixNano {
			continue
		}
		if len(g.ContextDigest) > 0 && string(g.ContextDigest) != string(op.ContextDigest) {
			continue
		}
		if len(g.DataDigests) > 0 && !slices.ContainsFunc(g.DataDigests, func(d []byte) bool { return bytes.Equal(d, op.DataDigest) }) {
			continue
		}
		if best == nil || g.GrantId < best.GrantId {
			best = g
		}
	}
	return best
}

// countUse applies an ALLOW's effects: a grant use, the hourly counter.
func (s *State) countUse(c *raftlogv1.Command, op *raftlogv1.Decide) {
	k := s.keys[op.Key]
	if k == nil {
		return
	}
	if a, _ := policyAction(k.Policy, op.Reason); a != custosv1.Action_ACTION_ALLOW {
		if g := s.matchGrant(c, op); g != nil {
			g.UsesLeft--
			if g.UsesLeft == 0 {
				delete(s.grants, g.GrantId)
			}
		}
	}
	if k.Policy.MaxDecryptsPerPrincipalPerHour == 0 {
		return
	}
	hour := c.TimeUnixNano / int64(time.Hour)
	id := op.Key + "\x00" + c.Principal
	rc := s.counters[id]
	if rc == nil || rc.Hour != hour {
		rc = &raftlogv1.RateCounter{Key: op.Key, Principal: c.Principal, Hour: hour}
		s.counters[id] = rc
	}
	rc.Count++
}

// usesThisHour returns the principal's allowed decrypts of the key in the
// current hour (a fixed window, in the command's effective time: the
// state's clock, so the hours never go back).
func (s *State) usesThisHour(c *raftlogv1.Command, op *raftlogv1.Decide) uint32 {
	rc := s.counters[op.Key+"\x00"+c.Principal]
	if rc == nil || rc.Hour != c.TimeUnixNano/int64(time.Hour) {
		return 0
	}
	return rc.Count
}

// pruneNonces forgets the nonces of statements whose not_after is behind
// the state's clock. Only then: the clock never goes back and a statement
// is verified at the command's effective time, which is never behind it, so
// such a statement is refused as expired whenever it comes back, while one
// whose not_after is not yet behind the clock could still verify and is
// refused only by its nonce. Pruning against a command's own stamp instead
// (as before the clock existed) let a later, back-dated command apply the
// statement again.
// spentKey is what a decided statement leaves in s.nonces. Before state
// machine version 3 it is the nonce alone; from version 3 the nonce and
// the SHA-256 of the statement bytes, so that a statement of one officer
// that copies the nonce of another's waiting proposal spends only itself.
func (s *State) spentKey(st *custosv1.Statement, b []byte) string {
	if s.smv() < 3 {
		return string(st.Nonce)
	}
	h := sha256.Sum256(b)
	return string(st.Nonce) + string(h[:])
}

// spent says whether statement bytes b (parsed st) were decided: under
// its key, or under its nonce alone as releases before version 3 kept it.
func (s *State) spent(st *custosv1.Statement, b []byte) bool {
	_, legacy := s.nonces[string(st.Nonce)]
	_, used := s.nonces[s.spentKey(st, b)]
	return legacy || used
}

func (s *State) pruneNonces() {
	for n, na := range s.nonces {
		if nonceExpired(na, s.clock) {
			delete(s.nonces, n)
		}
	}
}

// nonceExpired reports whether a statement with this not_after (Unix
// seconds) can no longer verify at clock (Unix nanoseconds) or later:
// governance.OfficerSet.Verify refuses it when the time is after not_after.
func nonceExpired(notAfterUnix, clock int64) bool {
	return time.Unix(0, clock).After(time.Unix(notAfterUnix, 0))
}

// OfficerKey returns the named officer's key, or nil.
func (s *State) OfficerKey(name string) *ecdsa.PublicKey {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.officers == nil {
		return nil
	}
	return s.officers.PublicKey(name)
}

// Governance returns the officer set and quorum.
func (s *State) Governance() *custosv1.Governance {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.gov == nil {
		return &custosv1.Governance{}
	}
	g := proto.Clone(s.gov).(*custosv1.Governance)
	g.RestoreId = s.restore.GetRestoreId()
	if s.genesis != nil {
		g.GenesisSha256 = hex.EncodeToString(s.genesis)
	}
	for _, sk := range g.Sinks {
		sk.HmacKey = nil // a secret: never read back
	}
	return g
}

// Request returns an approval request; its state reads EXPIRED once past
// its expiry at time now.
func (s *State) Request(id string, now time.Time) (*custosv1.ApprovalRequest, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.requests[id]
	if !ok {
		return nil, fmt.Errorf("%w: request %q", ErrNotFound, id)
	}
	out := proto.Clone(r).(*custosv1.ApprovalRequest)
	if out.State == custosv1.RequestState_REQUEST_STATE_PENDING && now.UnixNano() >= out.ExpireTimeUnixNano {
		out.State = custosv1.RequestState_REQUEST_STATE_EXPIRED
	}
	return out, nil
}

// PendingRequests lists requests still waiting at time now, optionally for
// one key, oldest first.
func (s *State) PendingRequests(key string, now time.Time) []*custosv1.ApprovalRequest {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*custosv1.ApprovalRequest
	for _, r := range s.requests {
		if r.State == custosv1.RequestState_REQUEST_STATE_PENDING && now.UnixNano() < r.ExpireTimeUnixNano &&
			(key == "" || r.Key == key) {
			out = append(out, proto.Clone(r).(*custosv1.ApprovalRequest))
		}
	}
	slices.SortFunc(out, func(a, b *custosv1.ApprovalRequest) int {
		return cmp.Compare(a.DecisionSeq, b.DecisionSeq)
	})
	return out
}

// Grants lists grants still in force at time now, optionally for one key.
func (s *State) Grants(key string, now time.Time) []*custosv1.Grant {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*custosv1.Grant
	for _, g := range s.grants {
		if g.UsesLeft > 0 && now.UnixNano() < g.ExpireTimeUnixNano && (key == "" || g.Key == key) {
			out = append(out, proto.Clone(g).(*custosv1.Grant))
		}
	}
	slices.SortFunc(out, func(a, b *custosv1.Grant) int { return cmp.Compare(a.GrantId, b.GrantId) })
	return out
}
