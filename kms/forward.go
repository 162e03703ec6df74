package kms

import (
	"context"
	"errors"
	"fmt"
	"time"

	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"github.com/custos-kms/custos/raft"
)

// Forwarding: a follower cannot append to the Raft log, so it proposes its
// commands on the leader through the Replication service. The command is
// complete when it leaves (principal, time, node, request id are stamped by
// the follower), and the HSM work of the request stays on the follower.

// remoteError is a domain error decoded from another node: its message is
// the original one and errors.Is matches the original kind's sentinel.
type remoteError struct {
	kind error
	msg  string
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.kind }

// encodeError puts err on the wire as its kind's name (ErrorKinds) and message;
// a *PendingError also carries its request id and ledger position.
func encodeError(err error) *raftlogv1.ResultError {
	if err == nil {
		return nil
	}
	out := &raftlogv1.ResultError{Kind: ErrorKindOf(err).Name, Message: err.Error()}
	var pe *PendingError
	if errors.As(err, &pe) {
		out.Kind, out.PendingRequestId, out.PendingSeq = ErrorKindPending.Name, pe.RequestID, pe.Seq
	}
	return out
}

// decodeError is the inverse of encodeError; an unknown kind (from a newer
// node) is ErrInternal.
func decodeError(e *raftlogv1.ResultError) error {
	if e == nil {
		return nil
	}
	if e.Kind == ErrorKindPending.Name {
		return &PendingError{RequestID: e.PendingRequestId, Seq: e.PendingSeq}
	}
	kind := ErrorKindNamed(e.Kind)
	if kind == nil {
		kind = ErrorKindInternal
	}
	return &remoteError{kind: kind.Err, msg: e.Message}
}

// EncodeResult turns a command's result (as the state machine returned it,
// or the error of proposing it) into its wire form.
func EncodeResult(res any, err error) *raftlogv1.ApplyResult {
	out := &raftlogv1.ApplyResult{Error: encodeError(err)}
	switch r := res.(type) {
	case *raftlogv1.KeyRecord:
		out.Result = &raftlogv1.ApplyResult_Key{Key: r}
	case *Decision:
		out.Result = &raftlogv1.ApplyResult_Decision{Decision: &raftlogv1.DecisionResult{
			Record: r.Record, Error: encodeError(r.Err), Result: r.Result, GrantId: r.GrantID}}
	case error:
		out.Error = encodeError(r)
	}
	return out
}

// DecodeResult is the inverse of EncodeResult.
func DecodeResult(r *raftlogv1.ApplyResult) (any, error) {
	if err := decodeError(r.GetError()); err != nil {
		return nil, err
	}
	switch x := r.GetResult().(type) {
	case *raftlogv1.ApplyResult_Key:
		return x.Key, nil
	case *raftlogv1.ApplyResult_Decision:
		d := x.Decision
		return &Decision{Record: d.Record, Err: decodeError(d.Error), Result: d.Result, GrantID: d.GrantId}, nil
	}
	return nil, nil
}

// Leader is what a ForwardingLog needs of the local Raft node.
type Leader interface {
	Log
	IsLeader() bool
	// Leader returns the leader's Raft address and id ("" if unknown).
	Leader() (addr, id string)
}

// Forwarder proposes a command on the node with the given Raft id.
type Forwarder func(ctx context.Context, leaderID string, cmd *raftlogv1.Command) (*raftlogv1.ApplyResult, error)

// ForwardingLog applies commands locally on the leader and forwards them to
// the leader from a follower, retrying across a leader change a bounded
// number of times or until ctx ends. A retried command may have been applied
// by the first attempt: Decide then records a second decision, statements
// are refused as replays, and rotations as conflicting — nothing is granted
// twice.
type ForwardingLog struct {
	Local   Leader
	Forward Forwarder
	// Retry is the pause between attempts (default 50ms); Attempts bounds
	// them (default 40).
	Retry    time.Duration
	Attempts int
}

// Apply implements Log.
func (f *ForwardingLog) Apply(ctx context.Context, cmd *raftlogv1.Command) (any, error) {
	pause, attempts := f.Retry, f.Attempts
	if pause <= 0 {
		pause = 50 * time.Millisecond
	}
	if attempts <= 0 {
		attempts = 40
	}
	last := errors.New("no leader is known")
	for i := 0; i < attempts; i++ {
		if f.Local.IsLeader() {
			res, err := f.Local.Apply(ctx, cmd)
			if !errors.Is(err, raft.ErrNotLeader) {
				return res, err
			}
			last = err
		} else if _, id := f.Local.Leader(); id != "" {
			// The principal's certificate goes with the command to the
			// leader, which checks it (docs/identities.md) and removes
			// it; a command applied here never carries it.
			cmd.PrincipalCertificate = principalCertificate(ctx)
			r, err := f.Forward(ctx, id, cmd)
			cmd.PrincipalCertificate = nil
			if err == nil {
				return DecodeResult(r)
			}
			last = err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %v (last attempt: %v)", ErrUnavailable, ctx.Err(), last)
		case <-time.After(pause):
		}
	}
	return nil, fmt.Errorf("%w: could not reach the leader: %v", ErrUnavailable, last)
}

type principalCertKey struct{}

// withPrincipalCertificate returns ctx carrying the certificate (DER) of
// the principal a command is proposed for, for ForwardingLog to forward.
func withPrincipalCertificate(ctx context.Context, der []byte) context.Context {
	return context.WithValue(ctx, principalCertKey{}, der)
}

func principalCertificate(ctx context.Context) []byte {
	der, _ := ctx.Value(principalCertKey{}).([]byte)
	return der
}
