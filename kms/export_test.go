package kms

import (
	"context"
	"encoding/binary"
	"time"

	"github.com/custos-kms/custos/kms/requestsig"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// SignCheckpointForTest signs (seq, head) with this node's HSM checkpoint
// key without proposing it, so a test can apply the same command to two
// replicas.
func (s *Service) SignCheckpointForTest(ctx context.Context, seq uint64, head []byte) (*custosv1.Checkpoint, error) {
	return s.signCheckpoint(ctx, seq, head)
}

// EditKeyForTest changes a key in the state outside the log, as an
// operator who edits a snapshot file and restarts the node does.
func (s *State) EditKeyForTest(name string, edit func(enabled, revoked *bool)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.keys[name]
	edit(&k.Enabled, &k.Revoked)
}

// SetRestoreForTest sets the state's restore outside the log.
func (s *State) SetRestoreForTest(r *custosv1.ClusterRestore) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.restore = r
}

// InjectGrantForTest puts a grant into the state outside the log, as an
// operator who edits a snapshot file and restarts the node does.
func (s *State) InjectGrantForTest(g *custosv1.Grant) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.grants[g.GrantId] = g
}

// SetGrantUsesForTest resets a grant's remaining uses outside the log.
func (s *State) SetGrantUsesForTest(id string, uses uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.grants[id].UsesLeft = uses
}

// InjectNodeKeyForTest registers a checkpoint key outside the log.
func (s *State) InjectNodeKeyForTest(node string, pkix []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nodeKeys = append(s.nodeKeys, &raftlogv1.NodeKey{Node: node, PublicKey: pkix})
}

// SkipRestoreCheckForTest turns off Restore's check of the loaded state
// against the ledger, to play a node whose check could not run (its ledger
// moved away); the returned func turns it back on.
func SkipRestoreCheckForTest() func() {
	restoreDigestCheck.Store(false)
	return func() { restoreDigestCheck.Store(true) }
}

// EditPolicyForTest changes a key's policy outside the log.
func (s *State) EditPolicyForTest(name string, edit func(*custosv1.KeyPolicy)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	edit(s.keys[name].Policy)
}

// EditVersionForTest changes a key version outside the log.
func (s *State) EditVersionForTest(name string, version uint32, edit func(*raftlogv1.KeyVersionRecord)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	edit(s.keys[name].Versions[version-1])
}

// FillRequestNoncesForTest spends signed-request nonces of principal at
// the state's clock, as checkRequestSignature spends them, until the
// principal holds its share (maxRequestNoncesPerPrincipal): a flood by
// one principal. It returns how many it spent.
func (s *State) FillRequestNoncesForTest(principal string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	na := time.Unix(0, s.clock).Add(2*requestsig.MaxSkew).Unix() + 1
	n := 0
	for i := uint64(0); s.requestNoncesBy[principal] < maxRequestNoncesPerPrincipal; i++ {
		var b [requestsig.NonceSize]byte
		binary.BigEndian.PutUint64(b[8:], i)
		b[0] = 0xf1
		k := string(b[:])
		s.requestNonces[k] = na
		s.requestNonceOrder = append(s.requestNonceOrder, k+principal)
		s.requestNoncesBy[principal]++
		n++
	}
	return n
}

// EditWitnessForTest changes a registered witness in the state outside
// the log, as an operator who edits a snapshot file does.
func (s *State) EditWitnessForTest(name string, edit func(*custosv1.Witness)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range s.gov.GetWitnesses() {
		if w.GetName() == name {
			edit(w)
		}
	}
}
