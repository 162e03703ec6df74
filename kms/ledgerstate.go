package kms

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"

	"github.com/custos-kms/custos/kms/governance"
	"github.com/custos-kms/custos/kms/ledger"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"google.golang.org/protobuf/proto"
)

// Limits on notification sinks.
const (
	maxSinks       = 16
	minHMACKeySize = 32
)

// DefaultNotifyRules are the rules of a new cluster: third-party data
// requests (and decrypts that give no reason), every DENY and PENDING, and
// every governance and membership record.
func DefaultNotifyRules() *custosv1.NotifyRules {
	return &custosv1.NotifyRules{
		Reasons:    []custosv1.Reason{custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST},
		Outcomes:   []custosv1.Outcome{custosv1.Outcome_OUTCOME_DENY, custosv1.Outcome_OUTCOME_PENDING},
		Governance: true,
	}
}

// notifies reports whether the cluster's rules (or the key's policy) select
// a record for notification.
func (s *State) notifies(rec *custosv1.DecisionRecord) bool {
	r := s.gov.GetNotifyRules()
	switch rec.Operation {
	case custosv1.Operation_OPERATION_CHECKPOINT:
		// Upkeep, unless a node's checkpoint did not match this ledger:
		// a divergence is the officers' concern.
		if rec.Outcome == custosv1.Outcome_OUTCOME_DENY {
			return r.GetAll() || r.GetGovernance()
		}
		return r.GetAll()
	case custosv1.Operation_OPERATION_WITNESS_COSIGNATURE:
		// The evidence's own upkeep, every few seconds: never pushed
		// unless everything is.
		return r.GetAll()
	case custosv1.Operation_OPERATION_THROTTLED:
		// A refusal, but no key use: no reason to match (an unspecified
		// one would read as a third-party request).
		return r.GetAll() || slices.Contains(r.GetOutcomes(), rec.Outcome)
	case custosv1.Operation_OPERATION_RELEASE_BLOCKED:
		return true
	case custosv1.Operation_OPERATION_GOVERNANCE, custosv1.Operation_OPERATION_MEMBERSHIP, custosv1.Operation_OPERATION_ADMISSION,
		custosv1.Operation_OPERATION_DESTROY_KEY, custosv1.Operation_OPERATION_RESTORE,
		custosv1.Operation_OPERATION_DOMAIN_KEY_ROTATION, custosv1.Operation_OPERATION_NODE_KEY,
		custosv1.Operation_OPERATION_STATE_MACHINE_UPGRADE:
		// A change of the cluster's membership, of who holds the domain
		// key, a key's destruction or a restore from a snapshot file is as much the officers' concern as their own
		// statements (docs/notifications.md).
		return r.GetAll() || r.GetGovernance()
	case custosv1.Operation_OPERATION_CREATE_KEY, custosv1.Operation_OPERATION_ROTATE_KEY,
		custosv1.Operation_OPERATION_DISABLE_KEY, custosv1.Operation_OPERATION_SET_MIN_DECRYPTION_VERSION:
		// A key user's own administration notifies only when everything
		// does, the key's policy says notify_all, or its outcome is
		// selected (by default DENY: a refused attempt on someone else's
		// key). It carries no reason and is no key use.
		k := s.keys[rec.Key]
		return r.GetAll() || (k != nil && k.Policy.GetNotifyAll()) || slices.Contains(r.GetOutcomes(), rec.Outcome)
	}
	if r.GetAll() {
		return true
	}
	if k := s.keys[rec.Key]; k != nil && k.Policy.GetNotifyAll() {
		return true
	}
	for _, reason := range notifyReasons(rec.Reason) {
		if slices.Contains(r.GetReasons(), reason) {
			return true
		}
	}
	if slices.Contains(r.GetOutcomes(), rec.Outcome) {
		return true
	}
	cp := r.GetCustomerPrincipals()
	return len(cp) > 0 && !slices.Contains(cp, rec.Principal)
}

// newRecord starts the next ledger record at this log position.
func (s *State) newRecord(index uint64, c *raftlogv1.Command, op custosv1.Operation) *custosv1.DecisionRecord {
	s.seq++
	return &custosv1.DecisionRecord{
		Seq: s.seq, TimeUnixNano: c.TimeUnixNano, Node: c.Node, Principal: c.Principal,
		PrincipalIssuerSha256: c.PrincipalIssuerSha256, PrincipalCertSha256: c.PrincipalCertSha256,
		Operation: op, PrevHash: append([]byte(nil), s.head[:]...), RaftIndex: index,
	}
}

// applyRegisterNodeKey publishes a node's checkpoint signing key. A new
// key is a NODE_KEY record (the registered keys are governed state: a key
// that appeared without one would make an auditor accept checkpoints it
// signed); a known key's new address is no record.
func (s *State) applyRegisterNodeKey(index uint64, c *raftlogv1.Command, op *raftlogv1.RegisterNodeKey) any {
	if _, err := governance.ParsePublicKey(op.PublicKey); err != nil || op.Node == "" {
		return fmt.Errorf("%w: register_node_key: need a node and a P-256 public key", ErrInvalidArgument)
	}
	if s.smv() >= 2 && op.Node != c.Node {
		// A node speaks for itself only (the Replication service checks
		// the same of followers; this holds for a leader too).
		return fmt.Errorf("%w: node %q may register only its own checkpoint key, not %q's", ErrPermissionDenied, c.Node, op.Node)
	}
	if s.smv() >= 2 {
		for _, k := range s.nodeKeys {
			if k.Node != op.Node && bytes.Equal(k.PublicKey, op.PublicKey) {
				// One key, one node: checkpoints name their signer by key.
				return fmt.Errorf("%w: that checkpoint key is node %q's", ErrPermissionDenied, k.Node)
			}
		}
	}
	for _, k := range s.nodeKeys {
		if k.Node == op.Node && bytes.Equal(k.PublicKey, op.PublicKey) {
			if op.ApiAddr != "" {
				k.ApiAddr = op.ApiAddr // the node moved: followers forward to the new address
			}
			k.MaxStateMachineVersion = op.MaxStateMachineVersion // it was upgraded (or downgraded)
			return nil
		}
	}
	s.nodeKeys = append(s.nodeKeys, &raftlogv1.NodeKey{Node: op.Node, PublicKey: op.PublicKey, ApiAddr: op.ApiAddr,
		MaxStateMachineVersion: op.MaxStateMachineVersion})
	if s.smv() < 2 {
		return nil // version 1 recorded no registration
	}
	rec := s.newRecord(index, c, custosv1.Operation_OPERATION_NODE_KEY)
	rec.Outcome, rec.MatchedRule = custosv1.Outcome_OUTCOME_ALLOW, "node-key"
	rec.NodePublicKey = slices.Clone(op.PublicKey)
	rec.Detail = fmt.Sprintf("node %s checkpoint key %x", op.Node, CheckpointKeyID(op.PublicKey))
	return &Decision{Record: rec}
}

// signedRecord returns the stored bytes of the record at seq that a
// checkpoint or a witness cosignature (what) signs. Every replica holds the
// newest snapshotTail records — a node restored from a snapshot gets them
// in its tail and backfills the older ones later — so one of an older
// record is refused by all alike, before any replica looks for it: a node
// still backfilling must not reach another verdict than the others, nor
// stop deciding. The record may belong to the batch being applied (a
// follower catching up applies many entries at once): it is looked for
// there before the store, so every replica reaches the same verdict.
func (s *State) signedRecord(what string, seq uint64) ([]byte, error) {
	if tail := snapshotTail.Load(); s.seq-seq >= tail {
		return nil, fmt.Errorf("%w: %s of %d is %d records behind the head %d (at most %d)", ErrFailedPrecondition, what, seq, s.seq-seq, s.seq, tail-1)
	}
	if data, ok := s.pending[seq]; ok {
		return data, nil
	}
	data, err := s.ledger.Get(seq)
	if err != nil {
		// This replica cannot read its own ledger: it must stop deciding
		// rather than diverge.
		s.broken = fmt.Errorf("ledger store failed reading record %d: %w", seq, err)
		return nil, fmt.Errorf("%w: %s: read record %d: %v", ErrUnavailable, what, seq, err)
	}
	return data, nil
}

// CheckpointKeyID is the key id of a checkpoint signing key: SHA-256 of its
// PKIX DER.
func CheckpointKeyID(pkix []byte) []byte {
	id := sha256.Sum256(pkix)
	return id[:]
}

// applyCheckpoint appends a checkpoint record after checking that the head
// is the chain hash at seq and the signature verifies under a registered
// key.
func (s *State) applyCheckpoint(index uint64, c *raftlogv1.Command, op *raftlogv1.RecordCheckpoint) any {
	cp := op.Checkpoint
	if cp == nil || cp.Seq == 0 || cp.Seq > s.seq || cp.ClusterId != s.clusterID || len(cp.Head) != 32 {
		return fmt.Errorf("%w: checkpoint does not name a record of this cluster's ledger", ErrInvalidArgument)
	}
	if s.lastCheckpoint != nil && cp.Seq <= s.lastCheckpoint.Seq {
		return fmt.Errorf("%w: checkpoint at %d is not after the last one at %d", ErrFailedPrecondition, cp.Seq, s.lastCheckpoint.Seq)
	}
	data, err := s.signedRecord("checkpoint", cp.Seq)
	if err != nil {
		return err
	}
	var pub []byte
	var signer string
	for _, k := range s.nodeKeys {
		if bytes.Equal(CheckpointKeyID(k.PublicKey), cp.KeyId) {
			pub, signer = k.PublicKey, k.Node
		}
	}
	key, err := governance.ParsePublicKey(pub)
	if err != nil || !governance.VerifyECDSA(key, ledger.CheckpointMessage(cp.ClusterId, cp.Seq, cp.Head), cp.Signature) {
		return fmt.Errorf("%w: checkpoint signature does not verify under a registered key", ErrPermissionDenied)
	}
	if h := ledger.Hash(data); !bytes.Equal(h[:], cp.Head) {
		// A registered node signed another record at this position than
		// this replica holds: every replica builds the same records from
		// the same log, so either that node's ledger or this one was
		// changed outside it (an edited state folded into the records
		// that followed) — or the signer lies. One replica cannot tell
		// which, and one lying member must not stop the others: from
		// version 2 the refusal is a record (notified with the
		// governance records), the first of each signer's only (a lying
		// member cannot flood the ledger), so the customer sees it.
		err := fmt.Errorf("%w: node %s signed chain head %x at seq %d; this ledger holds %x there: the ledgers diverged (docs/ledger.md, State digest)",
			ErrFailedPrecondition, signer, cp.Head[:8], cp.Seq, h[:8])
		if s.smv() < 2 || slices.Contains(s.cpMismatches, signer) {
			return err
		}
		s.cpMismatches = append(s.cpMismatches, signer)
		rec := s.newRecord(index, c, custosv1.Operation_OPERATION_CHECKPOINT)
		rec.Outcome, rec.MatchedRule = custosv1.Outcome_OUTCOME_DENY, "checkpoint:head-mismatch"
		rec.Detail = err.Error()
		rec.Checkpoint = proto.Clone(cp).(*custosv1.Checkpoint) // the signed claim, as evidence
		return &Decision{Record: rec, Err: err}
	}
	rec := s.newRecord(index, c, custosv1.Operation_OPERATION_CHECKPOINT)
	rec.Outcome = custosv1.Outcome_OUTCOME_ALLOW
	rec.MatchedRule = "checkpoint"
	rec.Checkpoint = proto.Clone(cp).(*custosv1.Checkpoint)
	rec.StateDigest, rec.StateDigestVersion = s.stateDigest(), s.digestVersion()
	s.lastCheckpoint, s.lastCheckpointRecord = rec.Checkpoint, rec.Seq
	return &Decision{Record: rec}
}

// applyAdvanceCursor moves a sink's delivery cursor forward.
func (s *State) applyAdvanceCursor(op *raftlogv1.AdvanceCursor) any {
	sk := s.sink(op.Sink)
	switch {
	case sk == nil:
		return fmt.Errorf("%w: sink %q", ErrNotFound, op.Sink)
	case op.Seq > s.seq:
		return fmt.Errorf("%w: cursor %d is beyond the ledger head %d", ErrInvalidArgument, op.Seq, s.seq)
	case op.Seq > sk.DeliveredSeq:
		sk.DeliveredSeq = op.Seq
	}
	return nil
}

// applyBlockRelease records that an ALLOW decision released nothing
// (docs/architecture.md, invariant 2). The matched rule names the cause and
// the decision: "notify-before-release:decision-<seq>" for a notification
// that failed (and for records from before causes were recorded),
// "release-blocked:<cause>:decision-<seq>" otherwise (BlockReleaseRule).
func (s *State) applyBlockRelease(index uint64, c *raftlogv1.Command, op *raftlogv1.BlockRelease) any {
	rec := s.newRecord(index, c, custosv1.Operation_OPERATION_RELEASE_BLOCKED)
	rec.Outcome = custosv1.Outcome_OUTCOME_DENY
	rec.Key, rec.RequestId, rec.Detail = op.Key, op.RequestId, op.Detail
	rec.MatchedRule = BlockReleaseRule(op.Cause, op.DecisionSeq)
	return &Decision{Record: rec}
}

// BlockReleaseRule is the matched rule of a RELEASE_BLOCKED record for a
// cause (BlockCause*) and the ALLOW decision's ledger position.
func BlockReleaseRule(cause string, decisionSeq uint64) string {
	if cause == "" || cause == BlockCauseNotify {
		return fmt.Sprintf("notify-before-release:decision-%d", decisionSeq)
	}
	return fmt.Sprintf("release-blocked:%s:decision-%d", cause, decisionSeq)
}

func (s *State) sink(name string) *custosv1.Sink {
	for _, sk := range s.gov.GetSinks() {
		if sk.Name == name {
			return sk
		}
	}
	return nil
}

// validateSink checks a sink configuration.
func validateSink(sk *custosv1.Sink) error {
	bad := func(f string, a ...any) error {
		return fmt.Errorf("%w: add_sink.sink: "+f, append([]any{ErrInvalidArgument}, a...)...)
	}
	switch sk.GetType() {
	case custosv1.SinkType_SINK_TYPE_WEBHOOK:
		u, err := url.Parse(sk.Url)
		if err != nil || u.Host == "" {
			return bad("url is not an absolute URL")
		}
		if u.Scheme != "https" && !(u.Scheme == "http" && isLoopback(u.Hostname())) {
			return bad("url must be https (http only to a loopback address)")
		}
		if len(sk.HmacKey) < minHMACKeySize {
			return bad("hmac_key must have at least %d bytes", minHMACKeySize)
		}
	case custosv1.SinkType_SINK_TYPE_FILE:
		if !filepath.IsAbs(sk.Path) {
			return bad("path must be absolute")
		}
	default:
		return bad("type must be WEBHOOK or FILE")
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// validateNotifyRules checks notify rules.
func validateNotifyRules(r *custosv1.NotifyRules) error {
	for _, x := range r.GetReasons() {
		if _, ok := custosv1.Reason_name[int32(x)]; !ok {
			return fmt.Errorf("%w: set_notify_rules: unknown reason %d", ErrInvalidArgument, x)
		}
	}
	for _, o := range r.GetOutcomes() {
		if _, ok := custosv1.Outcome_name[int32(o)]; !ok || o == custosv1.Outcome_OUTCOME_UNSPECIFIED {
			return fmt.Errorf("%w: set_notify_rules: unknown outcome %d", ErrInvalidArgument, o)
		}
	}
	for _, p := range r.GetCustomerPrincipals() {
		if p == "" || len(p) > maxPrincipalLen {
			return fmt.Errorf("%w: set_notify_rules: empty or over-long principal", ErrInvalidArgument)
		}
	}
	return nil
}
