// Checking a run's outcome: convergence of the nodes, every node's ledger
// against the history, and the report.

package robustness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms/audit"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// sameHead waits until every member has the same ledger head, up to d.
func (r *run) sameHead(d time.Duration) (uint64, bool) {
	if r.pc != nil {
		return r.sameHeadProcs(d)
	}
	deadline := time.Now().Add(d)
	for {
		var seqs []uint64
		var heads [][32]byte
		for _, m := range r.c.Members {
			if m.Node == nil {
				continue
			}
			s, h := m.Node.Service().State().LedgerHead()
			seqs, heads = append(seqs, s), append(heads, h)
		}
		same := true
		for i := 1; i < len(seqs); i++ {
			if seqs[i] != seqs[0] || heads[i] != heads[0] {
				same = false
			}
		}
		if same {
			return seqs[0], true
		}
		if time.Now().After(deadline) {
			r.t.Logf("ledger heads differ: %v", seqs)
			return seqs[0], false
		}
		if l := r.leader(); l >= 0 {
			bctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = r.c.Members[l].Node.Raft().Barrier(bctx)
			cancel()
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// converge waits for one ledger on every node, for the checkpointer to
// settle and for the notifier to deliver, and returns the records (of node
// 1's export).
func (r *run) converge(snk *sink, sinkSeq uint64) []*custosv1.DecisionRecord {
	t := r.t
	// hashicorp/raft backs off replication to a follower that was
	// unreachable (up to ~40s), so healing may take a while.
	if _, ok := r.sameHead(90 * time.Second); !ok {
		t.Fatalf("seed %d: (c) the ledgers did not converge within 90s of healing", r.seed)
	}
	var records []*custosv1.DecisionRecord
	deadline := time.Now().Add(60 * time.Second)
	for {
		// Settle: the checkpointer records a checkpoint CheckpointInterval
		// after the last record; notifier cursor updates go through the log.
		time.Sleep(nodetest.CheckpointInterval + 500*time.Millisecond)
		seq, ok := r.sameHead(60 * time.Second)
		if !ok {
			t.Fatalf("seed %d: (c) the ledgers diverged while settling", r.seed)
		}
		records = r.records(r.first())
		got := snk.delivered()
		waiting := 0
		for _, rec := range records {
			if rec.Notify && rec.Seq > sinkSeq && !got[rec.Seq] {
				waiting++
			}
		}
		if again, _ := r.sameHead(0); waiting == 0 && again == seq && uint64(len(records)) == seq {
			return records
		}
		if time.Now().After(deadline) {
			t.Logf("notifier: %d notify records still undelivered after 60s", waiting)
			return records
		}
	}
}

// export returns node i's verified export (the raw file) and the report.
func (r *run) export(i int) ([]byte, *audit.Report, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cp, err := r.audit[i].GetCheckpoint(ctx, &custosv1.GetCheckpointRequest{})
	if err != nil {
		return nil, nil, fmt.Errorf("GetCheckpoint: %w", err)
	}
	trusted, err := audit.ParseKeys(cp.PublicKeys)
	if err != nil {
		return nil, nil, err
	}
	stream, err := r.audit[i].Export(ctx, &custosv1.ExportRequest{})
	if err != nil {
		return nil, nil, fmt.Errorf("Export: %w", err)
	}
	var buf bytes.Buffer
	if _, err := audit.Copy(&buf, stream.Recv); err != nil {
		return nil, nil, fmt.Errorf("Export: %w", err)
	}
	rep, err := audit.Verify(bytes.NewReader(buf.Bytes()), trusted)
	return buf.Bytes(), rep, err
}

func parseRecords(file []byte) ([][]byte, error) {
	rd := audit.NewReader(bytes.NewReader(file))
	var out [][]byte
	for {
		it, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if b := it.GetRecord(); b != nil {
			out = append(out, b)
		}
	}
}

// first returns the first running member.
func (r *run) first() int {
	if r.pc != nil {
		for i := range numNodes {
			if r.lost[i] == "" {
				return i
			}
		}
		return 0
	}
	for i, m := range r.c.Members {
		if m.Node != nil {
			return i
		}
	}
	return 0
}

func (r *run) records(i int) []*custosv1.DecisionRecord {
	file, _, err := r.export(i)
	if err != nil {
		r.t.Fatalf("seed %d: export node%d: %v", r.seed, i+1, err)
	}
	raw, err := parseRecords(file)
	if err != nil {
		r.t.Fatal(err)
	}
	var out []*custosv1.DecisionRecord
	for _, b := range raw {
		rec := &custosv1.DecisionRecord{}
		if err := proto.Unmarshal(b, rec); err != nil {
			r.t.Fatal(err)
		}
		out = append(out, rec)
	}
	return out
}

// verifyLedgers is check (c): every node's export verifies, with
// checkpoints, and all hold the same records.
func (r *run) verifyLedgers(records []*custosv1.DecisionRecord) []Violation {
	var out []Violation
	var first [][]byte
	f := r.first()
	for i := range numNodes {
		for _, b := range r.broken[i] {
			v := Violation{Check: "c", Detail: fmt.Sprintf("node%d did not restart after a kill (rebuilt from the leader): %s", i+1, b)}
			if r.pc != nil {
				v.Detail = fmt.Sprintf("node%d: %s", i+1, b)
			}
			if strings.Contains(b, "sealed segment has no index block") {
				v.Known = KnownWALRestart
			}
			out = append(out, v)
		}
		if r.lost[i] != "" {
			v := Violation{Check: "c", Detail: fmt.Sprintf("node%d cannot be restarted after a kill (its ledger cannot be checked): %s", i+1, r.lost[i])}
			if strings.Contains(r.lost[i], "sealed segment has no index block") {
				v.Known = KnownWALRestart
			}
			out = append(out, v)
			continue
		}
		file, rep, err := r.export(i)
		if err != nil {
			out = append(out, Violation{Check: "c", Detail: fmt.Sprintf("node%d export does not verify: %v (report %+v)", i+1, err, rep)})
			continue
		}
		if !rep.OK() || !rep.Trailer || rep.Checkpoints == 0 || rep.VerifiedThrough != rep.LastSeq || rep.Partial {
			out = append(out, Violation{Check: "c", Detail: fmt.Sprintf("node%d export: %+v", i+1, rep)})
		}
		raw, err := parseRecords(file)
		if err != nil {
			out = append(out, Violation{Check: "c", Detail: fmt.Sprintf("node%d export: %v", i+1, err)})
			continue
		}
		r.t.Logf("node%d ledger: %d records, %d checkpoints verified, verified through %d", i+1, rep.Records, rep.Checkpoints, rep.VerifiedThrough)
		if i == f {
			first = raw
			if len(raw) != len(records) {
				out = append(out, Violation{Check: "c", Detail: fmt.Sprintf("node1 ledger grew after convergence: %d then %d records", len(records), len(raw))})
			}
			continue
		}
		if len(raw) != len(first) {
			out = append(out, Violation{Check: "c", Detail: fmt.Sprintf("node%d has %d records, node%d %d", i+1, len(raw), f+1, len(first))})
		}
		for j := 0; j < len(raw) && j < len(first); j++ {
			if !bytes.Equal(raw[j], first[j]) {
				out = append(out, Violation{Check: "c", Detail: fmt.Sprintf("node%d record %d differs from node%d's", i+1, j+1, f+1)})
				break
			}
		}
	}
	return out
}

func (r *run) keyStates(i int) map[string]string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[string]string{}
	for _, k := range keyNames {
		key, err := r.keys[i][appCN].GetKey(ctx, &custosv1.GetKeyRequest{Name: k})
		if err != nil {
			r.t.Logf("node%d GetKey %s: %v", i+1, k, err)
			continue
		}
		out[k] = strings.TrimPrefix(key.State.String(), "KEY_STATE_")
	}
	return out
}

func (r *run) report(d time.Duration, records []*custosv1.DecisionRecord, viol []Violation) {
	t := r.t
	ops := r.h.Ops()
	var allow, deny, pending, gov, ckpt, keyAdmin, members, notif int
	for _, rec := range records {
		switch {
		case rec.Operation == custosv1.Operation_OPERATION_GOVERNANCE:
			gov++
		case rec.Operation == custosv1.Operation_OPERATION_CHECKPOINT:
			ckpt++
		case isKeyAdmin(rec.Operation):
			keyAdmin++
		case rec.Operation == custosv1.Operation_OPERATION_MEMBERSHIP:
			members++
		case rec.Outcome == custosv1.Outcome_OUTCOME_ALLOW:
			allow++
		case rec.Outcome == custosv1.Outcome_OUTCOME_DENY:
			deny++
		case rec.Outcome == custosv1.Outcome_OUTCOME_PENDING:
			pending++
		}
		if rec.Notify {
			notif++
		}
	}
	var b strings.Builder
	mode := "in-process nodes"
	if r.pc != nil {
		mode = "custosd processes"
	}
	fmt.Fprintf(&b, "seed %d, workload %s, %d clients + 1 officer goroutine, %d nodes (%s)\n\n", r.seed, d, *flagClients, numNodes, mode)
	b.WriteString(r.h.Summary())
	b.WriteString(r.h.CryptoSummary())
	if r.pc != nil {
		b.WriteString(r.pc.proxySummary())
	}
	fmt.Fprintf(&b, "final ledger: %d records (decisions: ALLOW %d, DENY %d, PENDING %d; governance %d; key administration %d; membership %d; checkpoints %d; %d with notify)\n",
		len(records), allow, deny, pending, gov, keyAdmin, members, ckpt, notif)
	strict := *flagStrict || os.Getenv("CUSTOS_ROBUSTNESS_STRICT") == "1"
	var failing []Violation
	known := map[string]int{}
	for _, v := range viol {
		if v.Known != "" {
			known[v.Known]++
		}
		if v.Known == "" || strict {
			failing = append(failing, v)
		}
	}
	nknown := 0
	for _, n := range known {
		nknown += n
	}
	fmt.Fprintf(&b, "violations: %d new, %d of known issues %v (strict=%v)\n", len(viol)-nknown, nknown, known, strict)
	for i, v := range viol {
		if i == 20 {
			fmt.Fprintf(&b, "… %d more\n", len(viol)-20)
			break
		}
		fmt.Fprintf(&b, "- %v\n", v)
	}
	t.Logf("robustness report\n%s", b.String())
	if path := reportPath(); path != "" {
		_ = os.WriteFile(path, []byte(b.String()), 0o644)
	}
	var decided int
	for _, o := range ops {
		if o.Kind == OpDecrypt && o.OK() {
			decided++
		}
	}
	hist := os.Getenv("CUSTOS_ROBUSTNESS_HISTORY")
	// Every node is a custodian of the domain key: each must have served
	// key crypto itself, or admission did not take.
	var idle []string
	byNode := CryptoByNode(ops)
	for i := range numNodes {
		if byNode[i].OK == 0 {
			idle = append(idle, fmt.Sprintf("node%d", i+1))
		}
	}
	if hist == "" && (len(viol) > 0 || decided == 0 || len(idle) > 0) {
		hist = filepath.Join(os.TempDir(), fmt.Sprintf("custos-robustness-%d.history", r.seed))
	}
	if hist != "" {
		var hb strings.Builder
		for _, f := range r.h.Faults() {
			fmt.Fprintf(&hb, "FAULT %v\n", f)
		}
		for _, o := range ops {
			fmt.Fprintf(&hb, "%v\n", o)
		}
		_ = os.WriteFile(hist, []byte(hb.String()), 0o644)
	}
	if r.pc != nil && hist != "" {
		if dir := r.pc.keepLogs(r.seed); dir != "" {
			t.Logf("node logs kept in %s", dir)
		}
	}
	if len(failing) > 0 || decided == 0 || len(idle) > 0 {
		if decided == 0 {
			t.Fatalf("seed %d: no Decrypt released a data key: the run checked nothing (history: %s)", r.seed, hist)
		}
		if len(failing) == 0 {
			t.Fatalf("seed %d: %s served no key crypto (GenerateDataKey, Decrypt), though every node is an admitted custodian (history: %s)",
				r.seed, strings.Join(idle, ", "), hist)
		}
		t.Fatalf("seed %d: %d violations (history: %s); replay: go test -run '%s' -count=1 ./internal/robustness/ -robustness.seed=%d -robustness.duration=%s\nfirst: %v",
			r.seed, len(failing), hist, r.test, r.seed, d, failing[0])
	}
	if len(viol) > 0 {
		t.Logf("seed %d: %d violations, all of known issues (history: %s); -robustness.strict fails on them", r.seed, len(viol), hist)
	}
}

func reportPath() string {
	if *flagReport != "" {
		return *flagReport
	}
	return os.Getenv("CUSTOS_ROBUSTNESS_REPORT")
}
