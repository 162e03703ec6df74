package kms

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/kms/audit"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// ErrNotRecomputed means the state a node loaded is not the state
// recomputed from its ledger's genesis and the officer-signed statements
// (docs/ledger.md, *Recomputed state*): it was changed outside the log,
// even if every state digest was rewritten to match it.
var ErrNotRecomputed = errors.New("the state is not the one the officers' statements give")

// Recheck is what VerifyRecomputed found.
type Recheck struct {
	// Checked is false when the state could not be recomputed; Why says
	// why (a ledger that does not start at record 1 on this node, a
	// cluster born at state machine version 1, a restore).
	Checked bool
	Why     string
	// Records is the number of records read; Keys the keys compared.
	Records, Keys int
	// NotPermitted lists records of the ledger the recomputed state did
	// not permit (as `custos audit verify` reports them): evidence of
	// what happened before, which the node logs; it cannot be undone.
	NotPermitted []string
}

// VerifyRecomputed recomputes the governed state from this node's ledger,
// from record 1 (the genesis) through every record, with the auditor's
// code (audit.Recomputation), and compares it with the state the node
// holds: every key's policy, lifecycle, versions, minimum version and
// destruction, the client authorities, the officers and quorum. A state
// that differs is ErrNotRecomputed. It reads the whole ledger under the
// state's read lock: nodes call it at start, before serving.
func (s *State) VerifyRecomputed() (*Recheck, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := &Recheck{}
	if s.clusterID == "" || s.seq == 0 {
		out.Why = "no ledger yet"
		return out, nil
	}
	if g := s.ledger.Missing(); g != nil && g.Lo <= 1 {
		out.Why = "this node's ledger does not hold record 1 yet (backfilling)"
		return out, nil
	}
	r := audit.NewRecomputation(s.clusterID)
	err := s.ledger.Scan(1, func(seq uint64, data []byte) error {
		if seq > s.seq {
			return errStopScan
		}
		rec := &custosv1.DecisionRecord{}
		if err := proto.Unmarshal(data, rec); err != nil {
			return fmt.Errorf("%w: ledger record %d does not decode: %v", ErrNotRecomputed, seq, err)
		}
		out.Records++
		return r.Add(rec)
	})
	if err != nil && !errors.Is(err, errStopScan) {
		if errors.Is(err, ErrNotRecomputed) {
			return out, err
		}
		out.Why = fmt.Sprintf("the ledger could not be read from record 1: %v", err)
		return out, nil
	}
	out.NotPermitted = r.NotPermitted
	if ok, why := r.Following(); !ok {
		out.Why = why
		return out, nil
	}
	if uint64(out.Records) != s.seq {
		out.Why = fmt.Sprintf("this node's ledger holds %d of records 1..%d", out.Records, s.seq)
		return out, nil
	}
	out.Checked = true
	if err := s.compareRecomputed(r, out); err != nil {
		return out, fmt.Errorf("%w: %v", ErrNotRecomputed, err)
	}
	return out, nil
}

// compareRecomputed compares the state with a recomputation.
func (s *State) compareRecomputed(r *audit.Recomputation, out *Recheck) error {
	keys := r.Keys()
	if len(keys) != len(s.keys) {
		return fmt.Errorf("the state holds %d keys, the records create %d", len(s.keys), len(keys))
	}
	for _, name := range sortedKeys(s.keys) {
		k, want := s.keys[name], keys[name]
		if want.Policy == nil {
			return fmt.Errorf("key %q: no record created it", name)
		}
		if err := compareKey(k, want); err != nil {
			return fmt.Errorf("key %q: %v", name, err)
		}
		out.Keys++
	}
	pinned, cas := r.ClientAuthorities()
	var have []string
	for _, ca := range s.gov.GetClientAuthorities() {
		have = append(have, ca.GetSha256())
	}
	slices.Sort(have)
	if pinned != s.gov.GetClientAuthoritiesPinned() || !slices.Equal(have, cas) {
		return fmt.Errorf("client authorities: the state trusts %v (pinned %v), the statements %v (pinned %v)", have, s.gov.GetClientAuthoritiesPinned(), cas, pinned)
	}
	witnesses := r.Witnesses()
	if len(witnesses) != len(s.gov.GetWitnesses()) {
		return fmt.Errorf("the state registers %d witnesses, the statements %d", len(s.gov.GetWitnesses()), len(witnesses))
	}
	for _, w := range s.gov.GetWitnesses() {
		want, ok := witnesses[w.GetName()]
		switch {
		case !ok || !bytes.Equal(want.PublicKey, w.GetPublicKey()):
			return fmt.Errorf("witness %q: not the one the statements registered", w.GetName())
		case want.Seq != w.GetLast().GetSeq() || want.TimeUnixNano != w.GetLast().GetTimeUnixNano():
			// What decides whether a key that requires a fresh
			// cosignature releases: only a cosignature record moves it.
			return fmt.Errorf("witness %q: its last cosignature is not the one the records hold", w.GetName())
		}
	}
	if officers, quorum := r.Officers(); officers != nil {
		if quorum != s.gov.GetQuorum() || !sameOfficers(officers, s.gov.GetOfficers()) {
			return fmt.Errorf("officers: the state's are not the ones the genesis and the statements install")
		}
	}
	return nil
}

// compareKey compares a key with its recomputation.
func compareKey(k *raftlogv1.KeyRecord, want audit.RecomputedKey) error {
	switch {
	case !proto.Equal(k.Policy, want.Policy):
		return fmt.Errorf("its policy (version %d) is not the one the statements set (version %d)", k.Policy.GetVersion(), want.Policy.GetVersion())
	case k.Enabled != want.Enabled || k.Revoked != want.Revoked:
		return fmt.Errorf("enabled %v, revoked %v; the records give enabled %v, revoked %v", k.Enabled, k.Revoked, want.Enabled, want.Revoked)
	case uint32(len(k.Versions)) != want.Versions || k.PrimaryVersion != want.Versions:
		return fmt.Errorf("%d versions (primary %d); the records create %d", len(k.Versions), k.PrimaryVersion, want.Versions)
	case k.MinDecryptionVersion != want.MinDecryptionVersion:
		return fmt.Errorf("minimum decryption version %d; the records set %d", k.MinDecryptionVersion, want.MinDecryptionVersion)
	case k.Destroyed != want.Destroyed[0] || (!k.Destroyed && (k.DestroyAfterUnixNano != 0) != want.Scheduled[0]):
		return fmt.Errorf("its destruction state is not the one the records give")
	}
	for i, v := range k.Versions {
		if v.Destroyed != want.Destroyed[i+1] || (!v.Destroyed && (v.DestroyAfterUnixNano != 0) != want.Scheduled[i+1]) {
			return fmt.Errorf("version %d: its destruction state is not the one the records give", i+1)
		}
	}
	return nil
}

// sameOfficers compares officer sets by name, key and credential ids.
func sameOfficers(a, b []*custosv1.Officer) bool {
	if len(a) != len(b) {
		return false
	}
	byName := map[string]*custosv1.Officer{}
	for _, o := range b {
		byName[o.GetName()] = o
	}
	for _, o := range a {
		x := byName[o.GetName()]
		if x == nil || !bytes.Equal(x.GetPublicKey(), o.GetPublicKey()) || len(x.GetCredentials()) != len(o.GetCredentials()) {
			return false
		}
		for i, c := range o.GetCredentials() {
			if !bytes.Equal(c.GetCredentialId(), x.GetCredentials()[i].GetCredentialId()) || !bytes.Equal(c.GetPublicKey(), x.GetCredentials()[i].GetPublicKey()) {
				return false
			}
		}
	}
	return true
}
