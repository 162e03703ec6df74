package kms

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Linearizable reads (invariant 3 of docs/architecture.md). Encrypt and GenerateDataKey
// commit nothing: they decide on the key's state as this node has applied
// it. A node that is partitioned or lags would otherwise go on sealing
// under a key whose revoke or disable the cluster has already
// acknowledged. Before seal reads the key's state the node therefore
// obtains a read index — a committed log index at least as new as every
// entry committed when the request arrived, confirmed by the leader with a
// quorum — and waits until it has applied it (the Raft "read index"
// technique). If it cannot, nothing is sealed: ErrUnavailable.

// ReadIndexFunc returns a log index that is committed and at least as new
// as every entry committed (and so every command acknowledged) before the
// call. On the leader that takes a round with a quorum; a follower asks
// the leader. It fails when leadership cannot be confirmed.
type ReadIndexFunc func(ctx context.Context) (uint64, error)

// DefaultReadIndexTimeout bounds a read index (obtaining it and applying
// up to it) when the request's context has no earlier deadline.
const DefaultReadIndexTimeout = 5 * time.Second

// linearize makes this node's state at least as new as everything
// committed before the call, or fails with ErrUnavailable. Without a
// ReadIndex (a single local log in unit tests) it does nothing.
func (s *Service) linearize(ctx context.Context) error {
	if s.readIndex == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.readIndexTimeout)
	defer cancel()
	idx, err := s.readIndex(ctx)
	if err != nil {
		return fmt.Errorf("%w: cannot confirm the key's current state with the leader; nothing issued: %v", ErrUnavailable, err)
	}
	if err := s.state.WaitApplied(ctx, idx); err != nil {
		return fmt.Errorf("%w: this node has not caught up with the leader (read index %d, applied %d); nothing issued: %v",
			ErrUnavailable, idx, s.state.AppliedIndex(), err)
	}
	return nil
}

// CoalesceReadIndex shares read indexes between concurrent callers: a
// caller joins the next round that starts after it arrived, so every
// caller of a round gets an index obtained entirely after its call began —
// as valid for it as one of its own — and concurrent requests cost one
// leader round instead of one each. A round runs under its own context
// bounded by timeout (callers may give up earlier).
func CoalesceReadIndex(f ReadIndexFunc, timeout time.Duration) ReadIndexFunc {
	c := &readCoalescer{f: f, timeout: timeout}
	return c.readIndex
}

type readCoalescer struct {
	f       ReadIndexFunc
	timeout time.Duration

	mu      sync.Mutex
	running bool
	next    *readRound // callers waiting for a round not started yet
}

type readRound struct {
	done  chan struct{}
	index uint64
	err   error
}

func (c *readCoalescer) readIndex(ctx context.Context) (uint64, error) {
	c.mu.Lock()
	if c.next == nil {
		c.next = &readRound{done: make(chan struct{})}
	}
	r := c.next
	if !c.running {
		c.running = true
		go c.loop()
	}
	c.mu.Unlock()
	select {
	case <-r.done:
		return r.index, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// loop runs rounds while callers wait. A round is taken out of c.next
// before f starts, so a caller that arrives while f runs waits for the
// next round.
func (c *readCoalescer) loop() {
	for {
		c.mu.Lock()
		r := c.next
		c.next = nil
		if r == nil {
			c.running = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		r.index, r.err = c.f(ctx)
		cancel()
		close(r.done)
	}
}
