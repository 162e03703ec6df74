package main

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/custos-kms/custos/bench/loadgen"
	custos "github.com/custos-kms/custos/clients/go"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

func TestParseStatCPU(t *testing.T) {
	// A command name with spaces and a parenthesis; utime 250, stime 50.
	stat := "1234 (custosd (x) y) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 12 0 100 0 0\n"
	got, err := parseStatCPU([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if want := 3 * time.Second; got != want {
		t.Errorf("cpu = %v, want %v", got, want)
	}
	if _, err := parseStatCPU([]byte("1234 (x) S 1")); err == nil {
		t.Error("short stat accepted")
	}
	// Our own process: the call works on this system.
	if _, err := procCPU(os.Getpid()); err != nil {
		t.Errorf("procCPU(self): %v", err)
	}
}

func TestParseStatusMem(t *testing.T) {
	m, err := parseStatusMem([]byte("Name:\tcustosd\nVmHWM:\t   31048 kB\nVmRSS:\t   30844 kB\nThreads:\t9\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m.RSSKiB != 30844 || m.HWMKiB != 31048 {
		t.Errorf("mem = %+v", m)
	}
	if _, err := parseStatusMem([]byte("Name:\tx\n")); err == nil {
		t.Error("status without VmRSS accepted")
	}
	if m, err := procMem(os.Getpid()); err != nil || m.RSSKiB <= 0 {
		t.Errorf("procMem(self) = %+v, %v", m, err)
	}
}

func TestParseEnvFile(t *testing.T) {
	env := parseEnvFile([]byte(`# written by custosd dev; load with: source /x/client.env
export CUSTOS_ADDR=127.0.0.1:7400
export CUSTOS_CA='/tmp/a b/ca.pem'
export CUSTOS_CERT='/tmp/it'\''s/c.pem'
CUSTOS_KEY="/tmp/k.pem"
`))
	want := map[string]string{
		"CUSTOS_ADDR": "127.0.0.1:7400",
		"CUSTOS_CA":   "/tmp/a b/ca.pem",
		"CUSTOS_CERT": "/tmp/it's/c.pem",
		"CUSTOS_KEY":  "/tmp/k.pem",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
	cfg, err := configFromEnv(env, "client.env")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Addrs) != 1 || cfg.CertFile != "/tmp/it's/c.pem" {
		t.Errorf("cfg = %+v", cfg)
	}
	delete(env, "CUSTOS_KEY")
	if _, err := configFromEnv(env, "client.env"); err == nil || !strings.Contains(err.Error(), "CUSTOS_KEY") {
		t.Errorf("missing key: err = %v", err)
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"--start", "--short"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.duration != time.Second || len(o.concurrency) != 2 || o.concurrency[1] != 16 || len(o.nodes) != 2 || o.nodes[1] != 3 || len(o.ops) != len(knownOps) {
		t.Errorf("short options = %+v", o)
	}
	if !slices.Equal(o.envConc, []int{1}) || o.envSize != 64<<20 || o.envRuns != 1 {
		t.Errorf("short envelope options: concurrency %v, size %d, runs %d", o.envConc, o.envSize, o.envRuns)
	}
	o, err = parseFlags([]string{"--start", "--concurrency", "2,4"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.envConc, []int{2, 4}) || o.envSize != 1<<30 || o.envRuns != 2 || !slices.Contains(o.ops, opEnvelopeStream) {
		t.Errorf("envelope options: concurrency %v, size %d, runs %d, ops %v", o.envConc, o.envSize, o.envRuns, o.ops)
	}
	o, err = parseFlags([]string{"--start", "--short", "--duration", "3s", "--concurrency", "2", "--ops", "decrypt"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.duration != 3*time.Second || len(o.concurrency) != 1 || o.concurrency[0] != 2 || len(o.ops) != 1 {
		t.Errorf("explicit flags lost under --short: %+v", o)
	}
	for _, args := range [][]string{
		{},                                  // neither --start nor --env
		{"--start", "--env", "x"},           // both
		{"--start", "--ops", "nope"},        // unknown op
		{"--start", "--concurrency", "0"},   // bad concurrency
		{"--start", "--concurrency", "a,1"}, // bad concurrency
		{"--start", "extra"},                // argument
		{"--start", "--envelope-size", "1TB"},
		{"--start", "--envelope-runs", "0"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) succeeded", args)
		} else if errors.Is(err, errUsage) {
			continue
		}
	}
}

func testReport() *report {
	mk := func(name, kind string, c int, opsPerSec float64) point {
		h := loadgen.NewHistogram()
		h.Record(time.Millisecond)
		r := loadgen.Summarize(c, h, time.Second)
		r.OpsPerSec = opsPerSec
		return point{Name: name, Kind: kind, Result: r}
	}
	r := &report{
		Date: "2026-01-01T00:00:00Z", Command: "custos-bench --start", Machine: machine{NumCPU: 2},
		Clusters: []clusterInfo{{Nodes: 1, Mode: "start", Binary: "bin/custosd"}},
		Ceilings: []point{
			mk("softhsm-gcm-decrypt", kindCeiling, 1, 40000),
			mk("softhsm-gcm-decrypt", kindCeiling, 16, 30000),
			mk("grpc-health", kindCeiling, 1, 4000),
		},
		Scenarios: []point{mk("decrypt", kindCustos, 1, 1000), mk("decrypt", kindCustos, 16, 4000)},
	}
	r.ratios()
	return r
}

func TestRatios(t *testing.T) {
	r := testReport()
	s := r.Scenarios
	if s[0].PctHSM == nil || *s[0].PctHSM != 2.5 || s[0].PctGRPC == nil || *s[0].PctGRPC != 25 {
		t.Errorf("c=1 ratios: %v %v", s[0].PctHSM, s[0].PctGRPC)
	}
	if s[1].PctHSM == nil || *s[1].PctHSM != 10 || s[1].PctGRPC != nil {
		t.Errorf("c=16 ratios: %v %v", s[1].PctHSM, s[1].PctGRPC)
	}
	if bad := r.failures(); len(bad) != 0 {
		t.Errorf("failures = %v", bad)
	}
	r.Scenarios[0].Errors, r.Scenarios[0].FirstError = 3, "boom"
	if bad := r.failures(); len(bad) != 1 || !strings.Contains(bad[0], "boom") {
		t.Errorf("failures = %v", bad)
	}
}

func TestWriteMarkdownKeepsHandWrittenText(t *testing.T) {
	path := filepath.Join(t.TempDir(), "RESULTS.md")
	r := testReport()
	if err := writeMarkdown(path, r); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), mdBegin) || !strings.Contains(string(b), "| Decrypt") {
		t.Fatalf("new file:\n%s", b)
	}
	doc := "# Results\n\nIntro.\n\n" + mdBegin + "\nold table\n" + mdEnd + "\n\n## What bounds it\n\nAnalysis.\n"
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeMarkdown(path, r); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(path)
	got := string(b)
	for _, want := range []string{"# Results\n\nIntro.\n\n" + mdBegin, mdEnd + "\n\n## What bounds it\n\nAnalysis.\n", "2.5 %"} {
		if !strings.Contains(got, want) {
			t.Errorf("rewritten file lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "old table") {
		t.Errorf("old block kept:\n%s", got)
	}
}

func TestFmtDur(t *testing.T) {
	for d, want := range map[time.Duration]string{
		1500 * time.Nanosecond:  "1.50 µs",
		18200 * time.Nanosecond: "18.2 µs",
		308 * time.Microsecond:  "308 µs",
		1240 * time.Microsecond: "1.24 ms",
		12 * time.Millisecond:   "12.0 ms",
		250 * time.Millisecond:  "250 ms",
	} {
		if got := fmtDur(d); got != want {
			t.Errorf("fmtDur(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestCommandLine(t *testing.T) {
	if got := commandLine([]string{"bin/custos-bench", "--start", "--markdown", "a b.md", "--x=it's"}); got != `bin/custos-bench --start --markdown 'a b.md' '--x=it'\''s'` {
		t.Errorf("commandLine = %s", got)
	}
}

func TestParseStartLines(t *testing.T) {
	log := []byte(`custosd dev: node1 started, pid 101 (gRPC 127.0.0.1:27401, Raft 127.0.0.1:27411)
[node1] time=... level=INFO msg="custos node started"
custosd dev: node2 started, pid 102 (gRPC 127.0.0.1:27402, Raft 127.0.0.1:27412)
custosd dev: node3 started, pid 103 (gRPC 127.0.0.1:27403, Raft 127.0.0.1:27413)
`)
	nodes, err := parseStartLines(log, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := []nodeProc{{"node1", 101, "127.0.0.1:27401"}, {"node2", 102, "127.0.0.1:27402"}, {"node3", 103, "127.0.0.1:27403"}}
	if !slices.Equal(nodes, want) {
		t.Errorf("nodes = %+v, want %+v", nodes, want)
	}
	if _, err := parseStartLines(log, 5); err == nil {
		t.Error("3 start lines accepted for 5 nodes")
	}
}

func TestFormed(t *testing.T) {
	st := func(id, leader string, voters int) *custosv1.ClusterStatus {
		s := &custosv1.ClusterStatus{NodeId: id, LeaderId: leader}
		for i := range voters {
			s.Servers = append(s.Servers, &custosv1.Server{Id: fmt.Sprintf("node%d", i+1), Suffrage: "VOTER"})
		}
		return s
	}
	ok := []*custosv1.ClusterStatus{st("node1", "node1", 3), st("node2", "node1", 3), st("node3", "node1", 3)}
	if err := formed(ok, make([]error, 3), 3); err != nil {
		t.Errorf("formed cluster: %v", err)
	}
	for name, tc := range map[string]struct {
		sts  []*custosv1.ClusterStatus
		errs []error
	}{
		"silent node":   {ok, []error{nil, errors.New("refused"), nil}},
		"missing voter": {[]*custosv1.ClusterStatus{st("node1", "node1", 3), st("node2", "node1", 2), st("node3", "node1", 3)}, make([]error, 3)},
		"no leader":     {[]*custosv1.ClusterStatus{st("node1", "", 3), st("node2", "", 3), st("node3", "", 3)}, make([]error, 3)},
		"two leaders":   {[]*custosv1.ClusterStatus{st("node1", "node1", 3), st("node2", "node2", 3), st("node3", "node1", 3)}, make([]error, 3)},
	} {
		if err := formed(tc.sts, tc.errs, 3); err == nil {
			t.Errorf("%s: formed", name)
		}
	}
}

func TestParseFlagsNodes(t *testing.T) {
	o, err := parseFlags([]string{"--start"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.nodes, []int{1, 3}) || !slices.Equal(o.concurrency, []int{1, 16, 64, 256}) || !slices.Contains(o.ops, "reencrypt") {
		t.Errorf("defaults: nodes %v, concurrency %v, ops %v", o.nodes, o.concurrency, o.ops)
	}
	if o, err = parseFlags([]string{"--start", "--nodes", "3"}, io.Discard); err != nil || !slices.Equal(o.nodes, []int{3}) {
		t.Errorf("--nodes 3: %v, %v", o.nodes, err)
	}
	for _, args := range [][]string{
		{"--env", "x", "--nodes", "3"},  // --nodes without --start
		{"--start", "--nodes", "10"},    // more than custosd dev starts
		{"--start", "--nodes", "0"},     // no node
		{"--from-json", "r", "--start"}, // measures nothing
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) succeeded", args)
		}
	}
	if _, err := parseFlags([]string{"--from-json", "r.json", "--markdown", "x.md"}, io.Discard); err != nil {
		t.Errorf("--from-json: %v", err)
	}
}

// clusterReport is a report of a 1-node and a 3-node cluster.
func clusterReport() *report {
	r := testReport()
	mk := func(name string, nodes, c int, opsPerSec float64, p99 time.Duration) point {
		h := loadgen.NewHistogram()
		h.Record(p99)
		res := loadgen.Summarize(c, h, time.Second)
		res.OpsPerSec = opsPerSec
		cpu := func(v float64) *float64 { return &v }
		p := point{Name: name, Kind: kindCustos, Nodes: nodes, Result: res, NodeCPUPerOp: cpu(300)}
		for i := range nodes {
			p.PerNode = append(p.PerNode, nodeSample{ID: fmt.Sprintf("node%d", i+1), CPUPerOp: cpu(100), Mem: &memInfo{RSSKiB: 40 << 10, HWMKiB: 50 << 10}})
		}
		if name == "batch-decrypt" {
			p.ItemsPerOp = batchItems
		}
		return p
	}
	for i := range r.Scenarios {
		r.Scenarios[i].Nodes = 1
	}
	r.Clusters = append(r.Clusters, clusterInfo{Nodes: 3, Mode: "start", Binary: "bin/custosd", Leader: "node1", LoadNode: "node1",
		FollowerDecrypt: `node2 answered FailedPrecondition: "not admitted"`})
	r.Scenarios = append(r.Scenarios,
		mk("decrypt", 3, 1, 800, 2*time.Millisecond), mk("decrypt", 3, 64, 21000, 12*time.Millisecond),
		mk("batch-decrypt", 3, 16, 300, 90*time.Millisecond), mk("reencrypt", 3, 64, 5000, 30*time.Millisecond))
	r.ratios()
	return r
}

func TestMarkdownClusters(t *testing.T) {
	r := clusterReport()
	r.Plot = "results.svg"
	md := r.markdownBlock()
	for _, want := range []string{
		"| nodes |",
		"- 3 nodes: `bin/custosd dev --nodes 3`",
		"| Decrypt (data key, CUSTOMER_INITIATED, decision recorded) | 3 | 64 | 21000 | ",
		"| 100 · 100 · 100 |",
		"| 40 · 40 · 40 | 50 · 50 · 50 |",
		"| 21000 ops/s, p99 12.0 ms | met |",
		"| 30000 data keys/s (best, at C=16) | not met |",
		"node2 answered FailedPrecondition",
		"](results.svg)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	// The rows of one operation on 1 and 3 nodes are next to each other.
	i1 := strings.Index(md, "| Decrypt (data key, CUSTOMER_INITIATED, decision recorded) | 1 | 16 |")
	i3 := strings.Index(md, "| Decrypt (data key, CUSTOMER_INITIATED, decision recorded) | 3 | 1 |")
	ir := strings.Index(md, "| ReEncrypt")
	if i1 < 0 || i3 < i1 || ir < i3 {
		t.Errorf("rows out of order (%d, %d, %d):\n%s", i1, i3, ir, md)
	}
	// The 3-node rows divide by the 3-node gRPC ceiling: there is none.
	for _, p := range r.Scenarios {
		if p.Nodes == 3 && p.PctGRPC != nil {
			t.Errorf("%s n=3 c=%d: gRPC ratio %v against another cluster's ceiling", p.Name, p.Concurrency, *p.PctGRPC)
		}
	}
}

func TestPlotSVG(t *testing.T) {
	svg := plotSVG(clusterReport())
	dec := xml.NewDecoder(strings.NewReader(svg))
	lines := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v\n%s", err, svg)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "polyline" {
			lines++
		}
	}
	// 2 panels × (decrypt, batch-decrypt, reencrypt on 3 nodes + decrypt on 1).
	if lines != 8 {
		t.Errorf("%d polylines, want 8", lines)
	}
	if !strings.Contains(svg, "Decrypt — 3 nodes") || !strings.Contains(svg, `stroke-dasharray`) {
		t.Errorf("legend or dashes missing:\n%s", svg)
	}
	if s := plotSVG(&report{}); !strings.Contains(s, "no custos operation") {
		t.Errorf("empty plot: %s", s)
	}
}

func TestLogAxis(t *testing.T) {
	a := newLogAxis(900, 35000)
	if a.lo != 100 || a.hi != 100000 {
		t.Errorf("axis = %+v", a)
	}
	if f := a.frac(1000); math.Abs(f-1.0/3) > 1e-9 {
		t.Errorf("frac(1000) = %v", f)
	}
	if got := a.ticks(); !slices.Equal(got, []float64{100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000}) {
		t.Errorf("ticks = %v", got)
	}
	if got := fmtMillis(0.5) + " " + fmtMillis(20) + " " + fmtMillis(1500); got != "500 µs 20 ms 1.5 s" {
		t.Errorf("fmtMillis: %s", got)
	}
}

func TestJSONRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "results.json")
	r := clusterReport()
	r.Schema = 2
	if err := writeJSON(path, r); err != nil {
		t.Fatal(err)
	}
	back, err := readJSON(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.markdownBlock() != r.markdownBlock() {
		t.Errorf("markdown differs after a JSON round trip:\n%s\n---\n%s", back.markdownBlock(), r.markdownBlock())
	}
	r.Schema = 1
	if err := writeJSON(path, r); err != nil {
		t.Fatal(err)
	}
	if _, err := readJSON(path); err == nil {
		t.Error("schema 1 accepted")
	}
}

// TestStartCluster builds custosd, starts a 3-node cluster the way --start
// does, measures a short decrypt point on it and stops it.
func TestStartCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "custosd")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/custos-kms/custos/cmd/custosd").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ctx := t.Context()
	cl, err := startCluster(ctx, bin, 3, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cl.stop()
		}
	})
	if len(cl.nodes) != 3 || cl.supervisor == 0 || cl.leader == "" || cl.loadNode != "node1" || len(cl.load.Addrs) != 1 || cl.load.Addrs[0] != cl.nodes[0].Addr {
		t.Fatalf("cluster: nodes %+v, supervisor %d, leader %q, load to %q at %v", cl.nodes, cl.supervisor, cl.leader, cl.loadNode, cl.load.Addrs)
	}
	for i, n := range cl.nodes {
		if want := fmt.Sprintf("node%d", i+1); n.ID != want || n.PID <= 0 {
			t.Errorf("node %d = %+v", i, n)
		}
	}

	c, err := custos.Dial(ctx, cl.load)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.CreateKey(ctx, "bench-test", ""); err != nil {
		t.Fatal(err)
	}
	encCtx := map[string]string{"a": "b"}
	dk, err := c.GenerateDataKey(ctx, "bench-test", encCtx)
	if err != nil {
		t.Fatal(err)
	}
	just := custos.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Text: "test"}
	if got := followerDecrypt(ctx, c, cl, dk.Wrapped, encCtx, just); !strings.Contains(got, "node2 released the data key with its own HSM") {
		t.Errorf("follower decrypt: %s", got)
	}
	ops := operations(c, "bench-test", dk, encCtx, just)
	o := options{duration: 300 * time.Millisecond}
	for _, name := range knownOps {
		if name == opEnvelopeStream {
			s := runStream(ctx, c, "bench-test", encCtx, just, 8<<20)
			if s.Error != "" || s.Encrypt.MBps <= 0 || s.RoundTrip.MBps <= 0 || s.CiphertextBytes <= 8<<20 {
				t.Errorf("%s: %+v", name, s)
			}
			if s.Encrypt.HeapInusePeak == 0 || s.RoundTrip.SysPeak == 0 || s.Encrypt.RSSBeforeKiB == 0 || s.Encrypt.HWMKiB == 0 {
				t.Errorf("%s: memory not sampled: %+v %+v", name, s.Encrypt.memPeak, s.RoundTrip.memPeak)
			}
			t.Logf("%s", s.line())
			continue
		}
		p, err := measure(ctx, o, name, kindCustos, 2, cl, ops[name])
		if err != nil {
			t.Fatal(err)
		}
		if p.Ops == 0 || p.Errors > 0 {
			t.Errorf("%s: %d ops, %d errors (%s)", name, p.Ops, p.Errors, p.FirstError)
		}
		if len(p.PerNode) != 3 || p.NodeCPUPerOp == nil {
			t.Fatalf("%s: per node %+v, all nodes %v", name, p.PerNode, p.NodeCPUPerOp)
		}
		for _, s := range p.PerNode {
			if s.CPUPerOp == nil || s.Mem == nil || s.Mem.RSSKiB <= 0 {
				t.Errorf("%s: %s: CPU %v, mem %v", name, s.ID, s.CPUPerOp, s.Mem)
			}
		}
	}

	pids := cl.pids()
	cl.stop()
	stopped = true
	for _, pid := range append(pids, cl.supervisor) {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("pid %d still running after stop", pid)
		}
	}
	if _, err := os.Stat(cl.dir); err == nil {
		t.Errorf("%s left behind", cl.dir)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1GiB": 1 << 30, "64MiB": 64 << 20, "512 KiB": 512 << 10, "3M": 3 << 20, "4096": 4096} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1MiB", "1.5GiB", "x"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) succeeded", in)
		}
	}
}

func TestPattern(t *testing.T) {
	const size = 3*patternBlock + 1000
	var buf strings.Builder
	if n, err := io.CopyBuffer(&buf, &patternReader{size: size}, make([]byte, 7777)); err != nil || n != size {
		t.Fatalf("copy: %d, %v", n, err)
	}
	b := []byte(buf.String())
	if string(b[:patternBlock]) == string(b[patternBlock:2*patternBlock]) {
		t.Error("blocks repeat")
	}
	c := &patternChecker{}
	if _, err := c.Write(b[:1234]); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(b[1234:]); err != nil {
		t.Fatal(err)
	}
	b[2*patternBlock+3] ^= 1
	if _, err := (&patternChecker{}).Write(b); err == nil {
		t.Error("a flipped bit went unnoticed")
	}
}

func TestEnvelopeMarkdown(t *testing.T) {
	r := clusterReport()
	mk := func(name string, kind string, nodes, c int, opsPerSec float64, bytes int64) point {
		h := loadgen.NewHistogram()
		h.Record(time.Millisecond)
		res := loadgen.Summarize(c, h, time.Second)
		res.OpsPerSec = opsPerSec
		return point{Name: name, Kind: kind, Nodes: nodes, Result: res, BytesPerOp: bytes}
	}
	r.Ceilings = append(r.Ceilings, mk(gcmCeilingName, kindCeiling, 0, 1, 20000, gcmCeilingBytes)) // 1310.72 MB/s
	r.Scenarios = append(r.Scenarios, mk(opEnvelope1MiB, kindCustos, 3, 1, 100, envelopeMsgSize))
	phase := func(mbps float64, heapMiB uint64) streamPhase {
		return streamPhase{Elapsed: time.Second, MBps: mbps, memPeak: memPeak{HeapInuseBefore: 4 << 20, HeapInusePeak: (4 + heapMiB) << 20,
			SysPeak: 40 << 20, RSSBeforeKiB: 30 << 10, HWMKiB: (30 + 5) << 10, HWMReset: true}}
	}
	r.Streams = []streamResult{
		{Name: opEnvelopeStream, Nodes: 3, Run: 1, Bytes: 1 << 30, Encrypt: phase(1200, 3), RoundTrip: phase(600, 4), DecryptMBps: 1100},
		{Name: opEnvelopeStream, Nodes: 3, Run: 2, Bytes: 1 << 30, Error: "boom"},
	}
	r.Settings.Ops = knownOps
	r.ratios()
	if s := r.Streams[0]; s.PctEncrypt == nil || math.Abs(*s.PctEncrypt-100*1200/1310.72) > 1e-9 || s.PctDecrypt == nil {
		t.Errorf("stream ratios: %+v", s)
	}
	md := r.markdownBlock()
	for _, want := range []string{
		"### Envelope encryption through clients/go",
		"Seal of a 64 KiB buffer in place, 1311 MB/s",
		"| 3 | 1 | 100 | 105 | 1.00 ms |",
		"| 3 | 1 | 1 GiB | 1200 | 1100 | 600 | 92 % | 84 % | 4.0 | 40.0 | 5.0 | 0.00 · 0.00 |",
		"| 3 | 2 | 1 GiB | failed: boom |",
		"| encrypt 92 %, decrypt 84 % of the ceiling; peak memory +5.0 MiB, 3 nodes | met |",
		"| Go crypto/cipher AES-256-GCM Seal of 64 KiB, one goroutine (in process) | – | 1 | 20000 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if bad := r.failures(); len(bad) != 1 || !strings.Contains(bad[0], "envelope-1gib n=3 run 2: boom") {
		t.Errorf("failures = %v", bad)
	}
}
