package kms

import (
	"strings"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"github.com/custos-kms/custos/raft"
)

// ObservesConfiguration implements raft.ConfigurationObserver: the state
// receives the Raft configuration entries in log order.
func (*State) ObservesConfiguration() {}

// Members returns the Raft configuration as of the last configuration
// entry applied.
func (s *State) Members() []*raftlogv1.RaftServer {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.members
}

// applyConfiguration records a Raft configuration entry: one MEMBERSHIP
// record per server added, removed, promoted, demoted or moved, at the
// entry's log position. The entry is the same on every replica and on
// replay, and the configuration it is compared with (the previous entry's)
// is part of the state and of its snapshots, so the records are identical
// everywhere (docs/architecture.md, invariant 5): a change made by any
// means — ClusterService, configured peers, hashicorp/raft itself — is in
// the ledger once it is committed.
//
// A configuration entry names no principal: the records carry none, no
// node, and the time the leader appended the entry. Before the cluster is
// initialised (the bootstrap configuration) the ledger has not begun and
// only the configuration is kept.
func (s *State) applyConfiguration(index uint64, cfg *raft.Configuration) {
	next := make([]*raftlogv1.RaftServer, 0, len(cfg.Servers))
	for _, sv := range cfg.Servers {
		next = append(next, &raftlogv1.RaftServer{Id: sv.ID, Address: sv.Addr, Suffrage: sv.Suffrage})
	}
	if s.clusterID != "" {
		stamp := &raftlogv1.Command{TimeUnixNano: cfg.AppendedAtUnixNano}
		for _, ch := range membershipChanges(s.members, next) {
			rec := s.newRecord(index, stamp, custosv1.Operation_OPERATION_MEMBERSHIP)
			rec.Outcome = custosv1.Outcome_OUTCOME_ALLOW
			rec.MatchedRule = "raft-configuration:" + ch.action
			rec.Detail = ch.detail + "; configuration now: " + describeMembers(next)
			s.extra = append(s.extra, rec)
		}
		if len(s.members) > 0 {
			s.revokeRemoved(index, stamp, next)
		}
	}
	s.members = next
}

// membershipChange is one server's change between two configurations.
type membershipChange struct {
	action string // add-voter, add-nonvoter, add-staging, remove, promote, demote, change-address
	detail string
}

// membershipChanges lists the differences from prev to next: removals in
// prev's order, then additions and changes in next's order (both orders
// come from the log).
func membershipChanges(prev, next []*raftlogv1.RaftServer) []membershipChange {
	find := func(l []*raftlogv1.RaftServer, id string) *raftlogv1.RaftServer {
		for _, sv := range l {
			if sv.Id == id {
				return sv
			}
		}
		return nil
	}
	var out []membershipChange
	for _, p := range prev {
		if find(next, p.Id) == nil {
			out = append(out, membershipChange{"remove", "server " + p.Id + " at " + p.Address + " removed (was " + p.Suffrage + ")"})
		}
	}
	for _, n := range next {
		p := find(prev, n.Id)
		switch {
		case p == nil:
			out = append(out, membershipChange{"add-" + strings.ToLower(n.Suffrage), "server " + n.Id + " at " + n.Address + " added as " + n.Suffrage})
		case p.Suffrage != n.Suffrage:
			action := "demote"
			if n.Suffrage == "Voter" {
				action = "promote"
			}
			d := "server " + n.Id + " at " + n.Address + " changed from " + p.Suffrage + " to " + n.Suffrage
			if p.Address != n.Address {
				d += " (address was " + p.Address + ")"
			}
			out = append(out, membershipChange{action, d})
		case p.Address != n.Address:
			out = append(out, membershipChange{"change-address", "server " + n.Id + " moved from " + p.Address + " to " + n.Address})
		}
	}
	return out
}

// describeMembers renders a configuration as "node-1 Voter 10.0.0.1:7000,
// node-2 Nonvoter 10.0.0.2:7000".
func describeMembers(l []*raftlogv1.RaftServer) string {
	parts := make([]string, 0, len(l))
	for _, sv := range l {
		parts = append(parts, sv.Id+" "+sv.Suffrage+" "+sv.Address)
	}
	return strings.Join(parts, ", ")
}
