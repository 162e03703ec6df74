package kms

import (
	"fmt"
	"time"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// The state's clock (docs/raft-log.md, "Time").
//
// Commands carry their proposer's clock (Command.time_unix_nano), and
// everything Apply decides by time — a statement's validity, a grant's or
// request's expiry, a policy's time windows, the hourly rate counters,
// record times — is decided by it. Left as it is, that time is whatever a
// proposer says: a member node, or a leader whose clock was set back, could
// propose an old officer statement copied out of raft.db with a time inside
// its validity, after its nonce was forgotten, and have it apply a second
// time (a revoked key re-enabled without the officers: invariants 4 and 8
// of docs/architecture.md).
//
// So time in the replicated state is monotonic. The state keeps a clock,
// the largest command time applied so far, and a command's effective time
// is max(its stamp, the clock). Commands are proposed concurrently by
// several nodes and group-committed, so a stamp a little behind the clock is
// normal (skew between nodes, reordering inside a batch) and is clamped;
// one more than MaxClockRegression behind is refused, the same way on every
// replica (invariant 3: decisions follow the log, not a node's clock). With
// the effective time monotonic, a statement whose not_after is behind the
// clock can never verify again, so its nonce is kept exactly until then
// (pruneNonces): a statement applies at most once, ever.

// MaxClockRegression is how far behind the state's clock a command's stamp
// may be and still apply (at the clock's time). A command stamped earlier
// than that is refused with ErrFailedPrecondition on every replica. It is
// part of the replicated rules: changing it changes how the log applies.
// The leader also refuses forwarded commands whose stamp is further than
// this from its own clock (api.NewReplicationServer).
const MaxClockRegression = 30 * time.Second

// RuleClockRegressed is the matched rule of the DENY record a Decide
// command gets when its stamp is too far behind the state's clock.
const RuleClockRegressed = "clock:regressed"

// advanceClock checks c's stamp against the state's clock. A stamp more
// than MaxClockRegression behind it is an error, and nothing changes.
// Otherwise c.TimeUnixNano becomes the command's effective time, max(stamp,
// clock), and the clock moves to it. The command is the FSM adapter's own
// decoded copy of the entry (raft/fsm.go), so setting its time touches no
// proposer's data; a replica given the same command twice computes the
// same effective time.
func (s *State) advanceClock(c *raftlogv1.Command) error {
	if c.TimeUnixNano < s.clock-int64(MaxClockRegression) {
		return fmt.Errorf("%w: command from node %q is stamped %s, %s before the cluster's clock %s (at most %s is allowed): "+
			"the node's clock is behind, check its time synchronisation",
			ErrFailedPrecondition, c.Node, formatNanos(c.TimeUnixNano),
			time.Duration(s.clock-c.TimeUnixNano), formatNanos(s.clock), MaxClockRegression)
	}
	if c.TimeUnixNano < s.clock {
		c.TimeUnixNano = s.clock
	}
	s.clock = c.TimeUnixNano
	return nil
}

// refuseRegressed is the result of a command whose stamp is too far behind
// the clock. Nothing in the state changes, but a Decide still gets its DENY
// record (rule RuleClockRegressed: no decision goes unrecorded) and a
// Govern statement its refused governance record, as any refused use or
// statement does, so the attempt and the node that proposed it are in the
// ledger. Both records carry the state's clock as their time. Any other
// command just fails.
func (s *State) refuseRegressed(index uint64, c *raftlogv1.Command, err error) any {
	switch op := c.Op.(type) {
	case *raftlogv1.Command_Decide:
		return s.decide(index, c, op.Decide, custosv1.Outcome_OUTCOME_DENY, RuleClockRegressed, err)
	case *raftlogv1.Command_Govern:
		return s.applyGovern(index, c, op.Govern, err)
	}
	return err
}

// Clock returns the state's clock: the largest command time applied so
// far (the Unix epoch before the first command).
func (s *State) Clock() time.Time {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return time.Unix(0, s.clock)
}

func formatNanos(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339Nano) }
