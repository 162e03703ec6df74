package kms

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/custos-kms/custos/kms/audit"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"google.golang.org/protobuf/proto"
)

// The state digest (docs/ledger.md, *State digest*): a SHA-256 over the
// part of the state that the customer governs — officers and quorum,
// client authorities, witnesses, quotas, sinks and notify rules, every
// key's lifecycle, versions and policy, the admitted custodians, the domain
// key, the grants with their remaining uses, the nodes' checkpoint keys —
// in a fixed encoding. Every checkpoint record and every record that
// changes that state carries it. It leaves out what other decisions change
// (rate counters, pending requests), cursors and cosignature times, so it
// changes only at records that change the governed state
// (audit.StateChanging: a grant's use is one). An export in which it
// changes between two records with no such record in between shows a
// state that was edited outside the log.

// stateDigestLabel separates the digest from every other hash.
const stateDigestLabel = "custos-state-digest-v1\x00"

// StateDigestVersion is what the digest covers, recorded beside it
// (DecisionRecord.state_digest_version): 2 added grants and checkpoint
// keys. Digests of different versions are never compared, so a node that
// upgrades does not read its predecessor's digest as an edit.
const StateDigestVersion = 2

// stateDigest returns the digest of the governed state.
func (s *State) stateDigest() []byte {
	st := &raftlogv1.State{ClusterId: s.clusterID, DomainKeyId: s.domainKeyID, DomainKeyCheckValue: s.domainKCV,
		DomainKeyEpoch: s.epoch, Governance: s.gov, Restore: s.restore}
	for _, n := range sortedKeys(s.keys) {
		st.Keys = append(st.Keys, s.keys[n])
	}
	for _, n := range sortedKeys(s.admissions) {
		st.Admissions = append(st.Admissions, s.admissions[n])
	}
	for _, id := range sortedKeys(s.grants) {
		st.Grants = append(st.Grants, s.grants[id])
	}
	st.NodeKeys = s.nodeKeys
	st.Members, st.StateMachineVersion = s.members, s.smVersion
	return digestOfState(st, s.digestVersion())
}

// digestOfState returns the state digest of the given version (0: without
// grants and checkpoint keys; StateDigestVersion) of a state in its
// snapshot form (keys, admissions and grants sorted by name), which it
// does not change.
func digestOfState(full *raftlogv1.State, version uint32) []byte {
	// (Not the genesis fingerprint: it is the hash of the record that
	// carries the first digest, and never changes after.) Grants go in
	// whole: one that no approval or statement created, or whose uses were
	// reset, would release keys with no record of why.
	st := &raftlogv1.State{ClusterId: full.ClusterId, DomainKeyId: full.DomainKeyId, DomainKeyCheckValue: full.DomainKeyCheckValue,
		DomainKeyEpoch: full.DomainKeyEpoch, Restore: full.Restore}
	if version >= 2 {
		// Version 2 also covers the Raft configuration as the log
		// recorded it (every change is a MEMBERSHIP record; not the
		// addresses) and the state machine version itself: a phantom
		// server or a version set back is an edit.
		st.Grants, st.StateMachineVersion = full.Grants, full.StateMachineVersion
		for _, m := range full.Members {
			st.Members = append(st.Members, &raftlogv1.RaftServer{Id: m.Id, Suffrage: m.Suffrage})
		}
	}
	for _, k := range full.Keys {
		g := &raftlogv1.KeyRecord{Name: k.Name, Enabled: k.Enabled, Revoked: k.Revoked, PrimaryVersion: k.PrimaryVersion,
			MinDecryptionVersion: k.MinDecryptionVersion, Policy: k.Policy, DestroyAfterUnixNano: k.DestroyAfterUnixNano,
			Destroyed: k.Destroyed, Creator: k.Creator}
		for _, v := range k.Versions {
			g.Versions = append(g.Versions, &raftlogv1.KeyVersionRecord{Version: v.Version, KekId: v.KekId, KekCheckValue: v.KekCheckValue,
				Origin: v.Origin, DestroyAfterUnixNano: v.DestroyAfterUnixNano, Destroyed: v.Destroyed})
		}
		st.Keys = append(st.Keys, g)
	}
	if full.Governance != nil {
		g := proto.Clone(full.Governance).(*custosv1.Governance)
		for _, sk := range g.Sinks {
			sk.HmacKey, sk.DeliveredSeq = nil, 0
		}
		for _, w := range g.Witnesses {
			w.Last = nil
		}
		st.Governance = g
	}
	for _, k := range full.NodeKeys {
		if version < 2 {
			break
		}
		// Not the address nor the versions it reports: the operator's.
		st.NodeKeys = append(st.NodeKeys, &raftlogv1.NodeKey{Node: k.Node, PublicKey: k.PublicKey})
	}
	for _, a := range full.Admissions {
		if a.State == custosv1.AdmissionState_ADMISSION_STATE_ADMITTED {
			st.Admissions = append(st.Admissions, &custosv1.NodeAdmission{Node: a.Node, State: a.State})
		}
	}
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

// ErrStateMismatch means the state a node loaded does not match the state
// digest its own ledger recorded: it was changed outside the log.
var ErrStateMismatch = errors.New("the state does not match the ledger's state digest")

// VerifyStateDigest checks the state against the newest record of the
// ledger that carries a state digest (docs/ledger.md, *State digest*):
// every state-changing record and every checkpoint does, so the state's
// digest must be the one recorded there, and a state that differs was
// changed outside the log (an edited snapshot) — ErrStateMismatch. It
// reports whether it could check: not when that record is not on this
// node (backfilling) or of another digest version, when a state-changing record
// made before state digests existed came after it, or for a cluster
// restored into node (this node) whose restore is not recorded yet; a
// state claiming any other unrecorded restore is ErrStateMismatch.
func (s *State) VerifyStateDigest(node string) (checked bool, at uint64, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.clusterID == "" {
		return false, 0, nil
	}
	if r := s.restore; r != nil && !r.Reported {
		// `custosd restore` into this very node, not yet recorded: its
		// first act is the RESTORE record, and nothing serves key crypto
		// until the officers accept it. Anything else claiming a restore
		// that no record shows is an edit.
		if r.Node == node && !r.Accepted && isHex32(r.RestoreId) {
			return false, 0, nil
		}
		// A node catching up with a cluster restored into another node
		// holds that node's restored state until the RESTORE record
		// reaches it. Unaccepted, the restore serves no key crypto here
		// (and only the named node reports it, so none can accept it if
		// it was made up): nothing to gain from the skip.
		if r.Node != node && !r.Accepted && isHex32(r.RestoreId) {
			return false, 0, nil
		}
		return true, 0, fmt.Errorf("%w: the state claims a restore into node %q (restore id %q, accepted %v) that no RESTORE record shows: it was changed outside the log",
			ErrStateMismatch, r.Node, r.RestoreId, r.Accepted)
	}
	return verifyDigest(s.stateDigest, s.digestVersion(), func(seq uint64) ([]byte, bool) {
		data, err := s.ledger.Get(seq)
		return data, err == nil
	}, s.seq)
}

// verifyDigest is VerifyStateDigest over any ledger: digest computes the
// state's digest, get reads a record (false: not held), head is the last
// sequence number.
func verifyDigest(digest func() []byte, version uint32, get func(uint64) ([]byte, bool), head uint64) (bool, uint64, error) {
	// No bound: a cluster configured with rare checkpoints only makes
	// the walk longer (a read per record), never skips the check.
	for seq := head; seq >= 1; seq-- {
		data, ok := get(seq)
		if !ok {
			return false, 0, nil // not held here (backfilling)
		}
		rec := &custosv1.DecisionRecord{}
		if err := proto.Unmarshal(data, rec); err != nil {
			return false, 0, nil
		}
		if len(rec.StateDigest) > 0 {
			if rec.StateDigestVersion > version {
				// The ledger already records a newer version than the state
				// runs: versions only go forward, so the state was set back
				// (an edited snapshot running the older rules).
				return true, seq, fmt.Errorf("%w: the %s record at seq %d carries a state digest of version %d, but the state runs state machine rules of digest version %d: it was set back outside the log",
					ErrStateMismatch, rec.Operation, seq, rec.StateDigestVersion, version)
			}
			if rec.StateDigestVersion != version {
				return false, 0, nil // written before the cluster moved to this version
			}
			if d := digest(); !bytes.Equal(d, rec.StateDigest) {
				return true, seq, fmt.Errorf("%w: the %s record at seq %d recorded state digest %x, and no later record changes the governed state, but the state has digest %x: it was changed outside the log (an edited snapshot?). Restore from a snapshot file the officers accept (docs/operations.md, Restore)",
					ErrStateMismatch, rec.Operation, seq, rec.StateDigest, d)
			}
			return true, seq, nil
		}
		if audit.StateChanging(rec) {
			return false, 0, nil // made before state digests
		}
	}
	return false, 0, nil
}
