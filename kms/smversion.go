package kms

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/custos-kms/custos/kms/audit"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// State machine versions (docs/upgrades.md). Every replica must turn the
// same log entries into the same records and the same state, so a release
// that changes what the state machine writes does so only from a version
// the whole cluster has moved to: until every server in the Raft
// configuration reports that its custosd can apply the new version, the
// cluster keeps the old behaviour, and nodes of the old and the new
// release run side by side (a rolling upgrade). The leader then proposes
// SetStateMachineVersion, recorded as a STATE_MACHINE_UPGRADE record.

// StateMachineVersion is the newest state machine version this custosd
// applies.
//
//   - 1: the records and state digests of the first versioned release.
//   - 2: grants and checkpoint keys are in the state digest
//     (state_digest_version 2) and a grant's use carries it; a new
//     checkpoint key is a NODE_KEY record; GOVERNANCE records carry the
//     grant they created or the id of the one they revoked.
//   - 3: officers' WebAuthn credentials (add_officer_credential,
//     remove_officer_credential, statements signed by security keys with
//     their signature counters) and proposals (GovernanceService.Propose).
//   - 4: signed requests (docs/signed-requests.md): a Decide's request
//     signature and certificate are checked at apply and recorded, their
//     nonces spent, and a policy may set require_request_signature; a
//     decision while a restore waits for the officers is a DENY
//     (restore:pending) in the state machine too.
const StateMachineVersion uint32 = 4

// upgradePoll is how often the leader looks for a version every server
// can apply.
const upgradePoll = 2 * time.Second

// smv is the cluster's state machine version (0, from a cluster or
// snapshot made before versions, is 1).
func (s *State) smv() uint32 {
	if s.smVersion == 0 {
		return 1
	}
	return s.smVersion
}

// StateMachineVersion returns the state machine version the cluster runs.
func (s *State) StateMachineVersion() uint32 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.smv()
}

// upgradeTarget returns the newest version every server in the Raft
// configuration reported it can apply (0 if there is no configuration),
// and, when some server reported less than want, which ones.
func (s *State) upgradeTarget(want uint32) (uint32, string) {
	if len(s.members) == 0 {
		return 0, "no Raft configuration is recorded"
	}
	target := uint32(0)
	var lagging []string
	for i, m := range s.members {
		v := uint32(0)
		for _, k := range s.nodeKeys {
			if k.Node == m.Id {
				v = k.MaxStateMachineVersion // the newest registration counts
			}
		}
		if i == 0 || v < target {
			target = v
		}
		if v < want {
			lagging = append(lagging, fmt.Sprintf("%s reports %d", m.Id, v))
		}
	}
	return target, strings.Join(lagging, ", ")
}

// UpgradeTarget returns the newest state machine version every server can
// apply, if it is newer than the cluster's; 0 otherwise.
func (s *State) UpgradeTarget() uint32 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t, _ := s.upgradeTarget(0)
	if t <= s.smv() {
		return 0
	}
	return t
}

// applySetStateMachineVersion moves the cluster to op.Version if every
// server in the configuration reported it can apply it; every replica
// reaches the same verdict from the same state.
func (s *State) applySetStateMachineVersion(index uint64, c *raftlogv1.Command, op *raftlogv1.SetStateMachineVersion) any {
	from := s.smv()
	if op.Version <= from {
		return fmt.Errorf("%w: the cluster already runs state machine version %d", ErrFailedPrecondition, from)
	}
	target, lagging := s.upgradeTarget(op.Version)
	if target < op.Version {
		return fmt.Errorf("%w: not every server can apply state machine version %d: %s", ErrFailedPrecondition, op.Version, lagging)
	}
	if op.Version > StateMachineVersion {
		// Every server reported it can, this one included — impossible
		// unless its report was not its own. It cannot follow: stop
		// serving rather than write other records than the others.
		s.broken = fmt.Errorf("the cluster moved to state machine version %d and this custosd applies at most %d: run a newer release", op.Version, StateMachineVersion)
		return fmt.Errorf("%w: %v", ErrUnavailable, s.broken)
	}
	s.smVersion = op.Version
	var servers []string
	for _, m := range s.members {
		servers = append(servers, m.Id)
	}
	slices.Sort(servers)
	rec := s.newRecord(index, c, custosv1.Operation_OPERATION_STATE_MACHINE_UPGRADE)
	rec.Outcome, rec.MatchedRule = custosv1.Outcome_OUTCOME_ALLOW, "state-machine:upgrade"
	rec.Detail = fmt.Sprintf("state machine version %d → %d: every server (%s) reported it can apply it", from, op.Version, strings.Join(servers, ", "))
	// Auditors follow the officer set from here on (every statement is in
	// its record from version 2).
	rec.Officers, rec.Quorum = s.gov.GetOfficers(), s.gov.GetQuorum()
	for _, k := range s.nodeKeys {
		// From here on every new checkpoint key is a NODE_KEY record:
		// auditors start from these.
		rec.RegisteredNodeKeys = append(rec.RegisteredNodeKeys, slices.Clone(k.PublicKey))
	}
	return &Decision{Record: rec}
}

// changesState reports whether rec changes the governed state, so that it
// carries the state digest: version 1 knew only state-changing operations,
// version 2 counts a grant's use too.
func (s *State) changesState(rec *custosv1.DecisionRecord) bool {
	if s.smv() >= 2 {
		return audit.StateChanging(rec)
	}
	return audit.StateChangingOperation(rec.Operation)
}

// digestVersion is the state_digest_version this state's digests carry.
func (s *State) digestVersion() uint32 {
	if s.smv() >= 2 {
		return StateDigestVersion
	}
	return 0
}

// RunStateMachineUpgrades runs on the leader until ctx ends: when every
// server reports that it can apply a newer state machine version than the
// cluster's (and this custosd can too), it proposes the move.
func (s *Service) RunStateMachineUpgrades(ctx context.Context) {
	t := time.NewTicker(upgradePoll)
	defer t.Stop()
	for {
		if target := s.state.UpgradeTarget(); target > 0 && target <= s.maxSMV {
			from := s.state.StateMachineVersion()
			_, err := s.apply(ctx, Principal{Name: "custosd"}, &raftlogv1.Command{Op: &raftlogv1.Command_SetStateMachineVersion{
				SetStateMachineVersion: &raftlogv1.SetStateMachineVersion{Version: target}}})
			if err != nil {
				s.lg.Warn("state machine upgrade not applied", "from", from, "to", target, "err", err)
			} else {
				s.lg.Info("state machine upgraded: every server can apply the new version", "from", from, "to", target)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ReportedStateMachineVersions returns, for every node that registered a
// checkpoint key, the newest state machine version it reported it can
// apply (0: a release from before versions were reported).
func (s *State) ReportedStateMachineVersions() map[string]uint32 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := map[string]uint32{}
	for _, k := range s.nodeKeys {
		out[k.Node] = k.MaxStateMachineVersion
	}
	return out
}
