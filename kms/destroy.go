package kms

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// Key destruction (docs/key-destruction.md): officers schedule it with a
// quorum (ScheduleKeyDestruction), a waiting period passes during which the
// version refuses every use and one officer can cancel it
// (CancelKeyDestruction), then the leader completes it
// (CompleteKeyDestruction): the state forgets the wrapped KEK, every node
// destroys its HSM copy, and the ledger records it.

const (
	// DefaultDestructionWait is the waiting period when a statement names
	// none.
	DefaultDestructionWait = 7 * 24 * time.Hour
	// MinDestructionWait is the shortest waiting period a production
	// cluster accepts; MinDevDestructionWait a development one.
	MinDestructionWait    = time.Hour
	MinDevDestructionWait = time.Second
	// MaxDestructionWait is the longest waiting period.
	MaxDestructionWait = 30 * 24 * time.Hour
	// destroyPoll is how often the leader looks for destructions due.
	destroyPoll = time.Second
)

// versionsOf returns the versions a destruction names: one, or every
// version for 0.
func versionsOf(k *raftlogv1.KeyRecord, version uint32) ([]*raftlogv1.KeyVersionRecord, error) {
	if version == 0 {
		return k.Versions, nil
	}
	if version > uint32(len(k.Versions)) {
		return nil, fmt.Errorf("%w: key %q has no version %d", ErrNotFound, k.Name, version)
	}
	return k.Versions[version-1 : version], nil
}

// describeTarget names what a destruction is about.
func describeTarget(key string, version uint32) string {
	if version == 0 {
		return "key " + key + " (every version)"
	}
	return "version " + strconv.FormatUint(uint64(version), 10) + " of key " + key
}

// applyScheduleDestruction carries out a ScheduleKeyDestruction statement.
func (s *State) applyScheduleDestruction(c *raftlogv1.Command, op *custosv1.ScheduleKeyDestruction) (string, error) {
	k, ok := s.keys[op.Key]
	if !ok {
		return "", fmt.Errorf("%w: key %q", ErrNotFound, op.Key)
	}
	wait := DefaultDestructionWait
	if op.WaitingSeconds != 0 {
		wait = time.Duration(min(op.WaitingSeconds, int64(MaxDestructionWait/time.Second)+1)) * time.Second
	}
	minWait := MinDestructionWait
	if s.gov.GetProfile() == ProfileDevelopment {
		minWait = MinDevDestructionWait
	}
	if wait < minWait || wait > MaxDestructionWait {
		return "", fmt.Errorf("%w: waiting period %s: must be between %s and %s", ErrInvalidArgument, wait, minWait, MaxDestructionWait)
	}
	vs, err := versionsOf(k, op.Version)
	if err != nil {
		return "", err
	}
	if k.Destroyed || k.DestroyAfterUnixNano != 0 {
		return "", fmt.Errorf("%w: key %q is already destroyed or scheduled for destruction", ErrFailedPrecondition, op.Key)
	}
	for _, v := range vs {
		if op.Version != 0 && (v.Destroyed || v.DestroyAfterUnixNano != 0) {
			return "", fmt.Errorf("%w: %s is already destroyed or scheduled for destruction", ErrFailedPrecondition, describeTarget(op.Key, v.Version))
		}
	}
	at := c.TimeUnixNano + int64(wait)
	for _, v := range vs {
		if !v.Destroyed && v.DestroyAfterUnixNano == 0 {
			v.DestroyAfterUnixNano = at
		}
	}
	if op.Version == 0 {
		k.DestroyAfterUnixNano = at
	}
	k.UpdateTimeUnixNano = c.TimeUnixNano
	return fmt.Sprintf("%s scheduled for destruction at %s; it refuses every use, and one officer can cancel until then",
		describeTarget(op.Key, op.Version), time.Unix(0, at).UTC().Format(time.RFC3339)), nil
}

// applyCancelDestruction carries out a CancelKeyDestruction statement.
func (s *State) applyCancelDestruction(c *raftlogv1.Command, op *custosv1.CancelKeyDestruction) (string, error) {
	k, ok := s.keys[op.Key]
	if !ok {
		return "", fmt.Errorf("%w: key %q", ErrNotFound, op.Key)
	}
	vs, err := versionsOf(k, op.Version)
	if err != nil {
		return "", err
	}
	if op.Version == 0 && k.DestroyAfterUnixNano == 0 {
		return "", fmt.Errorf("%w: key %q is not scheduled for destruction as a whole", ErrFailedPrecondition, op.Key)
	}
	pending := 0
	for _, v := range vs {
		if !v.Destroyed && v.DestroyAfterUnixNano != 0 {
			pending++
		}
	}
	if pending == 0 {
		return "", fmt.Errorf("%w: nothing of %s is waiting for destruction", ErrFailedPrecondition, describeTarget(op.Key, op.Version))
	}
	for _, v := range vs {
		if !v.Destroyed {
			v.DestroyAfterUnixNano = 0
		}
	}
	k.DestroyAfterUnixNano = 0
	k.UpdateTimeUnixNano = c.TimeUnixNano
	return "destruction of " + describeTarget(op.Key, op.Version) + " cancelled", nil
}

// applyCompleteDestruction destroys what a schedule named once its time
// came: the wrapped KEKs leave the state (nodes destroy their HSM copies on
// seeing it), and the ledger records it.
func (s *State) applyCompleteDestruction(index uint64, c *raftlogv1.Command, op *raftlogv1.CompleteKeyDestruction) any {
	k, ok := s.keys[op.Key]
	if !ok {
		return fmt.Errorf("%w: key %q", ErrNotFound, op.Key)
	}
	vs, err := versionsOf(k, op.Version)
	if err != nil {
		return err
	}
	if op.Version == 0 && k.DestroyAfterUnixNano == 0 {
		return fmt.Errorf("%w: key %q is not scheduled for destruction as a whole", ErrFailedPrecondition, op.Key)
	}
	var due []*raftlogv1.KeyVersionRecord
	for _, v := range vs {
		if v.Destroyed {
			continue
		}
		if v.DestroyAfterUnixNano == 0 || c.TimeUnixNano < v.DestroyAfterUnixNano {
			return fmt.Errorf("%w: %s is not due for destruction", ErrFailedPrecondition, describeTarget(op.Key, v.Version))
		}
		due = append(due, v)
	}
	if len(due) == 0 && (op.Version != 0 || k.Destroyed) {
		return fmt.Errorf("%w: %s is already destroyed", ErrFailedPrecondition, describeTarget(op.Key, op.Version))
	}
	for _, v := range due {
		v.Destroyed, v.WrappedKek, v.RotatedWrappedKek = true, nil, nil
	}
	if op.Version == 0 {
		k.Destroyed = true
	}
	k.UpdateTimeUnixNano = c.TimeUnixNano
	s.destroyedVersion++
	rec := s.newRecord(index, c, custosv1.Operation_OPERATION_DESTROY_KEY)
	rec.Outcome = custosv1.Outcome_OUTCOME_ALLOW
	rec.Key, rec.KeyVersion = op.Key, op.Version
	rec.MatchedRule = "key-destruction:completed"
	rec.Detail = describeTarget(op.Key, op.Version) + " destroyed: its wrapped KEK left the replicated state and every node destroys its HSM copy"
	return &Decision{Record: rec}
}

// destructionState returns why version v of k may not be used, or nil.
func destructionState(k *raftlogv1.KeyRecord, v *raftlogv1.KeyVersionRecord) (rule string, err error) {
	switch {
	case k.Destroyed || v.Destroyed:
		return "key-version:destroyed", fmt.Errorf("%w: %s was destroyed", ErrFailedPrecondition, describeTarget(k.Name, v.Version))
	case k.DestroyAfterUnixNano != 0 || v.DestroyAfterUnixNano != 0:
		return "key-version:pending-destruction", fmt.Errorf("%w: %s is scheduled for destruction at %s (one officer can cancel)",
			ErrFailedPrecondition, describeTarget(k.Name, v.Version), time.Unix(0, v.DestroyAfterUnixNano).UTC().Format(time.RFC3339))
	}
	return "", nil
}

// dueDestruction is a destruction whose time has come.
type dueDestruction struct {
	key     string
	version uint32
}

// dueDestructions lists the destructions due at now.
func (s *State) dueDestructions(now int64) []dueDestruction {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []dueDestruction
	for _, n := range sortedKeys(s.keys) {
		k := s.keys[n]
		if k.DestroyAfterUnixNano != 0 && !k.Destroyed {
			if now >= k.DestroyAfterUnixNano {
				out = append(out, dueDestruction{key: n})
			}
			continue
		}
		for _, v := range k.Versions {
			if v.DestroyAfterUnixNano != 0 && !v.Destroyed && now >= v.DestroyAfterUnixNano {
				out = append(out, dueDestruction{key: n, version: v.Version})
			}
		}
	}
	return out
}

// destroyedKEKs returns the object ids of every destroyed version's KEK and
// a version that changes when the list does.
func (s *State) destroyedKEKs() ([][]byte, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var ids [][]byte
	for _, n := range sortedKeys(s.keys) {
		for _, v := range s.keys[n].Versions {
			if v.Destroyed && len(v.KekId) > 0 {
				ids = append(ids, v.KekId)
			}
		}
	}
	return ids, s.destroyedVersion
}

// RunDestructions completes every destruction whose waiting period is over,
// until ctx ends. The leader runs it.
func (s *Service) RunDestructions(ctx context.Context) {
	t := time.NewTicker(destroyPoll)
	defer t.Stop()
	for {
		for _, d := range s.state.dueDestructions(s.now().UnixNano()) {
			_, err := s.apply(ctx, Principal{Name: "custosd"}, &raftlogv1.Command{Op: &raftlogv1.Command_CompleteKeyDestruction{
				CompleteKeyDestruction: &raftlogv1.CompleteKeyDestruction{Key: d.key, Version: d.version}}})
			if err != nil && !errors.Is(err, ErrFailedPrecondition) && ctx.Err() == nil {
				s.lg.Warn("could not complete a key destruction; will retry", "key", d.key, "version", d.version, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// shredDestroyed destroys this node's HSM copies of destroyed KEKs (the
// admission worker calls it on every step).
func (s *Service) shredDestroyed(ctx context.Context) {
	ids, version := s.state.destroyedKEKs()
	s.custody.mu.Lock()
	done := s.custody.destroyedSeen == version
	s.custody.mu.Unlock()
	if done {
		return
	}
	failed := 0
	for _, id := range ids {
		if err := s.hsm.DestroyKey(ctx, id); err != nil {
			failed++
			s.lg.Warn("could not destroy a destroyed key version's HSM object; will retry", "object_id", string(id), "err", err)
		}
		s.kekMu.Lock()
		for ref, kr := range s.keks {
			if string(kr.ID) == string(id) {
				delete(s.keks, ref)
			}
		}
		s.kekMu.Unlock()
	}
	if failed == 0 {
		s.custody.mu.Lock()
		s.custody.destroyedSeen = version
		s.custody.mu.Unlock()
	}
}
