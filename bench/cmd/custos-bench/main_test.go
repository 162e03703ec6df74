package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-kms/custos/bench/loadgen"
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
	if o.duration != time.Second || len(o.concurrency) != 2 || o.concurrency[1] != 4 || len(o.ops) != len(knownOps) {
		t.Errorf("short options = %+v", o)
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
		Node: &nodeInfo{Mode: "start", Binary: "bin/custosd"},
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
