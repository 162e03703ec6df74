package kms

import (
	"crypto/sha256"
	"fmt"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"google.golang.org/protobuf/proto"
)

// The state digest (docs/ledger.md, *State digest*): a SHA-256 over the
// part of the state that the customer governs — officers and quorum,
// client authorities, witnesses, quotas, sinks and notify rules, every
// key's lifecycle, versions and policy, the admitted custodians, the domain
// key — in a fixed encoding. Every checkpoint record carries it. It leaves
// out what decisions change (rate counters, grants' remaining uses,
// pending requests), cursors and cosignature times, so it changes only at
// records that change the governed state (stateChanging). An export in
// which it changes between two checkpoints with no such record in between
// shows a state that was edited outside the log.

// stateDigestLabel separates the digest from every other hash.
const stateDigestLabel = "custos-state-digest-v1\x00"

// stateDigest returns the digest of the governed state.
func (s *State) stateDigest() []byte {
	st := &raftlogv1.State{ClusterId: s.clusterID, DomainKeyId: s.domainKeyID, DomainKeyCheckValue: s.domainKCV,
		DomainKeyEpoch: s.epoch, GenesisSha256: s.genesis}
	for _, n := range sortedKeys(s.keys) {
		k := s.keys[n]
		g := &raftlogv1.KeyRecord{Name: k.Name, Enabled: k.Enabled, Revoked: k.Revoked, PrimaryVersion: k.PrimaryVersion,
			MinDecryptionVersion: k.MinDecryptionVersion, Policy: k.Policy, DestroyAfterUnixNano: k.DestroyAfterUnixNano,
			Destroyed: k.Destroyed, Creator: k.Creator}
		for _, v := range k.Versions {
			g.Versions = append(g.Versions, &raftlogv1.KeyVersionRecord{Version: v.Version, KekId: v.KekId, KekCheckValue: v.KekCheckValue,
				Origin: v.Origin, DestroyAfterUnixNano: v.DestroyAfterUnixNano, Destroyed: v.Destroyed})
		}
		st.Keys = append(st.Keys, g)
	}
	if s.gov != nil {
		g := proto.Clone(s.gov).(*custosv1.Governance)
		for _, sk := range g.Sinks {
			sk.HmacKey, sk.DeliveredSeq = nil, 0
		}
		for _, w := range g.Witnesses {
			w.Last = nil
		}
		st.Governance = g
	}
	for _, n := range sortedKeys(s.admissions) {
		if a := s.admissions[n]; a.State == custosv1.AdmissionState_ADMISSION_STATE_ADMITTED {
			st.Admissions = append(st.Admissions, &custosv1.NodeAdmission{Node: a.Node, State: a.State})
		}
	}
	st.Restore = s.restore
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(st)
	if err != nil {
		panic(fmt.Sprintf("kms: marshal state digest: %v", err))
	}
	h := sha256.New()
	h.Write([]byte(stateDigestLabel))
	h.Write(data)
	return h.Sum(nil)
}

// StateDigest returns the digest of the governed state as of the last
// applied entry.
func (s *State) StateDigest() []byte {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.stateDigest()
}
