package kms

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// Proposals (docs/console.md, *Proposals*): a statement that needs more
// signatures than one officer can give waits in the replicated state while
// officers sign it one after another, each from wherever they are (the
// console, `custos officer sign --proposal`). Every signature is checked as
// it is added; the statement is applied, through the same path as Submit,
// by the command that brings its signatures to what it needs. A proposal
// changes no governed state and writes no record: the record of the
// statement, when it applies, carries every signature.

// Bounds (docs/console.md, *Proposals*). A statement that arrives with
// every signature it needs applies at once and takes no place. Whoever
// fills places cannot take another's: a new proposal beyond a bound is
// refused, never one already stored evicted.
const (
	// maxProposals bounds the stored proposals.
	maxProposals = 64
	// maxProposalsPerOfficer bounds the proposals one officer made (the
	// first signature's officer).
	maxProposalsPerOfficer = 16
	// maxProofOnlyProposals bounds the proposals no officer signed yet
	// (an AddOfficerCredential with its credential's proof and the
	// enrolment code of the officer it is for). There is at most one for
	// each officer, and each is forgotten after proofOnlyLifetime unless
	// an officer signs it.
	maxProofOnlyProposals = 8
	proofOnlyLifetime     = time.Hour
	// maxEnrolmentCode bounds ProposeRequest.enrolment (8 bytes of time
	// and an ECDSA signature).
	maxEnrolmentCode = 128
)

// ProposalID is the id of the proposal of statement bytes: hex of the first
// 8 bytes of their SHA-256, the request id of the statement's governance
// record.
func ProposalID(statement []byte) string {
	h := sha256.Sum256(statement)
	return hex.EncodeToString(h[:8])
}

// checkCounters refuses a WebAuthn signature whose counter does not advance
// past the newest one accepted from its credential.
func (s *State) checkCounters(uses []governance.SignatureUse) error {
	for _, u := range uses {
		if u.CredentialID == nil {
			continue
		}
		if last := s.credCounters[string(u.CredentialID)]; !governance.CounterAdvances(last, u.SignCount) {
			return fmt.Errorf("%w: officer %q: the security key's signature counter %d does not advance past %d (a cloned authenticator, or a replayed assertion)",
				ErrPermissionDenied, u.Officer, u.SignCount, last)
		}
	}
	return nil
}

// keepCounters records the counters of accepted WebAuthn signatures.
func (s *State) keepCounters(uses []governance.SignatureUse) {
	for _, u := range uses {
		if u.CredentialID != nil {
			s.credCounters[string(u.CredentialID)] = u.SignCount
		}
	}
}

// pruneProposals forgets proposals whose statement expired, and proof-only
// ones no officer signed within proofOnlyLifetime.
func (s *State) pruneProposals() {
	for id, p := range s.proposals {
		if !s.proposalLive(p, time.Unix(0, s.clock)) {
			delete(s.proposals, id)
		}
	}
}

// recheckProposals follows a change of the officer set from prev: a
// signature that no longer verifies (its officer removed, or given another
// key or without that credential) is dropped, and so is a proposal it left
// with none. A proposal made with no signature (proof-only, enrolled by its
// officer's code) stays only while that officer keeps the key that signed
// the code.
func (s *State) recheckProposals(prev *governance.OfficerSet) {
	for id, p := range s.proposals {
		if len(p.Signatures) == 0 {
			st, err := governance.Parse(p.Statement)
			officer := st.GetAddOfficerCredential().GetOfficer()
			was, is := prev.PublicKey(officer), s.officers.PublicKey(officer)
			if err != nil || was == nil || is == nil || !was.Equal(is) {
				delete(s.proposals, id)
			}
			continue
		}
		var keep []*custosv1.OfficerSignature
		for _, sig := range p.Signatures {
			if _, err := s.officers.CheckSignature(p.Statement, sig); err == nil {
				keep = append(keep, sig)
			}
		}
		if len(keep) == 0 {
			delete(s.proposals, id)
			continue
		}
		p.Signatures = keep
	}
}

// proposeCheck is what a Propose command would do to the state, decided
// without changing it: the statement, its stored proposal (nil if new),
// the signatures it adds, their uses and the proof it brings.
type proposeCheck struct {
	st       *custosv1.Statement
	b        []byte
	id       string
	p        *custosv1.Proposal
	add      []*custosv1.OfficerSignature
	uses     []governance.SignatureUse
	proof    *custosv1.WebAuthnAssertion
	complete bool
	// enrolment: the code a proof-only proposal was made with, spent
	// when it is stored.
	enrolment []byte
}

// enrolmentKey is what a used enrolment code leaves in State.nonces (until
// its not_after): a code serves one registration.
func enrolmentKey(code []byte) string {
	h := sha256.Sum256(code)
	return "enrolment:" + string(h[:])
}

// checkPropose decides a Propose command against the state without
// changing it (applyPropose, and the service before anything is proposed:
// a refused proposal is no decision, so it never enters the log).
func (s *State) checkPropose(now time.Time, op *raftlogv1.Propose) (*proposeCheck, error) {
	if s.smv() < 3 {
		return nil, fmt.Errorf("%w: proposals need state machine version 3 (the cluster runs %d; docs/upgrades.md)", ErrFailedPrecondition, s.smv())
	}
	if s.officers == nil {
		return nil, fmt.Errorf("%w: cluster not initialised", ErrFailedPrecondition)
	}
	ss := op.GetStatement()
	if err := checkSignatureSizes(ss.GetSignatures(), op.GetProof()); err != nil {
		return nil, err
	}
	b := ss.GetStatement()
	st, err := governance.ParseAt(b, s.smv())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	notAfter := time.Unix(st.NotAfterUnix, 0)
	switch {
	case st.ClusterId != s.clusterID:
		return nil, fmt.Errorf("%w: statement names cluster %q, this is %q", ErrInvalidArgument, st.ClusterId, s.clusterID)
	case now.After(notAfter):
		return nil, fmt.Errorf("%w: the statement expired at %s", ErrFailedPrecondition, notAfter.UTC().Format(time.RFC3339))
	case notAfter.Sub(now) > governance.MaxLifetime:
		return nil, fmt.Errorf("%w: not_after is more than %s ahead", ErrInvalidArgument, governance.MaxLifetime)
	}
	if s.spent(st, b) {
		return nil, fmt.Errorf("%w: statement already decided (replayed nonce)", ErrFailedPrecondition)
	}
	if err := s.checkRestoreID(st); err != nil {
		return nil, err
	}
	k := &proposeCheck{st: st, b: b, id: ProposalID(b)}
	if p := s.proposals[k.id]; p != nil && s.proposalLive(p, now) {
		if !bytes.Equal(p.Statement, b) {
			return nil, fmt.Errorf("%w: proposal id %s is another statement's", ErrFailedPrecondition, k.id)
		}
		k.p = p
	}
	// Check every new signature before changing anything.
	signed := map[string]bool{}
	if k.p != nil {
		for _, sig := range k.p.Signatures {
			signed[sig.Officer] = true
		}
	}
	for _, sig := range ss.GetSignatures() {
		if signed[sig.GetOfficer()] {
			continue // the first signature of an officer stays
		}
		u, err := s.officers.CheckSignature(b, sig)
		if err != nil {
			return nil, governanceError(err)
		}
		signed[u.Officer] = true
		k.add = append(k.add, sig)
		k.uses = append(k.uses, u)
	}
	if err := s.checkCounters(k.uses); err != nil {
		return nil, err
	}
	if op.GetProof() != nil {
		ac := st.GetAddOfficerCredential()
		if ac == nil {
			return nil, fmt.Errorf("%w: a proof goes only with an add_officer_credential statement", ErrInvalidArgument)
		}
		if _, err := governance.VerifyAssertion(ac.Credential, governance.SignedDigest(b), op.GetProof()); err != nil {
			return nil, fmt.Errorf("%w: the proof is not by the credential the statement adds: %v", ErrPermissionDenied, err)
		}
		if k.p == nil || k.p.Proof == nil {
			k.proof = op.GetProof()
		}
	}
	have := 0
	if k.p != nil {
		have = len(k.p.Signatures)
	}
	k.complete = have+len(k.add) >= s.officers.Needed(st)
	switch {
	case k.complete:
		return k, nil
	case len(k.add) == 0 && k.proof == nil:
		if k.p != nil {
			return nil, fmt.Errorf("%w: proposal %s already holds these signatures", ErrAlreadyExists, k.id)
		}
		return nil, fmt.Errorf("%w: a proposal needs an officer's signature (or, to add a credential, its proof)", ErrInvalidArgument)
	case k.p == nil:
		if err := s.roomForProposal(st, k.add, now); err != nil {
			return nil, err
		}
		if len(k.add) == 0 {
			// Proof-only: the officer it is for enrolled it, with a code
			// not used before.
			ac := st.GetAddOfficerCredential()
			code := op.GetEnrolment()
			if err := governance.VerifyEnrolment(s.officers.PublicKey(ac.GetOfficer()), s.clusterID, ac.GetOfficer(), code, now); err != nil {
				return nil, fmt.Errorf("%w: a security key proposed with no officer's signature needs the enrolment code of the officer it is for (custos officer enrol): %v", ErrPermissionDenied, err)
			}
			if _, used := s.nonces[enrolmentKey(code)]; used {
				return nil, fmt.Errorf("%w: officer %q's enrolment code was used already: print a new one (custos officer enrol)", ErrPermissionDenied, ac.GetOfficer())
			}
			k.enrolment = code
		}
	case have == 0 && len(k.add) > 0:
		// The first officer to sign a proof-only proposal makes it
		// theirs: it counts against their bound from now on.
		if err := s.officerRoom(k.add[0].GetOfficer(), now); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// proposalLive says whether p still waits at now (not expired; a proof-only
// one not older than proofOnlyLifetime). pruneProposals forgets the others.
func (s *State) proposalLive(p *custosv1.Proposal, now time.Time) bool {
	st, err := governance.Parse(p.Statement)
	if err != nil || now.Unix() > st.NotAfterUnix {
		return false
	}
	return len(p.Signatures) > 0 || now.UnixNano()-p.CreateTimeUnixNano <= int64(proofOnlyLifetime)
}

// CheckPropose says what applying a Propose command now would refuse, from
// this node's state at the command's time (nil: it may be proposed).
func (s *State) CheckPropose(c *raftlogv1.Command) error {
	op := c.GetPropose()
	if op == nil {
		return fmt.Errorf("%w: not a proposal", ErrInvalidArgument)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, err := s.checkPropose(time.Unix(0, max(c.TimeUnixNano, s.clock)), op)
	return err
}

// applyPropose stores a proposal or adds signatures to one, and applies the
// statement once they suffice (state machine version 3).
func (s *State) applyPropose(index uint64, c *raftlogv1.Command, op *raftlogv1.Propose) any {
	s.pruneProposals()
	k, err := s.checkPropose(time.Unix(0, s.clock), op)
	if err != nil {
		return err
	}
	var sigs []*custosv1.OfficerSignature
	if k.p != nil {
		sigs = slices.Clip(k.p.Signatures)
	}
	for _, sig := range k.add {
		sigs = append(sigs, proto.Clone(sig).(*custosv1.OfficerSignature))
	}
	s.keepCounters(k.uses)
	if k.complete {
		// Applied now, through the path Submit takes.
		delete(s.proposals, k.id)
		return s.applyGovernChecked(index, c, &raftlogv1.Govern{Statement: &custosv1.SignedStatement{Statement: k.b, Signatures: sigs}}, true)
	}
	p := k.p
	if p == nil {
		p = &custosv1.Proposal{Id: k.id, Statement: slices.Clone(k.b), Proposer: c.Principal, CreateTimeUnixNano: s.clock}
		s.proposals[k.id] = p
	}
	if k.proof != nil {
		p.Proof = proto.Clone(k.proof).(*custosv1.WebAuthnAssertion)
	}
	if k.enrolment != nil {
		s.nonces[enrolmentKey(k.enrolment)] = governance.EnrolmentNotAfter(k.enrolment)
	}
	p.Signatures = sigs
	return &Decision{Result: fmt.Sprintf("proposal %s: %d of %d signatures", k.id, len(p.Signatures), s.officers.Needed(k.st))}
}

// checkSignatureSizes refuses signatures and a proof larger than any the
// state machine accepts, before they could enter the log.
func checkSignatureSizes(sigs []*custosv1.OfficerSignature, proof *custosv1.WebAuthnAssertion) error {
	if len(sigs) > maxSignatures {
		return fmt.Errorf("%w: signatures: more than %d", ErrInvalidArgument, maxSignatures)
	}
	for i, sig := range sigs {
		if err := governance.CheckSignatureSize(sig); err != nil {
			return fmt.Errorf("%w: signatures[%d]: %v", ErrInvalidArgument, i, err)
		}
	}
	if proof != nil {
		if err := governance.CheckAssertionSize(proof); err != nil {
			return fmt.Errorf("%w: proof: %v", ErrInvalidArgument, err)
		}
	}
	return nil
}

// roomForProposal refuses a new proposal of st beyond the bounds: all
// proposals, those of the officer whose signature it carries first, and
// proof-only ones (add empty), which must also name an officer with no
// other proof-only proposal, and would apply to today's officer set.
func (s *State) roomForProposal(st *custosv1.Statement, add []*custosv1.OfficerSignature, now time.Time) error {
	live := 0
	for _, p := range s.proposals {
		if s.proposalLive(p, now) {
			live++
		}
	}
	if live >= maxProposals {
		return fmt.Errorf("%w: %d proposals are waiting; sign or let some expire first", ErrResourceExhausted, maxProposals)
	}
	if len(add) > 0 {
		return s.officerRoom(add[0].GetOfficer(), now)
	}
	ac := st.GetAddOfficerCredential()
	officers, quorum, _, err := governance.NextOfficers(s.gov.GetOfficers(), s.gov.GetQuorum(), st)
	if err == nil {
		_, err = governance.NewOfficerSet(officers, quorum)
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidArgument, governance.OperationName(st), err)
	}
	n := 0
	for _, p := range s.proposals {
		if len(p.Signatures) > 0 || !s.proposalLive(p, now) {
			continue
		}
		n++
		if other, _ := governance.Parse(p.Statement); other.GetAddOfficerCredential().GetOfficer() == ac.GetOfficer() {
			return fmt.Errorf("%w: a security key for officer %q already waits for the officers' signatures (proposal %s, until %s): sign it, or register again after that",
				ErrFailedPrecondition, ac.GetOfficer(), p.Id, time.Unix(0, p.CreateTimeUnixNano).Add(proofOnlyLifetime).UTC().Format(time.RFC3339))
		}
	}
	if n >= maxProofOnlyProposals {
		return fmt.Errorf("%w: %d security keys already wait for the officers' signatures; sign them or wait an hour", ErrResourceExhausted, n)
	}
	return nil
}

// officerRoom refuses one more proposal made by officer beyond
// maxProposalsPerOfficer (a proposal is made by the officer whose signature
// it holds first).
func (s *State) officerRoom(officer string, now time.Time) error {
	n := 0
	for _, p := range s.proposals {
		if len(p.Signatures) > 0 && p.Signatures[0].GetOfficer() == officer && s.proposalLive(p, now) {
			n++
		}
	}
	if n >= maxProposalsPerOfficer {
		return fmt.Errorf("%w: officer %q made %d proposals that are waiting; sign or let some expire first", ErrResourceExhausted, officer, n)
	}
	return nil
}

// Proposals returns the stored proposals not yet expired at now, oldest
// first, each with its signers, the signatures it needs from the officers
// now, and its description.
func (s *State) Proposals(now time.Time) []*custosv1.Proposal {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*custosv1.Proposal
	for _, id := range sortedKeys(s.proposals) {
		p := proto.Clone(s.proposals[id]).(*custosv1.Proposal)
		if !s.proposalLive(p, now) {
			continue
		}
		st, _ := governance.Parse(p.Statement)
		for _, sig := range p.Signatures {
			p.Signers = append(p.Signers, sig.Officer)
		}
		slices.Sort(p.Signers)
		if s.officers != nil {
			p.Needed = uint32(s.officers.Needed(st))
		}
		p.Description = governance.Describe(st)
		out = append(out, p)
	}
	slices.SortStableFunc(out, func(a, b *custosv1.Proposal) int {
		switch {
		case a.CreateTimeUnixNano < b.CreateTimeUnixNano:
			return -1
		case a.CreateTimeUnixNano > b.CreateTimeUnixNano:
			return 1
		}
		return 0
	})
	return out
}

// Propose stores a statement waiting for signatures, or adds signatures to
// the stored one with the same bytes; once they suffice the statement is
// applied as Submit would, and the response carries what Submit returns.
// Each signature is checked as it is added (governance.CheckSignature,
// WebAuthn counters included); a refused one changes nothing.
func (s *Service) Propose(ctx context.Context, p Principal, req *custosv1.ProposeRequest) (*custosv1.ProposeResponse, error) {
	ss := req.GetStatement()
	switch {
	case len(ss.GetStatement()) == 0:
		return nil, fmt.Errorf("%w: statement is empty", ErrInvalidArgument)
	case len(ss.GetStatement()) > governance.MaxStatementSize:
		return nil, fmt.Errorf("%w: statement is larger than %d bytes", ErrInvalidArgument, governance.MaxStatementSize)
	case len(ss.GetSignatures()) == 0 && req.GetProof() == nil:
		return nil, fmt.Errorf("%w: signatures: a proposal needs an officer signature (or, to add a credential, its proof)", ErrInvalidArgument)
	}
	if err := checkSignatureSizes(ss.GetSignatures(), req.GetProof()); err != nil {
		return nil, err
	}
	if len(req.GetEnrolment()) > maxEnrolmentCode {
		return nil, fmt.Errorf("%w: enrolment: more than %d bytes", ErrInvalidArgument, maxEnrolmentCode)
	}
	if err := s.ready(); err != nil {
		return nil, err
	}
	cmd := &raftlogv1.Command{Op: &raftlogv1.Command_Propose{Propose: &raftlogv1.Propose{Statement: ss, Proof: req.GetProof(), Enrolment: req.GetEnrolment()}}}
	if err := s.throttle(p, "", cmd); err != nil {
		return nil, err
	}
	// A proposal this node's state refuses is refused here: it would be
	// no decision and leave no record, so it never enters the log
	// (refusals count against the refusal quota above).
	if err := s.state.CheckPropose(cmd); err != nil {
		return nil, err
	}
	res, err := s.apply(ctx, p, cmd)
	if err != nil {
		return nil, err
	}
	d, ok := res.(*Decision)
	if !ok {
		return nil, fmt.Errorf("%w: unexpected proposal result %T", ErrInternal, res)
	}
	if d.Record != nil {
		// The statement applied (or was refused) as a governance record.
		if err := s.caughtUp(ctx, d); err != nil {
			return nil, err
		}
		if d.Err != nil {
			return nil, fmt.Errorf("%w (ledger %d)", d.Err, d.Record.Seq)
		}
		s.lg.Info("governance statement applied", "result", d.Result, "signers", d.Record.Signers, "seq", d.Record.Seq)
		return &custosv1.ProposeResponse{Applied: &custosv1.SubmitResponse{Result: d.Result, Signers: d.Record.Signers,
			LedgerSeq: d.Record.Seq, GrantId: d.GrantID}}, nil
	}
	if err := s.linearize(ctx); err != nil {
		return nil, err
	}
	id := ProposalID(ss.GetStatement())
	for _, pr := range s.state.Proposals(s.now()) {
		if pr.Id == id {
			return &custosv1.ProposeResponse{Proposal: pr}, nil
		}
	}
	return nil, fmt.Errorf("%w: proposal %s is gone (applied or expired since)", ErrNotFound, id)
}

// ListProposals lists the proposals waiting for signatures.
func (s *Service) ListProposals(ctx context.Context, p Principal, _ *custosv1.ListProposalsRequest) (*custosv1.ListProposalsResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	return &custosv1.ListProposalsResponse{Proposals: s.state.Proposals(s.now())}, nil
}

// CredentialCounter returns the newest signature counter the cluster
// accepted from a WebAuthn credential (0 if none).
func (s *State) CredentialCounter(id []byte) uint32 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.credCounters[string(id)]
}
