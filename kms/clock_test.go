package kms_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"github.com/custos-kms/custos/raft"
)

// The tests of the state's clock (clock.go) drive kms.State replicas
// directly with hand-built log entries: every time is the command's stamp,
// chosen by the test, so nothing depends on the wall clock.

// t0 is the tests' start of time.
var t0 = time.Date(2030, 1, 7, 9, 0, 0, 0, time.UTC)

// replicas are n kms.State replicas applying the same log.
type replicas struct {
	t        *testing.T
	states   []*kms.State
	officers []officer
	index    uint64
}

const clockCluster = "clock-test"

func newReplicas(t *testing.T, n int) *replicas {
	t.Helper()
	r := &replicas{t: t}
	for i := 0; i < n; i++ {
		s, _ := emptyState(t)
		r.states = append(r.states, s)
	}
	var pub []*custosv1.Officer
	for i := 1; i <= 3; i++ {
		k, err := governance.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		o := officer{name: fmt.Sprintf("officer-%d", i), key: k}
		r.officers = append(r.officers, o)
		pub = append(pub, &custosv1.Officer{Name: o.name, PublicKey: governance.MarshalPublicKey(&k.PublicKey)})
	}
	r.mustApply(cmd(t0, &raftlogv1.Command_InitCluster{InitCluster: &raftlogv1.InitCluster{
		ClusterId: clockCluster, DomainKeyId: []byte("dk"), Officers: pub, Quorum: 2,
		DomainKeyCheckValue: make([]byte, 16)}}))
	r.mustApply(cmd(t0, &raftlogv1.Command_CreateKey{CreateKey: &raftlogv1.CreateKey{Name: "k", WrappedKek: []byte("kek"),
		KekId: []byte("kek-id"), KekCheckValue: make([]byte, 16)}}))
	return r
}

// cmd is a command from node-2 as app-1, stamped at.
func cmd(at time.Time, op any) *raftlogv1.Command {
	c := &raftlogv1.Command{TimeUnixNano: at.UnixNano(), Node: "node-2", Principal: "app-1"}
	switch o := op.(type) {
	case *raftlogv1.Command_InitCluster:
		c.Op = o
	case *raftlogv1.Command_CreateKey:
		c.Op = o
	case *raftlogv1.Command_SetKeyState:
		c.Op = o
	case *raftlogv1.Command_Decide:
		c.Op = o
	case *raftlogv1.Command_Govern:
		c.Op = o
	default:
		panic(fmt.Sprintf("cmd: %T", op))
	}
	return c
}

func decideAt(at time.Time) *raftlogv1.Command {
	return cmd(at, &raftlogv1.Command_Decide{Decide: &raftlogv1.Decide{Key: "k", KeyVersion: 1,
		Operation: custosv1.Operation_OPERATION_DECRYPT, Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, RequestId: "r"}})
}

func governAt(at time.Time, ss *custosv1.SignedStatement) *raftlogv1.Command {
	return cmd(at, &raftlogv1.Command_Govern{Govern: &raftlogv1.Govern{Statement: ss}})
}

// sign builds a statement valid until notAfter, with op set by setOp,
// signed by officers 0 and 1 (the quorum).
func (r *replicas) sign(notAfter time.Time, setOp func(*custosv1.Statement)) *custosv1.SignedStatement {
	r.t.Helper()
	st, err := governance.NewStatement(clockCluster, time.Hour, "test")
	if err != nil {
		r.t.Fatal(err)
	}
	st.NotAfterUnix = notAfter.Unix()
	setOp(st)
	b, err := governance.Marshal(st)
	if err != nil {
		r.t.Fatal(err)
	}
	ss := &custosv1.SignedStatement{Statement: b}
	for _, i := range []int{0, 1} {
		sig, err := governance.Sign(r.officers[i].key, r.officers[i].name, b)
		if err != nil {
			r.t.Fatal(err)
		}
		ss.Signatures = append(ss.Signatures, sig)
	}
	return ss
}

// apply applies one entry of commands to every replica (each gets its own
// copy, as each node decodes the entry itself) and checks that they agree:
// the same results, ledger head and snapshot. It returns replica 0's
// results.
func (r *replicas) apply(cmds ...*raftlogv1.Command) []any {
	r.t.Helper()
	r.index++
	var first []any
	var firstSnap []byte
	var firstSeq uint64
	var firstHead [32]byte
	for i, s := range r.states {
		mine := make([]*raftlogv1.Command, len(cmds))
		for j, c := range cmds {
			mine[j] = proto.Clone(c).(*raftlogv1.Command)
		}
		res := s.ApplyBatch([]raft.AppliedEntry{{Index: r.index, Commands: mine}})[0]
		seq, head := s.LedgerHead()
		snap := snapshotBytes(r.t, s)
		if i == 0 {
			first, firstSnap, firstSeq, firstHead = res, snap, seq, head
			continue
		}
		if seq != firstSeq || head != firstHead || !bytes.Equal(snap, firstSnap) {
			r.t.Fatalf("replica %d diverged at entry %d: ledger %d vs %d", i, r.index, seq, firstSeq)
		}
		for j := range res {
			if a, b := resultString(res[j]), resultString(first[j]); a != b {
				r.t.Fatalf("replica %d: result %d is %s, replica 0's %s", i, j, a, b)
			}
		}
	}
	return first
}

func resultString(x any) string {
	switch v := x.(type) {
	case *kms.Decision:
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(v.Record)
		return fmt.Sprintf("decision %x %v %q", b, v.Err, v.Result)
	case proto.Message:
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(v)
		return fmt.Sprintf("%T %x", v, b)
	default:
		return fmt.Sprintf("%v", v)
	}
}

// mustApply applies one command and fails on an error result.
func (r *replicas) mustApply(c *raftlogv1.Command) any {
	r.t.Helper()
	res := r.apply(c)[0]
	if err := resultErr(res); err != nil {
		r.t.Fatalf("%T: %v", c.Op, err)
	}
	return res
}

// resultErr is the error a result carries, if any.
func resultErr(res any) error {
	switch v := res.(type) {
	case error:
		return v
	case *kms.Decision:
		return v.Err
	}
	return nil
}

// snapshotState decodes the raftlogv1.State of a snapshot of s.
func snapshotState(t *testing.T, s *kms.State) *raftlogv1.State {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(snapshotBytes(t, s)))
	if _, err := br.Discard(len("custos-snapshot-v2\n")); err != nil {
		t.Fatal(err)
	}
	n, err := binary.ReadUvarint(br)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(br, b); err != nil {
		t.Fatal(err)
	}
	st := &raftlogv1.State{}
	if err := proto.Unmarshal(b, st); err != nil {
		t.Fatal(err)
	}
	return st
}

func hasNonce(st *raftlogv1.State, ss *custosv1.SignedStatement) bool {
	p, err := governance.Parse(ss.Statement)
	if err != nil {
		panic(err)
	}
	for _, n := range st.Nonces {
		if bytes.Equal(n.Nonce, p.Nonce) {
			return true
		}
	}
	return false
}

func keyRecord(t *testing.T, s *kms.State) *raftlogv1.KeyRecord {
	t.Helper()
	k, err := s.Key("k")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func revoke(st *custosv1.Statement) {
	st.Operation = &custosv1.Statement_RevokeKey{RevokeKey: &custosv1.RevokeKey{Key: "k"}}
}

func enable(st *custosv1.Statement) {
	st.Operation = &custosv1.Statement_EnableKey{EnableKey: &custosv1.EnableKey{Key: "k"}}
}

// TestLargeClockRegressionIsClampedOnEveryReplica: a command stamped an
// hour behind the state's clock (a node whose clock was set back) applies at
// the clock's time on every replica, identically: its record carries the
// clock, and the clock never moves back. Refusing it instead would let one
// node whose clock jumped ahead stop every other node (clock.go).
func TestLargeClockRegressionIsClampedOnEveryReplica(t *testing.T) {
	r := newReplicas(t, 3)
	now := t0.Add(2 * time.Hour)
	r.mustApply(decideAt(now))
	behind := now.Add(-time.Hour)
	res := r.apply(decideAt(behind), governAt(behind, r.sign(now.Add(time.Hour), revoke)))
	for i, x := range res {
		if err := resultErr(x); err != nil {
			t.Fatalf("command %d stamped an hour behind the clock: %v, want it applied at the clock", i, err)
		}
		if got := x.(*kms.Decision).Record.TimeUnixNano; got != now.UnixNano() {
			t.Fatalf("command %d: record time %s, want the clock %s", i, time.Unix(0, got).UTC(), now)
		}
	}
	if k := keyRecord(t, r.states[0]); !k.Revoked {
		t.Fatalf("key after a valid revoke stamped behind the clock: %v", k)
	}
	first := snapshotState(t, r.states[0])
	for i, s := range r.states {
		if !s.Clock().Equal(now) {
			t.Fatalf("replica %d clock %s, want %s", i, s.Clock(), now)
		}
		if st := snapshotState(t, s); !proto.Equal(first, st) {
			t.Fatalf("replica %d differs from replica 0", i)
		}
	}
}

// TestSmallClockRegressionIsClamped: a stamp a little behind the clock
// (skew between nodes, reordering in a batch) applies at the clock's time:
// its record carries the clock, and a statement is verified at the clock,
// not at the earlier stamp.
func TestSmallClockRegressionIsClamped(t *testing.T) {
	r := newReplicas(t, 3)
	now := t0.Add(time.Hour)
	expiring := r.sign(now.Add(-time.Second), revoke) // valid at the stamp below, not at the clock
	res := r.apply(decideAt(now), decideAt(now.Add(-10*time.Second)), governAt(now.Add(-10*time.Second), expiring))
	if err := resultErr(res[1]); err != nil {
		t.Fatalf("Decide stamped 10s behind the clock: %v", err)
	}
	if got := res[1].(*kms.Decision).Record.TimeUnixNano; got != now.UnixNano() {
		t.Fatalf("clamped record time %s, want the clock %s", time.Unix(0, got).UTC(), now)
	}
	if err := resultErr(res[2]); !errors.Is(err, kms.ErrFailedPrecondition) || !strings.Contains(err.Error(), "not_after") {
		t.Fatalf("statement expired at the clock, stamped while valid: %v, want expired", err)
	}
	if k := keyRecord(t, r.states[0]); k.Revoked {
		t.Fatal("an expired statement revoked the key")
	}
	if !r.states[0].Clock().Equal(now) {
		t.Fatalf("clock %s moved back from %s", r.states[0].Clock(), now)
	}
}

// TestStatementAppliesOnceEver: the replay of issue "an expired officer
// statement can be replayed with a back-dated time". An EnableKey statement
// is applied, the key revoked again later, and the statement proposed
// again with a time inside its validity after its nonce was pruned: it is
// refused and the key stays revoked. Before the state had a clock, the
// nonce was pruned against the later command's stamp and the back-dated
// copy re-enabled the key.
func TestStatementAppliesOnceEver(t *testing.T) {
	r := newReplicas(t, 3)
	r.mustApply(governAt(t0, r.sign(t0.Add(10*time.Minute), revoke)))
	enableOnce := r.sign(t0.Add(10*time.Minute), enable)
	r.mustApply(governAt(t0.Add(time.Minute), enableOnce))
	if k := keyRecord(t, r.states[0]); k.Revoked || !k.Enabled {
		t.Fatalf("key after enable: %v", k)
	}
	later := t0.Add(time.Hour)
	r.mustApply(governAt(later, r.sign(later.Add(10*time.Minute), revoke)))
	if hasNonce(snapshotState(t, r.states[0]), enableOnce) {
		t.Fatal("the enable statement's nonce is kept after its not_after is behind the clock")
	}
	before := snapshotState(t, r.states[0])
	for _, at := range []time.Time{t0.Add(2 * time.Minute), later.Add(-30 * time.Second)} {
		res := r.apply(governAt(at, enableOnce))[0].(*kms.Decision)
		if !errors.Is(res.Err, kms.ErrFailedPrecondition) || res.Record.Outcome != custosv1.Outcome_OUTCOME_DENY {
			t.Fatalf("replayed enable stamped %s: %v, %v", at, res.Err, res.Record)
		}
		for i, s := range r.states {
			if k := keyRecord(t, s); !k.Revoked {
				t.Fatalf("replica %d: the replayed enable statement re-enabled the revoked key", i)
			}
		}
	}
	after := snapshotState(t, r.states[0])
	after.LedgerSeq, after.LedgerHead = before.LedgerSeq, before.LedgerHead
	if !proto.Equal(before, after) {
		t.Fatal("the refused replays changed the state")
	}
}

// TestNoncesSurviveSnapshotUntilExpired: the clock and the used nonces are
// in the snapshot; a restored replica refuses a replay by its nonce while
// the statement's not_after is not behind the clock, keeps the nonce until
// it is, and refuses a back-dated replay by the restored clock.
func TestNoncesSurviveSnapshotUntilExpired(t *testing.T) {
	r := newReplicas(t, 1)
	once := r.sign(t0.Add(10*time.Minute), revoke)
	r.mustApply(governAt(t0.Add(time.Minute), once))
	st := snapshotState(t, r.states[0])
	if st.TimeUnixNano != t0.Add(time.Minute).UnixNano() || !hasNonce(st, once) {
		t.Fatalf("snapshot: time %d, nonces %v", st.TimeUnixNano, st.Nonces)
	}

	restored, _ := emptyState(t)
	if err := restored.Restore(bytes.NewReader(snapshotBytes(t, r.states[0]))); err != nil {
		t.Fatal(err)
	}
	if !restored.Clock().Equal(t0.Add(time.Minute)) {
		t.Fatalf("restored clock %s, want %s", restored.Clock().UTC(), t0.Add(time.Minute))
	}
	r.states = []*kms.State{restored}
	// Replays while the statement is still valid: refused by the nonce.
	res := r.apply(governAt(t0.Add(2*time.Minute), once))[0].(*kms.Decision)
	if !errors.Is(res.Err, kms.ErrFailedPrecondition) {
		t.Fatalf("replay after restore: %v", res.Err)
	}
	// Another statement before not_after: the nonce stays.
	r.mustApply(governAt(t0.Add(5*time.Minute), r.sign(t0.Add(time.Hour), enable)))
	if !hasNonce(snapshotState(t, restored), once) {
		t.Fatal("nonce pruned before its not_after is behind the clock")
	}
	// Exactly at not_after the statement still verifies: the nonce stays.
	r.mustApply(governAt(t0.Add(10*time.Minute), r.sign(t0.Add(time.Hour), revoke)))
	if !hasNonce(snapshotState(t, restored), once) {
		t.Fatal("nonce pruned at its not_after, while the statement still verifies")
	}
	// Past not_after: pruned, and the statement is refused as expired
	// whatever the stamp (a back-dated one by the clock itself).
	r.mustApply(governAt(t0.Add(11*time.Minute), r.sign(t0.Add(time.Hour), enable)))
	if hasNonce(snapshotState(t, restored), once) {
		t.Fatal("nonce kept after its not_after is behind the clock")
	}
	for _, at := range []time.Time{t0.Add(3 * time.Minute), t0.Add(11 * time.Minute)} {
		res := r.apply(governAt(at, once))[0].(*kms.Decision)
		if !errors.Is(res.Err, kms.ErrFailedPrecondition) {
			t.Fatalf("replay stamped %s after pruning: %v", at, res.Err)
		}
	}
	if k := keyRecord(t, restored); k.Revoked {
		t.Fatal("a replayed revoke applied twice")
	}
}

// TestRefusedSignedStatementIsSpent: a statement that carries its
// signatures is decided once. Refused for an expiry too far ahead, or
// because the key it names did not exist yet, its nonce is spent, and the
// same copy submitted later — when it would apply — is refused as a replay
// and changes nothing. A statement refused for want of signatures leaves no
// nonce: the same statement with the quorum's signatures applies.
func TestRefusedSignedStatementIsSpent(t *testing.T) {
	r := newReplicas(t, 3)

	// Expiry more than MaxLifetime ahead: refused, spent.
	farEnable := r.sign(t0.Add(governance.MaxLifetime+time.Hour), enable)
	r.mustApply(governAt(t0, r.sign(t0.Add(time.Hour), revoke)))
	res := r.apply(governAt(t0.Add(time.Minute), farEnable))[0].(*kms.Decision)
	if !errors.Is(res.Err, kms.ErrFailedPrecondition) && !errors.Is(res.Err, kms.ErrInvalidArgument) {
		t.Fatalf("enable with a far expiry: %v", res.Err)
	}
	if !hasNonce(snapshotState(t, r.states[0]), farEnable) {
		t.Fatal("a fully signed statement refused for its expiry left no nonce")
	}
	later := t0.Add(2 * time.Hour) // not_after now within MaxLifetime
	res = r.apply(governAt(later, farEnable))[0].(*kms.Decision)
	if res.Err == nil || !strings.Contains(res.Err.Error(), "replayed nonce") {
		t.Fatalf("the refused far-expiry statement submitted again: %v", res.Err)
	}
	for i, s := range r.states {
		if k := keyRecord(t, s); !k.Revoked {
			t.Fatalf("replica %d: a copy of a refused statement re-enabled the revoked key", i)
		}
	}

	// Names a key that does not exist yet: refused, spent; after the key
	// is created the copy still does nothing.
	revokeK2 := r.sign(later.Add(time.Hour), func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_RevokeKey{RevokeKey: &custosv1.RevokeKey{Key: "k2"}}
	})
	if res := r.apply(governAt(later, revokeK2))[0].(*kms.Decision); !errors.Is(res.Err, kms.ErrNotFound) {
		t.Fatalf("revoke of a missing key: %v", res.Err)
	}
	r.mustApply(cmd(later, &raftlogv1.Command_CreateKey{CreateKey: &raftlogv1.CreateKey{Name: "k2", WrappedKek: []byte("kek"),
		KekId: []byte("kek-id-2"), KekCheckValue: make([]byte, 16)}}))
	if res := r.apply(governAt(later.Add(time.Minute), revokeK2))[0].(*kms.Decision); res.Err == nil || res.Record.Outcome != custosv1.Outcome_OUTCOME_DENY {
		t.Fatalf("the refused revoke submitted again after the key exists: %v", res.Err)
	}
	if k, err := r.states[0].Key("k2"); err != nil || k.Revoked {
		t.Fatalf("k2 after the replayed revoke: %v, %v", k, err)
	}

	// Short of signatures: refused, not spent; with the quorum it applies.
	full := r.sign(later.Add(time.Hour), enable)
	short := &custosv1.SignedStatement{Statement: full.Statement, Signatures: full.Signatures[:1]}
	if res := r.apply(governAt(later.Add(2*time.Minute), short))[0].(*kms.Decision); !errors.Is(res.Err, kms.ErrPermissionDenied) {
		t.Fatalf("enable with one signature: %v", res.Err)
	}
	if hasNonce(snapshotState(t, r.states[0]), full) {
		t.Fatal("a statement short of signatures spent its nonce")
	}
	r.mustApply(governAt(later.Add(3*time.Minute), full))
	if k := keyRecord(t, r.states[0]); k.Revoked || !k.Enabled {
		t.Fatalf("key after the enable with the quorum: %v", k)
	}
}
