package kms

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/custos-kms/custos/kms/governance"
	"github.com/custos-kms/custos/kms/keypolicy"
	"github.com/custos-kms/custos/kms/ledger"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// Witnesses (docs/witness.md): programs the customer runs with keys of its
// own (`custos audit witness`). A witness follows the ledger, checks that
// each head it sees extends the last one it cosigned, and cosigns it; the
// cluster records each cosignature as a ledger record. A rewritten history
// is then a head the witness refuses to cosign (and a fork `custos audit
// verify --witness-state` reports), and a key whose policy sets
// witness_max_age_seconds releases nothing while no witness has cosigned
// recently: the operator cannot both rewrite the ledger and keep using
// such keys through custos.

// Witness bounds.
const (
	// maxWitnesses bounds the officers' witnesses.
	maxWitnesses = 8
	// maxCosignatureAhead bounds how far ahead of the cluster's clock a
	// cosignature may be: the witness's clock moves the cluster's forward
	// (nodes set back are caught up), but a witness clock years off is
	// refused.
	maxCosignatureAhead = 24 * time.Hour
	// DefaultWitnessMaxRecords is KeyPolicy.witness_max_records's default.
	DefaultWitnessMaxRecords = keypolicy.DefaultWitnessMaxRecords
)

func (s *State) applyAddWitness(op *custosv1.AddWitness) (string, error) {
	w := op.GetWitness()
	if w == nil || w.Name == "" {
		return "", fmt.Errorf("%w: add_witness needs a witness with a name", ErrInvalidArgument)
	}
	if _, err := governance.ParsePublicKey(w.PublicKey); err != nil {
		return "", fmt.Errorf("%w: witness %q: %v", ErrInvalidArgument, w.Name, err)
	}
	for _, x := range s.gov.Witnesses {
		if x.Name == w.Name {
			return "", fmt.Errorf("%w: witness %q", ErrAlreadyExists, w.Name)
		}
		if bytes.Equal(x.PublicKey, w.PublicKey) {
			return "", fmt.Errorf("%w: witness %q has the same key", ErrAlreadyExists, x.Name)
		}
	}
	if len(s.gov.Witnesses) >= maxWitnesses {
		return "", fmt.Errorf("%w: at most %d witnesses", ErrResourceExhausted, maxWitnesses)
	}
	s.gov.Witnesses = append(s.gov.Witnesses, &custosv1.Witness{Name: w.Name, PublicKey: append([]byte(nil), w.PublicKey...)})
	return fmt.Sprintf("witness %s added (key %s)", w.Name, keyFingerprint(w.PublicKey)), nil
}

func (s *State) applyRemoveWitness(op *custosv1.RemoveWitness) (string, error) {
	i := slices.IndexFunc(s.gov.Witnesses, func(x *custosv1.Witness) bool { return x.Name == op.GetName() })
	if i < 0 {
		return "", fmt.Errorf("%w: witness %q", ErrNotFound, op.GetName())
	}
	s.gov.Witnesses = slices.Delete(s.gov.Witnesses, i, i+1)
	return fmt.Sprintf("witness %s removed", op.GetName()), nil
}

func keyFingerprint(pkix []byte) string {
	pub, err := governance.ParsePublicKey(pkix)
	if err != nil {
		return "invalid"
	}
	return governance.Fingerprint(pub)
}

// applyRecordCosignature checks a cosignature and appends its record: the
// witness is registered, it names this cluster and a record this ledger
// holds, whose chain hash is the cosigned head; it is newer than the
// witness's last one and not ahead of the state's clock by more than
// MaxClockSkew; the signature verifies under the witness's key. Refusals
// change nothing and append nothing.
func (s *State) applyRecordCosignature(index uint64, c *raftlogv1.Command, op *raftlogv1.RecordCosignature) any {
	cs := op.GetCosignature()
	if cs == nil || cs.ClusterId != s.clusterID || cs.Seq == 0 || cs.Seq > s.seq || len(cs.Head) != 32 {
		return fmt.Errorf("%w: cosignature does not name a record of this cluster's ledger", ErrInvalidArgument)
	}
	var w *custosv1.Witness
	for _, x := range s.gov.GetWitnesses() {
		if x.Name == cs.Witness {
			w = x
		}
	}
	if w == nil {
		return fmt.Errorf("%w: %q is not a witness the officers registered", ErrPermissionDenied, cs.Witness)
	}
	if last := w.Last; last != nil && (cs.Seq < last.Seq || cs.TimeUnixNano <= last.TimeUnixNano) {
		return fmt.Errorf("%w: witness %s already cosigned seq %d at %s: a cosignature must be newer", ErrFailedPrecondition,
			w.Name, last.Seq, time.Unix(0, last.TimeUnixNano).UTC().Format(time.RFC3339Nano))
	}
	if ahead := time.Duration(cs.TimeUnixNano - s.clock); ahead > maxCosignatureAhead {
		return fmt.Errorf("%w: cosignature time is %s ahead of the cluster's clock (at most %s)", ErrFailedPrecondition, ahead, maxCosignatureAhead)
	}
	data, err := s.signedRecord("cosignature", cs.Seq)
	if err != nil {
		return err
	}
	if h := ledger.Hash(data); !bytes.Equal(h[:], cs.Head) {
		// The witness cosigned another history at this position: the
		// ledger it saw and this one have forked.
		return fmt.Errorf("%w: the cosigned head is not this ledger's chain hash at %d: the witness saw another history", ErrFailedPrecondition, cs.Seq)
	}
	key, err := governance.ParsePublicKey(w.PublicKey)
	if err != nil || !governance.VerifyECDSA(key, ledger.CosignatureMessage(cs.ClusterId, cs.Witness, cs.Seq, cs.Head, cs.TimeUnixNano), cs.Signature) {
		return fmt.Errorf("%w: cosignature does not verify under witness %s's key", ErrPermissionDenied, w.Name)
	}
	// The witness's clock is the customer's: a valid cosignature moves the
	// state's clock forward to its time, so nodes whose clocks were set
	// back cannot hold time still (nor keep an old cosignature fresh).
	if cs.TimeUnixNano > s.clock {
		s.clock = cs.TimeUnixNano
		c.TimeUnixNano = s.clock
	}
	rec := s.newRecord(index, c, custosv1.Operation_OPERATION_WITNESS_COSIGNATURE)
	rec.Outcome = custosv1.Outcome_OUTCOME_ALLOW
	rec.MatchedRule = "witness:" + w.Name
	// Only the fields the signature covers (and the signature): nothing
	// unsigned is stored.
	rec.Cosignature = &custosv1.Cosignature{ClusterId: cs.ClusterId, Witness: cs.Witness, Seq: cs.Seq,
		Head: append([]byte(nil), cs.Head...), TimeUnixNano: cs.TimeUnixNano, Signature: append([]byte(nil), cs.Signature...)}
	rec.Detail = fmt.Sprintf("witness %s cosigned the ledger head at %d", w.Name, cs.Seq)
	w.Last = rec.Cosignature
	return &Decision{Record: rec}
}

// witnessFresh reports whether some registered witness cosigned a head no
// more than the policy's witness_max_age_seconds before the state's clock
// and no more than its witness_max_records behind the ledger head
// (keypolicy.WitnessFresh, which the auditor's recomputation applies too). The record bound holds whatever the
// nodes' clocks say: an operator who holds the clock still can release at
// most maxBehind more records' worth before the witness must cosign again.
// A cosignature time ahead of the clock (which a valid one never is: it
// moves the clock) is not fresh.
func (s *State) witnessFresh(p *custosv1.KeyPolicy) bool {
	for _, w := range s.gov.GetWitnesses() {
		if w.Last != nil && keypolicy.WitnessFresh(p, s.clock, s.seq, w.Last.Seq, w.Last.TimeUnixNano) {
			return true
		}
	}
	return false
}

// SubmitCosignature records a witness's cosignature (docs/witness.md). The
// cluster checks it (applyRecordCosignature); it returns the record's
// position.
func (s *Service) SubmitCosignature(ctx context.Context, p Principal, cs *custosv1.Cosignature) (uint64, error) {
	if cs == nil || len(cs.Witness) == 0 || len(cs.Witness) > 256 || len(cs.Head) != 32 || len(cs.Signature) == 0 || len(cs.Signature) > 80 {
		return 0, fmt.Errorf("%w: a cosignature needs a witness name, a 32-byte head and an ECDSA signature", ErrInvalidArgument)
	}
	res, err := s.apply(ctx, p, &raftlogv1.Command{Op: &raftlogv1.Command_RecordCosignature{
		RecordCosignature: &raftlogv1.RecordCosignature{Cosignature: cs}}})
	if err != nil {
		return 0, err
	}
	d, ok := res.(*Decision)
	if !ok || d.Record == nil {
		return 0, fmt.Errorf("%w: cosignature: unexpected result %T", ErrInternal, res)
	}
	return d.Record.Seq, nil
}

// witnessMaxRecords is a policy's bound on how many records a witness's
// last cosignature may be behind the head.
var witnessMaxRecords = keypolicy.WitnessMaxRecords
