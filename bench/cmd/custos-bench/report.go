package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
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
	Schema    int       `json:"schema"`
	Date      string    `json:"date"`
	Command   string    `json:"command"`
	Machine   machine   `json:"machine"`
	Settings  settings  `json:"settings"`
	Node      *nodeInfo `json:"node,omitempty"`
	Ceilings  []point   `json:"ceilings"`
	Scenarios []point   `json:"scenarios"`
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
	Concurrency        []int    `json:"concurrency"`
	CeilingConcurrency []int    `json:"ceiling_concurrency"`
	Ops                []string `json:"ops"`
	Short              bool     `json:"short"`
}

type nodeInfo struct {
	Mode     string   `json:"mode"` // start or env
	Binary   string   `json:"binary,omitempty"`
	EnvFile  string   `json:"env_file,omitempty"`
	PID      int      `json:"pid,omitempty"`
	Addr     string   `json:"addr"`
	FinalMem *memInfo `json:"final_mem,omitempty"`
}

// point is one measured (operation, concurrency).
type point struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	loadgen.Result
	// NodeCPUPerOp is the node's CPU time (user+system, all threads) per
	// operation, in µs; nil when the node is not our child.
	NodeCPUPerOp *float64 `json:"node_cpu_us_per_op,omitempty"`
	// BenchCPUPerOp is this process's CPU time per operation, in µs: the
	// load generator and gRPC client, or the whole operation for the
	// in-process SoftHSM ceiling.
	BenchCPUPerOp float64  `json:"bench_cpu_us_per_op"`
	NodeMem       *memInfo `json:"node_mem,omitempty"`
	// PctHSM is ops/s as a percentage of the best SoftHSM ceiling (over
	// its concurrencies); PctGRPC as a percentage of the gRPC health check
	// at the same concurrency.
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
}

// rate is the number of data keys (items) a second.
func (p point) rate() float64 { return p.OpsPerSec * float64(max(p.ItemsPerOp, 1)) }

func (p point) line() string {
	s := fmt.Sprintf("%-20s c=%-3d %9.0f ops/s  p50 %-9s p99 %-9s p99.9 %-9s errors %d",
		p.Name, p.Concurrency, p.OpsPerSec, fmtDur(p.P50), fmtDur(p.P99), fmtDur(p.P999), p.Errors)
	if p.FirstError != "" {
		s += " (first: " + p.FirstError + ")"
	}
	return s
}

// ratios fills PctHSM, PctGRPC, PctRaft and PctSlowest.
func (r *report) ratios() {
	var hsmBest float64
	grpc := map[int]float64{}
	rft := map[int]float64{}
	for _, c := range r.Ceilings {
		switch c.Name {
		case "softhsm-gcm-decrypt":
			hsmBest = max(hsmBest, c.OpsPerSec)
		case "grpc-health":
			grpc[c.Concurrency] = c.OpsPerSec
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
		p.PctGRPC = pct(p.rate(), grpc[p.Concurrency])
		p.PctRaft = pct(p.rate(), rft[p.Concurrency])
		slowest := 0.0
		for _, c := range []float64{hsmBest, grpc[p.Concurrency], rft[p.Concurrency]} {
			if c > 0 && (slowest == 0 || c < slowest) {
				slowest = c
			}
		}
		p.PctSlowest = pct(p.rate(), slowest)
	}
}

// failures lists the points with failed operations or none at all.
func (r *report) failures() []string {
	var bad []string
	for _, p := range append(append([]point(nil), r.Ceilings...), r.Scenarios...) {
		switch {
		case p.Errors > 0:
			bad = append(bad, fmt.Sprintf("%s c=%d: %d of %d failed, first: %s", p.Name, p.Concurrency, p.Errors, p.Ops, p.FirstError))
		case p.Ops == 0:
			bad = append(bad, fmt.Sprintf("%s c=%d: no operation completed", p.Name, p.Concurrency))
		}
	}
	return bad
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

func fmtMem(m *memInfo) string {
	if m == nil {
		return "–"
	}
	return fmt.Sprintf("%.0f / %.0f", float64(m.RSSKiB)/1024, float64(m.HWMKiB)/1024)
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
	"raft-apply":          "Raft apply of a small command (single node, bbolt log store with fsync, no-op FSM, in process)",
	"batch-decrypt":       "BatchDecrypt, 100 data keys a call (rates count data keys)",
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
	if r.Node != nil {
		switch r.Node.Mode {
		case "start":
			w("- Node: one `%s dev` child process (single-node Raft, its own SoftHSM token, gRPC with mTLS on loopback); load from a separate process over one gRPC connection. The node and the load generator share the machine's CPUs.\n", r.Node.Binary)
		default:
			w("- Node: already running, from `%s` (%s); its CPU and memory were not measured.\n", r.Node.EnvFile, r.Node.Addr)
		}
	}
	w("\n### Ceilings\n\n")
	w("| ceiling | C | ops/s | p50 | p99 | p99.9 | max | errors | node CPU µs/op | bench CPU µs/op |\n")
	w("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, p := range r.Ceilings {
		w("| %s | %d | %.0f | %s | %s | %s | %s | %d | %s | %s |\n",
			opTitles[p.Name], p.Concurrency, p.OpsPerSec, fmtDur(p.P50), fmtDur(p.P99), fmtDur(p.P999), fmtDur(p.Max),
			p.Errors, optCPU(p.NodeCPUPerOp), fmtCPU(p.BenchCPUPerOp))
	}
	w("\n### custos\n\n")
	w("| operation | C | ops/s | p50 | p99 | p99.9 | errors | node CPU µs/op | bench CPU µs/op | node RSS / peak MiB | %% of SoftHSM ceiling | %% of gRPC no-op | %% of Raft apply | %% of slowest ceiling |\n")
	w("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, p := range r.Scenarios {
		w("| %s | %d | %.0f | %s | %s | %s | %d | %s | %s | %s | %s | %s | %s | %s |\n",
			opTitles[p.Name], p.Concurrency, p.rate(), fmtDur(p.P50), fmtDur(p.P99), fmtDur(p.P999),
			p.Errors, optCPU(p.NodeCPUPerOp), fmtCPU(p.BenchCPUPerOp), fmtMem(p.NodeMem), fmtPct(p.PctHSM), fmtPct(p.PctGRPC),
			fmtPct(p.PctRaft), fmtPct(p.PctSlowest))
	}
	w("\nC is the number of concurrent callers. \"%% of SoftHSM ceiling\" divides by the best SoftHSM figure above (every call on a SoftHSM token is serialised, so more callers do not raise it); \"%% of gRPC no-op\" by the health check at the same C. CPU per op is user+system time over the measured window divided by the operations in it (node: /proc/PID/stat, 10 ms ticks). Node RSS is VmRSS at the end of the point / VmHWM (peak since start).\n")
	for _, p := range append(append([]point(nil), r.Ceilings...), r.Scenarios...) {
		if p.Errors > 0 {
			w("\n**%s at C=%d: %d of %d operations failed**; first error: `%s`\n", p.Name, p.Concurrency, p.Errors, p.Ops, p.FirstError)
		}
	}
	return b.String()
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
