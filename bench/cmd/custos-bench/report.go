package main

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/custos-kms/custos/bench/loadgen"
)

const (
	kindCeiling = "ceiling"
	kindCustos  = "custos"
)

// report is everything one run measured; it is written as JSON as is.
type report struct {
	Schema   int      `json:"schema"`
	Date     string   `json:"date"`
	Command  string   `json:"command"`
	Machine  machine  `json:"machine"`
	Settings settings `json:"settings"`
	// Clusters are the clusters the load was driven at, in run order.
	Clusters  []clusterInfo `json:"clusters"`
	Ceilings  []point       `json:"ceilings"`
	Scenarios []point       `json:"scenarios"`
	// Streams are the envelope-1gib runs, by cluster in run order.
	Streams []streamResult `json:"streams,omitempty"`
	// CostModel has, for every multi-node point whose nodes' CPU was
	// measured, each node's CPU per operation, their sum against one
	// node's, and the throughput projected to one machine per node
	// (costmodel.go); derived by ratios.
	CostModel []costRow `json:"cost_model,omitempty"`
	// Plot is the SVG written with --plot, relative to the Markdown file
	// (empty without --plot or --markdown).
	Plot string `json:"-"`
}

type machine struct {
	NumCPU   int    `json:"nproc"`
	CPUModel string `json:"cpu_model"`
	MemTotal string `json:"mem_total"`
	Kernel   string `json:"kernel"`
	GoVer    string `json:"go_version"`
	SoftHSM  string `json:"softhsm_version"`
}

type settings struct {
	Duration           string   `json:"duration"`
	Warmup             string   `json:"warmup"`
	Nodes              []int    `json:"nodes,omitempty"`
	Concurrency        []int    `json:"concurrency"`
	CeilingConcurrency []int    `json:"ceiling_concurrency"`
	Ops                []string `json:"ops"`
	// Load are the load modes run on clusters of more than one node.
	Load  []string `json:"load,omitempty"`
	Short bool     `json:"short"`
	// EnvelopeConcurrency are the concurrencies of envelope-1mib;
	// EnvelopeSize and EnvelopeRuns the size and the runs per cluster of
	// envelope-1gib.
	EnvelopeConcurrency []int `json:"envelope_concurrency,omitempty"`
	EnvelopeSize        int64 `json:"envelope_size,omitempty"`
	EnvelopeRuns        int   `json:"envelope_runs,omitempty"`
}

// clusterInfo describes one cluster under test.
type clusterInfo struct {
	// Nodes is the cluster size; 0 for a cluster of unknown size (--env).
	Nodes   int    `json:"nodes"`
	Mode    string `json:"mode"` // start or env
	Binary  string `json:"binary,omitempty"`
	EnvFile string `json:"env_file,omitempty"`
	// Addr is the address of the set-up and the node1 load (with --env,
	// the addresses of client.env); Principal the client certificate's
	// name the load ran as (empty: client.env's, with --env).
	Addr      string `json:"addr"`
	Principal string `json:"principal,omitempty"`
	// Leader is the Raft leader when the cluster had formed; LoadNode the
	// node at Addr (node1). Loads are the load modes run on it (none on
	// one node).
	Leader   string   `json:"leader,omitempty"`
	LoadNode string   `json:"load_node,omitempty"`
	Loads    []string `json:"loads,omitempty"`
	// Processes are the node processes (pid, gRPC address), in node order;
	// SupervisorPID the custosd dev --nodes process that started them.
	Processes     []nodeProc `json:"processes,omitempty"`
	SupervisorPID int        `json:"supervisor_pid,omitempty"`
	// FinalMem is every node's memory at the end, in node order.
	FinalMem []nodeSample `json:"final_mem,omitempty"`
	// FollowerDecrypt is the outcome of one Decrypt sent to the first node
	// other than node1, before the load (empty on one node).
	FollowerDecrypt string `json:"follower_decrypt,omitempty"`
}

// nodeSample is one node's share of a point.
type nodeSample struct {
	ID string `json:"id"`
	// CPUPerOp is the node's CPU time (user+system, all threads) per
	// operation, in µs; nil if it could not be read.
	CPUPerOp *float64 `json:"cpu_us_per_op,omitempty"`
	// Mem is the node's memory at the end of the point.
	Mem *memInfo `json:"mem,omitempty"`
}

// point is one measured (operation, cluster size, concurrency).
type point struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	// Nodes is the size of the cluster the point ran against; 0 for the
	// in-process ceilings and for a cluster of unknown size (--env).
	Nodes int `json:"nodes"`
	// Load is the load mode (loadSpread, loadNode1) on a cluster of more
	// than one node (or addresses, --env); empty otherwise. Leader is the
	// Raft leader after the point (multi-node clusters of --start).
	Load   string `json:"load,omitempty"`
	Leader string `json:"leader,omitempty"`
	loadgen.Result
	// NodeCPUPerOp is the CPU time (user+system, all threads) of all the
	// cluster's node processes together per operation, in µs; nil when
	// the nodes are not our children. PerNode has each node's share (its
	// CPU time over all the cluster's operations of the point, whichever
	// node received them) and memory, in node order.
	NodeCPUPerOp *float64     `json:"node_cpu_us_per_op,omitempty"`
	PerNode      []nodeSample `json:"per_node,omitempty"`
	// SupervisorCPUPerOp is the CPU time per operation of custosd dev
	// --nodes, which starts the nodes and relays their log output (not
	// counted in NodeCPUPerOp).
	SupervisorCPUPerOp *float64 `json:"supervisor_cpu_us_per_op,omitempty"`
	// BenchCPUPerOp is this process's CPU time per operation, in µs: the
	// load generator and gRPC client, or the whole operation for the
	// in-process SoftHSM ceiling.
	BenchCPUPerOp float64 `json:"bench_cpu_us_per_op"`
	// PctHSM is the rate as a percentage of the best SoftHSM ceiling
	// (over its concurrencies); PctGRPC as a percentage of the gRPC health
	// check against the same cluster at the same concurrency.
	PctHSM  *float64 `json:"pct_of_softhsm_ceiling,omitempty"`
	PctGRPC *float64 `json:"pct_of_grpc_ceiling,omitempty"`
	// PctRaft is the rate as a percentage of the raw Raft apply at the same
	// concurrency; PctSlowest as a percentage of the slowest of the three
	// ceilings (best SoftHSM, gRPC and Raft at the same concurrency).
	PctRaft    *float64 `json:"pct_of_raft_ceiling,omitempty"`
	PctSlowest *float64 `json:"pct_of_slowest_ceiling,omitempty"`
	// ItemsPerOp is the number of data keys one operation handles (a
	// BatchDecrypt call); 0 means 1. Ratios compare ItemsPerOp × ops/s.
	ItemsPerOp int `json:"items_per_op,omitempty"`
	// BytesPerOp is the plaintext bytes one operation handles (envelope,
	// AES-GCM ceiling); MBps is then BytesPerOp × ops/s in MB/s (10^6
	// bytes).
	BytesPerOp int64   `json:"bytes_per_op,omitempty"`
	MBps       float64 `json:"mb_per_sec,omitempty"`
}

// mbps is the plaintext rate in MB/s (10^6 bytes); 0 without BytesPerOp.
func (p point) mbps() float64 { return p.OpsPerSec * float64(p.BytesPerOp) / 1e6 }

// rate is the number of data keys (items) a second.
func (p point) rate() float64 { return p.OpsPerSec * float64(max(p.ItemsPerOp, 1)) }

// loadMode is Load, or node1 for a multi-node point of a report written
// before there were load modes (all its load went to node1).
func (p point) loadMode() string {
	if p.Load == "" && p.Nodes > 1 {
		return loadNode1
	}
	return p.Load
}

// fmtLoad is the load mode of a point for a table cell.
func fmtLoad(p point) string {
	if m := p.loadMode(); m != "" {
		return m
	}
	return "–"
}

func (p point) line() string {
	nodes := "   "
	if p.Nodes > 0 {
		nodes = fmt.Sprintf("n=%d", p.Nodes)
	}
	if m := p.loadMode(); m != "" {
		nodes += " " + m
	}
	s := fmt.Sprintf("%-20s %s c=%-3d %9.0f ops/s  p50 %-9s p99 %-9s p99.9 %-9s errors %d",
		p.Name, nodes, p.Concurrency, p.OpsPerSec, fmtDur(p.P50), fmtDur(p.P99), fmtDur(p.P999), p.Errors)
	if p.ItemsPerOp > 1 {
		s += fmt.Sprintf(" (%.0f items/s)", p.rate())
	}
	if p.BytesPerOp > 0 {
		s += fmt.Sprintf(" (%.0f MB/s)", p.mbps())
	}
	if p.NodeCPUPerOp != nil && len(p.PerNode) > 1 {
		s += fmt.Sprintf(" node CPU µs/op %s = %s", perNode(p.PerNode, func(s nodeSample) string { return optCPU(s.CPUPerOp) }), fmtCPU(*p.NodeCPUPerOp))
	}
	if p.FirstError != "" {
		s += " (first: " + p.FirstError + ")"
	}
	return s
}

// ratios fills PctHSM, PctGRPC, PctRaft and PctSlowest, MBps, the
// streams' ratios to the AES-GCM ceiling and the cost model.
func (r *report) ratios() {
	var hsmBest float64
	type at struct {
		nodes int
		load  string
		conc  int
	}
	grpc := map[at]float64{}
	rft := map[int]float64{}
	for _, c := range r.Ceilings {
		switch c.Name {
		case "softhsm-gcm-decrypt":
			hsmBest = max(hsmBest, c.OpsPerSec)
		case "grpc-health":
			grpc[at{c.Nodes, c.loadMode(), c.Concurrency}] = c.OpsPerSec
		case "raft-apply":
			rft[c.Concurrency] = c.OpsPerSec
		}
	}
	pct := func(v, of float64) *float64 {
		if of <= 0 {
			return nil
		}
		x := 100 * v / of
		return &x
	}
	for i := range r.Scenarios {
		p := &r.Scenarios[i]
		p.PctHSM = pct(p.rate(), hsmBest)
		g := grpc[at{p.Nodes, p.loadMode(), p.Concurrency}]
		p.PctGRPC = pct(p.rate(), g)
		p.PctRaft = pct(p.rate(), rft[p.Concurrency])
		slowest := 0.0
		for _, c := range []float64{hsmBest, g, rft[p.Concurrency]} {
			if c > 0 && (slowest == 0 || c < slowest) {
				slowest = c
			}
		}
		p.PctSlowest = pct(p.rate(), slowest)
	}
	for _, ps := range [][]point{r.Ceilings, r.Scenarios} {
		for i := range ps {
			ps[i].MBps = ps[i].mbps()
		}
	}
	r.streamRatios()
	r.CostModel = r.costModel()
}

// failures lists the points with failed operations or none at all, and
// the failed streams.
func (r *report) failures() []string {
	var bad []string
	for _, p := range append(append([]point(nil), r.Ceilings...), r.Scenarios...) {
		switch {
		case p.Errors > 0:
			bad = append(bad, fmt.Sprintf("%s%s c=%d: %d of %d failed, first: %s", p.Name, p.nodesTag(), p.Concurrency, p.Errors, p.Ops, p.FirstError))
		case p.Ops == 0:
			bad = append(bad, fmt.Sprintf("%s%s c=%d: no operation completed", p.Name, p.nodesTag(), p.Concurrency))
		}
	}
	for _, st := range r.Streams {
		if st.Error != "" {
			bad = append(bad, fmt.Sprintf("%s n=%d run %d: %s", st.Name, st.Nodes, st.Run, st.Error))
		}
	}
	return bad
}

// nodesTag is " n=N" for a point measured against a cluster of N nodes,
// with its load mode.
func (p point) nodesTag() string {
	s := ""
	if p.Nodes > 0 {
		s = fmt.Sprintf(" n=%d", p.Nodes)
	}
	if m := p.loadMode(); m != "" {
		s += " load " + m
	}
	return s
}

func machineInfo() machine {
	m := machine{NumCPU: runtime.NumCPU(), GoVer: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && k == "MemTotal" {
				var kib int64
				if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kib); err == nil {
					m.MemTotal = fmt.Sprintf("%.1f GiB", float64(kib)/(1<<20))
				}
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", "softhsm2").Output(); err == nil {
		m.SoftHSM = strings.TrimSpace(string(out))
	}
	if m.SoftHSM == "" {
		m.SoftHSM = "unknown"
	}
	return m
}

// commandLine returns args as a shell command line.
func commandLine(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-:=,+@", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// fmtDur formats a latency with three significant digits.
func fmtDur(d time.Duration) string {
	us := float64(d) / float64(time.Microsecond)
	switch {
	case us < 10:
		return fmt.Sprintf("%.2f µs", us)
	case us < 100:
		return fmt.Sprintf("%.1f µs", us)
	case us < 1000:
		return fmt.Sprintf("%.0f µs", us)
	case us < 10_000:
		return fmt.Sprintf("%.2f ms", us/1000)
	case us < 100_000:
		return fmt.Sprintf("%.1f ms", us/1000)
	default:
		return fmt.Sprintf("%.0f ms", us/1000)
	}
}

func fmtPct(p *float64) string {
	if p == nil {
		return "–"
	}
	if *p < 10 {
		return fmt.Sprintf("%.1f %%", *p)
	}
	return fmt.Sprintf("%.0f %%", *p)
}

func fmtCPU(us float64) string {
	if us < 100 {
		return fmt.Sprintf("%.1f", us)
	}
	return fmt.Sprintf("%.0f", us)
}

// Markers delimiting the generated part of the Markdown file; text outside
// them (hand-written analysis) is kept when the file is rewritten.
const (
	mdBegin = "<!-- custos-bench:begin (generated; edit outside these markers) -->"
	mdEnd   = "<!-- custos-bench:end -->"
)

var opTitles = map[string]string{
	"softhsm-gcm-decrypt": "SoftHSM AES-256-GCM decrypt, 32 B (PKCS#11, in process)",
	"grpc-health":         "gRPC health check over mTLS to the node (no work)",
	"gdk":                 "GenerateDataKey",
	"decrypt":             "Decrypt (data key, CUSTOMER_INITIATED, decision recorded)",
	"reencrypt":           "ReEncrypt (data key, CUSTOMER_INITIATED, decision recorded)",
	"raft-apply":          "Raft apply of a small command (single node, bbolt log store with fsync, no-op FSM, in process)",
	"batch-decrypt":       "BatchDecrypt, 100 data keys a call (rates count data keys)",
	opEnvelope1MiB:        "Envelope 1 MiB through clients/go: EncryptStream + DecryptStream (a GenerateDataKey and a Decrypt)",
	gcmCeilingName:        "Go crypto/cipher AES-256-GCM Seal of 64 KiB, one goroutine (in process)",
}

// The targets of docs/performance.md for a 3-node cluster (figures to compare, not
// assertions).
const (
	targetNodes          = 3
	targetDecryptConc    = 64
	targetDecryptOps     = 20000
	targetDecryptP99     = 15 * time.Millisecond
	targetBatchKeysPerOp = 60000
)

// loadOrder sorts the load modes: none, node1 (as before load modes), spread.
func loadOrder(m string) int {
	switch m {
	case "":
		return 0
	case loadNode1:
		return 1
	case loadSpread:
		return 2
	}
	return 3
}

// sortedScenarios returns the scenarios by operation (in knownOps order),
// cluster size, load mode and concurrency, so that the rows of one
// operation on 1 and 3 nodes are next to each other.
func (r *report) sortedScenarios() []point {
	order := func(name string) int {
		if i := slices.Index(knownOps, name); i >= 0 {
			return i
		}
		return len(knownOps)
	}
	out := slices.Clone(r.Scenarios)
	slices.SortStableFunc(out, func(a, b point) int {
		return cmp.Or(cmp.Compare(order(a.Name), order(b.Name)), cmp.Compare(a.Nodes, b.Nodes),
			cmp.Compare(loadOrder(a.loadMode()), loadOrder(b.loadMode())), cmp.Compare(a.Concurrency, b.Concurrency))
	})
	return out
}

// markdownBlock renders the generated part of RESULTS.md.
func (r *report) markdownBlock() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("Run of %s.\n\n", r.Date)
	w("- Command: `%s`\n", r.Command)
	w("- Machine: %d vCPU (%s), %s RAM, %s; %s; SoftHSM %s\n",
		r.Machine.NumCPU, r.Machine.CPUModel, r.Machine.MemTotal, r.Machine.Kernel, r.Machine.GoVer, r.Machine.SoftHSM)
	w("- Each point: %s warm-up (not counted), then %s measured; closed loop (each of the C workers sends its next call when the previous returns).\n",
		r.Settings.Warmup, r.Settings.Duration)
	for _, c := range r.Clusters {
		switch {
		case c.Mode != "start":
			w("- Cluster: already running, from `%s`; load sent to %s; its CPU and memory were not measured.\n", c.EnvFile, c.Addr)
		case c.Nodes == 1:
			w("- 1 node: one `%s dev` child process (single-node Raft, its own SoftHSM token, gRPC with mTLS on loopback).\n", c.Binary)
		default:
			w("- %d nodes: `%s dev --nodes %d` (%d `custosd serve` processes, each with its own SoftHSM token, Raft over mTLS on loopback; the `custosd dev` supervisor that starts them and relays their output is not a node and not counted); leader %s; %s.\n",
				c.Nodes, c.Binary, c.Nodes, c.Nodes, c.Leader, loadsText(c))
		}
	}
	w("- Load from a separate process over gRPC with mTLS, one connection per node it is sent to")
	if len(r.Clusters) > 0 && r.Clusters[0].Principal != "" {
		w(", as the application identity `%s` (a client certificate of the cluster's dev CA)", r.Clusters[0].Principal)
	}
	w(". The nodes and the load generator share the machine's CPUs.\n")
	w("\n### Ceilings\n\n")
	w("| ceiling | nodes | load | C | ops/s | p50 | p99 | p99.9 | max | errors | node CPU µs/op | bench CPU µs/op |\n")
	w("|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, p := range r.Ceilings {
		w("| %s | %s | %s | %d | %.0f | %s | %s | %s | %s | %d | %s | %s |\n",
			opTitles[p.Name], fmtNodes(p.Nodes), fmtLoad(p), p.Concurrency, p.OpsPerSec, fmtDur(p.P50), fmtDur(p.P99), fmtDur(p.P999), fmtDur(p.Max),
			p.Errors, optCPU(p.NodeCPUPerOp), fmtCPU(p.BenchCPUPerOp))
	}
	w("\n### custos\n\n")
	w("| operation | nodes | load | C | ops/s | p50 | p99 | p99.9 | errors | node CPU µs/op, all nodes | per node | bench CPU µs/op | RSS MiB per node | peak RSS MiB per node | %% of SoftHSM ceiling | %% of gRPC no-op | %% of Raft apply | %% of slowest ceiling |\n")
	w("|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, p := range r.sortedScenarios() {
		w("| %s | %s | %s | %d | %.0f | %s | %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			opTitles[p.Name], fmtNodes(p.Nodes), fmtLoad(p), p.Concurrency, p.rate(), fmtDur(p.P50), fmtDur(p.P99), fmtDur(p.P999),
			p.Errors, optCPU(p.NodeCPUPerOp), perNode(p.PerNode, func(s nodeSample) string { return optCPU(s.CPUPerOp) }),
			fmtCPU(p.BenchCPUPerOp),
			perNode(p.PerNode, func(s nodeSample) string { return fmtMiB(s.Mem, false) }),
			perNode(p.PerNode, func(s nodeSample) string { return fmtMiB(s.Mem, true) }),
			fmtPct(p.PctHSM), fmtPct(p.PctGRPC), fmtPct(p.PctRaft), fmtPct(p.PctSlowest))
	}
	w("\nC is the number of concurrent callers. Load (clusters of more than one node): *spread* gives caller w a client pinned to node (w mod N)+1, so every node receives calls and releases data keys with its own HSM (a follower records the decision through the leader); *node1* sends every call to node1, as all runs before node admission did. \"%% of SoftHSM ceiling\" divides by the best SoftHSM figure above (every call on a SoftHSM token is serialised, so more callers do not raise it); \"%% of gRPC no-op\" by the health check against the same cluster at the same C; \"%% of Raft apply\" by the single-node in-process Raft ceiling at the same C. CPU per op is user+system time over the measured window divided by the operations in it, all the cluster's operations whichever node received them (nodes: /proc/PID/stat of every node process, 10 ms ticks; \"all nodes\" is their sum, \"per node\" lists node1 · node2 · …). RSS is VmRSS at the end of the point, peak VmHWM since the node started (/proc/PID/status).\n")
	r.costBlock(w)
	r.envelopeBlock(w)
	r.targetsBlock(w)
	for _, c := range r.Clusters {
		if c.FollowerDecrypt != "" {
			w("\nOn %d nodes, one Decrypt sent to a node other than node1 before the load (not measured): %s\n", c.Nodes, c.FollowerDecrypt)
		}
	}
	if r.Plot != "" {
		w("\n![ops/s and p99 against concurrency, 1 and 3 nodes](%s)\n", r.Plot)
	}
	for _, p := range append(append([]point(nil), r.Ceilings...), r.Scenarios...) {
		if p.Errors > 0 {
			w("\n**%s%s at C=%d: %d of %d operations failed**; first error: `%s`\n", p.Name, p.nodesTag(), p.Concurrency, p.Errors, p.Ops, p.FirstError)
		}
	}
	return b.String()
}

// targetsBlock writes the 3-node targets of docs/performance.md against what was measured,
// when the run measured the operations they are about.
func (r *report) targetsBlock(w func(string, ...any)) {
	// Spread load when it was measured (every node serving), else node1.
	var dec, batch *point
	better := func(p, than *point) bool {
		return than == nil || loadOrder(p.loadMode()) > loadOrder(than.loadMode()) ||
			(p.loadMode() == than.loadMode() && p.rate() > than.rate())
	}
	for i := range r.Scenarios {
		p := &r.Scenarios[i]
		if p.Nodes != targetNodes {
			continue
		}
		switch {
		case p.Name == "decrypt" && p.Concurrency == targetDecryptConc && better(p, dec):
			dec = p
		case p.Name == "batch-decrypt" && better(p, batch):
			batch = p
		}
	}
	measured := len(r.Streams) > 0
	for _, p := range r.Scenarios {
		measured = measured || p.Nodes == targetNodes
	}
	if !measured {
		return
	}
	met := func(ok bool) string {
		if ok {
			return "met"
		}
		return "not met"
	}
	w("\n### Against the targets (%d nodes)\n\n", targetNodes)
	w("Figures to compare, not assertions.\n\n")
	w("| target | measured | |\n|---|---|---|\n")
	decTitle := fmt.Sprintf("Decrypt with a durable ALLOW record ≥ %dk ops/s at C=%d, p99 ≤ %d ms",
		targetDecryptOps/1000, targetDecryptConc, targetDecryptP99/time.Millisecond)
	if dec != nil {
		w("| %s | %.0f ops/s, p99 %s%s | %s |\n", decTitle, dec.OpsPerSec, fmtDur(dec.P99), loadTag(*dec),
			met(dec.OpsPerSec >= targetDecryptOps && dec.P99 <= targetDecryptP99))
	} else {
		w("| %s | not measured (no %d-node decrypt point at C=%d) | |\n", decTitle, targetNodes, targetDecryptConc)
	}
	batchTitle := fmt.Sprintf("BatchDecrypt (100 keys a call) ≥ %dk data keys/s", targetBatchKeysPerOp/1000)
	if batch != nil {
		w("| %s | %.0f data keys/s (best, at C=%d%s) | %s |\n", batchTitle, batch.rate(), batch.Concurrency, loadSuffix(*batch), met(batch.rate() >= targetBatchKeysPerOp))
	} else {
		w("| %s | not measured | |\n", batchTitle)
	}
	r.envelopeTarget(w, met)
	r.costTargets(w, met)
}

// loadTag is " (load spread)" or " (load node1)" for a multi-node point,
// "" otherwise.
func loadTag(p point) string {
	if m := p.loadMode(); m != "" {
		return " (load " + m + ")"
	}
	return ""
}

// loadSuffix is ", load spread" or ", load node1" for a multi-node point,
// "" otherwise.
func loadSuffix(p point) string {
	if m := p.loadMode(); m != "" {
		return ", load " + m
	}
	return ""
}

// loadsText says where the load went on a multi-node cluster.
func loadsText(c clusterInfo) string {
	if len(c.Loads) == 0 {
		// A report from before load modes.
		return fmt.Sprintf("load sent to %s", c.LoadNode)
	}
	var parts []string
	for _, m := range c.Loads {
		switch m {
		case loadSpread:
			parts = append(parts, fmt.Sprintf("load spread over all %d nodes (rows *spread*)", c.Nodes))
		case loadNode1:
			parts = append(parts, fmt.Sprintf("load sent to %s only (rows *node1*)", c.LoadNode))
		}
	}
	return strings.Join(parts, ", then ")
}

func fmtNodes(n int) string {
	if n == 0 {
		return "–"
	}
	return strconv.Itoa(n)
}

// perNode joins f of every node sample with " · "; "–" if there is none.
func perNode(s []nodeSample, f func(nodeSample) string) string {
	if len(s) == 0 {
		return "–"
	}
	parts := make([]string, len(s))
	for i, x := range s {
		parts[i] = f(x)
	}
	return strings.Join(parts, " · ")
}

// fmtMiB formats VmRSS (or VmHWM, peak) in MiB.
func fmtMiB(m *memInfo, peak bool) string {
	if m == nil {
		return "–"
	}
	v := m.RSSKiB
	if peak {
		v = m.HWMKiB
	}
	return fmt.Sprintf("%.0f", float64(v)/1024)
}

func optCPU(v *float64) string {
	if v == nil {
		return "–"
	}
	return fmtCPU(*v)
}

// writeMarkdown writes the generated block into path: between the markers
// if the file has them, else as a new file with a title.
func writeMarkdown(path string, r *report) error {
	block := mdBegin + "\n" + r.markdownBlock() + mdEnd + "\n"
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	out, ok := replaceBlock(string(old), block)
	if !ok {
		out = "# custos benchmark results\n\nWritten by `custos-bench` (`make bench`); the text outside the generated block is kept when it is rewritten.\n\n" + block
	}
	return writeFile(path, []byte(out))
}

// replaceBlock replaces the text from mdBegin to mdEnd (inclusive, with the
// newline after mdEnd) in doc by block; ok is false when doc lacks them.
func replaceBlock(doc, block string) (string, bool) {
	i := strings.Index(doc, mdBegin)
	if i < 0 {
		return "", false
	}
	j := strings.Index(doc[i:], mdEnd)
	if j < 0 {
		return "", false
	}
	j += i + len(mdEnd)
	if j < len(doc) && doc[j] == '\n' {
		j++
	}
	return doc[:i] + block + doc[j:], true
}

// readJSON reads a report written by writeJSON.
func readJSON(path string) (*report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if r.Schema != 2 {
		return nil, fmt.Errorf("%s: results of schema %d, this custos-bench reads schema 2", path, r.Schema)
	}
	return &r, nil
}

func writeJSON(path string, r *report) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return writeFile(path, append(b, '\n'))
}

func writeFile(path string, b []byte) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return os.WriteFile(path, b, 0o644)
}
