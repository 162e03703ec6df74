package kms

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/custos-kms/custos/hsm"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// The HSM half of a domain-key rotation (rotation.go), run by the
// admission worker on every node at each step:
//
//   - every node destroys the retired domain keys (and a cancelled
//     rotation's new key) in its HSM;
//   - a custodian generates the new key of a requested rotation;
//   - each custodian offers a session transport key for the rotation and,
//     once the officers approved it and the generator's HSM security officer
//     trusted it, receives the new key (the generator: the old key, as a
//     session object that re-wraps the KEKs), then confirms;
//   - the generator sends the new key to the approved custodians,
//     re-wraps every KEK, and completes the rotation once all is done.

// rotationCustody is the worker's memory of the running rotation.
type rotationCustody struct {
	epoch     uint32
	generated []byte        // the new domain key this process generated and recorded
	transport *transportKey // this process's rotation transport key
	rewrap    []byte        // the generator's session copy of the old key
	retired   map[string]bool
}

// rotationStep does what a running rotation asks of this node now.
func (s *Service) rotationStep(ctx context.Context) {
	s.destroyRetired(ctx)
	_, r := s.state.DomainKeyEpoch(true)
	s.custody.mu.Lock()
	rc := &s.custody.rotation
	if r == nil || rc.epoch != r.Epoch {
		s.custody.mu.Unlock()
		s.dropRotationKeys(ctx)
		s.custody.mu.Lock()
		if r != nil {
			rc.epoch = r.Epoch
		}
	}
	s.custody.mu.Unlock()
	if r == nil || !s.state.custodian(s.node) || !s.holdsDomainKey(ctx) {
		return
	}
	if r.Generator == "" {
		s.generateRotationKey(ctx, r.Epoch)
		return
	}
	self := rotationEntryOf(r, s.node)
	if s.node == r.Generator {
		// The log names this node as the generator; its custosd acts as
		// one only for a key it generated itself (a node certificate
		// could have recorded a key the PIN holder created from a value
		// they know).
		if !s.ownRotationKey(ctx, r) {
			return
		}
		s.sendRotation(ctx, r)
	}
	if self.GetState() == custosv1.AdmissionState_ADMISSION_STATE_ADMITTED {
		if s.node == r.Generator && s.state.rotationComplete() {
			if _, err := s.apply(ctx, Principal{Name: "custosd"}, &raftlogv1.Command{Op: &raftlogv1.Command_CompleteDomainKeyRotation{
				CompleteDomainKeyRotation: &raftlogv1.CompleteDomainKeyRotation{Epoch: r.Epoch}}}); err != nil {
				s.lg.Warn("rotation: could not complete; will retry", "err", err)
				return
			}
			s.lg.Warn("domain-key rotation completed: every node destroys the old domain key", "epoch", r.Epoch)
		}
		return
	}
	tk := s.rotationTransport(ctx, self)
	if tk == nil || self.GetTransportKeyFingerprint() != tk.fp {
		return
	}
	switch {
	case s.node == r.Generator && self.State == custosv1.AdmissionState_ADMISSION_STATE_APPROVED:
		s.rewrapAll(ctx, r, tk)
	case s.node != r.Generator && self.State == custosv1.AdmissionState_ADMISSION_STATE_SENT:
		s.receiveRotation(ctx, r, tk, self)
	default:
		s.note("rotation-wait:"+tk.fp+self.State.String(), func() {
			s.lg.Warn("domain-key rotation: waiting for the officers to approve this node's rotation transport key (custos cluster admit --rotation), then for the generator's HSM security officer to trust it (custos hsm trust)",
				"node", s.node, "generator", r.Generator, "transport_key_fingerprint", tk.fp, "state", self.State)
		})
	}
}

// rotationEntryOf returns node's entry in r, or nil.
func rotationEntryOf(r *custosv1.DomainKeyRotation, node string) *custosv1.NodeAdmission {
	for _, a := range r.Nodes {
		if a.Node == node {
			return a
		}
	}
	return nil
}

// custodian reports whether node is admitted.
func (s *State) custodian(node string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.isCustodian(node)
}

// rotating reports whether a domain-key rotation runs.
func (s *State) rotating() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.rotation != nil
}

// destroyRetired destroys the retired domain keys in this node's HSM.
func (s *Service) destroyRetired(ctx context.Context) {
	current := s.state.DomainKeyID()
	for _, id := range s.state.retiredDomainKeys() {
		s.custody.mu.Lock()
		done := s.custody.rotation.retired[string(id)]
		s.custody.mu.Unlock()
		if done || bytes.Equal(id, current) {
			continue
		}
		if err := s.hsm.DestroyKey(ctx, id); err != nil {
			s.lg.Warn("could not destroy a retired domain key; will retry", "object_id", string(id), "err", err)
			continue
		}
		s.custody.mu.Lock()
		if s.custody.rotation.retired == nil {
			s.custody.rotation.retired = map[string]bool{}
		}
		s.custody.rotation.retired[string(id)] = true
		s.custody.mu.Unlock()
	}
}

// generateRotationKey makes the new domain key of a requested rotation and
// proposes this node as its generator.
func (s *Service) generateRotationKey(ctx context.Context, epoch uint32) {
	id, err := s.newObjectID(ctx, strings.TrimSuffix(RotationKeyPrefix(s.state.ClusterID(), epoch), "/"))
	if err != nil {
		s.lg.Warn("rotation: could not make an object id", "err", err)
		return
	}
	spec := hsm.KeySpec{ID: id, Label: fmt.Sprintf("custos domain key %s epoch %d", s.state.ClusterID(), epoch), Usage: hsm.UsageWrap}
	kcv, err := s.hsm.GenerateKey(ctx, spec)
	if err != nil {
		s.lg.Warn("rotation: could not generate the new domain key; will retry", "err", hsmError("generate domain key", err))
		return
	}
	s.custody.mu.Lock()
	s.custody.rotation.generated = id
	s.custody.mu.Unlock()
	_, err = s.apply(ctx, Principal{Name: "custosd"}, &raftlogv1.Command{Op: &raftlogv1.Command_BeginDomainKeyRotation{
		BeginDomainKeyRotation: &raftlogv1.BeginDomainKeyRotation{Epoch: epoch, NewDomainKeyId: id, NewDomainKeyCheckValue: kcv}}})
	if err != nil {
		// Another custodian was first, or the rotation was cancelled.
		if derr := s.hsm.DestroyKey(context.WithoutCancel(ctx), id); derr != nil {
			s.lg.Warn("rotation: could not destroy an unused new domain key", "object_id", string(id), "err", derr)
		}
		if !errors.Is(err, ErrFailedPrecondition) {
			s.lg.Warn("rotation: could not record the new domain key; will retry", "err", err)
		}
		return
	}
	s.lg.Warn("domain-key rotation: this node generated the new domain key; each custodian's rotation transport key needs the officers' approval and this HSM's security officer's trust",
		"epoch", epoch, "object_id", string(id))
}

// ownRotationKey reports whether the rotation's new key is one this
// node's HSM generated: the one this process recorded, or — after a
// restart — a key the token reads back as generated inside it (CKA_LOCAL)
// and always sensitive, which no key created from a value or unwrapped is.
// Anything else is an HSM object custos did not make: refused and recorded.
func (s *Service) ownRotationKey(ctx context.Context, r *custosv1.DomainKeyRotation) bool {
	s.custody.mu.Lock()
	mine := bytes.Equal(s.custody.rotation.generated, r.NewDomainKeyId)
	s.custody.mu.Unlock()
	if mine {
		return true
	}
	ref := hsm.KeyRef{ID: r.NewDomainKeyId, CheckValue: r.NewDomainKeyCheckValue}
	err := s.hsm.VerifyKey(ctx, ref, hsm.UsageWrap)
	if err == nil {
		var a hsm.Attributes
		a, err = s.hsm.KeyAttributes(ctx, ref.ID)
		if err == nil && (!a.Local || !a.AlwaysSensitive) {
			err = fmt.Errorf("%w: the key was not generated in this HSM (CKA_LOCAL %t, CKA_ALWAYS_SENSITIVE %t)", hsm.ErrObjectMismatch, a.Local, a.AlwaysSensitive)
		}
	}
	if err == nil {
		s.custody.mu.Lock()
		s.custody.rotation.generated = ref.ID
		s.custody.mu.Unlock()
		return true
	}
	s.note("rotation-own:"+string(ref.ID), func() {
		s.lg.Error("domain-key rotation: the log names this node the generator of a new domain key its HSM did not generate: refusing to use it (officers: cancel the rotation)",
			"object_id", string(ref.ID), "err", err)
		if errors.Is(err, hsm.ErrObjectMismatch) {
			_ = s.rejectObject(ctx, "", 0, ref.ID, err)
		}
	})
	return false
}

// rotationTransport returns this process's rotation transport key, making
// and offering one when the rotation does not show it.
func (s *Service) rotationTransport(ctx context.Context, self *custosv1.NodeAdmission) *transportKey {
	s.custody.mu.Lock()
	tk := s.custody.rotation.transport
	s.custody.mu.Unlock()
	if tk == nil {
		id, err := s.newObjectID(ctx, "custos/rotation-transport/"+s.node)
		if err == nil {
			tk, err = s.makeTransportKey(ctx, id)
		}
		if err != nil {
			s.lg.Warn("rotation: could not make a transport key; will retry", "err", err)
			return nil
		}
		s.custody.mu.Lock()
		s.custody.rotation.transport = tk
		s.custody.mu.Unlock()
	}
	if self.GetTransportKeyFingerprint() == tk.fp {
		return tk
	}
	if _, err := s.apply(ctx, Principal{Name: "custosd"}, &raftlogv1.Command{Op: &raftlogv1.Command_OfferTransportKey{
		OfferTransportKey: &raftlogv1.OfferTransportKey{Node: s.node, PublicKey: tk.der, Rotation: true}}}); err != nil {
		s.note("rotation-offer:"+err.Error(), func() {
			s.lg.Warn("rotation: could not offer the transport key; will retry", "err", err)
		})
		return nil
	}
	s.lg.Warn("domain-key rotation: offered a transport key; officers approve it with `custos cluster admit --rotation`",
		"node", s.node, "transport_key_fingerprint", tk.fp, "identity_key_fingerprint", s.state.IdentityFingerprint(s.node))
	return tk
}

// sendRotation wraps the new domain key to every approved custodian whose
// transport key this HSM's security officer trusted.
func (s *Service) sendRotation(ctx context.Context, r *custosv1.DomainKeyRotation) {
	newKey := hsm.KeyRef{ID: r.NewDomainKeyId, CheckValue: r.NewDomainKeyCheckValue}
	for _, a := range r.Nodes {
		if a.Node == r.Generator || a.State != custosv1.AdmissionState_ADMISSION_STATE_APPROVED {
			continue
		}
		pub, fp, err := parseTransportKey(a.TransportPublicKey)
		if err == nil && fp != a.ApprovedFingerprint {
			err = fmt.Errorf("%w: offered key %s is not the approved %s", ErrFailedPrecondition, fp, a.ApprovedFingerprint)
		}
		var blob []byte
		if err == nil {
			blob, err = s.hsm.WrapForTransport(ctx, newKey, TrustedKeyID(fp), pub, transportHash(a.Hash))
		}
		if err == nil {
			_, err = s.apply(ctx, Principal{Name: "custosd"}, &raftlogv1.Command{Op: &raftlogv1.Command_TransportDomainKey{
				TransportDomainKey: &raftlogv1.TransportDomainKey{Node: a.Node, TransportKeyFingerprint: fp, WrappedDomainKey: blob, Rotation: true}}})
		}
		if err != nil {
			s.noteTrustWait("rotation-send:"+a.Node+":"+a.ApprovedFingerprint, a, err)
			continue
		}
		s.lg.Info("domain-key rotation: sent the new domain key", "node", a.Node, "fingerprint", fp)
		s.dropTrusted(ctx, fp)
	}
}

// noteTrustWait logs once why a wrap to a's approved key did not happen.
func (s *Service) noteTrustWait(key string, a *custosv1.NodeAdmission, err error) {
	if errors.Is(err, hsm.ErrKeyNotFound) {
		s.note(key, func() {
			s.lg.Info("domain-key rotation: waiting for this HSM's security officer to trust the approved transport key (custos hsm trust)",
				"node", a.Node, "fingerprint", a.ApprovedFingerprint, "id", string(TrustedKeyID(a.ApprovedFingerprint)))
		})
		return
	}
	s.note(key+":"+err.Error(), func() {
		s.lg.Warn("domain-key rotation: could not wrap a key to an approved transport key", "node", a.Node, "err", err)
	})
}

// rewrapAll is the generator's part: carry the old domain key into a
// session object through its own trusted transport key, re-wrap every KEK
// under the new key, and confirm.
func (s *Service) rewrapAll(ctx context.Context, r *custosv1.DomainKeyRotation, tk *transportKey) {
	self := rotationEntryOf(r, s.node)
	s.custody.mu.Lock()
	from := s.custody.rotation.rewrap
	s.custody.mu.Unlock()
	if from == nil {
		pub, _, err := parseTransportKey(tk.der)
		var blob []byte
		if err == nil {
			blob, err = s.hsm.WrapForTransport(ctx, s.state.DomainKey(), TrustedKeyID(tk.fp), pub, transportHash(self.Hash))
		}
		if err != nil {
			s.noteTrustWait("rotation-rewrap:"+tk.fp, self, err)
			return
		}
		id, err := s.newObjectID(ctx, "custos/rewrap/"+s.node)
		if err == nil {
			err = s.hsm.ReceiveRewrapKey(ctx, tk.id, blob, transportHash(self.Hash), id)
		}
		if errors.Is(err, hsm.ErrKeyNotFound) {
			// The transport key went with its HSM session (the token's
			// sessions were reopened): retrying with it can never work.
			// Offer a new one (officers approve it again).
			s.lg.Error("domain-key rotation: this process lost its rotation transport key; offering a new one", "err", err)
			s.dropRotationKeys(ctx)
			return
		}
		if err != nil {
			s.lg.Error("domain-key rotation: could not carry the old domain key into this process; will retry", "err", err)
			return
		}
		// ReceiveRewrapKey destroyed the transport key; the fingerprint
		// stays this node's entry until the rotation ends.
		s.dropTrusted(ctx, tk.fp)
		s.custody.mu.Lock()
		s.custody.rotation.rewrap = id
		s.custody.mu.Unlock()
		from = id
	}
	to := hsm.KeyRef{ID: r.NewDomainKeyId, CheckValue: r.NewDomainKeyCheckValue}
	for {
		batch := s.state.rotatingKEKs(maxRewrapBatch)
		if len(batch) == 0 {
			break
		}
		for _, rk := range batch {
			blob, err := s.hsm.RewrapKey(ctx, from, rk.WrappedKek, to, s.state.kekCheckValue(rk.Key, rk.Version))
			if errors.Is(err, hsm.ErrKeyNotFound) {
				// The session copy is gone with its HSM session: offer a
				// new transport key (officers approve it again).
				s.lg.Error("domain-key rotation: this process lost its session copy of the old domain key; offering a new transport key", "err", err)
				s.dropRotationKeys(ctx)
				return
			}
			if err != nil {
				s.lg.Error("domain-key rotation: could not re-wrap a KEK; will retry", "key", rk.Key, "version", rk.Version, "err", err)
				return
			}
			rk.WrappedKek = blob
		}
		if _, err := s.apply(ctx, Principal{Name: "custosd"}, &raftlogv1.Command{Op: &raftlogv1.Command_RewrapKeks{
			RewrapKeks: &raftlogv1.RewrapKeks{Epoch: r.Epoch, Keks: batch}}}); err != nil {
			s.lg.Warn("domain-key rotation: could not record re-wrapped KEKs; will retry", "err", err)
			return
		}
	}
	// Every blob the state holds, whoever proposed it, must unwrap under
	// the new key to its KEK: one that does not is re-wrapped again.
	set, digest := s.state.rotatedSet()
	if bad := s.checkRotated(ctx, to, set); bad != nil {
		blob, err := s.hsm.RewrapKey(ctx, from, s.state.wrappedKEK(bad.Key, bad.Version), to, bad.CheckValue)
		if err == nil {
			_, err = s.apply(ctx, Principal{Name: "custosd"}, &raftlogv1.Command{Op: &raftlogv1.Command_RewrapKeks{
				RewrapKeks: &raftlogv1.RewrapKeks{Epoch: r.Epoch, Keks: []*raftlogv1.RewrappedKek{{Key: bad.Key, Version: bad.Version, WrappedKek: blob}}}}})
		}
		if err != nil {
			s.lg.Warn("domain-key rotation: could not re-wrap a KEK again; will retry", "key", bad.Key, "version", bad.Version, "err", err)
		}
		return
	}
	if _, err := s.apply(ctx, Principal{Name: "custosd"}, &raftlogv1.Command{Op: &raftlogv1.Command_ConfirmAdmission{
		ConfirmAdmission: &raftlogv1.ConfirmAdmission{Node: s.node, TransportKeyFingerprint: tk.fp, Rotation: true, RotatedDigest: digest}}}); err != nil {
		s.lg.Warn("domain-key rotation: could not confirm the re-wrapping; will retry", "err", err)
		return
	}
	s.lg.Info("domain-key rotation: every KEK is re-wrapped under the new domain key", "epoch", r.Epoch)
}

// checkRotated unwraps each re-wrapped KEK under the new key to (into a
// temporary object, destroyed again) and compares its check value with the
// KEK's; it returns the first that fails, or nil. A blob that does not
// unwrap to its KEK would lose the key version once the rotation completes.
func (s *Service) checkRotated(ctx context.Context, to hsm.KeyRef, set []RotatedKEK) *RotatedKEK {
	for i := range set {
		k := &set[i]
		id, err := s.newObjectID(ctx, "custos/rotation-check/"+s.node)
		if err == nil {
			err = s.hsm.UnwrapKey(ctx, to, k.Wrapped, hsm.KeySpec{ID: id, Label: "custos rotation check", Usage: hsm.UsageEncrypt, CheckValue: k.CheckValue})
			if derr := s.hsm.DestroyKey(context.WithoutCancel(ctx), id); derr != nil {
				s.lg.Warn("domain-key rotation: could not destroy a check object", "object_id", string(id), "err", derr)
			}
		}
		if err != nil {
			s.note("rotation-check:"+k.Key+fmt.Sprint(k.Version)+err.Error(), func() {
				s.lg.Error("domain-key rotation: a re-wrapped KEK does not unwrap to its key under the new domain key", "key", k.Key, "version", k.Version, "err", err)
			})
			return k
		}
	}
	return nil
}

// receiveRotation installs the new domain key the generator sent.
func (s *Service) receiveRotation(ctx context.Context, r *custosv1.DomainKeyRotation, tk *transportKey, self *custosv1.NodeAdmission) {
	spec := hsm.KeySpec{ID: r.NewDomainKeyId, Label: fmt.Sprintf("custos domain key %s epoch %d", s.state.ClusterID(), r.Epoch),
		Usage: hsm.UsageWrap, CheckValue: r.NewDomainKeyCheckValue}
	newKey := hsm.KeyRef{ID: spec.ID, CheckValue: spec.CheckValue}
	// Received at an earlier step (the generator had not confirmed yet):
	// the token holds it, with the check value the state records.
	err := s.hsm.VerifyKey(ctx, newKey, hsm.UsageWrap)
	if err != nil {
		err = s.hsm.ReceiveWrappingKey(ctx, tk.id, self.WrappedDomainKey, transportHash(self.Hash), spec)
	}
	if err != nil {
		s.lg.Error("domain-key rotation: the new domain key sent to this node did not unwrap; will retry", "err", err)
		return
	}
	// The re-wrapped KEKs are final once the generator confirmed them; this
	// node checks every one against its KEK before it confirms.
	if rotationEntryOf(r, r.Generator).GetState() != custosv1.AdmissionState_ADMISSION_STATE_ADMITTED {
		return
	}
	set, digest := s.state.rotatedSet()
	if bad := s.checkRotated(ctx, newKey, set); bad != nil {
		return
	}
	if _, err := s.apply(ctx, Principal{Name: "custosd"}, &raftlogv1.Command{Op: &raftlogv1.Command_ConfirmAdmission{
		ConfirmAdmission: &raftlogv1.ConfirmAdmission{Node: s.node, TransportKeyFingerprint: tk.fp, Rotation: true, RotatedDigest: digest}}}); err != nil {
		s.lg.Warn("domain-key rotation: could not confirm; will retry", "err", err)
		return
	}
	s.lg.Info("domain-key rotation: this node's HSM holds the new domain key", "epoch", r.Epoch)
}

// dropRotationKeys destroys this process's rotation transport key and
// session copy of the old domain key, if any.
func (s *Service) dropRotationKeys(ctx context.Context) {
	s.custody.mu.Lock()
	rc := &s.custody.rotation
	ids := [][]byte{}
	if rc.transport != nil {
		ids = append(ids, rc.transport.id)
	}
	if rc.rewrap != nil {
		ids = append(ids, rc.rewrap)
	}
	rc.transport, rc.rewrap = nil, nil
	s.custody.mu.Unlock()
	for _, id := range ids {
		if err := s.hsm.DestroyTransportKey(context.WithoutCancel(ctx), id); err != nil {
			s.lg.Warn("rotation: could not destroy a session key (it ends with this process)", "err", err)
		}
	}
}
