package kms

import (
	"context"
	"errors"
	"fmt"
	"sync"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"github.com/custos-kms/custos/raft"
)

// MaxBatchDecrypt is the most items one BatchDecrypt takes.
const MaxBatchDecrypt = 1000

// BatchLog is a Log that can propose many commands together; raft.Node and
// ForwardingLog implement it. ApplyAll returns, at each command's position,
// what Apply would have returned for it.
type BatchLog interface {
	Log
	ApplyAll(ctx context.Context, cmds []*raftlogv1.Command) ([]any, []error)
}

// BatchItem is the outcome of one item of a BatchDecrypt: Response, or Err.
// Decision is the committed decision record of the item (also for a DENY
// or PENDING), nil if it was never decided (malformed, not committed).
type BatchItem struct {
	Response *custosv1.DecryptResponse
	Err      error
	Decision *custosv1.DecisionRecord
}

// BatchDecrypt decides and decrypts up to MaxBatchDecrypt items. Every
// well-formed item gets its own decision record; the Decide commands are
// proposed together (so they share log entries and fsyncs) and evaluated in
// log order like any others. An item's plaintext is released only after its
// own ALLOW record committed, through the same pipeline as Decrypt
// (decideRelease: this node caught up with the decision, then the
// notification if its key's policy asks for one). Errors of one item never fail the others: the only
// error of the call itself is a batch that is too large.
func (s *Service) BatchDecrypt(ctx context.Context, p Principal, req *custosv1.BatchDecryptRequest) ([]BatchItem, error) {
	reqs := req.GetRequests()
	if len(reqs) > MaxBatchDecrypt {
		return nil, fmt.Errorf("%w: %d requests in one batch, at most %d", ErrInvalidArgument, len(reqs), MaxBatchDecrypt)
	}
	items := make([]BatchItem, len(reqs))
	wrapped := make([]*Wrapped, len(reqs))
	cmds := make([]*raftlogv1.Command, 0, len(reqs))
	pos := make([]int, 0, len(reqs))
	for i, r := range reqs {
		w, cmd, err := decideCommand(p, r.GetCiphertext(), r.GetEncryptionContext(), r.GetJustification(), r.GetRequestSignature(), false)
		if err == nil {
			err = s.throttle(p, w.Key, cmd)
		}
		if err != nil {
			items[i].Err = err
			continue
		}
		s.stamp(p, s.withProof(cmd))
		wrapped[i] = w
		cmds = append(cmds, cmd)
		pos = append(pos, i)
	}
	actx := ctx
	if len(p.Certificate) > 0 {
		actx = withPrincipalCertificate(ctx, p.Certificate)
	}
	vals, errs := s.applyAll(actx, cmds)
	for k, i := range pos {
		// The HSM serialises calls on a token anyway: one goroutine doing
		// them in turn avoids handing the token lock around.
		propose := func() (any, error) { return applyResult(ctx, vals[k], errs[k]) }
		rec, pt, err := s.decideRelease(ctx, p, propose, s.wrappedRelease(wrapped[i], reqs[i].GetEncryptionContext()))
		items[i].Decision = rec
		if err != nil {
			items[i].Err = err
			continue
		}
		items[i].Response = &custosv1.DecryptResponse{Key: wrapped[i].Key, KeyVersion: wrapped[i].KeyVersion, Plaintext: pt,
			DecisionSeq: rec.Seq, RequestId: rec.RequestId}
	}
	return items, nil
}

// applyAll proposes cmds together through a BatchLog, or concurrently one
// by one through any other Log (they still share entries on the leader).
func (s *Service) applyAll(ctx context.Context, cmds []*raftlogv1.Command) ([]any, []error) {
	if len(cmds) == 0 {
		return nil, nil
	}
	if bl, ok := s.log.(BatchLog); ok {
		return bl.ApplyAll(ctx, cmds)
	}
	return applyEach(ctx, s.log, cmds)
}

func applyEach(ctx context.Context, l Log, cmds []*raftlogv1.Command) ([]any, []error) {
	vals := make([]any, len(cmds))
	errs := make([]error, len(cmds))
	var wg sync.WaitGroup
	for i, c := range cmds {
		wg.Go(func() { vals[i], errs[i] = l.Apply(ctx, c) })
	}
	wg.Wait()
	return vals, errs
}

// ApplyAll implements BatchLog: on the leader the commands go to the local
// log together; a command the leader refused as not leader (leadership
// moved), and every command on a follower, takes Apply's forwarding and
// retry path, concurrently.
func (f *ForwardingLog) ApplyAll(ctx context.Context, cmds []*raftlogv1.Command) ([]any, []error) {
	bl, ok := f.Local.(interface {
		ApplyAll(context.Context, []*raftlogv1.Command) ([]any, []error)
	})
	if !ok || !f.Local.IsLeader() {
		return applyEach(ctx, f, cmds)
	}
	vals, errs := bl.ApplyAll(ctx, cmds)
	var retry []int
	for i, err := range errs {
		if errors.Is(err, raft.ErrNotLeader) {
			retry = append(retry, i)
		}
	}
	if len(retry) > 0 {
		again := make([]*raftlogv1.Command, len(retry))
		for k, i := range retry {
			again[k] = cmds[i]
		}
		v2, e2 := applyEach(ctx, f, again)
		for k, i := range retry {
			vals[i], errs[i] = v2[k], e2[k]
		}
	}
	return vals, errs
}
