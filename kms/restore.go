package kms

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/hsm"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// Restoring a cluster from a snapshot file (`custosd restore`,
// docs/operations.md, *Restore*). The restored node starts a new
// single-node Raft cluster from the file's state, marked with a
// ClusterRestore: until the officers accept it (AcceptRestore, quorum,
// naming the file's SHA-256) no node serves key crypto, because the file may
// be older than what they decided since (a revocation, a destruction, a
// removed officer). The restored node records the restore in the ledger
// (ReportRestore), which notifies the customer like any governance record.
// Every other node's admission is revoked in the restored state: each comes
// back by the officers' admission, as a new node would.

// RestorePendingMessage says why a restored cluster refuses key crypto.
const RestorePendingMessage = "this cluster was restored from a snapshot file and its officers have not accepted the restore yet (AcceptRestore statement: custos officer propose accept-restore)"

// ErrRestorePending is returned by every path that would use a key while a
// restore waits for the officers' AcceptRestore. It matches ErrNotAdmitted
// and ErrFailedPrecondition: front doors treat it as a node that may not
// serve key crypto.
var ErrRestorePending error = restorePendingError{}

type restorePendingError struct{}

func (restorePendingError) Error() string {
	return ErrFailedPrecondition.Error() + ": " + RestorePendingMessage
}

func (restorePendingError) Is(target error) bool {
	return target == ErrNotAdmitted || target == ErrFailedPrecondition
}

// RestoreTarget is the node a snapshot is restored into.
type RestoreTarget struct {
	// Node is its Raft id; RaftAddr the address its peers will dial.
	Node, RaftAddr string
	// ID is the restore's id: 32 lower-case hex digits, random (the
	// restoring node's HSM makes it), named by every statement from then on.
	ID string
	// VerifyDomainKey checks that the node's HSM holds the domain key the
	// snapshot names (an hsm.Backend's VerifyKey with hsm.UsageWrap).
	VerifyDomainKey func(hsm.KeyRef) error
	// Now is the time recorded as the restore's.
	Now time.Time
}

// SnapshotSource describes the snapshot file a payload comes from.
type SnapshotSource struct {
	// SHA256 is the file's trailer in lower-case hex.
	SHA256    string
	ClusterID string
	Node      string
	Index     uint64
	Term      uint64
	Created   time.Time
}

// PrepareRestore reads a Raft snapshot payload (what State.Snapshot
// persists, as a snapshot file carries it) from r and writes to w the
// payload a restored node starts from: the same state and ledger tail, with
// a ClusterRestore that waits for the officers, the Raft membership reduced
// to the target, the target admitted and every other node's admission
// revoked. It refuses a payload of another cluster than src says, and a
// target whose HSM does not hold the domain key or whose admission the
// snapshot records as revoked. It returns the ClusterRestore.
func PrepareRestore(r io.Reader, w io.Writer, src SnapshotSource, t RestoreTarget) (*custosv1.ClusterRestore, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(br, magic); err != nil || (string(magic) != snapshotMagic && string(magic) != snapshotMagicV1) {
		return nil, fmt.Errorf("%w: the payload is not a custos state snapshot", ErrInvalidArgument)
	}
	data, err := readItem(br)
	if err != nil {
		return nil, fmt.Errorf("%w: snapshot state: %v", ErrInvalidArgument, err)
	}
	st := &raftlogv1.State{}
	if err := proto.Unmarshal(data, st); err != nil {
		return nil, fmt.Errorf("%w: decode snapshot state: %v", ErrInvalidArgument, err)
	}
	switch {
	case st.ClusterId == "" || len(st.DomainKeyId) == 0:
		return nil, fmt.Errorf("%w: the snapshot's state has no initialised cluster", ErrInvalidArgument)
	case st.ClusterId != src.ClusterID:
		return nil, fmt.Errorf("%w: the file's header names cluster %s, its state cluster %s", ErrInvalidArgument, src.ClusterID, st.ClusterId)
	case t.Node == "" || t.RaftAddr == "" || !isHex32(t.ID):
		return nil, fmt.Errorf("%w: restore target needs a node id, a Raft address and a restore id of 32 hex digits", ErrInvalidArgument)
	}
	// The rest of the payload: the ledger tail (format v2), or every
	// record (v1). A v2 state is checked against its own tail's newest
	// state digest, as a starting node checks its own.
	rest, err := io.ReadAll(br)
	if err != nil {
		return nil, fmt.Errorf("%w: snapshot records: %v", ErrInvalidArgument, err)
	}
	if string(magic) == snapshotMagic && len(st.LedgerHead) == 32 {
		var head [32]byte
		copy(head[:], st.LedgerHead)
		tail, _, err := readTail(bufio.NewReader(bytes.NewReader(rest)), st.LedgerSeq, head)
		if err != nil {
			return nil, fmt.Errorf("%w: snapshot ledger tail: %v", ErrInvalidArgument, err)
		}
		bySeq := make(map[uint64][]byte, len(tail))
		for _, r := range tail {
			bySeq[r.Seq] = r.Data
		}
		dv := uint32(0)
		if st.StateMachineVersion >= 2 {
			dv = StateDigestVersion
		}
		if _, _, err := verifyDigest(func() []byte { return digestOfState(st, dv) }, dv, func(seq uint64) ([]byte, bool) {
			d, ok := bySeq[seq]
			return d, ok
		}, st.LedgerSeq); err != nil {
			return nil, fmt.Errorf("%w: the snapshot file: %v", ErrFailedPrecondition, err)
		}
	}
	dk := hsm.KeyRef{ID: st.DomainKeyId, CheckValue: st.DomainKeyCheckValue}
	if err := t.VerifyDomainKey(dk); err != nil {
		return nil, fmt.Errorf("%w: this node's HSM does not hold the cluster's domain key %q (%v): restore into a node whose HSM does — a former custodian, or an HSM restored from its own backup. Without the domain key no key in the snapshot can be used",
			ErrFailedPrecondition, dk.ID, err)
	}
	now := t.Now.UnixNano()
	var self *custosv1.NodeAdmission
	for _, a := range st.Admissions {
		if a.Node == t.Node {
			self = a
			continue
		}
		if a.State != custosv1.AdmissionState_ADMISSION_STATE_REVOKED {
			*a = custosv1.NodeAdmission{Node: a.Node, State: custosv1.AdmissionState_ADMISSION_STATE_REVOKED,
				TransportKeyFingerprint: a.TransportKeyFingerprint, UpdateTimeUnixNano: now}
		}
	}
	if self.GetState() == custosv1.AdmissionState_ADMISSION_STATE_REVOKED {
		return nil, fmt.Errorf("%w: the snapshot records node %s's admission as revoked: restore into a node the officers admitted", ErrFailedPrecondition, t.Node)
	}
	if self == nil {
		self = &custosv1.NodeAdmission{Node: t.Node}
		st.Admissions = append(st.Admissions, self)
		slices.SortFunc(st.Admissions, func(a, b *custosv1.NodeAdmission) int { return strings.Compare(a.Node, b.Node) })
	}
	// Its HSM holds the domain key with the genesis check value (verified
	// above): what ConfirmAdmission records. The officers' AcceptRestore
	// still gates every use.
	*self = custosv1.NodeAdmission{Node: t.Node, State: custosv1.AdmissionState_ADMISSION_STATE_ADMITTED, UpdateTimeUnixNano: now}
	st.Members = []*raftlogv1.RaftServer{{Id: t.Node, Address: t.RaftAddr, Suffrage: "Voter"}}
	if r := st.Rotation; r != nil {
		// A running domain-key rotation cannot go on: its session keys
		// died with the old nodes. Its new key is destroyed wherever it
		// is; the officers start a new rotation if they want one.
		if len(r.NewDomainKeyId) > 0 {
			st.RetiredDomainKeyIds = append(st.RetiredDomainKeyIds, r.NewDomainKeyId)
		}
		for _, k := range st.Keys {
			for _, v := range k.Versions {
				v.RotatedWrappedKek = nil
			}
		}
		st.Rotation = nil
	}
	info := &custosv1.ClusterRestore{
		SnapshotSha256: src.SHA256, SourceNode: src.Node, SourceRaftIndex: src.Index, SourceRaftTerm: src.Term,
		CreatedUnixNano: src.Created.UnixNano(), Node: t.Node, RestoreTimeUnixNano: now, RestoreId: t.ID,
	}
	st.Restore = info
	out, err := proto.MarshalOptions{Deterministic: true}.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("kms: marshal restored state: %w", err)
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	if _, err := bw.Write(magic); err != nil {
		return nil, fmt.Errorf("kms: write restored payload: %w", err)
	}
	if err := writeItem(bw, out); err != nil {
		return nil, fmt.Errorf("kms: write restored payload: %w", err)
	}
	// The ledger tail (or, in format v1, every record) as it is: the
	// restored node checks its chain against the head when it loads it.
	if _, err := bw.Write(rest); err != nil {
		return nil, fmt.Errorf("kms: copy the snapshot's ledger records: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return nil, fmt.Errorf("kms: write restored payload: %w", err)
	}
	return proto.Clone(info).(*custosv1.ClusterRestore), nil
}

// isHex32 reports whether s is 32 lower-case hex digits.
func isHex32(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// checkRestoreID refuses a statement that does not name the cluster's
// latest restore, or names one of a cluster that was never restored
// (caller holds s.mu): after a restore, nothing signed before it — an
// acceptance of another restore of the same file, a loosening the officers
// later undid — can be replayed into the rolled-back state.
func (s *State) checkRestoreID(st *custosv1.Statement) error {
	want := s.restore.GetRestoreId()
	switch {
	case st.RestoreId == want:
		return nil
	case want == "":
		return fmt.Errorf("%w: the statement names restore %s, but this cluster was not restored from a snapshot file", ErrFailedPrecondition, st.RestoreId)
	case st.RestoreId == "":
		return fmt.Errorf("%w: this cluster was restored from a snapshot file (restore %s): a statement must name it (restore_id); statements signed before the restore are refused", ErrFailedPrecondition, want)
	}
	return fmt.Errorf("%w: the statement names restore %s, this cluster's latest restore is %s", ErrFailedPrecondition, st.RestoreId, want)
}

// RestoreInfo returns a copy of the cluster's restore record, or nil when it
// was never restored from a snapshot file.
func (s *State) RestoreInfo() *custosv1.ClusterRestore {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.restore == nil {
		return nil
	}
	return proto.Clone(s.restore).(*custosv1.ClusterRestore)
}

// restorePending reports whether a restore waits for the officers (caller
// holds s.mu).
func (s *State) restorePending() bool {
	return s.restore != nil && !s.restore.Accepted
}

// applyReportRestore writes the restore's ledger record, once.
func (s *State) applyReportRestore(index uint64, c *raftlogv1.Command, op *raftlogv1.ReportRestore) any {
	r := s.restore
	switch {
	case r == nil:
		return fmt.Errorf("%w: this cluster was not restored from a snapshot file", ErrFailedPrecondition)
	case c.Node != r.Node:
		return fmt.Errorf("%w: only the restored node %s reports its restore", ErrPermissionDenied, r.Node)
	case op.SnapshotSha256 != r.SnapshotSha256:
		return fmt.Errorf("%w: the restore recorded snapshot %s, not %s", ErrFailedPrecondition, r.SnapshotSha256, op.SnapshotSha256)
	case r.Reported:
		return fmt.Errorf("%w: the restore is already recorded", ErrFailedPrecondition)
	}
	r.Reported = true
	rec := s.newRecord(index, c, custosv1.Operation_OPERATION_RESTORE)
	rec.Outcome = custosv1.Outcome_OUTCOME_ALLOW
	rec.MatchedRule = "restore:restored"
	rec.Detail = fmt.Sprintf("node %s was restored from a snapshot file (SHA-256 %s) that node %s wrote at Raft index %d, term %d, created %s; restore id %s; "+
		"records after that point are not in this ledger (sequence numbers from %d on are used again); every other node's admission is revoked; statements must name the restore id; no key crypto until the officers accept the restore (AcceptRestore)",
		r.Node, r.SnapshotSha256, r.SourceNode, r.SourceRaftIndex, r.SourceRaftTerm, time.Unix(0, r.CreatedUnixNano).UTC().Format(time.RFC3339), r.RestoreId, rec.Seq)
	return &Decision{Record: rec}
}

// applyAcceptRestore carries out an AcceptRestore statement.
func (s *State) applyAcceptRestore(c *raftlogv1.Command, op *custosv1.AcceptRestore) (string, error) {
	r := s.restore
	switch {
	case r == nil:
		return "", fmt.Errorf("%w: this cluster was not restored from a snapshot file", ErrFailedPrecondition)
	case r.Accepted:
		return "", fmt.Errorf("%w: the restore was already accepted", ErrFailedPrecondition)
	case op.SnapshotSha256 != r.SnapshotSha256:
		return "", fmt.Errorf("%w: the cluster was restored from snapshot %s, not %s", ErrFailedPrecondition, r.SnapshotSha256, op.SnapshotSha256)
	}
	r.Accepted, r.AcceptTimeUnixNano = true, c.TimeUnixNano
	s.admissionsVersion++ // the admission worker and front doors look again
	return fmt.Sprintf("restore from snapshot %s (node %s, Raft index %d) accepted: the cluster serves key crypto again", r.SnapshotSha256, r.SourceNode, r.SourceRaftIndex), nil
}

// reportRestore records this node's restore in the ledger, once (the
// admission worker calls it).
func (s *Service) reportRestore(ctx context.Context) {
	r := s.state.RestoreInfo()
	if r == nil || r.Reported || r.Node != s.node {
		return
	}
	if _, err := s.apply(ctx, Principal{Name: "custosd"}, &raftlogv1.Command{Op: &raftlogv1.Command_ReportRestore{
		ReportRestore: &raftlogv1.ReportRestore{SnapshotSha256: r.SnapshotSha256}}}); err != nil {
		s.note("restore:"+err.Error(), func() {
			s.lg.Warn("restore: could not record the restore in the ledger; will retry", "err", err)
		})
		return
	}
	s.lg.Warn("this cluster was restored from a snapshot file: no key crypto until the officers accept the restore",
		"snapshot_sha256", r.SnapshotSha256, "source_node", r.SourceNode, "source_raft_index", r.SourceRaftIndex)
}
