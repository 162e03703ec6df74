package kms

import (
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// Node admission in the replicated state (docs/key-transport.md,
// *Admission*): which nodes are custodians of the domain key, and where each
// other node is on its way there. Every step is a command, so every replica
// agrees on it and the ledger records it:
//
//	OfferTransportKey  (the node itself)      → OFFERED
//	AdmitNode          (officer quorum)       → APPROVED
//	TransportDomainKey (an admitted node)     → SENT
//	ConfirmAdmission   (the node itself)      → ADMITTED
//	RevokeAdmission    (one officer), or the node leaving the Raft
//	                   configuration          → REVOKED
//
// The node that initialised the cluster is admitted by InitCluster.

// ProfileDevelopment names the development profile: a cluster whose
// genesis set it accepts RSA-OAEP-SHA1 key transport, which is not
// CRYPTREC-listed (invariant 7 (b) of docs/architecture.md). SoftHSM 2.6.1
// wraps with OAEP over SHA-1 only.
const ProfileDevelopment = "development"

// transportBlobLen is the size of a domain key wrapped with RSA-OAEP-3072.
const transportBlobLen = hsm.TransportKeyBits / 8

// admissionOf returns node's admission entry, creating an empty one.
func (s *State) admissionOf(node string) *custosv1.NodeAdmission {
	a, ok := s.admissions[node]
	if !ok {
		a = &custosv1.NodeAdmission{Node: node}
		s.admissions[node] = a
	}
	return a
}

// parseTransportKey decodes a transport public key (PKIX DER) and returns it
// with its fingerprint.
func parseTransportKey(der []byte) (*rsa.PublicKey, string, error) {
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, "", fmt.Errorf("%w: transport public key: %v", ErrInvalidArgument, err)
	}
	pub, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, "", fmt.Errorf("%w: transport public key is a %T, not RSA", ErrInvalidArgument, k)
	}
	fp, err := hsm.TransportFingerprint(pub)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	return pub, fp, nil
}

// applyOfferTransportKey records the proposing node's transport key.
func (s *State) applyOfferTransportKey(c *raftlogv1.Command, op *raftlogv1.OfferTransportKey) any {
	if s.clusterID == "" {
		return fmt.Errorf("%w: cluster not initialised", ErrFailedPrecondition)
	}
	if op.Rotation {
		return s.applyRotationOffer(c, op)
	}
	if op.Node == "" || op.Node != c.Node {
		return fmt.Errorf("%w: a node offers only its own transport key", ErrPermissionDenied)
	}
	_, fp, err := parseTransportKey(op.PublicKey)
	if err != nil {
		return err
	}
	a := s.admissionOf(op.Node)
	if a.State == custosv1.AdmissionState_ADMISSION_STATE_ADMITTED {
		return fmt.Errorf("%w: node %s is already admitted", ErrFailedPrecondition, op.Node)
	}
	// A new key replaces the old one (the node restarted: its session
	// key is gone) and needs the officers' approval again. A revoked node
	// stays revoked until officers admit it again: an offer alone undoes
	// nothing.
	state := custosv1.AdmissionState_ADMISSION_STATE_OFFERED
	if a.State == custosv1.AdmissionState_ADMISSION_STATE_REVOKED {
		state = a.State
	}
	s.admissionsVersion++
	*a = custosv1.NodeAdmission{Node: op.Node, State: state,
		TransportPublicKey: slices.Clone(op.PublicKey), TransportKeyFingerprint: fp, UpdateTimeUnixNano: c.TimeUnixNano}
	return nil
}

// applyAdmitNode carries out an AdmitNode statement.
func (s *State) applyAdmitNode(c *raftlogv1.Command, op *custosv1.AdmitNode) (string, error) {
	if op.DomainKeyRotation {
		return s.applyRotationApproval(c, op)
	}
	a, ok := s.admissions[op.Node]
	switch {
	case s.rotation != nil:
		return "", ErrRotating
	case op.Hash == custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA1 && s.gov.GetProfile() != ProfileDevelopment:
		return "", fmt.Errorf("%w: RSA-OAEP-SHA1 key transport is not CRYPTREC-listed: only a cluster with the development profile accepts it (use SHA256)", ErrFailedPrecondition)
	case !ok || a.TransportKeyFingerprint == "":
		return "", fmt.Errorf("%w: node %s has offered no transport key (is it running and a member?)", ErrFailedPrecondition, op.Node)
	case a.State == custosv1.AdmissionState_ADMISSION_STATE_ADMITTED:
		return "", fmt.Errorf("%w: node %s is already admitted", ErrFailedPrecondition, op.Node)
	case a.State == custosv1.AdmissionState_ADMISSION_STATE_SENT:
		return "", fmt.Errorf("%w: the domain key was already sent to node %s", ErrFailedPrecondition, op.Node)
	case a.TransportKeyFingerprint != op.TransportKeyFingerprint:
		return "", fmt.Errorf("%w: node %s's transport key is %s, not the approved %s (did it restart? approve its current key)",
			ErrFailedPrecondition, op.Node, a.TransportKeyFingerprint, op.TransportKeyFingerprint)
	}
	if id := s.identityFingerprint(op.Node); id != op.IdentityKeyFingerprint {
		return "", fmt.Errorf("%w: node %s's HSM identity key is %q, not the approved %s", ErrFailedPrecondition, op.Node, id, op.IdentityKeyFingerprint)
	}
	s.admissionsVersion++
	a.State = custosv1.AdmissionState_ADMISSION_STATE_APPROVED
	a.ApprovedFingerprint, a.IdentityKeyFingerprint, a.Hash = op.TransportKeyFingerprint, op.IdentityKeyFingerprint, op.Hash
	a.WrappedDomainKey, a.SentBy, a.UpdateTimeUnixNano = nil, "", c.TimeUnixNano
	return fmt.Sprintf("node %s admitted: transport key %s, %s; waiting for a holder whose HSM officer trusts the key",
		op.Node, op.TransportKeyFingerprint, op.Hash), nil
}

// identityFingerprint is the fingerprint of the checkpoint key node
// registered last (its HSM identity key), or "".
func (s *State) identityFingerprint(node string) string {
	for i := len(s.nodeKeys) - 1; i >= 0; i-- {
		if k := s.nodeKeys[i]; k.Node == node {
			if pub, err := governance.ParsePublicKey(k.PublicKey); err == nil {
				return governance.Fingerprint(pub)
			}
		}
	}
	return ""
}

// applyRevokeAdmission carries out a RevokeAdmission statement.
func (s *State) applyRevokeAdmission(c *raftlogv1.Command, op *custosv1.RevokeAdmission) (string, error) {
	a, ok := s.admissions[op.Node]
	if !ok || a.State == custosv1.AdmissionState_ADMISSION_STATE_REVOKED {
		return "", fmt.Errorf("%w: node %s has no admission to revoke", ErrNotFound, op.Node)
	}
	if a.State == custosv1.AdmissionState_ADMISSION_STATE_ADMITTED && s.admittedCount() == 1 {
		return "", fmt.Errorf("%w: node %s is the only custodian of the domain key: admit another node first", ErrFailedPrecondition, op.Node)
	}
	s.revokeAdmission(a, c.TimeUnixNano)
	return fmt.Sprintf("admission of node %s revoked", op.Node), nil
}

// revokeAdmission marks a revoked and forgets its keys.
func (s *State) revokeAdmission(a *custosv1.NodeAdmission, now int64) {
	if s.rotation != nil && s.rotation.Generator == a.Node {
		// Only the generator's HSM holds the new key for sure: the
		// rotation cannot go on without it.
		s.abandonRotation()
	}
	s.admissionsVersion++
	*a = custosv1.NodeAdmission{Node: a.Node, State: custosv1.AdmissionState_ADMISSION_STATE_REVOKED,
		TransportKeyFingerprint: a.TransportKeyFingerprint, UpdateTimeUnixNano: now}
}

// admittedCount counts the admitted nodes.
func (s *State) admittedCount() int {
	n := 0
	for _, a := range s.admissions {
		if a.State == custosv1.AdmissionState_ADMISSION_STATE_ADMITTED {
			n++
		}
	}
	return n
}

// applyTransportDomainKey records the domain key a holder wrapped for an
// approved node.
func (s *State) applyTransportDomainKey(index uint64, c *raftlogv1.Command, op *raftlogv1.TransportDomainKey) any {
	if s.clusterID == "" {
		return fmt.Errorf("%w: cluster not initialised", ErrFailedPrecondition)
	}
	if op.Rotation {
		return s.applyRotationSend(index, c, op)
	}
	if s.rotation != nil {
		return ErrRotating
	}
	if h, ok := s.admissions[c.Node]; !ok || h.State != custosv1.AdmissionState_ADMISSION_STATE_ADMITTED {
		return fmt.Errorf("%w: node %s is not a custodian of the domain key", ErrPermissionDenied, c.Node)
	}
	a, ok := s.admissions[op.Node]
	switch {
	case !ok || a.State != custosv1.AdmissionState_ADMISSION_STATE_APPROVED:
		return fmt.Errorf("%w: node %s is not waiting for the domain key", ErrFailedPrecondition, op.Node)
	case a.ApprovedFingerprint != op.TransportKeyFingerprint || a.TransportKeyFingerprint != op.TransportKeyFingerprint:
		return fmt.Errorf("%w: node %s's approved transport key is %s, not %s", ErrFailedPrecondition, op.Node, a.ApprovedFingerprint, op.TransportKeyFingerprint)
	case len(op.WrappedDomainKey) != transportBlobLen:
		return fmt.Errorf("%w: wrapped domain key of %d bytes, want %d", ErrInvalidArgument, len(op.WrappedDomainKey), transportBlobLen)
	}
	s.admissionsVersion++
	a.State, a.WrappedDomainKey, a.SentBy, a.UpdateTimeUnixNano =
		custosv1.AdmissionState_ADMISSION_STATE_SENT, slices.Clone(op.WrappedDomainKey), c.Node, c.TimeUnixNano
	rec := s.newRecord(index, c, custosv1.Operation_OPERATION_ADMISSION)
	rec.Outcome = custosv1.Outcome_OUTCOME_ALLOW
	rec.MatchedRule = "admission:domain-key-sent"
	rec.Detail = fmt.Sprintf("node %s reports that its HSM wrapped the domain key for node %s under the approved transport key %s (%s); the receiver checks it against the genesis check value",
		c.Node, op.Node, op.TransportKeyFingerprint, a.Hash)
	return &Decision{Record: rec}
}

// applyConfirmAdmission records that a node's HSM holds the domain key.
func (s *State) applyConfirmAdmission(index uint64, c *raftlogv1.Command, op *raftlogv1.ConfirmAdmission) any {
	if op.Rotation {
		return s.applyRotationConfirm(index, c, op)
	}
	if op.Node == "" || op.Node != c.Node {
		return fmt.Errorf("%w: a node confirms only its own admission", ErrPermissionDenied)
	}
	a, ok := s.admissions[op.Node]
	if !ok && op.TransportKeyFingerprint == "" && s.clusterID != "" && s.admittedCount() == 0 {
		// A cluster initialised before admission existed has no recorded
		// custodian: its initialising node records itself (it claims
		// nothing another node could use: a sender's HSM must hold the
		// domain key, and every receiver checks its check value).
		s.admissionsVersion++
		s.admissions[op.Node] = &custosv1.NodeAdmission{Node: op.Node, State: custosv1.AdmissionState_ADMISSION_STATE_ADMITTED,
			UpdateTimeUnixNano: c.TimeUnixNano}
		rec := s.newRecord(index, c, custosv1.Operation_OPERATION_ADMISSION)
		rec.Outcome = custosv1.Outcome_OUTCOME_ALLOW
		rec.MatchedRule = "admission:admitted"
		rec.Detail = fmt.Sprintf("node %s recorded as the first custodian of a cluster initialised before admission existed", op.Node)
		return &Decision{Record: rec}
	}
	if !ok || a.State != custosv1.AdmissionState_ADMISSION_STATE_SENT || a.TransportKeyFingerprint != op.TransportKeyFingerprint {
		return fmt.Errorf("%w: no domain key was sent to node %s under transport key %s", ErrFailedPrecondition, op.Node, op.TransportKeyFingerprint)
	}
	s.admissionsVersion++
	a.State, a.WrappedDomainKey, a.TransportPublicKey, a.UpdateTimeUnixNano =
		custosv1.AdmissionState_ADMISSION_STATE_ADMITTED, nil, nil, c.TimeUnixNano
	rec := s.newRecord(index, c, custosv1.Operation_OPERATION_ADMISSION)
	rec.Outcome = custosv1.Outcome_OUTCOME_ALLOW
	rec.MatchedRule = "admission:admitted"
	rec.Detail = fmt.Sprintf("node %s reports that its HSM holds the domain key with the check value recorded at genesis (sent by %s)", op.Node, a.SentBy)
	return &Decision{Record: rec}
}

// revokeRemoved revokes the admission of every admitted or admitting node
// that is not in the configuration next (called with the configuration
// entry being applied), except the last custodian; each revocation is a
// ledger record.
func (s *State) revokeRemoved(index uint64, stamp *raftlogv1.Command, next []*raftlogv1.RaftServer) {
	for _, n := range sortedKeys(s.admissions) {
		a := s.admissions[n]
		if a.State == custosv1.AdmissionState_ADMISSION_STATE_REVOKED ||
			slices.ContainsFunc(next, func(sv *raftlogv1.RaftServer) bool { return sv.Id == n }) {
			continue
		}
		if a.State == custosv1.AdmissionState_ADMISSION_STATE_ADMITTED && s.admittedCount() == 1 {
			// The last custodian stays one: an operator's membership
			// change must not make it destroy the only domain key.
			continue
		}
		s.revokeAdmission(a, stamp.TimeUnixNano)
		rec := s.newRecord(index, stamp, custosv1.Operation_OPERATION_ADMISSION)
		rec.Outcome = custosv1.Outcome_OUTCOME_ALLOW
		rec.MatchedRule = "admission:revoked"
		rec.Detail = fmt.Sprintf("node %s left the Raft configuration: its admission is revoked", n)
		s.extra = append(s.extra, rec)
	}
}

// Admission returns a copy of node's admission, or nil.
func (s *State) Admission(node string) *custosv1.NodeAdmission {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if a, ok := s.admissions[node]; ok {
		return proto.Clone(a).(*custosv1.NodeAdmission)
	}
	return nil
}

// Admissions returns every node's admission, sorted by node; with
// withWrapped false (client answers) the wrapped domain keys are left out
// and an admission not approved yet shows the identity key the node
// registered (its checkpoint key), the fingerprint officers check.
func (s *State) Admissions(withWrapped bool) []*custosv1.NodeAdmission {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*custosv1.NodeAdmission, 0, len(s.admissions))
	for _, n := range sortedKeys(s.admissions) {
		a := proto.Clone(s.admissions[n]).(*custosv1.NodeAdmission)
		if !withWrapped {
			a.WrappedDomainKey = nil
			if a.IdentityKeyFingerprint == "" {
				a.IdentityKeyFingerprint = s.identityFingerprint(a.Node)
			}
		}
		out = append(out, a)
	}
	return out
}

// Profile returns the genesis profile: ProfileDevelopment or "".
func (s *State) Profile() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.gov.GetProfile()
}

// transportHash maps the replicated hash name to the HSM's.
func transportHash(h custosv1.KeyTransportHash) hsm.OAEPHash {
	if h == custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA1 {
		return hsm.OAEPSHA1
	}
	return hsm.OAEPSHA256
}

// mayServe says whether node may do key crypto by the replicated state: nil
// when it is admitted (or the domain key was sent to it: its own HSM then
// tells), ErrAdmissionRevoked when officers revoked it, ErrNotAdmitted
// otherwise, ErrRestorePending while a restore waits for the officers. A cluster without any recorded custodian (initialised before
// admission existed) is not held to it.
func (s *State) mayServe(node string) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.restorePending() {
		return ErrRestorePending
	}
	a, ok := s.admissions[node]
	switch {
	case ok && (a.State == custosv1.AdmissionState_ADMISSION_STATE_ADMITTED || a.State == custosv1.AdmissionState_ADMISSION_STATE_SENT):
		return nil
	case ok && a.State == custosv1.AdmissionState_ADMISSION_STATE_REVOKED:
		return ErrAdmissionRevoked
	case s.clusterID == "" || s.admittedCount() == 0:
		return nil
	}
	return ErrNotAdmitted
}
