package raft

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// Group commit.
//
// Apply puts each command on a queue. One dispatcher goroutine keeps up to
// MaxInFlight entries outstanding: whenever a slot is free it takes the
// first queued command plus whatever else is already queued (up to
// MaxBatch), marshals them as one raftlogv1.Entry and proposes it. When the
// entry's future resolves, each waiter gets the result at its own position.
// An idle node therefore proposes a lone command at once; a busy one packs
// the commands that arrived while earlier entries were committing.

type request struct {
	ctx  context.Context
	cmd  *raftlogv1.Command
	done chan result // buffered, written once
}

type result struct {
	val any
	err error
}

// Apply proposes cmd and waits until it is committed and applied on this
// node, returning the StateMachine's result for it. A result that is an
// error is returned as the error.
//
// Errors: ErrNotLeader (a *NotLeaderError with the leader's address when
// known) if this node is not the leader, ErrClosed after Close, ErrTimeout
// if raft does not accept the entry within ApplyTimeout, ctx.Err() if ctx
// ends first. After ctx.Err(), ErrClosed, or a NotLeaderError wrapping
// hashicorp's ErrLeadershipLost the command may still have committed (and
// been applied): callers that must know re-read the state.
func (n *Node) Apply(ctx context.Context, cmd *raftlogv1.Command) (any, error) {
	if cmd == nil {
		return nil, errors.New("raft: nil command")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	req := &request{ctx: ctx, cmd: cmd, done: make(chan result, 1)}
	select {
	case <-n.closing:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	case n.queue <- req:
	}
	select {
	case r := <-req.done:
		return r.val, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-n.stopped:
		select {
		case r := <-req.done:
			return r.val, r.err
		default:
			return nil, ErrClosed
		}
	}
}

func (n *Node) dispatch() {
	defer close(n.dispDone)
	slots := make(chan struct{}, n.cfg.MaxInFlight)
	batch := make([]*request, 0, n.cfg.MaxBatch)
	for {
		// Wait for a free slot first: commands that arrive meanwhile queue
		// up and go out together.
		select {
		case slots <- struct{}{}:
		case <-n.closing:
			return
		}
		var first *request
		select {
		case first = <-n.queue:
		case <-n.closing:
			return
		}
		batch = append(batch[:0], first)
	drain:
		for len(batch) < n.cfg.MaxBatch {
			select {
			case r := <-n.queue:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		reqs := n.propose(batch)
		if reqs == nil {
			<-slots
			continue
		}
		n.inflight.Add(1)
		go func() {
			defer n.inflight.Done()
			defer func() { <-slots }()
			reqs.wait(n)
		}()
	}
}

type proposal struct {
	reqs   []*request
	future interface {
		Error() error
		Response() any
	}
}

// propose drops requests whose caller has gone, marshals the rest into one
// Entry and hands it to raft. It returns nil if nothing was proposed.
func (n *Node) propose(batch []*request) *proposal {
	live := make([]*request, 0, len(batch))
	entry := &raftlogv1.Entry{Commands: make([]*raftlogv1.Command, 0, len(batch))}
	for _, r := range batch {
		if r.ctx.Err() != nil {
			continue // caller already returned ctx.Err()
		}
		live = append(live, r)
		entry.Commands = append(entry.Commands, r.cmd)
	}
	if len(live) == 0 {
		return nil
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(entry)
	if err != nil {
		err = fmt.Errorf("raft: marshal entry: %w", err)
		for _, r := range live {
			r.done <- result{err: err}
		}
		return nil
	}
	return &proposal{reqs: live, future: n.raft.Apply(data, n.cfg.ApplyTimeout)}
}

func (p *proposal) wait(n *Node) {
	// hashicorp/raft never resolves a log future that is still queued in
	// its apply channel or FSM queue when it shuts down, so do not wait on
	// the future alone. The goroutine below outlives a future abandoned
	// that way (at most MaxInFlight per closed node).
	errc := make(chan error, 1)
	go func() { errc <- p.future.Error() }()
	var err error
	select {
	case err = <-errc:
	case <-n.raftDown:
		select {
		case err = <-errc:
		default:
			err = ErrClosed
		}
	}
	if err != nil {
		err = n.translate(err)
		for _, r := range p.reqs {
			r.done <- result{err: err}
		}
		return
	}
	results, ok := p.future.Response().([]any)
	if !ok || len(results) != len(p.reqs) {
		err := fmt.Errorf("raft: state machine returned %d results for an entry of %d commands", len(results), len(p.reqs))
		for _, r := range p.reqs {
			r.done <- result{err: err}
		}
		return
	}
	for i, r := range p.reqs {
		if e, isErr := results[i].(error); isErr {
			r.done <- result{err: e}
		} else {
			r.done <- result{val: results[i]}
		}
	}
}

// failQueued answers proposals that never left the queue.
func (n *Node) failQueued() {
	for {
		select {
		case r := <-n.queue:
			r.done <- result{err: ErrClosed}
		default:
			return
		}
	}
}

// ApplyAll proposes cmds together and waits for all of them. They are
// queued back to back, so the dispatcher packs them into as few entries as
// MaxBatch allows (other callers' commands may share those entries). It
// returns, at each command's position, what Apply would have returned for
// it. A command that could not be queued (ctx ended, node closing) gets
// that error; the ones queued before it are still proposed.
func (n *Node) ApplyAll(ctx context.Context, cmds []*raftlogv1.Command) ([]any, []error) {
	vals := make([]any, len(cmds))
	errs := make([]error, len(cmds))
	reqs := make([]*request, len(cmds))
	var stop error
	for i, cmd := range cmds {
		switch {
		case stop != nil:
		case cmd == nil:
			errs[i] = errors.New("raft: nil command")
			continue
		default:
			stop = ctx.Err()
		}
		if stop != nil {
			errs[i] = stop
			continue
		}
		req := &request{ctx: ctx, cmd: cmd, done: make(chan result, 1)}
		select {
		case <-n.closing:
			stop = ErrClosed
		case <-ctx.Done():
			stop = ctx.Err()
		case n.queue <- req:
			reqs[i] = req
			continue
		}
		errs[i] = stop
	}
	for i, req := range reqs {
		if req == nil {
			continue
		}
		select {
		case r := <-req.done:
			vals[i], errs[i] = r.val, r.err
		case <-ctx.Done():
			errs[i] = ctx.Err()
		case <-n.stopped:
			select {
			case r := <-req.done:
				vals[i], errs[i] = r.val, r.err
			default:
				errs[i] = ErrClosed
			}
		}
	}
	return vals, errs
}
