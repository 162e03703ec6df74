package main

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
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

// mkPoint is a custos point on a cluster of nodes nodes in load mode load,
// each node spending cpu µs per operation (node1 first; 100 each if none
// given).
func mkPoint(name string, nodes int, load string, c int, opsPerSec float64, p99 time.Duration, cpu ...float64) point {
	h := loadgen.NewHistogram()
	h.Record(p99)
	res := loadgen.Summarize(c, h, time.Second)
	res.OpsPerSec = opsPerSec
	p := point{Name: name, Kind: kindCustos, Nodes: nodes, Load: load, Result: res}
	if nodes > 1 {
		p.Leader = "node1"
	}
	sum := 0.0
	for i := range nodes {
		v := 100.0
		if i < len(cpu) {
			v = cpu[i]
		}
		sum += v
		p.PerNode = append(p.PerNode, nodeSample{ID: fmt.Sprintf("node%d", i+1), CPUPerOp: &v, Mem: &memInfo{RSSKiB: 40 << 10, HWMKiB: 50 << 10}})
	}
	p.NodeCPUPerOp = &sum
	if name == "batch-decrypt" {
		p.ItemsPerOp = batchItems
	}
	return p
}

// clusterReport is a report of a 1-node and a 3-node cluster, the latter
// with the load to node1 and spread.
func clusterReport() *report {
	r := testReport()
	for i := range r.Scenarios {
		r.Scenarios[i].Nodes = 1
	}
	r.Clusters = append(r.Clusters, clusterInfo{Nodes: 3, Mode: "start", Binary: "bin/custosd", Leader: "node1", LoadNode: "node1",
		Loads: []string{loadSpread, loadNode1}, FollowerDecrypt: `node2 released the data key with its own HSM`})
	r.Scenarios = append(r.Scenarios,
		mkPoint("decrypt", 3, loadSpread, 1, 800, 2*time.Millisecond), mkPoint("decrypt", 3, loadSpread, 64, 21000, 12*time.Millisecond),
		mkPoint("decrypt", 3, loadNode1, 64, 25000, 10*time.Millisecond),
		mkPoint("batch-decrypt", 3, loadSpread, 16, 300, 90*time.Millisecond), mkPoint("reencrypt", 3, loadSpread, 64, 5000, 30*time.Millisecond))
	r.ratios()
	return r
}

func TestMarkdownClusters(t *testing.T) {
	r := clusterReport()
	r.Plot = "results.svg"
	md := r.markdownBlock()
	for _, want := range []string{
		"| nodes | load |",
		"- 3 nodes: `bin/custosd dev --nodes 3`",
		"load spread over all 3 nodes (rows *spread*), then load sent to node1 only (rows *node1*)",
		"| Decrypt (data key, CUSTOMER_INITIATED, decision recorded) | 3 | spread | 64 | 21000 | ",
		"| Decrypt (data key, CUSTOMER_INITIATED, decision recorded) | 3 | node1 | 64 | 25000 | ",
		"| Decrypt (data key, CUSTOMER_INITIATED, decision recorded) | 1 | – | 16 | 4000 | ",
		"| 100 · 100 · 100 |",
		"| 40 · 40 · 40 | 50 · 50 · 50 |",
		// The spread point, not the faster node1 one.
		"| 21000 ops/s, p99 12.0 ms (load spread) | met |",
		"| 30000 data keys/s (best, at C=16, load spread) | not met |",
		"node2 released the data key with its own HSM",
		"](results.svg)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	// The rows of one operation on 1 and 3 nodes are next to each other,
	// node1 before spread.
	i1 := strings.Index(md, "| Decrypt (data key, CUSTOMER_INITIATED, decision recorded) | 1 | – | 16 |")
	in := strings.Index(md, "| Decrypt (data key, CUSTOMER_INITIATED, decision recorded) | 3 | node1 | 64 |")
	i3 := strings.Index(md, "| Decrypt (data key, CUSTOMER_INITIATED, decision recorded) | 3 | spread | 1 |")
	ir := strings.Index(md, "| ReEncrypt")
	if i1 < 0 || in < i1 || i3 < in || ir < i3 {
		t.Errorf("rows out of order (%d, %d, %d, %d):\n%s", i1, in, i3, ir, md)
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
	// 2 panels × (decrypt spread and node1, batch-decrypt, reencrypt on 3
	// nodes + decrypt on 1).
	if lines != 10 {
		t.Errorf("%d polylines, want 10", lines)
	}
	for _, want := range []string{"Decrypt — 3 nodes, load spread", "Decrypt — 3 nodes, load to node1", `stroke-dasharray="7,4"`, `stroke-dasharray="2,3"`} {
		if !strings.Contains(svg, want) {
			t.Errorf("plot lacks %q:\n%s", want, svg)
		}
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

	// Spread: one client per node, worker w on node (w mod 3)+1; every
	// node serves calls.
	var targets []custos.Config
	for i := range cl.nodes {
		targets = append(targets, cl.nodeConfig(i))
		if got := targets[i].Addrs; len(got) != 1 || got[0] != cl.nodes[i].Addr {
			t.Errorf("node %d config addresses %v", i+1, got)
		}
	}
	clients, err := dialEach(ctx, targets)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(clients)
	var served [3]atomic.Int64
	var spread []loadgen.Op
	for i, x := range clients {
		dec := operations(x, "bench-test", dk, encCtx, just)["decrypt"]
		spread = append(spread, func(ctx context.Context) error { served[i].Add(1); return dec(ctx) })
	}
	p, err := measure(ctx, o, "decrypt", kindCustos, 3, cl, spread...)
	if err != nil {
		t.Fatal(err)
	}
	if p.Ops == 0 || p.Errors > 0 || len(p.PerNode) != 3 || p.NodeCPUPerOp == nil {
		t.Fatalf("spread decrypt: %d ops, %d errors (%s), per node %+v", p.Ops, p.Errors, p.FirstError, p.PerNode)
	}
	for i := range served {
		if served[i].Load() == 0 {
			t.Errorf("spread decrypt: node%d served no call", i+1)
		}
	}
	t.Logf("spread decrypt: calls per node %d · %d · %d; %s", served[0].Load(), served[1].Load(), served[2].Load(), p.line())

	// drive in both load modes, as runCluster does after startCluster.
	rep := &report{Machine: machine{NumCPU: runtime.NumCPU()}}
	do := options{duration: 300 * time.Millisecond, concurrency: []int{3}, ops: []string{"decrypt", "batch-decrypt"},
		load: []string{loadSpread, loadNode1}, grpcCeiling: true}
	info := clusterInfo{Nodes: 3, Mode: "start", Leader: cl.leader, LoadNode: cl.loadNode, Processes: cl.nodes}
	if err := drive(ctx, do, rep, 3, cl, cl.load, targets, info, t.Logf); err != nil {
		t.Fatal(err)
	}
	// A single-node figure to project against (made up: this test starts
	// no single node).
	rep.Scenarios = append(rep.Scenarios, mkPoint("decrypt", 1, "", 3, 1000, time.Millisecond, 500))
	rep.ratios()
	if bad := rep.failures(); len(bad) > 0 {
		t.Errorf("failures: %v", bad)
	}
	if len(rep.Clusters) != 1 || !slices.Equal(rep.Clusters[0].Loads, []string{loadSpread, loadNode1}) {
		t.Errorf("clusters %+v", rep.Clusters)
	}
	modes := map[string]int{}
	for _, p := range append(slices.Clone(rep.Ceilings), rep.Scenarios...) {
		if p.Nodes == 3 {
			modes[p.Name+" "+p.Load]++
			if p.Leader == "" {
				t.Errorf("%s: no leader recorded", p.Name)
			}
		}
	}
	for _, k := range []string{"grpc-health spread", "grpc-health node1", "decrypt spread", "decrypt node1", "batch-decrypt spread", "batch-decrypt node1"} {
		if modes[k] != 1 {
			t.Errorf("%d points %q, want 1 (all: %v)", modes[k], k, modes)
		}
	}
	var spreadDecrypt *costRow
	for i, c := range rep.CostModel {
		if len(c.PerNode) != 3 || c.ProjectedRate <= 0 || c.BoundBy == "" || c.Cores != runtime.NumCPU() {
			t.Errorf("cost row %+v", c)
		}
		if c.Name == "decrypt" && c.Load == loadSpread {
			spreadDecrypt = &rep.CostModel[i]
		}
	}
	if len(rep.CostModel) != 4 || spreadDecrypt == nil || spreadDecrypt.SumOverSingle == nil || spreadDecrypt.ProjectedOverSingle == nil {
		t.Fatalf("cost model %+v", rep.CostModel)
	}
	t.Logf("cost model, spread decrypt: %s µs/op (sum %.0f), projected %.0f ops/s on %d machines, bound by %s",
		spreadDecrypt.perNodeCPU(), spreadDecrypt.SumCPUPerOp, spreadDecrypt.ProjectedRate, spreadDecrypt.Nodes, spreadDecrypt.BoundBy)
	if md := rep.markdownBlock(); !strings.Contains(md, "### Cost model") || !strings.Contains(md, "load spread: summed node CPU per Decrypt") {
		t.Errorf("markdown lacks the cost model:\n%s", md)
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
	env := mk(opEnvelope1MiB, kindCustos, 3, 1, 100, envelopeMsgSize)
	env.Load = loadSpread
	r.Scenarios = append(r.Scenarios, env)
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
		"| 3 (load spread) | 1 | 100 | 105 | 1.00 ms |",
		"| 3 | 1 | 1 GiB | 1200 | 1100 | 600 | 92 % | 84 % | 4.0 | 40.0 | 5.0 | 0.00 · 0.00 |",
		"| 3 | 2 | 1 GiB | failed: boom |",
		"| encrypt 92 %, decrypt 84 % of the ceiling; peak memory +5.0 MiB, 3 nodes | met |",
		"| Go crypto/cipher AES-256-GCM Seal of 64 KiB, one goroutine (in process) | – | – | 1 | 20000 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if bad := r.failures(); len(bad) != 1 || !strings.Contains(bad[0], "envelope-1gib n=3 run 2: boom") {
		t.Errorf("failures = %v", bad)
	}
}

func TestProjectThroughput(t *testing.T) {
	for _, tc := range []struct {
		cores int
		cpu   []float64
		ops   float64
		bound int
	}{
		// The leader at 133 µs/op bounds 2 cores to 2e6/133 ops/s.
		{2, []float64{133, 49, 49}, 2e6 / 133, 0},
		{4, []float64{50, 200, 100}, 4e6 / 200, 1},
		{2, []float64{100}, 20000, 0},
		// A node with no CPU measured bounds nothing.
		{2, []float64{0, 50, 40}, 2e6 / 50, 1},
		{2, []float64{0, 0}, 0, -1},
		{2, nil, 0, -1},
		{0, []float64{100}, 0, -1},
	} {
		ops, bound := projectThroughput(tc.cores, tc.cpu)
		if math.Abs(ops-tc.ops) > 1e-9 || bound != tc.bound {
			t.Errorf("projectThroughput(%d, %v) = %v, %d; want %v, %d", tc.cores, tc.cpu, ops, bound, tc.ops, tc.bound)
		}
	}
}

// costReport has 1- and 3-node Decrypt and BatchDecrypt points with the CPU
// figures of the 3-node model before load spreading (133 · 49 · 49 µs/op
// against 118), on 2 cores.
func costReport() *report {
	r := &report{Date: "2026-01-01T00:00:00Z", Machine: machine{NumCPU: 2}, Settings: settings{Ops: []string{"decrypt", "batch-decrypt"}}}
	sup := 20.0
	dec3 := mkPoint("decrypt", 3, loadSpread, 64, 6000, 20*time.Millisecond, 133, 49, 49)
	dec3.SupervisorCPUPerOp = &sup // not a node: counted nowhere
	noCPU := mkPoint("decrypt", 3, loadSpread, 16, 3000, 10*time.Millisecond, 300, 140, 140)
	noCPU.PerNode[2].CPUPerOp = nil // node3 unreadable: no row
	r.Scenarios = []point{
		mkPoint("decrypt", 1, "", 64, 8947, 14*time.Millisecond, 118),
		dec3, noCPU,
		mkPoint("decrypt", 3, loadSpread, 256, 11000, 40*time.Millisecond, 75, 20, 20), // no 1-node point at C=256
		mkPoint("decrypt", 3, loadNode1, 64, 5700, 20*time.Millisecond, 133, 49, 49),
		mkPoint("batch-decrypt", 1, "", 64, 373.33, 170*time.Millisecond, 3664),
		mkPoint("batch-decrypt", 3, loadSpread, 64, 250, 250*time.Millisecond, 2000, 1500, 1500),
	}
	r.ratios()
	return r
}

func TestCostModel(t *testing.T) {
	r := costReport()
	if len(r.CostModel) != 4 {
		t.Fatalf("%d rows, want 4: %+v", len(r.CostModel), r.CostModel)
	}
	near := func(v *float64, want float64) bool { return v != nil && math.Abs(*v-want) < 1e-6 }
	// Rows in sortedScenarios order: decrypt node1 64, spread 64, spread
	// 256; batch-decrypt spread 64.
	n1, dec, dec256, batch := r.CostModel[0], r.CostModel[1], r.CostModel[2], r.CostModel[3]
	if n1.Load != loadNode1 || dec.Load != loadSpread || dec.Concurrency != 64 || dec256.Concurrency != 256 || batch.Name != "batch-decrypt" {
		t.Fatalf("rows %+v", r.CostModel)
	}
	if dec.SumCPUPerOp != 231 || !near(dec.SingleCPUPerOp, 118) || !near(dec.SumOverSingle, 231.0/118) {
		t.Errorf("decrypt sum %v, single %v, ratio %v", dec.SumCPUPerOp, dec.SingleCPUPerOp, dec.SumOverSingle)
	}
	if math.Abs(dec.ProjectedOpsPerSec-2e6/133) > 1e-6 || dec.ProjectedRate != dec.ProjectedOpsPerSec || dec.BoundBy != "node1" ||
		!near(dec.SingleRate, 8947) || !near(dec.ProjectedOverSingle, 2e6/133/8947) || dec.MeasuredRate != 6000 {
		t.Errorf("decrypt projection %+v", dec)
	}
	if dec.SupervisorCPUPerOp == nil || *dec.SupervisorCPUPerOp != 20 {
		t.Errorf("supervisor %v", dec.SupervisorCPUPerOp)
	}
	if !near(dec.SingleProjectedRate, 2e6/118) || !near(dec.ProjectedOverSingleProjected, 118.0/133) ||
		!near(batch.SingleProjectedRate, 2e6/3664*100) || !near(batch.ProjectedOverSingleProjected, 100000/(2e6/3664*100)) {
		t.Errorf("like-for-like projections: decrypt %v %v, batch %v %v", dec.SingleProjectedRate, dec.ProjectedOverSingleProjected,
			batch.SingleProjectedRate, batch.ProjectedOverSingleProjected)
	}
	if dec256.SingleCPUPerOp != nil || dec256.SumOverSingle != nil || dec256.ProjectedOverSingle != nil || math.Abs(dec256.ProjectedOpsPerSec-2e6/75) > 1e-6 {
		t.Errorf("row without a 1-node point %+v", dec256)
	}
	// BatchDecrypt: CPU per call, rates in data keys.
	if batch.SumCPUPerOp != 5000 || !near(batch.SumOverSingle, 5000.0/3664) ||
		math.Abs(batch.ProjectedOpsPerSec-1000) > 1e-6 || batch.ProjectedRate != 100000 || !near(batch.SingleRate, 37333) ||
		!near(batch.ProjectedOverSingle, 100000/37333.0) {
		t.Errorf("batch row %+v", batch)
	}

	md := r.markdownBlock()
	for _, want := range []string{
		"### Cost model: CPU per operation on each node, projected to one machine per node",
		"(2 cores each)",
		"| Decrypt (data key, CUSTOMER_INITIATED, decision recorded) | 3 | spread | 64 | 133* · 49.0 · 49.0 | 231 | 118 | 1.96× | 20.0 | 6000 | 15038 (node1) | 8947 | 1.68× | 16949 | 0.89× |",
		"| 3 | spread | 256 | 75.0* · 20.0 · 20.0 | 115 | – | – | – | 11000 | 26667 (node1) | – | – | – | – |",
		"| 3 nodes, load spread: summed node CPU per Decrypt ≤ 1.5× one node's | 231 µs (133* · 49.0 · 49.0) vs 118 µs at C=64: 1.96× | not met |",
		"| 3 nodes, load spread: Decrypt rate projected to 3 machines of 2 cores ≥ 2× one node's measured | 15038 ops/s (bound by node1) vs 8947 ops/s at C=64: 1.68× (one node on a machine of its own: 16949 ops/s, 0.89×) | not met |",
		"| 3 nodes, load spread: summed node CPU per BatchDecrypt ≤ 1.5× one node's | 5000 µs (2000* · 1500 · 1500) vs 3664 µs at C=64: 1.36× | met |",
		"| 3 nodes, load spread: BatchDecrypt rate projected to 3 machines of 2 cores ≥ 2× one node's measured | 100000 data keys/s (bound by node1) vs 37333 data keys/s at C=64: 2.68× (one node on a machine of its own: 54585 data keys/s, 1.83×) | met |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}

	// The JSON has the model; a report from before it gets it derived.
	path := filepath.Join(t.TempDir(), "r.json")
	r.Schema = 2
	if err := writeJSON(path, r); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	for _, want := range []string{`"cost_model": [`, `"projected_rate": 15037.59`, `"sum_over_single_cpu": 1.957`, `"bound_by": "node1"`, `"load": "spread"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON lacks %s", want)
		}
	}
	r.CostModel = nil
	if err := writeJSON(path, r); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "r.md")
	if err := run(t.Context(), []string{"--from-json", path, "--markdown", out}, io.Discard); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); !strings.Contains(string(b), "| 231 | 118 | 1.96× |") {
		t.Errorf("--from-json without a cost model:\n%s", b)
	}
}

func TestCostGoalRow(t *testing.T) {
	r := costReport()
	if c := r.costGoalRow("decrypt"); c == nil || c.Concurrency != 64 || c.Load != loadSpread {
		t.Errorf("decrypt goal row %+v", c)
	}
	// Without C=64, the highest C with a 1-node figure.
	var keep []point
	for _, p := range r.Scenarios {
		if p.Name != "decrypt" || p.Concurrency != 64 {
			keep = append(keep, p)
		}
	}
	keep = append(keep, mkPoint("decrypt", 1, "", 256, 17000, 30*time.Millisecond, 63), mkPoint("decrypt", 1, "", 16, 4000, 8*time.Millisecond, 225),
		mkPoint("decrypt", 3, loadSpread, 1, 400, 3*time.Millisecond, 1300, 600, 600))
	keep = append(keep, mkPoint("decrypt", 1, "", 1, 800, 2*time.Millisecond, 1000))
	r.Scenarios = keep
	r.ratios()
	if c := r.costGoalRow("decrypt"); c == nil || c.Concurrency != 256 {
		t.Errorf("decrypt goal row without C=64: %+v", c)
	}
	if c := r.costGoalRow("reencrypt"); c != nil {
		t.Errorf("reencrypt goal row %+v", c)
	}
}

func TestParseFlagsLoad(t *testing.T) {
	o, err := parseFlags([]string{"--start"}, io.Discard)
	if err != nil || !slices.Equal(o.load, []string{loadSpread}) {
		t.Errorf("default load %v, %v", o.load, err)
	}
	o, err = parseFlags([]string{"--start", "--load", "node1, spread,node1"}, io.Discard)
	if err != nil || !slices.Equal(o.load, []string{loadNode1, loadSpread}) {
		t.Errorf("--load node1,spread: %v, %v", o.load, err)
	}
	for _, l := range []string{"", "leader", "spread,x"} {
		if _, err := parseFlags([]string{"--start", "--load", l}, io.Discard); err == nil {
			t.Errorf("--load %q accepted", l)
		}
	}
}
