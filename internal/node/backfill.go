package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/ledger"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// Backfill (docs/ledger.md, "Storage"): a node that restored a snapshot
// without its ledger records copies them from the other members over
// Replication.ReadRecords, from the top of the gap down, and kms checks
// every record against the hash chain before storing it.

const (
	// backfillPoll is how often the node looks for a gap when it has none,
	// and how long it waits after every peer failed.
	backfillPoll = time.Second
	// backfillWindow is how many records one request asks for (at most
	// kms.MaxPeerRecords).
	backfillWindow = 512
	// backfillTimeout bounds one request.
	backfillTimeout = 30 * time.Second
)

// backfillPaused stops the backfill loop while true (tests that look at a
// node with a gap: backfill_export_test.go).
var backfillPaused atomic.Bool

// PeerRecords implements api.RecordSource: this node's records for a
// peer's backfill.
func (l replicationLeader) PeerRecords(from, to uint64) ([][]byte, error) {
	return l.ri.state.PeerRecords(from, to)
}

// followMembershipAndBackfill runs followMembership and, on a cluster node
// (one that talks to peers), the backfill loop, until ctx ends.
func (n *Node) followMembershipAndBackfill(ctx context.Context) {
	var wg sync.WaitGroup
	if n.fwd != nil {
		wg.Add(1)
		go func() { defer wg.Done(); n.backfill(ctx, n.fwd.state) }()
	}
	n.followMembership(ctx)
	wg.Wait()
}

// backfill fills the ledger gap of st from the other members, one window
// at a time, until ctx ends. A peer that fails or serves a record that
// does not verify is passed over for the next one; after a round in which
// every peer failed it waits backfillPoll.
func (n *Node) backfill(ctx context.Context, st *kms.State) {
	window := uint64(backfillWindow)
	turn, failed := 0, 0
	var started time.Time
	for ctx.Err() == nil {
		g := st.LedgerGap()
		var peers []string
		if g != nil {
			peers = n.backfillPeers()
		}
		if g == nil || len(peers) == 0 || failed >= len(peers) || backfillPaused.Load() {
			if g == nil && !started.IsZero() {
				n.log.Info("ledger backfill complete: this node holds every record again", "took", time.Since(started).Round(time.Millisecond))
				started = time.Time{}
			}
			failed = 0
			select {
			case <-ctx.Done():
				return
			case <-time.After(backfillPoll):
			}
			continue
		}
		if started.IsZero() {
			started = time.Now()
			n.log.Info("ledger backfill: copying records from the other nodes", "missing_to", g.Hi)
		}
		id := peers[turn%len(peers)]
		from := g.Hi - min(window, g.Hi-g.Lo+1) + 1
		recs, err := n.readRecords(ctx, id, from, g.Hi)
		if requested := g.Hi - from + 1; err == nil && uint64(len(recs)) != requested {
			if len(recs) == 0 || uint64(len(recs)) > requested {
				err = fmt.Errorf("peer answered %d records for the %d asked", len(recs), requested)
			} else {
				// The peer's size limit cut the answer short: ask for as
				// many as it sent (and grow again after each fill).
				window = uint64(len(recs))
				continue
			}
		}
		if err == nil {
			_, err = st.FillLedgerGap(from, recs)
			if errors.Is(err, ledger.ErrGapChanged) {
				// A snapshot was restored meanwhile: start over on the
				// new range (after a breath, should it keep changing).
				select {
				case <-ctx.Done():
				case <-time.After(10 * time.Millisecond):
				}
				continue
			}
		}
		if err != nil {
			if ctx.Err() == nil {
				n.log.Warn("ledger backfill: peer failed", "peer", id, "from", from, "to", g.Hi, "err", err)
			}
			turn++
			failed++
			continue
		}
		failed = 0
		window = min(2*window, backfillWindow)
	}
}

// backfillPeers returns the ids of the other members: the Raft
// configuration and the configured peers.
func (n *Node) backfillPeers() []string {
	seen := map[string]bool{n.cfg.ID: true}
	var ids []string
	if servers, err := n.raft.Servers(); err == nil {
		for _, s := range servers {
			if !seen[s.ID] {
				seen[s.ID] = true
				ids = append(ids, s.ID)
			}
		}
	}
	for _, p := range n.cfg.Peers {
		if !seen[p.ID] {
			seen[p.ID] = true
			ids = append(ids, p.ID)
		}
	}
	return ids
}

// readRecords asks member id for records from..to (Replication.ReadRecords).
func (n *Node) readRecords(ctx context.Context, id string, from, to uint64) ([][]byte, error) {
	f := n.fwd
	if f.isolate != nil && f.isolate.Load() {
		return nil, errors.New("node isolated (fault injection)")
	}
	addr := f.apiAddr(id)
	if addr == "" {
		return nil, fmt.Errorf("no gRPC address known for node %s (add it to peers)", id)
	}
	cc, err := f.conn(id, addr)
	if err != nil {
		return nil, fmt.Errorf("connect to node %s: %w", id, err)
	}
	ctx, cancel := context.WithTimeout(ctx, backfillTimeout)
	defer cancel()
	r, err := raftlogv1.NewReplicationClient(cc).ReadRecords(ctx, &raftlogv1.ReadRecordsRequest{FromSeq: from, ToSeq: to})
	if err != nil {
		return nil, fmt.Errorf("node %s: read records %d to %d: %w", id, from, to, err)
	}
	return r.GetRecords(), nil
}
