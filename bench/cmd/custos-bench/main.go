// Command custos-bench drives a running custos node over gRPC with mutual
// TLS from a separate process and measures, in the same run, the ceilings
// it is bounded by.
//
//	custos-bench [--env FILE | --start [--custosd PATH]] [--duration 10s]
//	    [--warmup 1s] [--concurrency 1,16,64] [--ops gdk,decrypt]
//	    [--ceiling-concurrency 1,16] [--json OUT] [--markdown OUT] [--short]
//
// With --start it runs `custosd dev --data-dir <tmp> --listen 127.0.0.1:0`
// as a child process (the binary is not built here: `make bench` builds
// bin/custosd first), reads <tmp>/client.env, samples the child's CPU time
// and resident memory around every measured window, and stops it at the
// end. With --env it uses the client.env of a node that is already running
// (the node's CPU and memory are then not measured).
//
// Operations: gdk (GenerateDataKey under one key) and decrypt (one data key,
// generated once, decrypted repeatedly with justification
// CUSTOMER_INITIATED: each call commits a decision record through Raft
// before the key is released). Ceilings: raw SoftHSM AES-256-GCM decrypt of
// a 32-byte data key through hsm/pkcs11 on a private token in this process,
// and a gRPC health check (the node's full gRPC+mTLS stack, no work) at each
// load concurrency.
//
// The exit status is 1 when any measured operation failed.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/custos-kms/custos/bench/ceiling"
	"github.com/custos-kms/custos/bench/loadgen"
	custos "github.com/custos-kms/custos/clients/go"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "custos-bench: %v\n", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

// options are the parsed flags.
type options struct {
	envFile     string
	start       bool
	custosd     string
	duration    time.Duration
	warmup      time.Duration
	concurrency []int
	ceilingConc []int
	ops         []string
	grpcCeiling bool
	raftCeiling bool
	jsonOut     string
	mdOut       string
	short       bool
	startWait   time.Duration
}

// Operations custos-bench knows.
var knownOps = []string{"gdk", "decrypt", "batch-decrypt"}

// batchItems is the number of wrapped data keys in one batch-decrypt call.
const batchItems = 100

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fl := flag.NewFlagSet("custos-bench", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.StringVar(&o.envFile, "env", "", "client.env of a running node (CUSTOS_ADDR, CUSTOS_CA, CUSTOS_CERT, CUSTOS_KEY)")
	fl.BoolVar(&o.start, "start", false, "start a custosd dev node as a child process (see --custosd)")
	fl.StringVar(&o.custosd, "custosd", "bin/custosd", "custosd binary run by --start")
	fl.DurationVar(&o.duration, "duration", 10*time.Second, "measured time per point")
	fl.DurationVar(&o.warmup, "warmup", time.Second, "untimed warm-up before each point")
	conc := fl.String("concurrency", "1,16,64", "comma-separated concurrencies of the custos operations")
	ceil := fl.String("ceiling-concurrency", "1,16", "comma-separated concurrencies of the SoftHSM ceiling")
	ops := fl.String("ops", strings.Join(knownOps, ","), "comma-separated operations: "+strings.Join(knownOps, ", "))
	fl.BoolVar(&o.grpcCeiling, "grpc-ceiling", true, "measure a gRPC health check against the node at each concurrency")
	fl.BoolVar(&o.raftCeiling, "raft-ceiling", true, "measure a raw raft.Node.Apply of small commands (single node, bbolt log store, no-op state machine, in this process) at each concurrency")
	fl.StringVar(&o.jsonOut, "json", "", "write the results as JSON to this file")
	fl.StringVar(&o.mdOut, "markdown", "", "write the results as Markdown to this file (the part between the custos-bench markers, if the file has them)")
	fl.BoolVar(&o.short, "short", false, "smoke run: 1s per point, 200ms warm-up, concurrency 1,4 (flags given explicitly win)")
	fl.DurationVar(&o.startWait, "start-timeout", 60*time.Second, "how long --start waits for the node")
	fl.Usage = func() {
		fmt.Fprint(fl.Output(), "Usage: custos-bench [--env FILE | --start] [flags]\n\nFlags:\n")
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, errUsage
	}
	if fl.NArg() > 0 {
		fmt.Fprintf(stderr, "custos-bench: unexpected argument %q\n", fl.Arg(0))
		return o, errUsage
	}
	set := map[string]bool{}
	fl.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.short {
		if !set["duration"] {
			o.duration = time.Second
		}
		if !set["warmup"] {
			o.warmup = 200 * time.Millisecond
		}
		if !set["concurrency"] {
			*conc = "1,4"
		}
		if !set["ceiling-concurrency"] {
			*ceil = "1,4"
		}
	}
	var err error
	if o.concurrency, err = parseInts(*conc); err != nil {
		return o, fmt.Errorf("--concurrency: %w", err)
	}
	if o.ceilingConc, err = parseInts(*ceil); err != nil {
		return o, fmt.Errorf("--ceiling-concurrency: %w", err)
	}
	for op := range strings.SplitSeq(*ops, ",") {
		op = strings.TrimSpace(op)
		if op == "" {
			continue
		}
		if !slices.Contains(knownOps, op) {
			return o, fmt.Errorf("--ops: unknown operation %q (want %s)", op, strings.Join(knownOps, ", "))
		}
		o.ops = append(o.ops, op)
	}
	if len(o.ops) == 0 {
		return o, errors.New("--ops: no operation")
	}
	if o.start == (o.envFile != "") {
		fmt.Fprintln(stderr, "custos-bench: give exactly one of --start and --env FILE")
		return o, errUsage
	}
	if o.duration <= 0 || o.warmup < 0 {
		return o, errors.New("--duration must be > 0 and --warmup >= 0")
	}
	return o, nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad concurrency %q", f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("empty list")
	}
	return out, nil
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, "custos-bench: "+format+"\n", a...) }

	rep := &report{
		Schema:  1,
		Date:    time.Now().UTC().Format(time.RFC3339),
		Command: commandLine(os.Args),
		Machine: machineInfo(),
		Settings: settings{
			Duration: o.duration.String(), Warmup: o.warmup.String(),
			Concurrency: o.concurrency, CeilingConcurrency: o.ceilingConc,
			Ops: o.ops, Short: o.short,
		},
	}

	// 1. The SoftHSM ceiling, in this process, before anything else opens
	// the PKCS#11 module here.
	logf("SoftHSM ceiling: private token, AES-256-GCM decrypt of 32 bytes")
	hc, err := openHSMCeiling(ctx)
	if err != nil {
		return fmt.Errorf("SoftHSM ceiling: %w", err)
	}
	for _, c := range o.ceilingConc {
		p, err := measure(ctx, o, "softhsm-gcm-decrypt", kindCeiling, c, nil, hc.decrypt)
		if err != nil {
			hc.close()
			return err
		}
		rep.Ceilings = append(rep.Ceilings, p)
		logf("  %s", p.line())
	}
	hc.close()

	// 1b. The Raft ceiling, in this process, before the node starts.
	if o.raftCeiling {
		logf("Raft ceiling: single node, bbolt log store, Apply of small commands, no-op state machine")
		rc, err := ceiling.OpenRaftApply(ctx, "")
		if err != nil {
			return fmt.Errorf("raft ceiling: %w", err)
		}
		for _, c := range o.concurrency {
			p, err := measure(ctx, o, "raft-apply", kindCeiling, c, nil, rc.Apply)
			if err != nil {
				rc.Close()
				return err
			}
			rep.Ceilings = append(rep.Ceilings, p)
			logf("  %s", p.line())
		}
		rc.Close()
	}

	// 2. The node.
	var (
		cfg custos.Config
		ch  *child
	)
	if o.start {
		logf("starting %s dev", o.custosd)
		ch, cfg, err = startChild(ctx, o.custosd, o.startWait)
		if err != nil {
			return err
		}
		defer ch.stop()
		rep.Node = &nodeInfo{Mode: "start", Binary: o.custosd, PID: ch.pid(), Addr: strings.Join(cfg.Addrs, ",")}
		logf("custosd pid %d at %s", ch.pid(), rep.Node.Addr)
	} else {
		if cfg, err = configFromEnvFile(o.envFile); err != nil {
			return err
		}
		rep.Node = &nodeInfo{Mode: "env", EnvFile: o.envFile, Addr: strings.Join(cfg.Addrs, ",")}
	}
	cl, err := custos.Dial(ctx, cfg)
	if err != nil {
		return err
	}
	defer cl.Close()

	// 3. Set-up: one key, one data key for the decrypt scenario.
	keyName := "bench-" + randHex(4)
	if _, err := cl.CreateKey(ctx, keyName, "custos-bench"); err != nil {
		return err
	}
	encCtx := map[string]string{"bench": "custos-bench"}
	dk, err := cl.GenerateDataKey(ctx, keyName, encCtx)
	if err != nil {
		return err
	}
	just := custos.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Text: "custos-bench load test"}
	opFuncs := map[string]loadgen.Op{
		"gdk": func(ctx context.Context) error {
			k, err := cl.GenerateDataKey(ctx, keyName, encCtx)
			if err != nil {
				return err
			}
			if len(k.Plaintext) != 32 || len(k.Wrapped) == 0 {
				return fmt.Errorf("data key of %d bytes, wrapped %d bytes", len(k.Plaintext), len(k.Wrapped))
			}
			return nil
		},
		"decrypt": func(ctx context.Context) error {
			pt, err := cl.DecryptDataKey(ctx, dk.Wrapped, encCtx, just)
			if err != nil {
				return err
			}
			if !bytes.Equal(pt, dk.Plaintext) {
				return errors.New("decrypted data key differs")
			}
			return nil
		},
		"batch-decrypt": func(ctx context.Context) error {
			items := make([]custos.DecryptItem, batchItems)
			for i := range items {
				items[i] = custos.DecryptItem{Ciphertext: dk.Wrapped, EncryptionContext: encCtx, Justification: just}
			}
			res, err := cl.BatchDecrypt(ctx, items)
			if err != nil {
				return err
			}
			for i, r := range res {
				if r.Err != nil {
					return fmt.Errorf("item %d: %w", i, r.Err)
				}
				if !bytes.Equal(r.Plaintext, dk.Plaintext) {
					return fmt.Errorf("item %d: decrypted data key differs", i)
				}
			}
			return nil
		},
	}

	// 4. The gRPC ceiling, against the node.
	if o.grpcCeiling {
		hs := healthpb.NewHealthClient(cl.Conn())
		op := func(ctx context.Context) error {
			r, err := hs.Check(ctx, &healthpb.HealthCheckRequest{})
			if err != nil {
				return err
			}
			if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				return fmt.Errorf("health: %v", r.GetStatus())
			}
			return nil
		}
		for _, c := range o.concurrency {
			p, err := measure(ctx, o, "grpc-health", kindCeiling, c, ch, op)
			if err != nil {
				return err
			}
			rep.Ceilings = append(rep.Ceilings, p)
			logf("  %s", p.line())
		}
	}

	// 5. custos.
	for _, name := range o.ops {
		for _, c := range o.concurrency {
			p, err := measure(ctx, o, name, kindCustos, c, ch, opFuncs[name])
			if err != nil {
				return err
			}
			if name == "batch-decrypt" {
				p.ItemsPerOp = batchItems
			}
			rep.Scenarios = append(rep.Scenarios, p)
			logf("  %s", p.line())
		}
	}
	rep.ratios()
	if ch != nil {
		if m, err := procMem(ch.pid()); err == nil {
			rep.Node.FinalMem = &m
		}
	}

	if o.jsonOut != "" {
		if err := writeJSON(o.jsonOut, rep); err != nil {
			return err
		}
		logf("wrote %s", o.jsonOut)
	}
	if o.mdOut != "" {
		if err := writeMarkdown(o.mdOut, rep); err != nil {
			return err
		}
		logf("wrote %s", o.mdOut)
	}
	if o.jsonOut == "" && o.mdOut == "" {
		fmt.Fprint(os.Stdout, rep.markdownBlock())
	}
	if bad := rep.failures(); len(bad) > 0 {
		return fmt.Errorf("failed operations: %s", strings.Join(bad, "; "))
	}
	return nil
}

// measure runs one point and samples the node's CPU time and memory (when
// ch is not nil) and this process's CPU time around its measured window.
func measure(ctx context.Context, o options, name, kind string, conc int, ch *child, op loadgen.Op) (point, error) {
	var (
		node0, node1 time.Duration
		self0, self1 time.Duration
		nodeErr      error
	)
	cfg := loadgen.Config{
		Concurrency: conc,
		Duration:    o.duration,
		Warmup:      o.warmup,
		OnStart: func() {
			if ch != nil {
				node0, nodeErr = procCPU(ch.pid())
			}
			self0 = selfCPU()
		},
		OnStop: func() {
			self1 = selfCPU()
			if ch != nil && nodeErr == nil {
				node1, nodeErr = procCPU(ch.pid())
			}
		},
	}
	res, err := loadgen.Run(ctx, cfg, op)
	if err != nil {
		return point{}, fmt.Errorf("%s at concurrency %d: %w", name, conc, err)
	}
	p := point{Name: name, Kind: kind, Result: res}
	if res.Ops > 0 {
		p.BenchCPUPerOp = float64((self1 - self0).Microseconds()) / float64(res.Ops)
		if ch != nil && nodeErr == nil {
			v := float64((node1 - node0).Microseconds()) / float64(res.Ops)
			p.NodeCPUPerOp = &v
		}
	}
	if ch != nil {
		if m, err := procMem(ch.pid()); err == nil {
			p.NodeMem = &m
		}
	}
	return p, nil
}
