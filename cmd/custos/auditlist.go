package main

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	custos "github.com/custos-kms/custos/clients/go"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// audit list, and the record filters it shares with audit report and
// audit watch.

// filterFlags are the record filter flags of list, report and watch.
type filterFlags struct {
	key, principal, reason, outcome, operation string
	since, until                               string
	notifyOnly                                 bool
}

func (f *filterFlags) register(fs *flag.FlagSet, full bool) {
	fs.StringVar(&f.key, "key", "", "only records about this key")
	if !full {
		return
	}
	fs.StringVar(&f.principal, "principal", "", "only records of this principal")
	fs.StringVar(&f.reason, "reason", "", "only these justification reasons, comma-separated: "+strings.Join(custos.ReasonNames(), ", ")+", UNSPECIFIED (none given)")
	fs.StringVar(&f.outcome, "outcome", "", "only these outcomes, comma-separated: ALLOW, DENY, PENDING")
	fs.StringVar(&f.operation, "operation", "", "only these operations, comma-separated: "+strings.Join(operationNames(), ", "))
	fs.BoolVar(&f.notifyOnly, "notify-only", false, "only records the notify rules select")
}

func registerTimeFlags(fs *flag.FlagSet, since, until *string) {
	fs.StringVar(since, "since", "", "only records at or after `T`: RFC 3339 time, or a duration such as 24h or 7d meaning that long ago")
	fs.StringVar(until, "until", "", "only records before `T` (RFC 3339 or a duration ago)")
}

func operationNames() []string {
	var out []string
	for v := int32(1); ; v++ {
		n, ok := custosv1.Operation_name[v]
		if !ok {
			return out
		}
		out = append(out, strings.TrimPrefix(n, "OPERATION_"))
	}
}

// build returns the DecisionFilter the flags describe.
func (f *filterFlags) build(now time.Time) (*custosv1.DecisionFilter, error) {
	df := &custosv1.DecisionFilter{Key: f.key, Principal: f.principal, NotifyOnly: f.notifyOnly}
	for _, s := range splitList(f.reason) {
		r, err := custos.ParseReasonOrUnspecified(s)
		if err != nil {
			return nil, usagef("--reason: %s", strings.TrimPrefix(err.Error(), "custos: "))
		}
		df.Reasons = append(df.Reasons, r)
	}
	for _, s := range splitList(f.outcome) {
		o, err := custos.ParseOutcome(s)
		if err != nil {
			return nil, usagef("--outcome: %s", strings.TrimPrefix(err.Error(), "custos: "))
		}
		df.Outcomes = append(df.Outcomes, o)
	}
	for _, s := range splitList(f.operation) {
		name := strings.ToUpper(strings.ReplaceAll(s, "-", "_"))
		v, ok := custosv1.Operation_value["OPERATION_"+strings.TrimPrefix(name, "OPERATION_")]
		if !ok || v == 0 {
			return nil, usagef("--operation: unknown operation %q (want one of %s)", s, strings.Join(operationNames(), ", "))
		}
		df.Operations = append(df.Operations, custosv1.Operation(v))
	}
	since, until, err := parseRange(f.since, f.until, now)
	if err != nil {
		return nil, err
	}
	if !since.IsZero() {
		df.SinceUnixNano = since.UnixNano()
	}
	if !until.IsZero() {
		df.UntilUnixNano = until.UnixNano()
	}
	return df, nil
}

func splitList(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// parseRange parses --since and --until and checks their order.
func parseRange(sinceFlag, untilFlag string, now time.Time) (since, until time.Time, err error) {
	if sinceFlag != "" {
		if since, err = parseTime(sinceFlag, now); err != nil {
			return since, until, usagef("--since: %v", err)
		}
	}
	if untilFlag != "" {
		if until, err = parseTime(untilFlag, now); err != nil {
			return since, until, usagef("--until: %v", err)
		}
	}
	if !since.IsZero() && !until.IsZero() && !since.Before(until) {
		return since, until, usagef("--since %s is not before --until %s", since.Format(time.RFC3339), until.Format(time.RFC3339))
	}
	return since, until, nil
}

// parseTime parses an RFC 3339 time, or a duration (Go syntax, plus a
// whole number of days such as "7d") meaning that long before now.
func parseTime(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 32)
		if err != nil || n > 100*365 {
			return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration such as 24h or 7d", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration such as 24h or 7d", s)
		}
	}
	if d < 0 {
		return time.Time{}, fmt.Errorf("%q: a duration means that long ago and must not be negative", s)
	}
	return now.Add(-d), nil
}

func runAuditList(ctx context.Context, a *app, args []string) error {
	fs := a.flags("audit list")
	var f filterFlags
	f.register(fs, true)
	registerTimeFlags(fs, &f.since, &f.until)
	from := fs.Uint64("from", 0, "start at ledger sequence number `SEQ` (default 1)")
	limit := fs.Int("limit", 100, "print at most `N` records (0 for all)")
	tail := fs.Int("tail", 0, "print the newest `N` matching records instead of the oldest, oldest first (as tail does; not with --limit)")
	newestFirst := fs.Bool("newest-first", false, "with --tail: print the newest record first")
	asJSON := fs.Bool("json", false, "print one JSON object per record")
	if _, err := a.parse("audit list", fs, args, 0, 0); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case *limit < 0:
		return usagef("--limit %d: want 0 or more", *limit)
	case *tail < 0 || set["tail"] && *tail == 0:
		return usagef("--tail %d: want 1 or more", *tail)
	case set["tail"] && set["limit"]:
		return usagef("give --tail N (the newest N) or --limit N (the oldest N), not both")
	case *newestFirst && *tail == 0:
		return usagef("--newest-first goes with --tail N")
	}
	df, err := f.build(time.Now())
	if err != nil {
		return err
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		if *tail > 0 {
			return a.auditTail(ctx, c, df, *from, *tail, *newestFirst, *asJSON)
		}
		n := 0
		next := uint64(0)
		for r, err := range c.Decisions(ctx, df, *from) {
			if err != nil {
				return auditErr(err)
			}
			if *limit > 0 && n == *limit {
				next = r.GetSeq()
				break
			}
			if err := printRecord(a.stdout, r, *asJSON); err != nil {
				return err
			}
			n++
		}
		if !*asJSON {
			switch {
			case next != 0:
				fmt.Fprintf(a.stderr, "custos: %d records shown; more from --from %d\n", n, next)
			case n == 0:
				fmt.Fprintln(a.stderr, "custos: no matching records")
			}
		}
		return nil
	})
}

// auditTail prints the newest n records matching df at or after from, as
// of the ledger head when it starts, oldest first unless newestFirst.
func (a *app) auditTail(ctx context.Context, c *custos.Client, df *custosv1.DecisionFilter, from uint64, n int, newestFirst, asJSON bool) error {
	recs, more, err := tailRecords(ctx, c, df, from, n)
	if err != nil {
		return auditErr(err)
	}
	if newestFirst {
		slices.Reverse(recs)
	}
	for _, r := range recs {
		if err := printRecord(a.stdout, r, asJSON); err != nil {
			return err
		}
	}
	if !asJSON {
		switch {
		case len(recs) == 0:
			fmt.Fprintln(a.stderr, "custos: no matching records")
		case more:
			oldest := min(recs[0].GetSeq(), recs[len(recs)-1].GetSeq())
			fmt.Fprintf(a.stderr, "custos: the newest %d matching records shown; older ones come before seq %d (--tail with a larger N, or --from and --limit)\n", len(recs), oldest)
		}
	}
	return nil
}

// tailRecords returns the newest n records matching df with a sequence
// number of at least from, in ledger order, and whether older ones match
// too. The ledger is read backwards in windows from the head as it was at
// the start (a window twice as long each time, for a filter that matches
// few records), each window forwards with ListDecisions, so that the
// newest few of a long ledger cost a page or two, not the whole ledger.
func tailRecords(ctx context.Context, c *custos.Client, df *custosv1.DecisionFilter, from uint64, n int) ([]*custosv1.DecisionRecord, bool, error) {
	cp, err := c.GetCheckpoint(ctx)
	if err != nil {
		return nil, false, err
	}
	floor := max(from, 1)
	hi := cp.GetHeadSeq() + 1 // exclusive
	window := uint64(n) + 1   // one more than asked: are there older ones?
	var chunks [][]*custosv1.DecisionRecord
	found := 0
	for hi > floor && found <= n {
		lo := floor
		if hi-floor > window {
			lo = hi - window
		}
		var chunk []*custosv1.DecisionRecord
		for next := lo; next != 0 && next < hi; {
			resp, err := c.ListDecisions(ctx, df, next, 1000)
			if err != nil {
				return nil, false, err
			}
			for _, r := range resp.GetRecords() {
				if r.GetSeq() >= hi {
					break
				}
				chunk = append(chunk, r)
			}
			if resp.GetNextSeq() != 0 && resp.GetNextSeq() <= next {
				return nil, false, fmt.Errorf("list decisions: server returned next_seq %d after from_seq %d", resp.GetNextSeq(), next)
			}
			next = resp.GetNextSeq()
		}
		chunks = append(chunks, chunk)
		found += len(chunk)
		hi = lo
		window = min(window*2, 1<<20)
	}
	var recs []*custosv1.DecisionRecord
	for i := len(chunks) - 1; i >= 0; i-- {
		recs = append(recs, chunks[i]...)
	}
	if len(recs) > n {
		return recs[len(recs)-n:], true, nil
	}
	return recs, false, nil
}
