package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/custos-kms/custos/internal/node/nodetest"
)

// TestAuditListTail: --tail N prints the newest N matching records, oldest
// first (the last line is the newest), or newest first with
// --newest-first; --limit N still prints the oldest N. A filter that
// matches few records is found however far back they are.
func TestAuditListTail(t *testing.T) {
	clearEnv(t)
	h := nodetest.Start(t)
	usePrincipal(t, h, "app")
	for i := 1; i <= 5; i++ {
		runCLI(t, "", "key", "create", fmt.Sprintf("k%d", i)).want(t, 0)
	}
	// Many newer records of another kind: the key creations lie far back.
	for range 12 {
		runCLI(t, "", "key", "rotate", "k5").want(t, 0)
	}
	usePrincipal(t, h, nodetest.Auditor)
	keys := func(out string) []string {
		var ks []string
		for _, l := range lines(out) {
			for f := range strings.FieldsSeq(l) {
				if k, ok := strings.CutPrefix(f, "key="); ok {
					ks = append(ks, k)
				}
			}
		}
		return ks
	}
	create := []string{"audit", "list", "--operation", "CREATE_KEY"}

	r := runCLI(t, "", append(create, "--limit", "2")...)
	r.want(t, 0)
	if got := keys(r.stdout); !slices.Equal(got, []string{"k1", "k2"}) {
		t.Errorf("--limit 2: keys %v, want the oldest two, k1 k2", got)
	}
	r = runCLI(t, "", append(create, "--tail", "2")...)
	r.want(t, 0)
	if got := keys(r.stdout); !slices.Equal(got, []string{"k4", "k5"}) {
		t.Errorf("--tail 2: keys %v, want the newest two oldest first, k4 k5", got)
	}
	if !strings.Contains(r.stderr, "the newest 2 matching records shown; older ones come before seq ") {
		t.Errorf("--tail 2: stderr %q does not say older records match", r.stderr)
	}
	r = runCLI(t, "", append(create, "--tail", "3", "--newest-first")...)
	r.want(t, 0)
	if got := keys(r.stdout); !slices.Equal(got, []string{"k5", "k4", "k3"}) {
		t.Errorf("--tail 3 --newest-first: keys %v, want k5 k4 k3", got)
	}
	r = runCLI(t, "", append(create, "--tail", "50")...)
	r.want(t, 0)
	if got := keys(r.stdout); !slices.Equal(got, []string{"k1", "k2", "k3", "k4", "k5"}) || r.stderr != "" {
		t.Errorf("--tail 50: keys %v, stderr %q; want all five, no note", got, r.stderr)
	}
	r = runCLI(t, "", append(create, "--tail", "2", "--json")...)
	r.want(t, 0)
	if n := len(lines(r.stdout)); n != 2 || !strings.HasPrefix(r.stdout, "{") || r.stderr != "" {
		t.Errorf("--tail 2 --json: %d lines %q, stderr %q", n, r.stdout, r.stderr)
	}

	// Unfiltered: the newest records are the last ones --limit 0 prints
	// (the ledger may grow in between: compare from the head --tail saw).
	r = runCLI(t, "", "audit", "list", "--tail", "4")
	r.want(t, 0)
	tail := lines(r.stdout)
	if len(tail) != 4 {
		t.Fatalf("--tail 4 printed %d records", len(tail))
	}
	all := lines(runCLI(t, "", "audit", "list", "--limit", "0").stdout)
	i := slices.Index(all, tail[3])
	if i < 3 || !slices.Equal(all[i-3:i+1], tail) {
		t.Errorf("--tail 4 = %q, not the last four records of the full list up to its newest", tail)
	}
	// --from bounds the tail below.
	seq := strings.Fields(tail[2])[0][1:]
	r = runCLI(t, "", "audit", "list", "--from", seq, "--tail", "4")
	r.want(t, 0)
	if got := lines(r.stdout); len(got) < 2 || got[0] != tail[2] {
		t.Errorf("--from %s --tail 4 = %q, want records from seq %s on", seq, got, seq)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tail", "0"}, "--tail 0: want 1 or more"},
		{[]string{"--tail", "-1"}, "want 1 or more"},
		{[]string{"--tail", "3", "--limit", "5"}, "not both"},
		{[]string{"--newest-first"}, "--newest-first goes with --tail N"},
	} {
		runCLI(t, "", append([]string{"audit", "list"}, tc.args...)...).want(t, 2, tc.want)
	}
}
