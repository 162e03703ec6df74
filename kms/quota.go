package kms

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// Quotas (docs/quotas.md). Two kinds:
//
//   - Cluster quotas, in governance (Governance.quotas, set_quotas by the
//     officers' quorum), decided in the state machine the same way on every
//     replica: keys per principal and requests waiting for approval per
//     principal.
//   - Rate quotas, per node (Config): decisions per second per principal,
//     and a much smaller one for requests that would be refused anyway (an
//     unknown, revoked or disabled key, or a principal the key's policy does
//     not name). A node refuses what exceeds them with ResourceExhausted
//     before proposing anything; it counts what it refused and proposes one
//     THROTTLED record per principal and interval, so that nothing refused
//     is missing from the evidence.

// Quota defaults.
const (
	// DefaultMaxKeysPerPrincipal is Quotas.max_keys_per_principal's
	// default.
	DefaultMaxKeysPerPrincipal = 1000
	// DefaultDecisionsPerSecond is a node's per-principal decision rate
	// (above the throughput one node reaches: bench/RESULTS.md).
	DefaultDecisionsPerSecond = 100_000
	// DefaultRefusalsPerSecond is a node's per-principal rate of requests
	// that would be refused; DefaultRefusalBurst how many it takes at once
	// (one BatchDecrypt of MaxBatchDecrypt items).
	DefaultRefusalsPerSecond = 100
	DefaultRefusalBurst      = MaxBatchDecrypt
	// DefaultThrottleSummaryInterval is how often a node records what it
	// throttled.
	DefaultThrottleSummaryInterval = 10 * time.Second

	maxQuotaKeys    = 1_000_000
	maxQuotaPending = 10_000
	// maxThrottledKeys is how many keys a THROTTLED record names.
	maxThrottledKeys = 16
	// maxTrackedPrincipals bounds the per-principal buckets and summaries a
	// node keeps.
	maxTrackedPrincipals = 10_000
)

// Throttle quota names (RecordThrottled.quota).
const (
	QuotaDecisions = "decisions"
	QuotaRefusals  = "refusals"
)

func (s *State) maxKeysPerPrincipal() int {
	if n := s.gov.GetQuotas().GetMaxKeysPerPrincipal(); n > 0 {
		return int(n)
	}
	return DefaultMaxKeysPerPrincipal
}

func (s *State) maxPendingPerPrincipal() uint32 {
	if n := s.gov.GetQuotas().GetMaxPendingPerPrincipal(); n > 0 {
		return n
	}
	return maxPendingPerPrincipal
}

// checkKeyQuota refuses a key creation beyond the creator's quota.
func (s *State) checkKeyQuota(principal string) error {
	n := 0
	for _, k := range s.keys {
		if k.Creator == principal && !k.Destroyed {
			n++
		}
	}
	if max := s.maxKeysPerPrincipal(); n >= max {
		return fmt.Errorf("%w: principal %q has created %d keys, its quota (officers raise it with set_quotas)", ErrResourceExhausted, principal, max)
	}
	return nil
}

func (s *State) applySetQuotas(op *custosv1.SetQuotas) (string, error) {
	q := op.GetQuotas()
	if q == nil {
		return "", fmt.Errorf("%w: set_quotas.quotas is not set", ErrInvalidArgument)
	}
	if q.MaxKeysPerPrincipal > maxQuotaKeys || q.MaxPendingPerPrincipal > maxQuotaPending {
		return "", fmt.Errorf("%w: quotas: at most %d keys and %d pending requests per principal", ErrInvalidArgument, maxQuotaKeys, maxQuotaPending)
	}
	s.gov.Quotas = &custosv1.Quotas{MaxKeysPerPrincipal: q.MaxKeysPerPrincipal, MaxPendingPerPrincipal: q.MaxPendingPerPrincipal}
	return fmt.Sprintf("quotas set: %d keys and %d pending requests per principal", s.maxKeysPerPrincipal(), s.maxPendingPerPrincipal()), nil
}

// WouldRefuse reports whether the state, as this node has it now, would
// refuse the command: a decision it would DENY (the state machine's own
// evaluation, dry), a key administration it would refuse (the issuer, the
// key quota, the key's administrators), a statement that does not parse
// or verify against the officers. It is a guess for rate quotas only (the
// state may move before the command applies); the state machine decides.
func (s *State) WouldRefuse(c *raftlogv1.Command) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.clusterID == "" {
		return false
	}
	if s.checkIssuer(c) != nil {
		return true
	}
	dry := &raftlogv1.Command{TimeUnixNano: max(c.TimeUnixNano, s.clock), Node: c.Node, Principal: c.Principal,
		PrincipalIssuerSha256: c.PrincipalIssuerSha256, PrincipalCertSha256: c.PrincipalCertSha256}
	switch op := c.Op.(type) {
	case *raftlogv1.Command_Decide:
		signed := s.proofChecked(dry, op.Decide) && s.verifyRequestSignature(dry, op.Decide) == nil
		outcome, _, _ := s.evaluate(dry, op.Decide, signed)
		return outcome == custosv1.Outcome_OUTCOME_DENY
	case *raftlogv1.Command_CreateKey:
		_, exists := s.keys[op.CreateKey.Name]
		return exists || s.checkKeyQuota(c.Principal) != nil
	case *raftlogv1.Command_AddKeyVersion:
		_, err := s.adminKey(op.AddKeyVersion.Name, c.Principal, "rotate")
		return err != nil
	case *raftlogv1.Command_SetKeyState:
		_, err := s.adminKey(op.SetKeyState.Name, c.Principal, "disable")
		return err != nil || op.SetKeyState.Enabled
	case *raftlogv1.Command_SetMinDecryptionVersion:
		k, err := s.adminKey(op.SetMinDecryptionVersion.Name, c.Principal, "change the minimum decryption version of")
		return err != nil || op.SetMinDecryptionVersion.MinDecryptionVersion < k.MinDecryptionVersion
	case *raftlogv1.Command_Govern:
		if s.officers == nil {
			return true
		}
		st, _, err := s.officers.Verify(op.Govern.Statement, s.clusterID, time.Unix(0, dry.TimeUnixNano))
		if err != nil {
			return true
		}
		return s.spent(st, op.Govern.Statement.GetStatement())
	case *raftlogv1.Command_Propose:
		_, err := s.checkPropose(time.Unix(0, dry.TimeUnixNano), op.Propose)
		return err != nil
	}
	return false
}

// applyRecordThrottled appends a THROTTLED record for the principal the
// command names.
func (s *State) applyRecordThrottled(index uint64, c *raftlogv1.Command, op *raftlogv1.RecordThrottled) any {
	if op.Count == 0 || (op.Quota != QuotaDecisions && op.Quota != QuotaRefusals) || len(op.Keys) > maxThrottledKeys || c.Principal == "" {
		return fmt.Errorf("%w: record_throttled: a principal, a quota, a count and at most %d keys", ErrInvalidArgument, maxThrottledKeys)
	}
	rec := s.newRecord(index, c, custosv1.Operation_OPERATION_THROTTLED)
	rec.Outcome = custosv1.Outcome_OUTCOME_DENY
	rec.MatchedRule = "quota:" + op.Quota + "-per-second"
	var keys []string
	for _, k := range op.Keys {
		keys = append(keys, fmt.Sprintf("%s (%d)", k.Key, k.Count))
	}
	if op.OtherKeys > 0 {
		keys = append(keys, fmt.Sprintf("other keys (%d)", op.OtherKeys))
	}
	rec.Detail = fmt.Sprintf("node %s refused %d requests of %s between %s and %s: over its per-principal %s rate quota; keys: %s",
		c.Node, op.Count, c.Principal, time.Unix(0, op.FirstUnixNano).UTC().Format(time.RFC3339Nano),
		time.Unix(0, op.LastUnixNano).UTC().Format(time.RFC3339Nano), op.Quota, strings.Join(keys, ", "))
	if len(op.Keys) > 0 {
		rec.Key = op.Keys[0].Key
	}
	return &Decision{Record: rec}
}

// bucket is a token bucket.
type bucket struct {
	tokens float64
	last   time.Time
}

// rateQuotas is a node's per-principal rate quotas and what it throttled
// since the last summary.
type rateQuotas struct {
	decisions, refusals   float64 // per second
	decisionBurst, refBur float64

	mu        sync.Mutex
	buckets   map[string]*bucket // quota + "\x00" + principal
	throttled map[string]*throttled
	pruned    time.Time // last pruneLocked
}

// overflowPrincipal stands for the principals a node could not track one
// by one (more than maxTrackedPrincipals at once): they share one bucket
// per quota, and one THROTTLED record (docs/quotas.md).
const overflowPrincipal = "*other-principals*"

// throttled is what a node refused for one principal and quota since the
// last summary.
type throttled struct {
	principal, quota string
	count            uint64
	first, last      time.Time
	keys             map[string]uint64
	other            uint64
}

func newRateQuotas(decisions, refusals float64, refusalBurst int) *rateQuotas {
	if decisions <= 0 {
		decisions = DefaultDecisionsPerSecond
	}
	if refusals <= 0 {
		refusals = DefaultRefusalsPerSecond
	}
	burst := max(refusals, DefaultRefusalBurst)
	if refusalBurst > 0 {
		burst = float64(refusalBurst)
	}
	return &rateQuotas{decisions: decisions, refusals: refusals, decisionBurst: decisions, refBur: burst,
		buckets: map[string]*bucket{}, throttled: map[string]*throttled{}}
}

// take takes n tokens of quota for principal, or counts the request as
// throttled (naming key) and returns false.
func (q *rateQuotas) take(quota, principal, key string, n int, now time.Time) bool {
	rate, burst := q.decisions, q.decisionBurst
	if quota == QuotaRefusals {
		rate, burst = q.refusals, q.refBur
	}
	id := quota + "\x00" + principal
	q.mu.Lock()
	defer q.mu.Unlock()
	b := q.buckets[id]
	if b == nil {
		if len(q.buckets) >= maxTrackedPrincipals && now.Sub(q.pruned) >= time.Second {
			q.pruneLocked(now)
			q.pruned = now
		}
		if len(q.buckets) >= maxTrackedPrincipals {
			// Full of busy principals: the newcomers share one bucket
			// per quota (bounded memory; they slow each other only).
			id = quota + "\x00" + overflowPrincipal
			b = q.buckets[id]
		}
		if b == nil {
			b = &bucket{tokens: burst, last: now}
			q.buckets[id] = b
		}
	}
	b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	if b.tokens >= float64(n) {
		b.tokens -= float64(n)
		return true
	}
	t := q.throttled[id]
	if t == nil && len(q.throttled) >= maxTrackedPrincipals {
		// Summarised together, under the overflow name; the count stays
		// exact.
		id = quota + "\x00" + overflowPrincipal
		principal = overflowPrincipal
		t = q.throttled[id]
	}
	if t == nil {
		t = &throttled{principal: principal, quota: quota, first: now, keys: map[string]uint64{}}
		q.throttled[id] = t
	}
	t.count += uint64(n)
	t.last = now
	if _, ok := t.keys[key]; ok || len(t.keys) < maxThrottledKeys {
		t.keys[key] += uint64(n)
	} else {
		t.other += uint64(n)
	}
	return false
}

// pruneLocked forgets full buckets (principals idle long enough to refill).
func (q *rateQuotas) pruneLocked(now time.Time) {
	for id, b := range q.buckets {
		if now.Sub(b.last) > time.Minute {
			delete(q.buckets, id)
		}
	}
}

// drain returns and forgets what was throttled, oldest first.
func (q *rateQuotas) drain() []*throttled {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]*throttled, 0, len(q.throttled))
	for _, t := range q.throttled {
		out = append(out, t)
	}
	q.throttled = map[string]*throttled{}
	sort.Slice(out, func(i, j int) bool { return out[i].first.Before(out[j].first) })
	return out
}

// putBack returns summaries that could not be recorded, for the next try.
func (q *rateQuotas) putBack(ts []*throttled) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, t := range ts {
		id := t.quota + "\x00" + t.principal
		cur := q.throttled[id]
		if cur == nil {
			q.throttled[id] = t
			continue
		}
		cur.count += t.count
		cur.first = t.first
		for k, n := range t.keys {
			if _, ok := cur.keys[k]; ok || len(cur.keys) < maxThrottledKeys {
				cur.keys[k] += n
			} else {
				cur.other += n
			}
		}
		cur.other += t.other
	}
}

// throttle stamps cmd for p and takes one decision token for principal —
// a refusal token when the state says it would refuse the command
// (WouldRefuse) — or returns ErrResourceExhausted; what it refuses is
// summarised later (FlushThrottled). key names the command's key in the
// summary ("" for none).
func (s *Service) throttle(p Principal, key string, cmd *raftlogv1.Command) error {
	s.stamp(p, cmd)
	quota := QuotaDecisions
	if s.state.WouldRefuse(cmd) {
		quota = QuotaRefusals
	} else if cmd.GetDecide() == nil {
		return nil // the decision quota is for decisions
	}
	if s.rates.take(quota, p.Name, key, 1, s.now()) {
		return nil
	}
	return fmt.Errorf("%w: principal %q is over this node's %s-per-second quota; the refused requests are summarised in the ledger", ErrResourceExhausted, p.Name, quota)
}

// FlushThrottled records what this node throttled since the last call: one
// THROTTLED record per principal and quota. What it could not record is
// kept for the next call.
func (s *Service) FlushThrottled(ctx context.Context) error {
	ts := s.rates.drain()
	for i, t := range ts {
		op := &raftlogv1.RecordThrottled{Quota: t.quota, Count: t.count, FirstUnixNano: t.first.UnixNano(), LastUnixNano: t.last.UnixNano(), OtherKeys: t.other}
		keys := make([]string, 0, len(t.keys))
		for k := range t.keys {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			op.Keys = append(op.Keys, &raftlogv1.ThrottledKey{Key: k, Count: t.keys[k]})
		}
		if _, err := s.apply(ctx, Principal{Name: t.principal}, &raftlogv1.Command{Op: &raftlogv1.Command_RecordThrottled{RecordThrottled: op}}); err != nil {
			s.rates.putBack(ts[i:])
			return err
		}
	}
	return nil
}

// RunThrottleSummaries records what this node throttled every interval
// (DefaultThrottleSummaryInterval if 0) until ctx ends; the caller flushes
// once more (FlushThrottled) after its front doors have stopped.
func (s *Service) RunThrottleSummaries(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultThrottleSummaryInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// The node flushes once more after its front doors stopped.
			return
		case <-t.C:
			if err := s.FlushThrottled(ctx); err != nil && ctx.Err() == nil {
				s.lg.Warn("could not record throttled requests yet; retrying", "err", err)
			}
		}
	}
}
