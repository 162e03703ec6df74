package audit

import (
	"fmt"
	"slices"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Recomputation recomputes the governed state from a ledger's records, in
// order from record 1, as Verify does: a node checks the state it loaded
// against it at start (docs/ledger.md, *Recomputed state*).
type Recomputation struct {
	officers officerBook
	book     stateBook
	cluster  string
	next     uint64
	// NotPermitted lists the first records (at most 16) the recomputed
	// state did not permit, with why.
	NotPermitted []string
}

// NewRecomputation starts a recomputation for a cluster's ledger.
func NewRecomputation(cluster string) *Recomputation {
	return &Recomputation{cluster: cluster, next: 1}
}

// Add takes in the next record. It returns an error when the record is
// not the next one (the caller feeds records 1, 2, … in order).
func (r *Recomputation) Add(rec *custosv1.DecisionRecord) error {
	if rec.GetSeq() != r.next {
		return fmt.Errorf("audit: recomputation: record %d where %d was due", rec.GetSeq(), r.next)
	}
	r.next++
	why := r.officers.note(rec, r.cluster, rec.Seq)
	if w := r.book.note(rec, rec.Seq, &r.officers); why == "" {
		why = w
	}
	if why != "" && len(r.NotPermitted) < 16 {
		r.NotPermitted = append(r.NotPermitted, fmt.Sprintf("record %d: %s", rec.Seq, why))
	}
	return nil
}

// Following reports whether the recomputation follows the state (from a
// GENESIS record of a cluster born at state machine version 2 or later,
// through records that carry what it needs), and why not.
func (r *Recomputation) Following() (bool, string) {
	if !r.book.on && r.book.why == "" {
		return false, "no GENESIS record of state machine version 2 or later at record 1"
	}
	return r.book.on, r.book.why
}

// RecomputedKey is what the recomputation holds of one key.
type RecomputedKey struct {
	Policy                         *custosv1.KeyPolicy
	Enabled, Revoked               bool
	Versions, MinDecryptionVersion uint32
	// Destroyed and Scheduled: index 0 is the key as a whole, index v
	// version v (scheduled for destruction and not destroyed yet).
	Destroyed, Scheduled []bool
}

// Keys returns the recomputed keys by name.
func (r *Recomputation) Keys() map[string]RecomputedKey {
	out := make(map[string]RecomputedKey, len(r.book.keys))
	for n, k := range r.book.keys {
		out[n] = RecomputedKey{Policy: k.policy, Enabled: k.enabled, Revoked: k.revoked, Versions: k.versions,
			MinDecryptionVersion: k.min, Destroyed: slices.Clone(k.destroyed), Scheduled: slices.Clone(k.scheduled)}
	}
	return out
}

// ClientAuthorities returns the recomputed client authorities (hex
// SHA-256 of each certificate, sorted) and whether they are pinned.
func (r *Recomputation) ClientAuthorities() (pinned bool, sha256s []string) {
	for h := range r.book.authorities {
		sha256s = append(sha256s, h)
	}
	slices.Sort(sha256s)
	return r.book.pinned, sha256s
}

// RecomputedWitness is what the recomputation holds of one witness: its
// key as the officers registered it and its last cosignature (Seq 0 when
// none).
type RecomputedWitness struct {
	PublicKey    []byte
	Seq          uint64
	TimeUnixNano int64
}

// Witnesses returns the recomputed witnesses by name.
func (r *Recomputation) Witnesses() map[string]RecomputedWitness {
	out := make(map[string]RecomputedWitness, len(r.book.witnesses))
	for n, w := range r.book.witnesses {
		rw := RecomputedWitness{PublicKey: w.der}
		if w.has {
			rw.Seq, rw.TimeUnixNano = w.seq, w.cosignedAtNano
		}
		out[n] = rw
	}
	return out
}

// Officers returns the officer set on record and its quorum (nil when it
// could not be followed).
func (r *Recomputation) Officers() ([]*custosv1.Officer, uint32) {
	if r.officers.set == nil {
		return nil, 0
	}
	return r.officers.officers, r.officers.quorum
}
