package kms_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/audit"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// editSnapshotState rewrites the state item of a snapshot payload, as an
// operator with the disk does (kms.State.Restore reads it).
func editSnapshotState(t *testing.T, payload []byte, edit func(*raftlogv1.State)) []byte {
	t.Helper()
	const magic = "custos-snapshot-v2\n"
	if !bytes.HasPrefix(payload, []byte(magic)) {
		t.Fatalf("payload starts %q", payload[:20])
	}
	body := payload[len(magic):]
	n, k := binary.Uvarint(body)
	st := &raftlogv1.State{}
	if err := proto.Unmarshal(body[k:k+int(n)], st); err != nil {
		t.Fatal(err)
	}
	edit(st)
	edited, err := proto.MarshalOptions{Deterministic: true}.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	out := append([]byte(magic), binary.AppendUvarint(nil, uint64(len(edited)))...)
	return append(append(out, edited...), body[k+int(n):]...)
}

// A state edited in a snapshot that the start check could not see (the
// node's ledger was away) cannot hide in the next legitimate change: that
// record names the state before it, which is not the one the ledger last
// recorded, and audit.Verify reports it.
func TestStateDigestBeforeShowsFoldedEdits(t *testing.T) {
	e := newEnv(t)
	if err := e.svc.EnsureCheckpointKey(bg); err != nil {
		t.Fatal(err)
	}
	createKey(t, e, "k")
	if _, err := e.govern(revokeKey("k"), 2); err != nil {
		t.Fatal(err)
	}
	keys := publishedKeys(t, e)
	if _, err := audit.Verify(bytes.NewReader(exportOf(t, e)), keys); err != nil {
		t.Fatalf("the untouched ledger: %v", err)
	}
	// The revoked key re-enabled in the snapshot the node loads.
	edited := editSnapshotState(t, snapshotBytes(t, e.state), func(st *raftlogv1.State) {
		for _, k := range st.Keys {
			if k.Name == "k" {
				k.Revoked, k.Enabled = false, true
			}
		}
	})
	// A node checks a snapshot against its ledger as it loads it ...
	if err := e.state.Restore(bytes.NewReader(edited)); !errors.Is(err, kms.ErrStateMismatch) {
		t.Fatalf("restoring the edited snapshot over the ledger: %v, want ErrStateMismatch", err)
	}
	// ... unless its ledger was away (played here by skipping the check).
	defer kms.SkipRestoreCheckForTest()()
	if err := e.state.Restore(bytes.NewReader(edited)); err != nil {
		t.Fatal(err)
	}
	// Any principal's key creation is a state-changing record: it carries
	// the digest of the state after it, the edit folded in ...
	createKey(t, e, "k2")
	rec := lastRecord(t, e)
	if rec.Operation != custosv1.Operation_OPERATION_CREATE_KEY || len(rec.StateDigestBefore) != 32 {
		t.Fatalf("last record %v: want a CREATE_KEY with the digest before it", rec)
	}
	if checked, _, err := e.state.VerifyStateDigest("node-1"); !checked || err != nil {
		t.Fatalf("the folded edit passes the start check (what the fold buys): %v %v", checked, err)
	}
	// ... and the digest of the edited state before it.
	rep, err := audit.Verify(bytes.NewReader(exportOf(t, e)), keys)
	if !errors.Is(err, audit.ErrBroken) || rep.Kind != audit.ProblemStateEdited || rep.ProblemSeq != rec.Seq {
		t.Fatalf("an edit folded into a key creation: %v (%+v), want %s at seq %d", err, rep, audit.ProblemStateEdited, rec.Seq)
	}
}

// A request id names one request: a member node cannot put another
// principal's request, for another ciphertext, under the id the officers
// are reviewing, nor make an approval replace an existing grant.
func TestRequestIDsNameOneRequest(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	fileA := dataKey(t, e, "k", nil)
	fileB := dataKey(t, e, "k", nil)
	third := custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST
	p := kms.DefaultPolicy(app.Name)
	p.DecryptPrincipals = append(p.DecryptPrincipals, "provider", "intruder")
	if _, err := e.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "k", Policy: p}}
	}, 0, 1); err != nil {
		t.Fatal(err)
	}
	_, err := decryptAs(e, "provider", fileA.WrappedDataKey, third)
	var pe *kms.PendingError
	if !errors.As(err, &pe) {
		t.Fatalf("want pending: %v", err)
	}
	decide := func(principal string, wrapped []byte) error {
		d := sha256.Sum256(wrapped)
		cd := kms.ContextDigest(nil)
		res, err := e.node.Apply(bg, &raftlogv1.Command{Node: "node-1", Principal: principal, TimeUnixNano: time.Now().UnixNano(),
			Op: &raftlogv1.Command_Decide{Decide: &raftlogv1.Decide{Key: "k", KeyVersion: 1, Operation: custosv1.Operation_OPERATION_DECRYPT_DATA_KEY,
				Reason: third, ContextDigest: cd[:], RequestId: pe.RequestID, DataDigest: d[:]}}})
		if d, ok := res.(*kms.Decision); ok && err == nil {
			return d.Err
		}
		return err
	}
	if err := decide("intruder", fileB.WrappedDataKey); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("another request under the same id: %v, want InvalidArgument", err)
	}
	if rec := lastRecord(t, e); rec.Outcome != custosv1.Outcome_OUTCOME_DENY || rec.MatchedRule != "approval:request-id-in-use" {
		t.Fatalf("record %v", rec)
	}
	// The same request asked again (a caller retrying) is still pending.
	var again *kms.PendingError
	if err := decide("provider", fileA.WrappedDataKey); !errors.As(err, &again) || again.RequestID != pe.RequestID {
		t.Fatalf("the same request again: %v", err)
	}
	r, err := e.svc.GetRequest(bg, app, &custosv1.GetRequestRequest{RequestId: pe.RequestID})
	if err != nil || r.Principal != "provider" {
		t.Fatalf("the request the officers review: %v, %v", r, err)
	}
	if _, err := e.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_ApproveRequest{ApproveRequest: &custosv1.ApproveRequest{RequestId: pe.RequestID, Uses: 1, TtlSeconds: 600}}
	}, 0, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := decryptAs(e, "intruder", fileB.WrappedDataKey, third); err == nil {
		t.Fatal("the intruder decrypted under the provider's approval")
	}
	if _, err := decryptAs(e, "provider", fileA.WrappedDataKey, third); err != nil {
		t.Fatalf("the provider under its approval: %v", err)
	}
}

// A checkpoint signed by a registered node over another record than this
// replica holds at that position means the ledgers diverged, or the signer
// lies: the refusal is a DENY record, notified with the governance records,
// the first of each signer's only (no flood); the replica goes on (one
// lying member must not stop the others); audit.Verify reports the signed
// evidence of a fork.
func TestDivergedCheckpointIsRecorded(t *testing.T) {
	e := newEnv(t)
	if err := e.svc.EnsureCheckpointKey(bg); err != nil {
		t.Fatal(err)
	}
	createKey(t, e, "k")
	dk := dataKey(t, e, "k", nil)
	bogus := func() error {
		head, _ := e.state.LedgerHead()
		cp, err := e.svc.SignCheckpointForTest(bg, head, bytes.Repeat([]byte{7}, 32))
		if err != nil {
			t.Fatal(err)
		}
		res, err := e.node.Apply(bg, &raftlogv1.Command{Node: "node-1", Principal: "custosd", TimeUnixNano: time.Now().UnixNano(),
			Op: &raftlogv1.Command_RecordCheckpoint{RecordCheckpoint: &raftlogv1.RecordCheckpoint{Checkpoint: cp}}})
		if d, ok := res.(*kms.Decision); ok && err == nil {
			return d.Err
		}
		return err
	}
	if err := bogus(); !errors.Is(err, kms.ErrFailedPrecondition) || !strings.Contains(err.Error(), "diverged") {
		t.Fatalf("a checkpoint over another head: %v", err)
	}
	rec := lastRecord(t, e)
	if rec.Operation != custosv1.Operation_OPERATION_CHECKPOINT || rec.Outcome != custosv1.Outcome_OUTCOME_DENY ||
		rec.MatchedRule != "checkpoint:head-mismatch" || !rec.Notify {
		t.Fatalf("record %v: want a notified DENY checkpoint record", rec)
	}
	if _, err := decrypt(e, dk.WrappedDataKey, nil); err != nil {
		t.Fatalf("decrypt after a mismatching checkpoint: %v", err)
	}
	seq := rec.Seq + 1 // the decrypt's record
	if err := bogus(); err == nil {
		t.Fatal("a second mismatching checkpoint accepted")
	}
	if again, _ := e.state.LedgerHead(); again != seq {
		t.Fatalf("a second mismatch by the same node wrote record %d", again)
	}
	if _, err := e.svc.Checkpoint(bg); err != nil {
		t.Fatalf("a matching checkpoint: %v", err)
	}
	before, _ := e.state.LedgerHead()
	if err := bogus(); err == nil {
		t.Fatal("a mismatching checkpoint accepted")
	}
	if after, _ := e.state.LedgerHead(); after != before {
		t.Fatalf("a later mismatch by the same node wrote record %d (it may not flood the ledger)", after)
	}
	rep, err := audit.Verify(bytes.NewReader(exportOf(t, e)), publishedKeys(t, e))
	if !errors.Is(err, audit.ErrBroken) || rep.Kind != audit.ProblemDiverged || rep.ProblemSeq != rec.Seq {
		t.Fatalf("an export holding a signed checkpoint over another head: %v (%+v), want %s at %d", err, rep, audit.ProblemDiverged, rec.Seq)
	}
}

// A checkpoint key put into the state outside the log signs checkpoints
// the state machine accepts, but an auditor's export shows it.
func TestInjectedCheckpointKeyShowsInTheExport(t *testing.T) {
	e := newEnv(t)
	if err := e.svc.EnsureCheckpointKey(bg); err != nil {
		t.Fatal(err)
	}
	if g := recordAt(t, e, 1); g.GetGenesis().GetStateMachineVersion() != kms.StateMachineVersion {
		t.Fatalf("genesis %v: want state machine version %d", g.GetGenesis(), kms.StateMachineVersion)
	}
	createKey(t, e, "k")
	// A second service on the same state and log with another HSM key
	// stands in for the injected key's holder.
	rogue := e.otherNodeService(t, "node-9")
	e.state.InjectNodeKeyForTest("node-9", rogue.pkix)
	head, hash := e.state.LedgerHead()
	cp, err := rogue.svc.SignCheckpointForTest(context.Background(), head, hash[:])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.node.Apply(bg, &raftlogv1.Command{Node: "node-9", Principal: "custosd", TimeUnixNano: time.Now().UnixNano(),
		Op: &raftlogv1.Command_RecordCheckpoint{RecordCheckpoint: &raftlogv1.RecordCheckpoint{Checkpoint: cp}}}); err != nil {
		t.Fatalf("the state machine accepts a checkpoint under a key in its state: %v", err)
	}
	// The injected key changed the state digest (checkpoint keys are in
	// it), which the checkpoint's record shows; the verifier would also
	// refuse the key itself (TestCheckpointKeysNeedANodeKeyRecord).
	keys := append(publishedKeys(t, e), rogue.pub)
	rep, err := audit.Verify(bytes.NewReader(exportOf(t, e)), keys)
	if !errors.Is(err, audit.ErrBroken) || rep.Kind != audit.ProblemStateEdited || rep.ProblemSeq != lastRecord(t, e).Seq {
		t.Fatalf("a checkpoint under an injected key: %v (%+v), want %s at the checkpoint", err, rep, audit.ProblemStateEdited)
	}
}

// recordAt returns the ledger record at seq.
func recordAt(t *testing.T, e *env, seq uint64) *custosv1.DecisionRecord {
	t.Helper()
	rec, err := e.state.DecisionRecord(seq)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// rogueSigner is a service for another node id on e's state, log and
// token, whose checkpoint key exists in the HSM but was never registered.
type rogueSigner struct {
	svc  *kms.Service
	pkix []byte
	pub  *ecdsa.PublicKey
}

func (e *env) otherNodeService(t *testing.T, node string) rogueSigner {
	t.Helper()
	pub, err := e.hsm.GenerateECKey(bg, []byte("custos/checkpoint/"+node), "rogue checkpoint key")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := kms.NewService(kms.Config{NodeID: node, HSM: e.hsm, Log: e.node, State: e.state, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return rogueSigner{svc: svc, pkix: governance.MarshalPublicKey(pub), pub: pub}
}

// The state machine version only goes forward: a snapshot set back to
// version 1 (whose rules leave grants and checkpoint keys out of the
// digest) is refused at start, since the ledger already records version 2
// digests.
func TestStateMachineVersionSetBackIsRefused(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	edited := editSnapshotState(t, snapshotBytes(t, e.state), func(st *raftlogv1.State) { st.StateMachineVersion = 1 })
	if err := e.state.Restore(bytes.NewReader(edited)); !errors.Is(err, kms.ErrStateMismatch) {
		t.Fatalf("restoring a snapshot set back to version 1: %v, want ErrStateMismatch", err)
	}
	defer kms.SkipRestoreCheckForTest()()
	if err := e.state.Restore(bytes.NewReader(edited)); err != nil {
		t.Fatal(err)
	}
	if v := e.state.StateMachineVersion(); v != 1 {
		t.Fatalf("version after the edit: %d", v)
	}
	if _, _, err := e.state.VerifyStateDigest("node-1"); !errors.Is(err, kms.ErrStateMismatch) {
		t.Fatalf("a state set back to version 1: %v, want ErrStateMismatch", err)
	}
}

// A snapshot carries the newest records up to its head, which hold a state
// digest to check its state against: one whose tail was cut (so that a node
// whose ledger is away has nothing to check against) is refused.
func TestRestoreRefusesACutTail(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	payload := snapshotBytes(t, e.state)
	const magic = "custos-snapshot-v2\n"
	body := payload[len(magic):]
	n, k := binary.Uvarint(body)
	cut := append([]byte(magic), body[:k+int(n)]...)
	cut = binary.AppendUvarint(cut, 0) // no tail records
	fresh, _ := emptyState(t)
	if err := fresh.Restore(bytes.NewReader(cut)); err == nil || !strings.Contains(err.Error(), "it was cut") {
		t.Fatalf("a snapshot without its tail: %v", err)
	}
	if err := fresh.Restore(bytes.NewReader(payload)); err != nil {
		t.Fatalf("the whole snapshot: %v", err)
	}
}
