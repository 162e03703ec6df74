package audit

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/kms/ledger"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// ErrBroken is wrapped by the error Verify returns when an export does not
// verify; Report.Problem says how, Report.ProblemSeq where.
var ErrBroken = errors.New("audit: ledger export does not verify")

// ProblemKind classifies the first broken link Verify finds.
type ProblemKind string

// The kinds of problems Verify reports.
const (
	// ProblemFormat: not a well-formed export (magic, framing, header, an
	// item where it does not belong).
	ProblemFormat ProblemKind = "format"
	// ProblemRemoved: records are missing; ProblemSeq is the first.
	ProblemRemoved ProblemKind = "removed"
	// ProblemAltered: a record's bytes changed; ProblemSeq names it.
	ProblemAltered ProblemKind = "altered"
	// ProblemReordered: records are out of order; ProblemSeq is the first
	// position that holds the wrong record.
	ProblemReordered ProblemKind = "reordered"
	// ProblemInserted: a record that is not part of the chain was
	// inserted; ProblemSeq is the sequence number it claims.
	ProblemInserted ProblemKind = "inserted"
	// ProblemBadSignature: a checkpoint (or the trailer) is signed by a
	// trusted key but the signature does not verify; ProblemSeq is the
	// checkpoint record (for the trailer, the record it covers).
	ProblemBadSignature ProblemKind = "bad-signature"
	// ProblemUnknownKey: a checkpoint is signed by a key that is not
	// trusted.
	ProblemUnknownKey ProblemKind = "unknown-key"
	// ProblemCheckpoint: a checkpoint does not fit the export (another
	// cluster, a sequence number not yet seen, not after the previous one).
	ProblemCheckpoint ProblemKind = "checkpoint"
	// ProblemTruncated: the export was cut: inside an item, or with no
	// trailer, or before the record the trailer covers. ProblemSeq is the
	// first record that may be missing.
	ProblemTruncated ProblemKind = "truncated"
	// ProblemStateEdited: a checkpoint record's state digest differs from
	// the previous checkpoint's with no record in between that changes the
	// governed state: the state was changed outside the log (an edited
	// snapshot). ProblemSeq is the checkpoint record.
	ProblemStateEdited ProblemKind = "state-edited"
	// ProblemGrantUnaccounted: an ALLOW that a grant gave does not trace
	// back to a record that created that grant, or the grant did not cover
	// it (used up, expired, revoked, for something else): the grant came
	// from outside the log. ProblemSeq is the decision record.
	ProblemGrantUnaccounted ProblemKind = "grant-unaccounted"
	// ProblemDiverged: a DENY checkpoint record holds a trusted node's
	// valid signature over another head than this ledger's at that seq:
	// that node's ledger and this one diverged (one of them was changed
	// outside the log), or that node signed a lie. ProblemSeq is the
	// record.
	ProblemDiverged ProblemKind = "diverged"
	// ProblemOfficers: a GOVERNANCE record applied a statement that the
	// officer set on record (from the genesis, through every set_officers)
	// did not sign as required: the officers were changed outside the log.
	// ProblemSeq is the record.
	ProblemOfficers ProblemKind = "officers"
	// ProblemNotPermitted: a record released a key, or changed one, in a
	// way the state recomputed from the genesis and the officer-signed
	// statements before it did not permit (a revoked or disabled key, a
	// principal or reason the policy did not allow, a time window, a rate
	// limit, a witness requirement, an untrusted issuer, a key
	// administrator lowering the minimum version): the node that wrote it
	// did not decide by the officers' decisions. ProblemSeq is the record.
	ProblemNotPermitted ProblemKind = "not-permitted"
)

// StateChanging reports whether a record may change the governed state
// that state digests cover (docs/ledger.md, *State digest*): a record of
// a state-changing operation, or a decision that used a grant (its
// remaining uses are governed state).
func StateChanging(rec *custosv1.DecisionRecord) bool {
	return StateChangingOperation(rec.GetOperation()) || UsesGrant(rec)
}

// GrantRulePrefix starts the matched rule of an ALLOW decision that a
// grant allowed: "grant:<grant id>".
const GrantRulePrefix = "grant:"

// UsesGrant reports whether rec is an ALLOW decision that used up one use
// of a grant.
func UsesGrant(rec *custosv1.DecisionRecord) bool {
	return rec.GetOutcome() == custosv1.Outcome_OUTCOME_ALLOW && strings.HasPrefix(rec.GetMatchedRule(), GrantRulePrefix)
}

// StateChangingOperation reports whether records of operation op change
// the governed state (state machine version 1 knew only these).
func StateChangingOperation(op custosv1.Operation) bool {
	switch op {
	case custosv1.Operation_OPERATION_GENESIS, custosv1.Operation_OPERATION_GOVERNANCE,
		custosv1.Operation_OPERATION_CREATE_KEY, custosv1.Operation_OPERATION_ROTATE_KEY,
		custosv1.Operation_OPERATION_DISABLE_KEY, custosv1.Operation_OPERATION_SET_MIN_DECRYPTION_VERSION,
		custosv1.Operation_OPERATION_MEMBERSHIP, custosv1.Operation_OPERATION_ADMISSION,
		custosv1.Operation_OPERATION_DESTROY_KEY, custosv1.Operation_OPERATION_RESTORE,
		custosv1.Operation_OPERATION_DOMAIN_KEY_ROTATION, custosv1.Operation_OPERATION_NODE_KEY,
		custosv1.Operation_OPERATION_STATE_MACHINE_UPGRADE:
		return true
	}
	return false
}

// Report is what Verify found.
type Report struct {
	// ClusterID is the cluster the export's header names.
	ClusterID string `json:"cluster_id"`
	// FirstSeq is the header's first sequence number, LastSeq the last
	// record accepted (0 if none).
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	// Records is the number of records accepted, Checkpoints the number of
	// in-ledger checkpoint records whose signature and head verified.
	Records     int `json:"records"`
	Checkpoints int `json:"checkpoints"`
	// Trailer is true when the trailer verified over the last record.
	Trailer bool `json:"trailer"`
	// VerifiedThrough is the highest sequence number covered by a verified
	// signature over an intact chain from FirstSeq.
	VerifiedThrough uint64 `json:"verified_through"`
	// Partial is true when the export does not start at seq 1: the first
	// record's link to its predecessor could not be checked.
	Partial bool `json:"partial,omitempty"`
	// GenesisSigners are the officers whose signatures on the
	// officer-signed genesis verified (record 1's create_cluster
	// statement); empty when the export does not start at record 1 or the
	// cluster's first officers came from the bootstrap node's
	// configuration.
	GenesisSigners []string `json:"genesis_signers,omitempty"`
	// Recomputed is true when the governed state was recomputed from the
	// genesis through every record (docs/ledger.md, *Recomputed state*)
	// and every release and key change checked against it;
	// NotRecomputed says why not otherwise. ReleasesChecked counts the
	// releases checked.
	Recomputed      bool   `json:"recomputed"`
	NotRecomputed   string `json:"not_recomputed,omitempty"`
	ReleasesChecked int    `json:"releases_checked"`
	// Kind, Problem and ProblemSeq describe the first broken link; Kind is
	// empty when the export verified.
	Kind       ProblemKind `json:"kind,omitempty"`
	Problem    string      `json:"problem,omitempty"`
	ProblemSeq uint64      `json:"problem_seq,omitempty"`
}

// OK reports whether the export verified.
func (r *Report) OK() bool { return r.Kind == "" }

// ParseKeys parses PKIX DER ECDSA P-256 public keys
// (GetCheckpointResponse.public_keys) for Verify.
func ParseKeys(pkix [][]byte) ([]*ecdsa.PublicKey, error) {
	out := make([]*ecdsa.PublicKey, 0, len(pkix))
	for i, der := range pkix {
		k, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			return nil, fmt.Errorf("audit: public key %d does not parse as PKIX: %v", i, err)
		}
		pub, ok := k.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() {
			return nil, fmt.Errorf("audit: public key %d is not ECDSA P-256", i)
		}
		out = append(out, pub)
	}
	return out, nil
}

// KeyID is the key id checkpoints carry: SHA-256 of the PKIX DER. It is nil
// for a key that is not ECDSA P-256.
func KeyID(pub *ecdsa.PublicKey) []byte {
	if pub == nil || pub.Curve != elliptic.P256() {
		return nil
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil
	}
	id := sha256.Sum256(der)
	return id[:]
}

// verifySignature checks an ASN.1 DER ECDSA P-256 signature over the
// SHA-256 of message (the primitive governance.VerifyECDSA also applies;
// this package does not import governance, which needs cgo for PKCS#11).
func verifySignature(pub *ecdsa.PublicKey, message, sig []byte) bool {
	h := sha256.Sum256(message)
	return ecdsa.VerifyASN1(pub, h[:], sig)
}

// Verify reads an export file and checks, in one pass and constant memory
// (plus 32 bytes per record since the last verified checkpoint):
//
//   - the magic, version and header;
//   - that records carry contiguous sequence numbers from the header's
//     first_seq, and that each record's prev_hash is ledger.Hash of the
//     previous record's bytes (the zero hash for seq 1);
//   - that every CHECKPOINT record's checkpoint names this cluster, covers
//     a record already seen (after the previous checkpoint), is signed by a
//     trusted key (key id = SHA-256 of its PKIX DER) with a valid ECDSA
//     P-256 signature over ledger.CheckpointMessage, and that its head is
//     the hash computed at its sequence number;
//   - that the trailer does the same for the last record, and that nothing
//     follows it.
//
// It stops at the first broken link and returns the report with an error
// wrapping ErrBroken. Only the keys in trusted count: the public keys in
// the export's header are not trusted. An error that is not ErrBroken is an
// I/O error from r.
func Verify(r io.Reader, trusted []*ecdsa.PublicKey) (*Report, error) {
	v := &verifier{rd: NewReader(r), rep: &Report{}, keys: map[string]*ecdsa.PublicKey{}, hashes: map[uint64][32]byte{},
		grants: grantBook{grants: map[string]*grantUse{}}}
	for _, k := range trusted {
		if id := KeyID(k); id != nil {
			v.keys[string(id)] = k
		}
	}
	err := v.run()
	v.rep.Recomputed, v.rep.NotRecomputed, v.rep.ReleasesChecked = v.state.on, v.state.why, v.state.releases
	if v.rep.Partial {
		v.rep.NotRecomputed = "the export does not start at record 1"
	}
	if errors.Is(err, errProblem) {
		return v.rep, fmt.Errorf("%w: %s (seq %d): %s", ErrBroken, v.rep.Kind, v.rep.ProblemSeq, v.rep.Problem)
	}
	return v.rep, err
}

var errProblem = errors.New("problem")

// deferredProblem is a problem found in a record that is reported once a
// signature covers the record.
type deferredProblem struct {
	seq     uint64
	problem string
}

type verifier struct {
	rd   *Reader
	rep  *Report
	keys map[string]*ecdsa.PublicKey

	peeked  *custosv1.ExportItem
	peekErr error
	hasPeek bool

	cluster   string
	next      uint64   // the sequence number the next record must carry
	prev      [32]byte // hash of the previous record (when prevKnown)
	prevKnown bool
	hashes    map[uint64][32]byte // records since (just before) the last checkpoint
	lastCP    uint64              // seq covered by the last verified checkpoint
	// digest is the last state digest a record carried (nil before one)
	// and digestVersion its version; changed is whether a state-changing
	// record without one came after it.
	digest        []byte
	digestVersion uint32
	changed       bool
	grants        grantBook
	officers      officerBook
	state         stateBook
	// notPermitted is the first record the recomputed state did not
	// permit, reported when a verified signature covers it.
	notPermitted *deferredProblem
	// nodeKeys are the checkpoint key ids NODE_KEY records registered, for
	// an export from record 1 of a cluster whose genesis is of state
	// machine version 2 or later; nil otherwise (keys registered without
	// a record).
	nodeKeys map[string]bool
}

func (v *verifier) problem(kind ProblemKind, seq uint64, format string, args ...any) error {
	v.rep.Kind, v.rep.ProblemSeq, v.rep.Problem = kind, seq, fmt.Sprintf(format, args...)
	return errProblem
}

func (v *verifier) item() (*custosv1.ExportItem, error) {
	if v.hasPeek {
		v.hasPeek = false
		return v.peeked, v.peekErr
	}
	return v.rd.Next()
}

func (v *verifier) peek() (*custosv1.ExportItem, error) {
	if !v.hasPeek {
		v.peeked, v.peekErr = v.rd.Next()
		v.hasPeek = true
	}
	return v.peeked, v.peekErr
}

// readErr turns a Reader error into a problem (or passes an I/O error on).
func (v *verifier) readErr(err error) error {
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return v.problem(ProblemTruncated, v.next, "the export is cut inside the item after record %d: %v", v.rep.LastSeq, err)
	case errors.Is(err, ErrFormat):
		return v.problem(ProblemFormat, v.next, "%v", err)
	}
	return err
}

func (v *verifier) run() error {
	it, err := v.item()
	if errors.Is(err, io.EOF) {
		return v.problem(ProblemFormat, 0, "the export has no header")
	}
	if err != nil {
		return v.readErr(err)
	}
	hdr := it.GetHeader()
	if hdr == nil {
		return v.problem(ProblemFormat, 0, "the first item is not a header")
	}
	if hdr.FirstSeq == 0 {
		return v.problem(ProblemFormat, 0, "the header's first_seq is 0")
	}
	v.cluster = hdr.ClusterId
	v.rep.ClusterID, v.rep.FirstSeq = hdr.ClusterId, hdr.FirstSeq
	v.next = hdr.FirstSeq
	if hdr.FirstSeq == 1 {
		v.prev, v.prevKnown = ledger.ZeroHash, true
		v.grants.complete = true
	} else {
		v.rep.Partial = true
	}
	for {
		it, err := v.item()
		if errors.Is(err, io.EOF) {
			if v.rep.Records == 0 {
				return nil // an empty ledger exports a header only
			}
			return v.problem(ProblemTruncated, v.rep.LastSeq+1,
				"the export ends after record %d without a trailer: records %d..%d are not covered by a verified signature, and records after %d may have been cut",
				v.rep.LastSeq, v.rep.VerifiedThrough+1, v.rep.LastSeq, v.rep.LastSeq)
		}
		if err != nil {
			return v.readErr(err)
		}
		switch x := it.Item.(type) {
		case *custosv1.ExportItem_Header:
			return v.problem(ProblemFormat, v.next, "a second header follows record %d", v.rep.LastSeq)
		case *custosv1.ExportItem_Trailer:
			return v.trailer(x.Trailer)
		case *custosv1.ExportItem_Record:
			if err := v.record(x.Record); err != nil {
				return err
			}
		default:
			return v.problem(ProblemFormat, v.next, "unknown item after record %d", v.rep.LastSeq)
		}
	}
}

func decode(data []byte) (*custosv1.DecisionRecord, error) {
	r := &custosv1.DecisionRecord{}
	if err := proto.Unmarshal(data, r); err != nil {
		return nil, err
	}
	return r, nil
}

// peekRecord decodes the next item if it is a record; it returns the
// trailer instead if that comes next.
func (v *verifier) peekRecord() (*custosv1.DecisionRecord, []byte, *custosv1.Checkpoint) {
	it, err := v.peek()
	if err != nil {
		return nil, nil, nil
	}
	if tr := it.GetTrailer(); tr != nil {
		return nil, nil, tr
	}
	if data := it.GetRecord(); data != nil {
		if r, err := decode(data); err == nil {
			return r, data, nil
		}
	}
	return nil, nil, nil
}

func (v *verifier) record(data []byte) error {
	pos := v.next
	rec, err := decode(data)
	if err != nil {
		return v.problem(ProblemAltered, pos, "record %d was altered: its bytes do not decode (%v)", pos, err)
	}
	h := ledger.Hash(data)
	linkOK := !v.prevKnown || bytes.Equal(rec.PrevHash, v.prev[:])
	switch {
	case !linkOK:
		return v.classifyBreak(rec, h)
	case rec.Seq != pos:
		return v.problem(ProblemAltered, pos, "record %d was altered: it links to record %d but says it is seq %d", pos, pos-1, rec.Seq)
	}
	v.hashes[pos] = h
	v.prev, v.prevKnown = h, true
	v.rep.Records++
	v.rep.LastSeq = pos
	v.next = pos + 1
	changing := StateChanging(rec)
	if b := rec.StateDigestBefore; len(b) > 0 && v.digest != nil && !v.changed && !bytes.Equal(b, v.digest) {
		return v.problem(ProblemStateEdited, pos,
			"record %d says the governed state before it had another digest than the record before it that carries one recorded: the state was changed outside the log in between", pos)
	}
	if d := rec.StateDigest; len(d) > 0 && v.digest != nil && rec.StateDigestVersion < v.digestVersion {
		return v.problem(ProblemStateEdited, pos, "record %d carries a state digest of version %d after one of version %d: versions never go back", pos, rec.StateDigestVersion, v.digestVersion)
	}
	if d := rec.StateDigest; len(d) > 0 {
		// The governed state may change only at a record that changes
		// it: a digest that moved anywhere else shows a state edited
		// outside the log.
		// Digests of different versions cover different things
		// (an upgrade between them): not compared.
		if v.digest != nil && !changing && !v.changed && rec.StateDigestVersion == v.digestVersion && !bytes.Equal(d, v.digest) {
			return v.problem(ProblemStateEdited, pos,
				"record %d carries another state digest than the record before it that carries one, and no record between them changes the governed state: the state was changed outside the log", pos)
		}
		v.digest, v.digestVersion, v.changed = d, rec.StateDigestVersion, false
	} else if changing {
		v.changed = true // made before state digests: anything may have changed
	}
	if rec.Operation == custosv1.Operation_OPERATION_GENESIS && pos == 1 && rec.GetGenesis().GetStatement() != nil {
		signers, err := checkGenesis(rec)
		if err != nil {
			return v.problem(ProblemAltered, pos, "record 1's officer-signed genesis does not hold: %v", err)
		}
		v.rep.GenesisSigners = signers
	}
	switch {
	case rec.Operation == custosv1.Operation_OPERATION_GENESIS && pos == 1 && rec.GetGenesis().GetStateMachineVersion() >= 2:
		// Every checkpoint key of this cluster is registered by a
		// NODE_KEY record: one that is not was never the cluster's.
		v.nodeKeys = map[string]bool{}
	case rec.Operation == custosv1.Operation_OPERATION_STATE_MACHINE_UPGRADE && len(rec.RegisteredNodeKeys) > 0 && v.nodeKeys == nil:
		// A cluster that moved to version 2: the keys registered before.
		v.nodeKeys = map[string]bool{}
		for _, k := range rec.RegisteredNodeKeys {
			v.nodeKeys[string(keyIDOf(k))] = true
		}
	case rec.Operation == custosv1.Operation_OPERATION_NODE_KEY && v.nodeKeys != nil:
		v.nodeKeys[string(keyIDOf(rec.NodePublicKey))] = true
	}
	if why := v.officers.note(rec, v.cluster, pos); why != "" {
		return v.problem(ProblemOfficers, pos, "record %d: %s", pos, why)
	}
	if why := v.state.note(rec, pos, &v.officers); why != "" && v.notPermitted == nil {
		// Reported once a signature covers the record: a record whose
		// bytes were changed is "altered", found by the chain first.
		v.notPermitted = &deferredProblem{seq: pos, problem: fmt.Sprintf(
			"record %d is not permitted by the state recomputed from the genesis and the officers' statements: %s", pos, why)}
	}
	if why := v.grants.note(rec); why != "" {
		return v.problem(ProblemGrantUnaccounted, pos, "record %d is an ALLOW under a grant the ledger does not account for: %s", pos, why)
	}
	if cp := rec.Checkpoint; rec.Operation == custosv1.Operation_OPERATION_CHECKPOINT && rec.Outcome == custosv1.Outcome_OUTCOME_DENY && cp != nil {
		if key := v.keys[string(cp.KeyId)]; key != nil && verifySignature(key, ledger.CheckpointMessage(cp.ClusterId, cp.Seq, cp.Head), cp.Signature) {
			return v.problem(ProblemDiverged, pos, "record %d holds node %q's valid signature over another chain head at seq %d than this ledger's: the two ledgers diverged, or that node signed a lie", pos, cp.Node, cp.Seq)
		}
	}
	if rec.Operation == custosv1.Operation_OPERATION_CHECKPOINT && rec.Outcome != custosv1.Outcome_OUTCOME_DENY {
		// (A DENY checkpoint record is a node's signed claim this ledger
		// refused: evidence, not a signature over this chain.)
		if rec.Checkpoint == nil {
			return v.problem(ProblemAltered, pos, "checkpoint record %d carries no checkpoint", pos)
		}
		if err := v.checkpoint(rec.Checkpoint, pos, false); err != nil {
			return err
		}
	}
	return nil
}

// classifyBreak names the first broken link: rec, at position v.next, does
// not link to the previous record. One item of look-ahead tells an altered
// previous record from an altered or inserted one, and a removal from a
// swap.
func (v *verifier) classifyBreak(rec *custosv1.DecisionRecord, h [32]byte) error {
	pos := v.next
	nrec, _, tr := v.peekRecord()
	nextLinks := (nrec != nil && bytes.Equal(nrec.PrevHash, h[:])) || (tr != nil && tr.Seq == rec.Seq && bytes.Equal(tr.Head, h[:]))
	switch {
	case rec.Seq == pos:
		switch {
		case nrec != nil && nrec.Seq == rec.Seq && bytes.Equal(nrec.PrevHash, v.prev[:]):
			return v.problem(ProblemInserted, pos, "a record that is not part of the chain was inserted before record %d (two records claim seq %d)", pos, pos)
		case pos == 1:
			return v.problem(ProblemAltered, 1, "record 1 was altered: its prev_hash is not the zero hash")
		case nextLinks:
			return v.problem(ProblemAltered, pos-1, "record %d was altered: its hash no longer matches the link in record %d", pos-1, pos)
		default:
			return v.problem(ProblemAltered, pos, "record %d was altered or replaced: it does not link to record %d and the record after it does not link to it", pos, pos-1)
		}
	case rec.Seq > pos:
		if nrec != nil && nrec.Seq == pos && bytes.Equal(nrec.PrevHash, v.prev[:]) {
			return v.problem(ProblemReordered, pos, "records are out of order: record %d comes before record %d", rec.Seq, pos)
		}
		if rec.Seq == pos+1 {
			return v.problem(ProblemRemoved, pos, "record %d is missing (removed): record %d follows record %d", pos, rec.Seq, pos-1)
		}
		return v.problem(ProblemRemoved, pos, "records %d..%d are missing (removed): record %d follows record %d", pos, rec.Seq-1, rec.Seq, pos-1)
	default: // rec.Seq < pos
		before, ok := v.hashes[rec.Seq-1]
		if rec.Seq == 1 {
			before, ok = ledger.ZeroHash, true
		}
		if ok && bytes.Equal(rec.PrevHash, before[:]) {
			if seen, ok := v.hashes[rec.Seq]; ok && seen == h {
				return v.problem(ProblemInserted, rec.Seq, "record %d appears again after record %d (a copy was inserted)", rec.Seq, pos-1)
			}
			return v.problem(ProblemInserted, rec.Seq, "two different records claim seq %d: one of them (the first, at position %d) was inserted", rec.Seq, rec.Seq)
		}
		return v.problem(ProblemReordered, rec.Seq, "records are out of order: record %d comes after record %d", rec.Seq, pos-1)
	}
}

// checkpoint verifies a signed checkpoint: in-ledger (at record recSeq) or
// the trailer.
func (v *verifier) checkpoint(cp *custosv1.Checkpoint, recSeq uint64, trailer bool) error {
	what := fmt.Sprintf("checkpoint record %d", recSeq)
	at := recSeq
	if trailer {
		what, at = "the trailer", cp.Seq
	}
	switch {
	case cp.ClusterId != v.cluster:
		return v.problem(ProblemCheckpoint, at, "%s is for cluster %q, the export for %q", what, cp.ClusterId, v.cluster)
	case !trailer && cp.Seq >= recSeq:
		return v.problem(ProblemCheckpoint, at, "%s covers seq %d, which does not precede it", what, cp.Seq)
	case !trailer && cp.Seq < v.rep.FirstSeq:
		return nil // a partial export: the record it covers is not in the file
	case !trailer && cp.Seq <= v.lastCP:
		return v.problem(ProblemCheckpoint, at, "%s covers seq %d, not after the previous checkpoint at %d", what, cp.Seq, v.lastCP)
	}
	if v.nodeKeys != nil && !v.nodeKeys[string(cp.KeyId)] {
		return v.problem(ProblemUnknownKey, at, "%s is signed by key %s (node %q), which no NODE_KEY record before it registered", what, shortHex(cp.KeyId), cp.Node)
	}
	key := v.keys[string(cp.KeyId)]
	if key == nil {
		return v.problem(ProblemUnknownKey, at, "%s is signed by key %s (node %q), which is not a trusted checkpoint key", what, shortHex(cp.KeyId), cp.Node)
	}
	if !verifySignature(key, ledger.CheckpointMessage(cp.ClusterId, cp.Seq, cp.Head), cp.Signature) {
		return v.problem(ProblemBadSignature, at, "%s has a signature that does not verify under key %s (node %q)", what, shortHex(cp.KeyId), cp.Node)
	}
	head, ok := v.hashes[cp.Seq]
	if !ok || !bytes.Equal(cp.Head, head[:]) {
		return v.problem(ProblemAltered, cp.Seq, "record %d was altered: %s signs another chain head at seq %d", cp.Seq, what, cp.Seq)
	}
	v.lastCP = cp.Seq
	v.rep.VerifiedThrough = cp.Seq
	if d := v.notPermitted; d != nil && d.seq <= cp.Seq {
		return v.problem(ProblemNotPermitted, d.seq, "%s", d.problem)
	}
	if !trailer {
		v.rep.Checkpoints++
	}
	// Keep a few hashes before the checkpoint for the diagnosis of an
	// insertion; nothing before it can be covered again.
	for s := range v.hashes {
		if s+2 < cp.Seq {
			delete(v.hashes, s)
		}
	}
	return nil
}

func (v *verifier) trailer(tr *custosv1.Checkpoint) error {
	switch {
	case v.rep.Records == 0:
		return v.problem(ProblemFormat, v.next, "a trailer follows no record")
	case tr.Seq > v.rep.LastSeq:
		return v.problem(ProblemTruncated, v.rep.LastSeq+1, "the trailer covers seq %d but the export ends at record %d: records %d..%d were cut",
			tr.Seq, v.rep.LastSeq, v.rep.LastSeq+1, tr.Seq)
	case tr.Seq < v.rep.LastSeq:
		return v.problem(ProblemInserted, tr.Seq+1, "the trailer covers seq %d but the export goes on to record %d: records after %d were appended",
			tr.Seq, v.rep.LastSeq, tr.Seq)
	}
	if err := v.checkpoint(tr, v.rep.LastSeq, true); err != nil {
		return err
	}
	v.rep.Trailer = true
	if _, err := v.item(); !errors.Is(err, io.EOF) {
		if err != nil {
			return v.readErr(err)
		}
		return v.problem(ProblemFormat, v.rep.LastSeq+1, "data follows the trailer")
	}
	return nil
}

func shortHex(b []byte) string {
	if len(b) > 8 {
		b = b[:8]
	}
	return hex.EncodeToString(b)
}

// keyIDOf is KeyID of a PKIX DER public key as a NODE_KEY record carries it.
func keyIDOf(pkix []byte) []byte {
	id := sha256.Sum256(pkix)
	return id[:]
}
