package kms

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/custos-kms/custos/hsm"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// The admission worker (RunAdmission) is the part of node admission that
// needs an HSM (docs/key-transport.md, *Admission*). On every node it runs
// the steps the replicated state asks of that node:
//
//   - a node whose HSM does not hold the domain key makes a session
//     transport key and offers its public half (OfferTransportKey); once a
//     holder sent the domain key to it, it unwraps it into its HSM, checks
//     the check value recorded at genesis, and confirms (ConfirmAdmission);
//   - an admitted node wraps the domain key to every approved transport key
//     its HSM security officer has marked trusted (TransportDomainKey);
//   - a node whose admission was revoked destroys its domain key and KEKs.

// admissionPoll is how often the worker looks again when nothing it waits
// for is in the log: the HSM security officer's trust step happens outside
// it.
const admissionPoll = time.Second

// TrustedKeyPrefix is the CKA_ID prefix of a transport key an HSM security
// officer trusted on a holder's token (`custos hsm trust`): it is followed
// by the first 32 hex digits of the key's fingerprint.
const TrustedKeyPrefix = "custos/trusted/"

// TrustedKeyID is the CKA_ID under which `custos hsm trust` stores the
// transport key with fingerprint fp (64 hex digits) on a holder's token.
func TrustedKeyID(fp string) []byte {
	if len(fp) > 32 {
		fp = fp[:32]
	}
	return []byte(TrustedKeyPrefix + fp)
}

// custody is the worker's memory.
type custody struct {
	mu sync.Mutex
	// transport is this process's transport key, nil when there is none.
	transport *transportKey
	// noted holds the messages already logged, so a waiting step logs once.
	noted map[string]bool
	// shredded is set once a revoked node destroyed its copies.
	shredded bool
	// destroyedSeen is the state's destroyedVersion whose KEKs this node
	// destroyed (destroy.go).
	destroyedSeen uint64
	// rotation is the domain-key rotation's (rotationwork.go).
	rotation rotationCustody
}

// transportKey is a session transport key of this process.
type transportKey struct {
	id  []byte
	fp  string
	der []byte // the public half, PKIX DER
}

// RunAdmission runs the admission worker until ctx ends: it acts on every
// applied change of the admissions and polls every admissionPoll. On return
// the transport key, if any, is destroyed.
func (s *Service) RunAdmission(ctx context.Context) {
	t := time.NewTicker(admissionPoll)
	defer t.Stop()
	defer s.dropTransportKey(context.WithoutCancel(ctx))
	defer s.dropRotationKeys(context.WithoutCancel(ctx))
	seen := ^uint64(0)
	for {
		ch, version := s.state.admissionsChanged()
		if version != seen {
			seen = version
			s.AdmissionStep(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		case <-t.C:
			s.AdmissionStep(ctx)
		}
	}
}

// AdmissionStep does what the replicated admissions ask of this node now
// (RunAdmission calls it; tests may too). Failures are logged, and retried
// at the next step.
func (s *Service) AdmissionStep(ctx context.Context) {
	if s.state.ClusterID() == "" {
		return
	}
	s.reportRestore(ctx)
	s.shredDestroyed(ctx)
	s.rotationStep(ctx)
	s.pruneImports(ctx, s.now()) // expired import keys leave the HSM
	self := s.state.Admission(s.node)
	if self.GetState() == custosv1.AdmissionState_ADMISSION_STATE_REVOKED {
		if !s.shred(ctx) {
			return
		}
		// Destroyed: from here the node is one without the domain key,
		// which may offer a transport key for officers to admit again.
	} else if self == nil && s.admission == nil && s.state.custodians() == 0 {
		// The initialising node of a cluster from before admission.
		s.confirm(ctx, "")
		return
	}
	if !s.holdsDomainKey(ctx) {
		s.receive(ctx, self)
		return
	}
	if self.GetState() == custosv1.AdmissionState_ADMISSION_STATE_SENT {
		s.confirm(ctx, self.TransportKeyFingerprint)
		return
	}
	if self.GetState() == custosv1.AdmissionState_ADMISSION_STATE_ADMITTED {
		s.sendToApproved(ctx)
	}
}

// holdsDomainKey reports whether this node's HSM holds the verified domain
// key. A node that initialised the cluster checked it at start.
func (s *Service) holdsDomainKey(ctx context.Context) bool {
	a := s.admission
	if a == nil || a.ok.Load() {
		return true
	}
	err := s.hsm.VerifyKey(ctx, s.state.DomainKey(), hsm.UsageWrap)
	if err == nil {
		a.ok.Store(true)
		return true
	}
	if errors.Is(err, hsm.ErrObjectMismatch) {
		_ = s.rejectObject(ctx, "", 0, s.state.DomainKeyID(), err)
	}
	return false
}

// note logs msg at most once per key (until forget).
func (s *Service) note(key string, log func()) {
	s.custody.mu.Lock()
	seen := s.custody.noted[key]
	s.custody.noted[key] = true
	s.custody.mu.Unlock()
	if !seen {
		log()
	}
}

// receive is the joining node's side: offer a transport key, or unwrap the
// domain key sent to it.
func (s *Service) receive(ctx context.Context, self *custosv1.NodeAdmission) {
	s.custody.mu.Lock()
	tk := s.custody.transport
	s.custody.mu.Unlock()
	if tk != nil && self.GetState() == custosv1.AdmissionState_ADMISSION_STATE_SENT && self.TransportKeyFingerprint == tk.fp {
		s.unwrapSent(ctx, tk, self)
		return
	}
	if tk == nil {
		var err error
		if tk, err = s.newTransportKey(ctx); err != nil {
			s.lg.Warn("admission: could not make a transport key; will retry", "err", err)
			return
		}
	}
	if self.GetTransportKeyFingerprint() == tk.fp {
		s.note("wait:"+tk.fp, func() {
			s.lg.Warn("this node waits for admission: officers approve it with `custos cluster admit`, then a holder's HSM security officer trusts its transport key (`custos hsm trust`)",
				"node", s.node, "transport_key_fingerprint", tk.fp, "identity_key_fingerprint", s.state.IdentityFingerprint(s.node))
		})
		return
	}
	if _, err := s.apply(ctx, Principal{Name: "custosd"}, &raftlogv1.Command{Op: &raftlogv1.Command_OfferTransportKey{
		OfferTransportKey: &raftlogv1.OfferTransportKey{Node: s.node, PublicKey: tk.der}}}); err != nil {
		s.note("offer:"+err.Error(), func() {
			s.lg.Warn("admission: could not offer the transport key; will retry", "err", err)
		})
	}
}

// newTransportKey makes this process's transport key.
func (s *Service) newTransportKey(ctx context.Context) (*transportKey, error) {
	id, err := s.newObjectID(ctx, "custos/transport/"+s.node)
	if err != nil {
		return nil, err
	}
	tk, err := s.makeTransportKey(ctx, id)
	if err != nil {
		return nil, err
	}
	s.custody.mu.Lock()
	s.custody.transport = tk
	s.custody.mu.Unlock()
	return tk, nil
}

// makeTransportKey makes a session transport key named id.
func (s *Service) makeTransportKey(ctx context.Context, id []byte) (*transportKey, error) {
	pub, err := s.hsm.GenerateTransportKey(ctx, id)
	if err != nil {
		return nil, hsmError("transport key", err)
	}
	fp, err := hsm.TransportFingerprint(pub)
	var der []byte
	if err == nil {
		der, err = x509.MarshalPKIXPublicKey(pub)
	}
	if err != nil {
		_ = s.hsm.DestroyTransportKey(ctx, id)
		return nil, err
	}
	return &transportKey{id: id, fp: fp, der: der}, nil
}

// dropTransportKey destroys this process's transport key, if any.
func (s *Service) dropTransportKey(ctx context.Context) {
	s.custody.mu.Lock()
	tk := s.custody.transport
	s.custody.transport = nil
	s.custody.mu.Unlock()
	if tk == nil {
		return
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.hsm.DestroyTransportKey(dctx, tk.id); err != nil {
		s.lg.Warn("admission: could not destroy the transport key (it ends with this process)", "err", err)
	}
}

// unwrapSent installs the domain key a holder sent to tk.
func (s *Service) unwrapSent(ctx context.Context, tk *transportKey, self *custosv1.NodeAdmission) {
	spec := hsm.KeySpec{ID: s.state.DomainKeyID(), Label: "custos domain key " + s.state.ClusterID(),
		Usage: hsm.UsageWrap, CheckValue: s.state.DomainKey().CheckValue}
	err := s.hsm.ReceiveWrappingKey(ctx, tk.id, self.WrappedDomainKey, transportHash(self.Hash), spec)
	if err != nil {
		// Whatever went wrong, this transport key is done with: the node
		// offers a new one, which officers approve again.
		s.dropTransportKey(ctx)
		if errors.Is(err, hsm.ErrObjectMismatch) || errors.Is(err, hsm.ErrKeyExists) {
			_ = s.rejectObject(ctx, "", 0, spec.ID, err)
			return
		}
		s.lg.Error("admission: the domain key sent to this node did not unwrap; offering a new transport key",
			"sent_by", self.SentBy, "err", err)
		return
	}
	s.custody.mu.Lock()
	s.custody.transport = nil  // ReceiveWrappingKey destroyed it
	s.custody.shredded = false // a later revocation destroys this copy
	s.custody.mu.Unlock()
	if s.admission != nil {
		s.admission.ok.Store(true)
	}
	s.lg.Info("admission: this node's HSM now holds the cluster's domain key", "sent_by", self.SentBy)
	s.confirm(ctx, tk.fp)
}

// confirm records that this node's HSM holds the domain key.
func (s *Service) confirm(ctx context.Context, fp string) {
	if _, err := s.apply(ctx, Principal{Name: "custosd"}, &raftlogv1.Command{Op: &raftlogv1.Command_ConfirmAdmission{
		ConfirmAdmission: &raftlogv1.ConfirmAdmission{Node: s.node, TransportKeyFingerprint: fp}}}); err != nil {
		s.lg.Warn("admission: could not confirm; will retry", "err", err)
		return
	}
	s.lg.Info("admitted: this node serves key crypto")
}

// sendToApproved wraps the domain key to every approved transport key that
// this HSM's security officer trusted.
func (s *Service) sendToApproved(ctx context.Context) {
	for _, a := range s.state.Admissions(false) {
		if a.State != custosv1.AdmissionState_ADMISSION_STATE_APPROVED || a.Node == s.node {
			continue
		}
		if err := s.send(ctx, a); err != nil {
			key := "send:" + a.Node + ":" + a.ApprovedFingerprint
			if errors.Is(err, hsm.ErrKeyNotFound) {
				s.note(key, func() {
					s.lg.Info("admission: waiting for this HSM's security officer to trust the approved transport key (custos hsm trust)",
						"node", a.Node, "fingerprint", a.ApprovedFingerprint, "id", string(TrustedKeyID(a.ApprovedFingerprint)))
				})
				continue
			}
			s.note(key+":"+err.Error(), func() {
				s.lg.Warn("admission: could not send the domain key", "node", a.Node, "err", err)
			})
		}
	}
}

// send wraps the domain key to a's approved transport key and proposes it.
func (s *Service) send(ctx context.Context, a *custosv1.NodeAdmission) error {
	pub, fp, err := parseTransportKey(a.TransportPublicKey)
	if err != nil {
		return err
	}
	if fp != a.ApprovedFingerprint {
		return fmt.Errorf("%w: offered key %s is not the approved %s", ErrFailedPrecondition, fp, a.ApprovedFingerprint)
	}
	blob, err := s.hsm.WrapForTransport(ctx, s.state.DomainKey(), TrustedKeyID(fp), pub, transportHash(a.Hash))
	if err != nil {
		return err
	}
	_, err = s.apply(ctx, Principal{Name: "custosd"}, &raftlogv1.Command{Op: &raftlogv1.Command_TransportDomainKey{
		TransportDomainKey: &raftlogv1.TransportDomainKey{Node: a.Node, TransportKeyFingerprint: fp, WrappedDomainKey: blob}}})
	if err != nil && !errors.Is(err, ErrFailedPrecondition) { // another holder was first
		return err
	}
	if err == nil {
		s.lg.Info("admission: sent the domain key", "node", a.Node, "fingerprint", fp, "oaep", transportHash(a.Hash))
	}
	s.dropTrusted(ctx, fp)
	return nil
}

// dropTrusted destroys the trusted copy of transport key fp on this
// node's token once it served: its private half dies with the receiving
// process, and a trusted key the domain key may be wrapped to should not
// outlive its use.
func (s *Service) dropTrusted(ctx context.Context, fp string) {
	if err := s.hsm.DestroyKey(ctx, TrustedKeyID(fp)); err != nil {
		s.lg.Warn("could not destroy a trusted transport key that served (harmless: its private half is gone)", "fingerprint", fp, "err", err)
	}
}

// shred destroys this node's copies of the domain key and every KEK once
// its admission was revoked (crypto from here on fails closed anyway:
// admitted reads the revocation from the state), and reports whether they
// are gone.
func (s *Service) shred(ctx context.Context) bool {
	s.custody.mu.Lock()
	done := s.custody.shredded
	s.custody.mu.Unlock()
	if done {
		return true
	}
	s.dropTransportKey(ctx)
	ids := append([][]byte{s.state.DomainKeyID()}, s.state.kekIDs()...)
	if _, r := s.state.DomainKeyEpoch(false); r != nil && len(r.NewDomainKeyId) > 0 {
		ids = append(ids, r.NewDomainKeyId) // a running rotation's new key
	}
	var failed int
	for _, id := range ids {
		if err := s.hsm.DestroyKey(ctx, id); err != nil {
			failed++
			s.lg.Warn("admission revoked: could not destroy an HSM object; will retry", "object_id", string(id), "err", err)
		}
	}
	if failed > 0 {
		return false
	}
	if s.admission != nil {
		s.admission.ok.Store(false)
	}
	s.kekMu.Lock()
	clear(s.keks)
	s.kekMu.Unlock()
	s.custody.mu.Lock()
	s.custody.shredded = true
	s.custody.mu.Unlock()
	s.lg.Warn("admission revoked: this node's domain key and KEKs are destroyed; it serves no key crypto", "objects", len(ids))
	return true
}

// IdentityFingerprint returns the fingerprint officers check as node's HSM
// identity key (its registered checkpoint key), or "".
func (s *State) IdentityFingerprint(node string) string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.identityFingerprint(node)
}

// kekIDs returns the object id of every key version's KEK.
func (s *State) kekIDs() [][]byte {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var ids [][]byte
	for _, n := range sortedKeys(s.keys) {
		for _, v := range s.keys[n].Versions {
			if len(v.KekId) > 0 {
				ids = append(ids, v.KekId)
			}
		}
	}
	return ids
}

// admissionsChanged returns a channel closed at the next applied batch and
// the admissions' version (it changes whenever an admission does).
func (s *State) admissionsChanged() (<-chan struct{}, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.advanced, s.admissionsVersion
}

// custodians counts the admitted nodes.
func (s *State) custodians() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.admittedCount()
}
