package kms

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/hsm"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// Domain-key rotation in the replicated state (docs/key-destruction.md,
// *Domain-key rotation*). Destroying a KEK does not reach the blobs that
// wrap it under the domain key in old Raft log segments, snapshots and
// backups; a rotation does: every surviving KEK is re-wrapped under a new
// domain key, every custodian receives the new key, and then every node
// destroys the old one, after which no blob written before can be unwrapped
// by anyone. Every step is a command:
//
//	RotateDomainKey         (one officer)           requested
//	BeginDomainKeyRotation  (a custodian: the generator, whose HSM made the new key)
//	OfferTransportKey       (each custodian, rotation=true)   its entry OFFERED
//	AdmitNode               (officer quorum, domain_key_rotation=true)   APPROVED
//	TransportDomainKey      (the generator, rotation=true)   SENT: the new key to a custodian
//	RewrapKeks              (the generator)          KEKs re-wrapped under the new key
//	ConfirmAdmission        (each custodian, rotation=true)   ADMITTED; the last one completes
//	CancelDomainKeyRotation (one officer)            abandoned
//
// The generator's own transport key carries the old domain key into a
// session object of its custosd (hsm.Backend.ReceiveRewrapKey), the only
// key that can unwrap a KEK in a form the new key may wrap. While a rotation
// runs, no key version is created (CreateKey, AddKeyVersion refuse) and no
// node is sent the domain key for its admission.

// ErrRotating is returned while a domain-key rotation runs by what would
// add a KEK or send the domain key for an admission.
var ErrRotating = fmt.Errorf("%w: the cluster's domain key is being rotated: key creation, rotation and import wait until it completes or is cancelled (custos cluster status)", ErrFailedPrecondition)

// maxRewrapBatch bounds the KEKs of one RewrapKeks command.
const maxRewrapBatch = 128

// maxWrappedKEK bounds a re-wrapped KEK blob (KWP of 32 bytes is 40).
const maxWrappedKEK = 64

// applyRotateDomainKey carries out a RotateDomainKey statement.
func (s *State) applyRotateDomainKey(c *raftlogv1.Command) (string, error) {
	switch {
	case s.rotation != nil:
		return "", fmt.Errorf("%w: a domain-key rotation to epoch %d is already running", ErrFailedPrecondition, s.rotation.Epoch)
	case s.restorePending():
		return "", ErrRestorePending
	case s.admittedCount() == 0:
		return "", fmt.Errorf("%w: the cluster has no recorded custodian of the domain key", ErrFailedPrecondition)
	}
	s.rotation = &custosv1.DomainKeyRotation{Epoch: s.epoch + 1, RequestTimeUnixNano: c.TimeUnixNano}
	s.admissionsVersion++
	return fmt.Sprintf("domain-key rotation to epoch %d requested: a custodian generates the new key; each custodian's transport key needs the officers' approval and the generator's HSM security officer's trust", s.epoch+1), nil
}

// applyCancelRotation carries out a CancelDomainKeyRotation statement.
func (s *State) applyCancelRotation() (string, error) {
	r := s.rotation
	if r == nil {
		return "", fmt.Errorf("%w: no domain-key rotation is running", ErrFailedPrecondition)
	}
	s.abandonRotation()
	return fmt.Sprintf("domain-key rotation to epoch %d cancelled: every node destroys the new key; the domain key stays", r.Epoch), nil
}

// abandonRotation drops the running rotation: its new key joins the keys
// every node destroys and the re-wrapped blobs are forgotten.
func (s *State) abandonRotation() {
	if s.rotation == nil {
		return
	}
	if id := s.rotation.NewDomainKeyId; len(id) > 0 {
		s.retired = append(s.retired, slices.Clone(id))
	}
	for _, k := range s.keys {
		for _, v := range k.Versions {
			v.RotatedWrappedKek = nil
		}
	}
	s.rotation = nil
	s.admissionsVersion++
}

// applyBeginRotation records the generator of a requested rotation.
func (s *State) applyBeginRotation(index uint64, c *raftlogv1.Command, op *raftlogv1.BeginDomainKeyRotation) any {
	r := s.rotation
	switch {
	case r == nil || op.Epoch != r.Epoch:
		return fmt.Errorf("%w: no domain-key rotation to epoch %d was requested", ErrFailedPrecondition, op.Epoch)
	case r.Generator != "":
		return fmt.Errorf("%w: node %s already generated the new domain key", ErrFailedPrecondition, r.Generator)
	case !s.isCustodian(c.Node):
		return fmt.Errorf("%w: node %s is not a custodian of the domain key", ErrPermissionDenied, c.Node)
	case len(op.NewDomainKeyId) == 0 || len(op.NewDomainKeyId) > MaxObjectIDLen || len(op.NewDomainKeyCheckValue) != hsm.CheckValueSize:
		return fmt.Errorf("%w: a new domain key needs an object id of 1 to %d bytes and a %d-byte check value", ErrInvalidArgument, MaxObjectIDLen, hsm.CheckValueSize)
	case bytes.Equal(op.NewDomainKeyId, s.domainKeyID) || slices.ContainsFunc(s.retired, func(id []byte) bool { return bytes.Equal(id, op.NewDomainKeyId) }):
		return fmt.Errorf("%w: object id %q is or was a domain key's", ErrInvalidArgument, op.NewDomainKeyId)
	case !bytes.HasPrefix(op.NewDomainKeyId, []byte(RotationKeyPrefix(s.clusterID, op.Epoch))):
		// Only ids of this form are ever destroyed as retired keys: a
		// rotation cannot name another object (a checkpoint key, a KEK)
		// for every node to destroy when it is cancelled.
		return fmt.Errorf("%w: a new domain key's object id starts with %q", ErrInvalidArgument, RotationKeyPrefix(s.clusterID, op.Epoch))
	}
	r.Generator, r.NewDomainKeyId, r.NewDomainKeyCheckValue = c.Node, slices.Clone(op.NewDomainKeyId), slices.Clone(op.NewDomainKeyCheckValue)
	s.admissionsVersion++
	rec := s.newRecord(index, c, custosv1.Operation_OPERATION_DOMAIN_KEY_ROTATION)
	rec.Outcome = custosv1.Outcome_OUTCOME_ALLOW
	rec.MatchedRule = "domain-key-rotation:begun"
	rec.Detail = fmt.Sprintf("node %s reports that its HSM generated the new domain key %q (check value %x) for epoch %d", c.Node, op.NewDomainKeyId, op.NewDomainKeyCheckValue, op.Epoch)
	return &Decision{Record: rec}
}

// RotationKeyPrefix is how the object id of the new domain key of a
// rotation to epoch begins; a random suffix follows.
func RotationKeyPrefix(clusterID string, epoch uint32) string {
	return fmt.Sprintf("custos/domain/%s/e%d/", clusterID, epoch)
}

// isCustodian reports whether node is admitted (caller holds s.mu).
func (s *State) isCustodian(node string) bool {
	a, ok := s.admissions[node]
	return ok && a.State == custosv1.AdmissionState_ADMISSION_STATE_ADMITTED
}

// rotationEntry returns node's entry in the running rotation, or nil.
func (s *State) rotationEntry(node string) *custosv1.NodeAdmission {
	if s.rotation == nil {
		return nil
	}
	for _, a := range s.rotation.Nodes {
		if a.Node == node {
			return a
		}
	}
	return nil
}

// applyRotationOffer records a custodian's transport key for the rotation.
func (s *State) applyRotationOffer(c *raftlogv1.Command, op *raftlogv1.OfferTransportKey) any {
	r := s.rotation
	switch {
	case r == nil || r.Generator == "":
		return fmt.Errorf("%w: no domain-key rotation is waiting for transport keys", ErrFailedPrecondition)
	case op.Node == "" || op.Node != c.Node:
		return fmt.Errorf("%w: a node offers only its own transport key", ErrPermissionDenied)
	case !s.isCustodian(op.Node):
		return fmt.Errorf("%w: node %s is not a custodian of the domain key", ErrFailedPrecondition, op.Node)
	}
	_, fp, err := parseTransportKey(op.PublicKey)
	if err != nil {
		return err
	}
	a := s.rotationEntry(op.Node)
	if a == nil {
		a = &custosv1.NodeAdmission{Node: op.Node}
		r.Nodes = append(r.Nodes, a)
		slices.SortFunc(r.Nodes, func(x, y *custosv1.NodeAdmission) int { return strings.Compare(x.Node, y.Node) })
	}
	if a.State == custosv1.AdmissionState_ADMISSION_STATE_ADMITTED {
		return fmt.Errorf("%w: node %s already holds what the rotation needs", ErrFailedPrecondition, op.Node)
	}
	s.admissionsVersion++
	*a = custosv1.NodeAdmission{Node: op.Node, State: custosv1.AdmissionState_ADMISSION_STATE_OFFERED,
		TransportPublicKey: slices.Clone(op.PublicKey), TransportKeyFingerprint: fp, UpdateTimeUnixNano: c.TimeUnixNano}
	return nil
}

// applyRotationApproval carries out an AdmitNode statement for the
// rotation: the officers approve a custodian's transport key.
func (s *State) applyRotationApproval(c *raftlogv1.Command, op *custosv1.AdmitNode) (string, error) {
	a := s.rotationEntry(op.Node)
	switch {
	case op.Hash == custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA1 && s.gov.GetProfile() != ProfileDevelopment:
		return "", fmt.Errorf("%w: RSA-OAEP-SHA1 key transport is not CRYPTREC-listed: only a cluster with the development profile accepts it (use SHA256)", ErrFailedPrecondition)
	case a == nil || a.State != custosv1.AdmissionState_ADMISSION_STATE_OFFERED:
		return "", fmt.Errorf("%w: node %s has no transport key offered for the domain-key rotation", ErrFailedPrecondition, op.Node)
	case a.TransportKeyFingerprint != op.TransportKeyFingerprint:
		return "", fmt.Errorf("%w: node %s's rotation transport key is %s, not the approved %s", ErrFailedPrecondition, op.Node, a.TransportKeyFingerprint, op.TransportKeyFingerprint)
	}
	if id := s.identityFingerprint(op.Node); id != op.IdentityKeyFingerprint {
		return "", fmt.Errorf("%w: node %s's HSM identity key is %q, not the approved %s", ErrFailedPrecondition, op.Node, id, op.IdentityKeyFingerprint)
	}
	s.admissionsVersion++
	a.State = custosv1.AdmissionState_ADMISSION_STATE_APPROVED
	a.ApprovedFingerprint, a.IdentityKeyFingerprint, a.Hash, a.UpdateTimeUnixNano = op.TransportKeyFingerprint, op.IdentityKeyFingerprint, op.Hash, c.TimeUnixNano
	what := "the new domain key may be sent to it"
	if op.Node == s.rotation.Generator {
		what = "its HSM may carry the old domain key into its custosd to re-wrap the KEKs"
	}
	return fmt.Sprintf("rotation transport key %s of node %s approved (%s): %s once the generator's HSM security officer trusts it", op.TransportKeyFingerprint, op.Node, op.Hash, what), nil
}

// applyRotationSend records the new domain key the generator wrapped for a
// custodian.
func (s *State) applyRotationSend(index uint64, c *raftlogv1.Command, op *raftlogv1.TransportDomainKey) any {
	r := s.rotation
	if r == nil || r.Generator == "" || c.Node != r.Generator {
		return fmt.Errorf("%w: only the rotation's generator sends the new domain key", ErrPermissionDenied)
	}
	a := s.rotationEntry(op.Node)
	switch {
	case a == nil || a.State != custosv1.AdmissionState_ADMISSION_STATE_APPROVED || op.Node == r.Generator:
		return fmt.Errorf("%w: node %s is not waiting for the new domain key", ErrFailedPrecondition, op.Node)
	case a.ApprovedFingerprint != op.TransportKeyFingerprint:
		return fmt.Errorf("%w: node %s's approved rotation transport key is %s, not %s", ErrFailedPrecondition, op.Node, a.ApprovedFingerprint, op.TransportKeyFingerprint)
	case len(op.WrappedDomainKey) != transportBlobLen:
		return fmt.Errorf("%w: wrapped domain key of %d bytes, want %d", ErrInvalidArgument, len(op.WrappedDomainKey), transportBlobLen)
	}
	s.admissionsVersion++
	a.State, a.WrappedDomainKey, a.SentBy, a.UpdateTimeUnixNano =
		custosv1.AdmissionState_ADMISSION_STATE_SENT, slices.Clone(op.WrappedDomainKey), c.Node, c.TimeUnixNano
	rec := s.newRecord(index, c, custosv1.Operation_OPERATION_DOMAIN_KEY_ROTATION)
	rec.Outcome = custosv1.Outcome_OUTCOME_ALLOW
	rec.MatchedRule = "domain-key-rotation:sent"
	rec.Detail = fmt.Sprintf("node %s reports that its HSM wrapped the new domain key (epoch %d) for node %s under the approved transport key %s (%s)",
		c.Node, r.Epoch, op.Node, op.TransportKeyFingerprint, a.Hash)
	return &Decision{Record: rec}
}

// applyRewrapKeks stores KEK blobs the generator re-wrapped.
func (s *State) applyRewrapKeks(index uint64, c *raftlogv1.Command, op *raftlogv1.RewrapKeks) any {
	r := s.rotation
	switch {
	case r == nil || r.Generator == "" || op.Epoch != r.Epoch:
		return fmt.Errorf("%w: no domain-key rotation to epoch %d is running", ErrFailedPrecondition, op.Epoch)
	case c.Node != r.Generator:
		return fmt.Errorf("%w: only the rotation's generator re-wraps KEKs", ErrPermissionDenied)
	case rotationEntryOf(r, r.Generator).GetState() == custosv1.AdmissionState_ADMISSION_STATE_ADMITTED:
		return fmt.Errorf("%w: the re-wrapped KEKs are final once the generator confirmed them", ErrFailedPrecondition)
	case len(op.Keks) == 0 || len(op.Keks) > maxRewrapBatch:
		return fmt.Errorf("%w: 1 to %d re-wrapped KEKs per command", ErrInvalidArgument, maxRewrapBatch)
	}
	for _, rk := range op.Keks {
		k, ok := s.keys[rk.Key]
		if !ok || rk.Version == 0 || int(rk.Version) > len(k.Versions) {
			return fmt.Errorf("%w: key %q version %d", ErrNotFound, rk.Key, rk.Version)
		}
		if len(rk.WrappedKek) == 0 || len(rk.WrappedKek) > maxWrappedKEK {
			return fmt.Errorf("%w: re-wrapped KEK of %d bytes", ErrInvalidArgument, len(rk.WrappedKek))
		}
	}
	for _, rk := range op.Keks {
		v := s.keys[rk.Key].Versions[rk.Version-1]
		if v.Destroyed || len(v.WrappedKek) == 0 {
			continue // destroyed meanwhile: nothing to carry over
		}
		v.RotatedWrappedKek = slices.Clone(rk.WrappedKek)
	}
	s.admissionsVersion++
	return nil
}

// applyRotationConfirm records that a custodian holds what the rotation
// needs of it: the new domain key, or (the generator) every KEK re-wrapped.
func (s *State) applyRotationConfirm(index uint64, c *raftlogv1.Command, op *raftlogv1.ConfirmAdmission) any {
	r := s.rotation
	if op.Node == "" || op.Node != c.Node {
		return fmt.Errorf("%w: a node confirms only its own part", ErrPermissionDenied)
	}
	a := s.rotationEntry(op.Node)
	switch {
	case r == nil || a == nil || a.TransportKeyFingerprint != op.TransportKeyFingerprint:
		return fmt.Errorf("%w: node %s has no part in a domain-key rotation under transport key %s", ErrFailedPrecondition, op.Node, op.TransportKeyFingerprint)
	case op.Node == r.Generator && a.State != custosv1.AdmissionState_ADMISSION_STATE_APPROVED:
		return fmt.Errorf("%w: the generator's transport key is not approved", ErrFailedPrecondition)
	case op.Node == r.Generator && s.toRewrap() > 0:
		return fmt.Errorf("%w: %d KEKs are not re-wrapped yet", ErrFailedPrecondition, s.toRewrap())
	case op.Node != r.Generator && a.State != custosv1.AdmissionState_ADMISSION_STATE_SENT:
		return fmt.Errorf("%w: the new domain key was not sent to node %s", ErrFailedPrecondition, op.Node)
	case op.Node != r.Generator && rotationEntryOf(r, r.Generator).GetState() != custosv1.AdmissionState_ADMISSION_STATE_ADMITTED:
		return fmt.Errorf("%w: the generator has not confirmed the re-wrapped KEKs yet", ErrFailedPrecondition)
	case !bytes.Equal(op.RotatedDigest, s.rotatedDigest()):
		return fmt.Errorf("%w: node %s checked other re-wrapped KEKs than the state holds", ErrFailedPrecondition, op.Node)
	}
	s.admissionsVersion++
	a.State, a.WrappedDomainKey, a.TransportPublicKey, a.UpdateTimeUnixNano = custosv1.AdmissionState_ADMISSION_STATE_ADMITTED, nil, nil, c.TimeUnixNano
	rec := s.newRecord(index, c, custosv1.Operation_OPERATION_DOMAIN_KEY_ROTATION)
	rec.Outcome = custosv1.Outcome_OUTCOME_ALLOW
	rec.MatchedRule = "domain-key-rotation:confirmed"
	rec.Detail = fmt.Sprintf("node %s reports that its HSM holds the new domain key of epoch %d with the check value %x", op.Node, r.Epoch, r.NewDomainKeyCheckValue)
	if op.Node == r.Generator {
		rec.Detail = fmt.Sprintf("node %s (the generator) reports that every KEK is re-wrapped under the new domain key of epoch %d, each checked against its check value", op.Node, r.Epoch)
	}
	return &Decision{Record: rec}
}

// RotatedKEK is a re-wrapped KEK of the running rotation, with the check
// value its KEK must have.
type RotatedKEK struct {
	Key        string
	Version    uint32
	Wrapped    []byte
	CheckValue []byte
}

// rotatedSet returns every re-wrapped KEK of the running rotation, sorted,
// and their digest (what ConfirmAdmission names).
func (s *State) rotatedSet() ([]RotatedKEK, []byte) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.rotatedList(), s.rotatedDigest()
}

// rotatedList lists the re-wrapped KEKs by key and version (caller holds
// s.mu).
func (s *State) rotatedList() []RotatedKEK {
	var out []RotatedKEK
	for _, name := range sortedKeys(s.keys) {
		for _, v := range s.keys[name].Versions {
			if len(v.RotatedWrappedKek) > 0 {
				out = append(out, RotatedKEK{Key: name, Version: v.Version, Wrapped: slices.Clone(v.RotatedWrappedKek), CheckValue: slices.Clone(v.KekCheckValue)})
			}
		}
	}
	return out
}

// rotatedDigest is SHA-256 over every re-wrapped KEK with its key and
// version, in order (caller holds s.mu).
func (s *State) rotatedDigest() []byte {
	h := sha256.New()
	var n [4]byte
	for _, k := range s.rotatedList() {
		binary.BigEndian.PutUint32(n[:], uint32(len(k.Key)))
		h.Write(n[:])
		h.Write([]byte(k.Key))
		binary.BigEndian.PutUint32(n[:], k.Version)
		h.Write(n[:])
		binary.BigEndian.PutUint32(n[:], uint32(len(k.Wrapped)))
		h.Write(n[:])
		h.Write(k.Wrapped)
	}
	return h.Sum(nil)
}

// toRewrap counts the surviving key versions whose KEK has no blob under
// the rotation's new key (caller holds s.mu).
func (s *State) toRewrap() int {
	n := 0
	for _, k := range s.keys {
		for _, v := range k.Versions {
			if !v.Destroyed && len(v.WrappedKek) > 0 && len(v.RotatedWrappedKek) == 0 {
				n++
			}
		}
	}
	return n
}

// rotationReady says why the running rotation cannot complete yet, or
// nil (caller holds s.mu).
func (s *State) rotationReady() error {
	r := s.rotation
	switch {
	case r == nil || r.Generator == "":
		return fmt.Errorf("%w: no domain-key rotation with a new key is running", ErrFailedPrecondition)
	case s.toRewrap() > 0:
		return fmt.Errorf("%w: %d KEKs are not re-wrapped yet", ErrFailedPrecondition, s.toRewrap())
	}
	for _, n := range sortedKeys(s.admissions) {
		if !s.isCustodian(n) {
			continue
		}
		if e := s.rotationEntry(n); e == nil || e.State != custosv1.AdmissionState_ADMISSION_STATE_ADMITTED {
			return fmt.Errorf("%w: custodian %s does not hold the new domain key yet", ErrFailedPrecondition, n)
		}
	}
	return nil
}

// rotationComplete reports whether the running rotation could complete.
func (s *State) rotationComplete() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.rotationReady() == nil
}

// applyCompleteRotation completes the running rotation once every KEK has
// a blob under the new key and every custodian confirmed: the new key
// becomes the domain key, the old one is retired (every node destroys it),
// and the ledger records it.
func (s *State) applyCompleteRotation(index uint64, c *raftlogv1.Command, op *raftlogv1.CompleteDomainKeyRotation) any {
	r := s.rotation
	if r == nil || op.Epoch != r.Epoch {
		return fmt.Errorf("%w: no domain-key rotation to epoch %d is running", ErrFailedPrecondition, op.Epoch)
	}
	if c.Node != r.Generator {
		return fmt.Errorf("%w: only the rotation's generator completes it", ErrPermissionDenied)
	}
	if err := s.rotationReady(); err != nil {
		return err
	}
	old := s.domainKeyID
	s.retired = append(s.retired, slices.Clone(old))
	s.domainKeyID, s.domainKCV, s.epoch = slices.Clone(r.NewDomainKeyId), slices.Clone(r.NewDomainKeyCheckValue), r.Epoch
	for _, k := range s.keys {
		for _, v := range k.Versions {
			if len(v.RotatedWrappedKek) > 0 {
				v.WrappedKek, v.RotatedWrappedKek = v.RotatedWrappedKek, nil
			}
		}
	}
	s.rotation = nil
	s.admissionsVersion++
	rec := s.newRecord(index, c, custosv1.Operation_OPERATION_DOMAIN_KEY_ROTATION)
	rec.Outcome = custosv1.Outcome_OUTCOME_ALLOW
	rec.MatchedRule = "domain-key-rotation:completed"
	rec.Detail = fmt.Sprintf("the domain key is now %q (epoch %d), generated by node %s; every KEK is wrapped under it, checked by every custodian; the old domain key %q is retired: each node destroys it as it applies this (a node that is down, when it starts again). "+
		"KEK blobs written before (old log segments, snapshots, backups) then unwrap on no token that destroyed it; not reached: copies of a token made before, and a KEK a PIN holder unwrapped into an HSM before",
		s.domainKeyID, s.epoch, r.Generator, old)
	return &Decision{Record: rec}
}

// DomainKeyEpoch returns the domain key's epoch and a copy of the running
// rotation (nil if none); with withWrapped false, wrapped keys are blanked.
func (s *State) DomainKeyEpoch(withWrapped bool) (uint32, *custosv1.DomainKeyRotation) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.rotation == nil {
		return s.epoch, nil
	}
	r := proto.Clone(s.rotation).(*custosv1.DomainKeyRotation)
	r.ToRewrap = uint32(s.toRewrap())
	for _, k := range s.keys {
		for _, v := range k.Versions {
			if len(v.RotatedWrappedKek) > 0 {
				r.Rewrapped++
			}
		}
	}
	r.ToRewrap += r.Rewrapped
	if !withWrapped {
		for _, a := range r.Nodes {
			a.WrappedDomainKey = nil
			if a.IdentityKeyFingerprint == "" {
				a.IdentityKeyFingerprint = s.identityFingerprint(a.Node)
			}
		}
	}
	return s.epoch, r
}

// retiredDomainKeys returns the CKA_IDs every node destroys.
func (s *State) retiredDomainKeys() [][]byte {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Clone(s.retired)
}

// rotatingKEKs returns the surviving key versions whose KEK is not yet
// re-wrapped under the running rotation's new key, at most n.
func (s *State) rotatingKEKs(n int) []*raftlogv1.RewrappedKek {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*raftlogv1.RewrappedKek
	for _, name := range sortedKeys(s.keys) {
		for _, v := range s.keys[name].Versions {
			if !v.Destroyed && len(v.WrappedKek) > 0 && len(v.RotatedWrappedKek) == 0 {
				out = append(out, &raftlogv1.RewrappedKek{Key: name, Version: v.Version, WrappedKek: slices.Clone(v.WrappedKek)})
				if len(out) == n {
					return out
				}
			}
		}
	}
	return out
}

// kekCheckValue returns the recorded check value of key's version.
func (s *State) kekCheckValue(key string, version uint32) []byte {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, ok := s.keys[key]
	if !ok || version == 0 || int(version) > len(k.Versions) {
		return nil
	}
	return slices.Clone(k.Versions[version-1].KekCheckValue)
}

// wrappedKEK returns the current blob of key's version.
func (s *State) wrappedKEK(key string, version uint32) []byte {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, ok := s.keys[key]
	if !ok || version == 0 || int(version) > len(k.Versions) {
		return nil
	}
	return slices.Clone(k.Versions[version-1].WrappedKek)
}
