package raft

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	hraft "github.com/hashicorp/raft"
)

// Node is one member of a custos Raft cluster.
type Node struct {
	cfg   Config
	raft  *hraft.Raft
	store *LogStore
	snaps hraft.SnapshotStore
	trans hraft.Transport
	// ownTrans is the transport Open created (closed by Close).
	ownTrans *hraft.NetworkTransport
	// existing: Open found Raft state in cfg.Dir (a restart).
	existing bool

	queue    chan *request // proposals waiting for the dispatcher
	closing  chan struct{} // closed when Close starts
	raftDown chan struct{} // closed when raft has shut down
	stopped  chan struct{} // closed when every proposal has been answered
	dispDone chan struct{} // closed when the dispatcher has exited
	inflight sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// Open opens (or creates) the Raft state in cfg.Dir and starts the node.
// With cfg.Bootstrap and no existing state it forms a single-voter cluster.
func Open(cfg Config, sm StateMachine) (*Node, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if sm == nil {
		return nil, errors.New("raft: nil StateMachine")
	}
	logger := newHCLogAdapter(cfg.Logger, "raft")

	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("raft: create dir: %w", err)
	}
	store, err := OpenLogStore(filepath.Join(cfg.Dir, "raft.db"))
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg:      cfg,
		store:    store,
		queue:    make(chan *request, cfg.MaxBatch*cfg.MaxInFlight),
		closing:  make(chan struct{}),
		raftDown: make(chan struct{}),
		stopped:  make(chan struct{}),
		dispDone: make(chan struct{}),
	}
	fail := func(err error) (*Node, error) {
		if n.ownTrans != nil {
			_ = n.ownTrans.Close()
		}
		_ = store.Close()
		return nil, err
	}

	snaps, err := hraft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, logger.Named("snapshots"))
	if err != nil {
		return fail(fmt.Errorf("raft: open snapshot store: %w", err))
	}

	if cfg.Transport != nil {
		n.trans = cfg.Transport
	} else {
		var adv net.Addr
		if cfg.Advertise != "" {
			a, err := net.ResolveTCPAddr("tcp", cfg.Advertise)
			if err != nil {
				return fail(fmt.Errorf("raft: advertise address %q: %w", cfg.Advertise, err))
			}
			adv = a
		}
		t, err := hraft.NewTCPTransportWithConfig(cfg.Addr, adv, &hraft.NetworkTransportConfig{
			MaxPool:         3,
			MaxRPCsInFlight: maxRPCsInFlight,
			Timeout:         10 * time.Second,
			Logger:          logger.Named("transport"),
		})
		if err != nil {
			return fail(fmt.Errorf("raft: listen on %s: %w", cfg.Addr, err))
		}
		n.ownTrans = t
		n.trans = t
	}

	// Never pipelined replication: nopipeline.go says why.
	n.trans = withoutPipelining(n.trans)

	existing, err := hraft.HasExistingState(store, store, snaps)
	if err != nil {
		return fail(fmt.Errorf("raft: inspect state in %s: %w", cfg.Dir, err))
	}

	n.snaps, n.existing = snaps, existing
	r, err := hraft.NewRaft(cfg.raftConfig(logger), &fsm{sm: sm}, store, store, snaps, n.trans)
	if err != nil {
		return fail(fmt.Errorf("raft: start: %w", err))
	}
	n.raft = r

	if cfg.Bootstrap && !existing {
		boot := hraft.Configuration{Servers: []hraft.Server{{
			Suffrage: hraft.Voter,
			ID:       hraft.ServerID(cfg.ID),
			Address:  n.trans.LocalAddr(),
		}}}
		if err := r.BootstrapCluster(boot).Error(); err != nil {
			_ = r.Shutdown().Error()
			return fail(fmt.Errorf("raft: bootstrap: %w", err))
		}
	}

	go n.dispatch()
	return n, nil
}

// HadState reports whether Open found Raft state (a log or a snapshot) in
// the data directory: the node restarted rather than started empty.
func (n *Node) HadState() bool { return n.existing }

// ID returns this server's Raft id.
func (n *Node) ID() string { return n.cfg.ID }

// Addr returns the transport address other servers use to reach this node.
func (n *Node) Addr() string { return string(n.trans.LocalAddr()) }

// Leader returns the current leader's address and id, empty if unknown.
func (n *Node) Leader() (addr, id string) {
	a, i := n.raft.LeaderWithID()
	return string(a), string(i)
}

// IsLeader reports whether this node currently believes it is the leader.
func (n *Node) IsLeader() bool { return n.raft.State() == hraft.Leader }

// WaitLeader blocks until the cluster has a leader known to this node (this
// node or another), ctx ends, or the node is closed.
func (n *Node) WaitLeader(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if addr, _ := n.Leader(); addr != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.closing:
			return ErrClosed
		case <-t.C:
		}
	}
}

// Stats is a snapshot of a node's Raft state.
type Stats struct {
	State        string // "Leader", "Follower", "Candidate", "Shutdown"
	Term         uint64
	CommitIndex  uint64
	AppliedIndex uint64
	LastLogIndex uint64
	Leader       string // leader address, empty if unknown
}

// Stats returns the node's Raft state.
func (n *Node) Stats() Stats {
	addr, _ := n.raft.LeaderWithID()
	return Stats{
		State:        n.raft.State().String(),
		Term:         n.raft.CurrentTerm(),
		CommitIndex:  n.raft.CommitIndex(),
		AppliedIndex: n.raft.AppliedIndex(),
		LastLogIndex: n.raft.LastIndex(),
		Leader:       string(addr),
	}
}

// timeout returns the raft-side timeout for an operation under ctx.
func (n *Node) timeout(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		if t := time.Until(d); t > 0 {
			return t
		}
		return time.Millisecond
	}
	return n.cfg.ApplyTimeout
}

// wait waits for f under ctx and translates its error.
func (n *Node) wait(ctx context.Context, f hraft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return n.translate(err)
	case <-ctx.Done():
		return ctx.Err()
	case <-n.raftDown:
		// raft does not resolve every future on shutdown.
		select {
		case err := <-done:
			return n.translate(err)
		default:
			return ErrClosed
		}
	}
}

// Barrier blocks until every entry before it is applied to the local
// StateMachine (leader only). After Open on a restarted node, Barrier on the
// leader is how to wait for the log after the last snapshot to be replayed.
func (n *Node) Barrier(ctx context.Context) error {
	return n.wait(ctx, n.raft.Barrier(n.timeout(ctx)))
}

// Snapshot takes a snapshot now (compacting the log down to TrailingLogs).
// It returns nil if nothing was applied since the last snapshot.
func (n *Node) Snapshot() error {
	err := n.wait(context.Background(), n.raft.Snapshot())
	if errors.Is(err, hraft.ErrNothingNewToSnapshot) {
		return nil
	}
	return err
}

// AddVoter adds (or updates) a voting member. Leader only.
func (n *Node) AddVoter(ctx context.Context, id, addr string) error {
	return n.wait(ctx, n.raft.AddVoter(hraft.ServerID(id), hraft.ServerAddress(addr), 0, n.timeout(ctx)))
}

// RemoveServer removes a member. Leader only.
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	return n.wait(ctx, n.raft.RemoveServer(hraft.ServerID(id), 0, n.timeout(ctx)))
}

// Close shuts raft down, answers pending proposals with ErrClosed, and
// closes the stores and the transport Open created. It is idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		close(n.closing)
		var errs []error
		// Shut raft down first: a dispatcher blocked handing an entry to
		// raft returns at once, and every in-flight future resolves.
		if err := n.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
		}
		close(n.raftDown)
		<-n.dispDone
		n.inflight.Wait()
		n.failQueued()
		close(n.stopped)
		if n.ownTrans != nil {
			if err := n.ownTrans.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close transport: %w", err))
			}
		}
		if err := n.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close log store: %w", err))
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}
