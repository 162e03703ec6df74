package kms

import (
	"time"

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
// is max(its stamp, the clock): a stamp behind the clock — skew between
// nodes, reordering inside a group-committed batch, or a clock set back on
// purpose — is clamped to the clock, the same way on every replica
// (invariant 3: decisions follow the log, not a node's clock). With the
// effective time monotonic, a statement whose not_after is behind the clock
// can never verify again, so its nonce is kept exactly until then
// (pruneNonces): a statement applies at most once, ever; a grant, a request
// or a policy window cannot be used at a time the state has already passed.
//
// Stamps behind the clock are clamped rather than refused on purpose. A
// refusal would let one node whose clock jumped ahead (an NTP glitch of a
// day) stop every correctly clocked node's commands — revocations and
// decisions included — until real time caught up. Clamping keeps the cluster
// serving and loosens nothing: a back-dated command is simply applied now.
// The leader refuses forwarded commands stamped more than MaxClockSkew
// *ahead* of its own clock (api.NewReplicationServer), so a member cannot
// push the clock forward; docs/security.md says what a leader whose clock
// runs ahead can still do.

// MaxClockSkew is how far ahead of the leader's clock a forwarded command
// may be stamped (api.NewReplicationServer). It is not part of the
// replicated rules.
const MaxClockSkew = 30 * time.Second

// advanceClock makes c.TimeUnixNano the command's effective time, max(stamp,
// clock), and moves the clock there. The command is the FSM adapter's own
// decoded copy of the entry (raft/fsm.go), so setting its time touches no
// proposer's data; a replica given the same command twice computes the
// same effective time.
func (s *State) advanceClock(c *raftlogv1.Command) {
	if c.TimeUnixNano < s.clock {
		c.TimeUnixNano = s.clock
	}
	s.clock = c.TimeUnixNano
}

// Clock returns the state's clock: the largest command time applied so
// far (the Unix epoch before the first command).
func (s *State) Clock() time.Time {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return time.Unix(0, s.clock)
}
