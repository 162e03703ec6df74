package node_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// replicatedState decodes a snapshot of member i's state, without what the
// leader's background work changes (the ledger head, checkpoints).
func replicatedState(t *testing.T, c *nodetest.Cluster, i int) *raftlogv1.State {
	t.Helper()
	snap, err := c.Members[i].Node.Service().State().Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var buf bytes.Buffer
	if err := snap.Persist(&buf); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(&buf)
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
	st.LedgerSeq, st.LedgerHead, st.LastCheckpoint, st.LastCheckpointRecord = 0, nil, nil, 0
	return st
}

// TestBackdatedStatementReplayRefusedOnCluster: an officer statement that
// re-enabled a revoked key is replayed after it expired and its nonce was
// pruned, with a time inside its validity — by a member node through the
// Replication service (a hand-built command, as one copied out of raft.db),
// by a member whose clock is set back, and by the leader with its clock set
// back. Each attempt is applied at the state's clock (a stamp behind it is
// clamped), where the statement has expired: it is refused with
// FailedPrecondition, recorded as a refused statement, and changes nothing
// else on any of the 3 nodes: the key stays revoked. Before the state had a
// clock (docs/raft-log.md, "Time"), the first replay re-enabled the key.
func TestBackdatedStatementReplayRefusedOnCluster(t *testing.T) {
	t0 := time.Now().Truncate(time.Second)
	var clocks [3]atomic.Int64 // each node's clock, Unix nanoseconds
	setClock := func(i int, at time.Time) { clocks[i].Store(at.UnixNano()) }
	for i := range clocks {
		setClock(i, t0)
	}
	c := nodetest.StartClusterWith(t, 3, 3, func(i int, cfg *node.Config) {
		cfg.Now = func() time.Time { return time.Unix(0, clocks[i].Load()) }
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l := c.Leader()
	if l != 0 {
		t.Fatalf("leader is member %d, want the bootstrapping node", l)
	}
	m := 1 // the member node that replays
	keys := custosv1.NewKeyServiceClient(c.Conn(t, l, clusterApp))
	if _, err := keys.CreateKey(ctx, &custosv1.CreateKeyRequest{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	gov := custosv1.NewGovernanceServiceClient(c.Conn(t, l, "officer-cli"))
	sign := func(notAfter time.Time, setOp func(*custosv1.Statement), signers ...int) *custosv1.SignedStatement {
		return nodetest.SignStatement(t, c.ClusterID(), c.Officers, func(st *custosv1.Statement) {
			setOp(st)
			st.NotAfterUnix = notAfter.Unix()
		}, signers...)
	}
	revoke := func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_RevokeKey{RevokeKey: &custosv1.RevokeKey{Key: "k"}}
	}
	enable := func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_EnableKey{EnableKey: &custosv1.EnableKey{Key: "k"}}
	}
	revoked := func(i int) bool {
		k, err := c.Members[i].Node.Service().State().Key("k")
		if err != nil {
			t.Fatal(err)
		}
		return k.Revoked
	}

	// The key is revoked, then re-enabled by the quorum with a statement
	// valid for 10 minutes.
	if _, err := gov.Submit(ctx, sign(t0.Add(10*time.Minute), revoke, 0)); err != nil {
		t.Fatal(err)
	}
	enableOnce := sign(t0.Add(10*time.Minute), enable, 0, 1)
	if _, err := gov.Submit(ctx, enableOnce); err != nil {
		t.Fatal(err)
	}
	// An hour later it is revoked again; the enable statement has expired
	// and its nonce is forgotten.
	later := t0.Add(time.Hour)
	for i := range clocks {
		setClock(i, later)
	}
	if _, err := gov.Submit(ctx, sign(later.Add(10*time.Minute), revoke, 0)); err != nil {
		t.Fatal(err)
	}
	for i := range c.Members {
		waitSameHead(t, c, i, l)
		if !revoked(i) {
			t.Fatalf("member %d: key not revoked", i)
		}
	}
	before := replicatedState(t, c, l)
	backdated := t0.Add(2 * time.Minute) // inside the enable statement's validity

	// 1. A member node proposes the copied statement, back-dated, on the
	// leader's Replication service.
	repl := raftlogv1.NewReplicationClient(nodeConn(t, c, m, l))
	r, err := repl.Apply(ctx, &raftlogv1.Command{TimeUnixNano: backdated.UnixNano(), Node: c.Members[m].Config.ID,
		Principal: "officer-cli", Op: &raftlogv1.Command_Govern{Govern: &raftlogv1.Govern{Statement: enableOnce}}})
	if err != nil {
		t.Fatalf("Replication.Apply: %v", err)
	}
	res, rerr := kms.DecodeResult(r)
	if d, ok := res.(*kms.Decision); ok && rerr == nil {
		rerr = d.Err
	}
	if !errors.Is(rerr, kms.ErrFailedPrecondition) || !strings.Contains(rerr.Error(), "expired") {
		t.Fatalf("back-dated replay by a member: %v, want FailedPrecondition: expired", rerr)
	}

	// 2. The member's clock is set back, and the statement submitted to it
	// (forwarded to the leader, clamped to the state's clock).
	setClock(m, backdated)
	_, err = custosv1.NewGovernanceServiceClient(c.Conn(t, m, "officer-cli")).Submit(ctx, enableOnce)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("replay through a member whose clock is set back: %v, want FailedPrecondition: expired", err)
	}
	setClock(m, later)

	// 3. The leader's clock is set back: its own command reaches the log,
	// and every replica applies it at the state's clock, where the
	// statement has expired, recording the refusal.
	setClock(l, backdated)
	_, err = gov.Submit(ctx, enableOnce)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("replay through the leader whose clock is set back: %v, want FailedPrecondition", err)
	}
	setClock(l, later)
	head, _ := c.Members[l].Node.Service().State().LedgerHead()
	for i := range c.Members {
		waitSameHead(t, c, i, l)
		if !revoked(i) {
			t.Fatalf("member %d: the replayed statement re-enabled the revoked key", i)
		}
		st := c.Members[i].Node.Service().State()
		if !st.Clock().Equal(later) {
			t.Fatalf("member %d: clock %s, want %s", i, st.Clock(), later)
		}
		// (Admissions and checkpoint key registrations are the nodes'
		// own background work, which may land meanwhile: not compared.)
		after := replicatedState(t, c, i)
		for _, st := range []*raftlogv1.State{before, after} {
			st.Admissions, st.NodeKeys = nil, nil
		}
		if !proto.Equal(before, after) {
			t.Fatalf("member %d: the refused replays changed the state:\nbefore %v\nafter  %v", i, before, after)
		}
		// The leader's refused command is a DENY record on every node.
		var found bool
		for seq := head; seq > 0 && !found; seq-- {
			rec, err := st.DecisionRecord(seq)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Operation == custosv1.Operation_OPERATION_GOVERNANCE {
				found = rec.Outcome == custosv1.Outcome_OUTCOME_DENY && rec.MatchedRule == "governance:enable_key" &&
					rec.Node == c.Members[l].Config.ID && rec.TimeUnixNano == later.UnixNano()
				if !found {
					t.Fatalf("member %d: last governance record %v, want the refused replay", i, rec)
				}
			}
		}
	}
}
