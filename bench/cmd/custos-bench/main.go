// Command custos-bench drives custos clusters over gRPC with mutual TLS
// from a separate process and measures, in the same run, the ceilings they
// are bounded by.
//
//	custos-bench [--env FILE | --start [--custosd PATH] [--nodes 1,3]]
//	    [--duration 10s] [--warmup 1s] [--concurrency 1,16,64,256]
//	    [--ops gdk,decrypt,reencrypt,batch-decrypt]
//	    [--ceiling-concurrency 1,16] [--json OUT] [--markdown OUT]
//	    [--plot OUT.svg] [--short]
//
// With --start it starts, for each size in --nodes, a fresh cluster as
// child processes in a temporary directory (the binary is not built here:
// `make bench` builds bin/custosd first): `custosd dev --listen
// 127.0.0.1:0` for one node, `custosd dev --nodes N --base-port P` (N
// `custosd serve` processes, each with its own SoftHSM token, Raft over
// mTLS; P a free range of loopback ports) for more. It waits until every
// node answers, agrees on the leader and counts N voters, sends the load
// to the node that holds the domain key (only the initialising node does:
// HSM-to-HSM admission is not built, so the others refuse key crypto),
// samples every node process's CPU time and resident memory around every
// measured window (/proc/PID/stat and status), and stops the cluster
// before starting the next. With --env it uses the client.env of a cluster
// that is already running (its CPU and memory are then not measured).
//
// Operations: gdk (GenerateDataKey under one key); decrypt (one data key,
// generated once, decrypted repeatedly with justification
// CUSTOMER_INITIATED: the key policy is evaluated and each call commits
// its decision record through Raft before the key is released); reencrypt
// (the same data key rewrapped under the key's primary version, a decision
// like decrypt); batch-decrypt (100 copies of it in one BatchDecrypt, each
// its own decision). Ceilings: raw SoftHSM AES-256-GCM decrypt of a 32-byte
// data key through hsm/pkcs11 on a private token in this process, a raw
// Raft apply (single node, in this process) and a gRPC health check (the
// node's full gRPC+mTLS stack, no work) against each cluster at each load
// concurrency.
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
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

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
	nodes       []int
	concurrency []int
	ceilingConc []int
	ops         []string
	grpcCeiling bool
	raftCeiling bool
	jsonOut     string
	mdOut       string
	plotOut     string
	short       bool
	startWait   time.Duration
	fromJSON    string
}

// Operations custos-bench knows.
var knownOps = []string{"gdk", "decrypt", "reencrypt", "batch-decrypt"}

// maxNodes is the largest cluster custosd dev --nodes starts.
const maxNodes = 9

// batchItems is the number of wrapped data keys in one batch-decrypt call.
const batchItems = 100

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fl := flag.NewFlagSet("custos-bench", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.StringVar(&o.envFile, "env", "", "client.env of a running cluster (CUSTOS_ADDR, CUSTOS_CA, CUSTOS_CERT, CUSTOS_KEY); its CPU and memory are not measured")
	fl.BoolVar(&o.start, "start", false, "start each cluster of --nodes as child processes of custosd dev (see --custosd)")
	fl.StringVar(&o.custosd, "custosd", "bin/custosd", "custosd binary run by --start")
	fl.DurationVar(&o.duration, "duration", 10*time.Second, "measured time per point")
	fl.DurationVar(&o.warmup, "warmup", time.Second, "untimed warm-up before each point")
	nodes := fl.String("nodes", "1,3", "with --start: comma-separated cluster sizes, each started in turn (1: custosd dev; N > 1: custosd dev --nodes N)")
	conc := fl.String("concurrency", "1,16,64,256", "comma-separated concurrencies of the custos operations")
	ceil := fl.String("ceiling-concurrency", "1,16", "comma-separated concurrencies of the SoftHSM ceiling")
	ops := fl.String("ops", strings.Join(knownOps, ","), "comma-separated operations: "+strings.Join(knownOps, ", "))
	fl.BoolVar(&o.grpcCeiling, "grpc-ceiling", true, "measure a gRPC health check against the node the load goes to, at each concurrency")
	fl.BoolVar(&o.raftCeiling, "raft-ceiling", true, "measure a raw raft.Node.Apply of small commands (single node, bbolt log store, no-op state machine, in this process) at each concurrency")
	fl.StringVar(&o.jsonOut, "json", "", "write the results as JSON to this file")
	fl.StringVar(&o.plotOut, "plot", "", "write an SVG plot of ops/s and p99 against concurrency to this file (linked from --markdown)")
	fl.StringVar(&o.mdOut, "markdown", "", "write the results as Markdown to this file (the part between the custos-bench markers, if the file has them)")
	fl.BoolVar(&o.short, "short", false, "smoke run: 1s per point, 200ms warm-up, concurrency 1,16, ceiling concurrency 1,4 (flags given explicitly win)")
	fl.StringVar(&o.fromJSON, "from-json", "", "measure nothing: read the results of an earlier run from this JSON file and write --markdown and --plot from them")
	fl.DurationVar(&o.startWait, "start-timeout", 60*time.Second, "how long --start waits for each cluster to form")
	fl.Usage = func() {
		fmt.Fprint(fl.Output(), "Usage: custos-bench [--env FILE | --start [--nodes 1,3] | --from-json FILE] [flags]\n\nFlags:\n")
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
			*conc = "1,16"
		}
		if !set["ceiling-concurrency"] {
			*ceil = "1,4"
		}
	}
	var err error
	if o.concurrency, err = parseInts(*conc); err != nil {
		return o, fmt.Errorf("--concurrency: %w", err)
	}
	if o.nodes, err = parseInts(*nodes); err != nil {
		return o, fmt.Errorf("--nodes: %w", err)
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
	if o.fromJSON != "" {
		if o.start || o.envFile != "" {
			fmt.Fprintln(stderr, "custos-bench: --from-json measures nothing: give neither --start nor --env")
			return o, errUsage
		}
		return o, nil
	}
	if o.start == (o.envFile != "") {
		fmt.Fprintln(stderr, "custos-bench: give exactly one of --start and --env FILE")
		return o, errUsage
	}
	if set["nodes"] && !o.start {
		fmt.Fprintln(stderr, "custos-bench: --nodes needs --start")
		return o, errUsage
	}
	for _, n := range o.nodes {
		if n > maxNodes {
			return o, fmt.Errorf("--nodes: at most %d nodes (custosd dev --nodes)", maxNodes)
		}
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
			return nil, fmt.Errorf("bad number %q", f)
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
	if o.fromJSON != "" {
		rep, err := readJSON(o.fromJSON)
		if err != nil {
			return err
		}
		return writeOutputs(o, rep, logf)
	}

	rep := &report{
		Schema:  2,
		Date:    time.Now().UTC().Format(time.RFC3339),
		Command: commandLine(os.Args),
		Machine: machineInfo(),
		Settings: settings{
			Duration: o.duration.String(), Warmup: o.warmup.String(),
			Concurrency: o.concurrency, CeilingConcurrency: o.ceilingConc,
			Ops: o.ops, Short: o.short,
		},
	}
	if o.start {
		rep.Settings.Nodes = o.nodes
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

	// 1b. The Raft ceiling, in this process, before the nodes start.
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

	// 2. One cluster after the other.
	if o.start {
		for _, n := range o.nodes {
			if err := runCluster(ctx, o, rep, n, logf); err != nil {
				return err
			}
		}
	} else if err := runCluster(ctx, o, rep, 0, logf); err != nil {
		return err
	}
	rep.ratios()

	if o.jsonOut != "" {
		if err := writeJSON(o.jsonOut, rep); err != nil {
			return err
		}
		logf("wrote %s", o.jsonOut)
	}
	if err := writeOutputs(o, rep, logf); err != nil {
		return err
	}
	if bad := rep.failures(); len(bad) > 0 {
		return fmt.Errorf("failed operations: %s", strings.Join(bad, "; "))
	}
	return nil
}

// writeOutputs writes the plot and the Markdown file (or the Markdown block
// to stdout when neither it nor JSON was asked for).
func writeOutputs(o options, rep *report, logf func(string, ...any)) error {
	if o.plotOut != "" {
		if err := writeFile(o.plotOut, []byte(plotSVG(rep))); err != nil {
			return err
		}
		logf("wrote %s", o.plotOut)
		if o.mdOut != "" {
			if rel, err := filepath.Rel(filepath.Dir(o.mdOut), o.plotOut); err == nil {
				rep.Plot = filepath.ToSlash(rel)
			}
		}
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
	return nil
}

// runCluster starts a cluster of n nodes (with --start; n is 0 with --env,
// whose cluster is already running), drives the gRPC ceiling and the
// operations at it, and stops it.
func runCluster(ctx context.Context, o options, rep *report, n int, logf func(string, ...any)) error {
	var (
		cfg  custos.Config
		cl   *cluster
		info clusterInfo
		err  error
	)
	if o.start {
		logf("starting %s dev, %d node(s)", o.custosd, n)
		if cl, err = startCluster(ctx, o.custosd, n, o.startWait); err != nil {
			return fmt.Errorf("%d-node cluster: %w", n, err)
		}
		defer cl.stop()
		cfg = cl.load
		info = clusterInfo{Nodes: n, Mode: "start", Binary: o.custosd, Addr: cfg.Addrs[0], Principal: benchPrincipal, Leader: cl.leader,
			LoadNode: cl.loadNode, Processes: cl.nodes, SupervisorPID: cl.supervisor}
		for _, p := range cl.nodes {
			logf("  %s pid %d at %s", p.ID, p.PID, p.Addr)
		}
		logf("  leader %s; load to %s (holds the domain key)", cl.leader, cl.loadNode)
	} else {
		if cfg, err = configFromEnvFile(o.envFile); err != nil {
			return err
		}
		info = clusterInfo{Mode: "env", EnvFile: o.envFile, Addr: strings.Join(cfg.Addrs, ",")}
	}
	c, err := custos.Dial(ctx, cfg)
	if err != nil {
		return err
	}
	defer c.Close()

	// Set-up: one key, one data key for the decrypt scenarios.
	keyName := "bench-" + randHex(4)
	if _, err := c.CreateKey(ctx, keyName, "custos-bench"); err != nil {
		return fmt.Errorf("set-up: %w", err)
	}
	encCtx := map[string]string{"bench": "custos-bench"}
	dk, err := c.GenerateDataKey(ctx, keyName, encCtx)
	if err != nil {
		return fmt.Errorf("set-up: %w", err)
	}
	just := custos.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Text: "custos-bench load test"}
	if cl != nil && len(cl.nodes) > 1 {
		info.FollowerDecrypt = followerDecrypt(ctx, c, cl, dk.Wrapped, encCtx, just)
		logf("  %s", info.FollowerDecrypt)
	}
	opFuncs := operations(c, keyName, dk, encCtx, just)

	// The gRPC ceiling, against the node the load goes to.
	if o.grpcCeiling {
		hs := healthpb.NewHealthClient(c.Conn())
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
		for _, conc := range o.concurrency {
			p, err := measure(ctx, o, "grpc-health", kindCeiling, conc, cl, op)
			if err != nil {
				return err
			}
			p.Nodes = n
			rep.Ceilings = append(rep.Ceilings, p)
			logf("  %s", p.line())
		}
	}

	// custos.
	for _, name := range o.ops {
		for _, conc := range o.concurrency {
			p, err := measure(ctx, o, name, kindCustos, conc, cl, opFuncs[name])
			if err != nil {
				return err
			}
			p.Nodes = n
			if name == "batch-decrypt" {
				p.ItemsPerOp = batchItems
			}
			rep.Scenarios = append(rep.Scenarios, p)
			logf("  %s", p.line())
		}
	}
	if cl != nil {
		for _, np := range cl.nodes {
			s := nodeSample{ID: np.ID}
			if m, err := procMem(np.PID); err == nil {
				s.Mem = &m
			}
			info.FinalMem = append(info.FinalMem, s)
		}
	}
	rep.Clusters = append(rep.Clusters, info)
	return nil
}

// operations returns the measured operations against the key keyName: dk
// is a data key generated under it with encCtx.
func operations(c *custos.Client, keyName string, dk *custos.DataKey, encCtx map[string]string, just custos.Justification) map[string]loadgen.Op {
	justPB := &custosv1.Justification{Reason: just.Reason, Text: just.Text, Ticket: just.Ticket}
	return map[string]loadgen.Op{
		"gdk": func(ctx context.Context) error {
			k, err := c.GenerateDataKey(ctx, keyName, encCtx)
			if err != nil {
				return err
			}
			if len(k.Plaintext) != 32 || len(k.Wrapped) == 0 {
				return fmt.Errorf("data key of %d bytes, wrapped %d bytes", len(k.Plaintext), len(k.Wrapped))
			}
			return nil
		},
		"decrypt": func(ctx context.Context) error {
			pt, err := c.DecryptDataKey(ctx, dk.Wrapped, encCtx, just)
			if err != nil {
				return err
			}
			if !bytes.Equal(pt, dk.Plaintext) {
				return errors.New("decrypted data key differs")
			}
			return nil
		},
		"reencrypt": func(ctx context.Context) error {
			r, err := c.Keys().ReEncrypt(ctx, &custosv1.ReEncryptRequest{Ciphertext: dk.Wrapped, EncryptionContext: encCtx, Justification: justPB})
			if err != nil {
				return fmt.Errorf("re-encrypt: %w", err)
			}
			if r.GetKey() != keyName || len(r.GetCiphertext()) == 0 || r.GetDecisionSeq() == 0 {
				return fmt.Errorf("re-encrypt: key %q, %d-byte ciphertext, decision %d", r.GetKey(), len(r.GetCiphertext()), r.GetDecisionSeq())
			}
			return nil
		},
		"batch-decrypt": func(ctx context.Context) error {
			items := make([]custos.DecryptItem, batchItems)
			for i := range items {
				items[i] = custos.DecryptItem{Ciphertext: dk.Wrapped, EncryptionContext: encCtx, Justification: just}
			}
			res, err := c.BatchDecrypt(ctx, items)
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
}

// followerDecrypt sends one Decrypt to the first node that does not hold
// the domain key and says what happened: such a node records the decision
// through the leader, then fails closed (it cannot unwrap). The ledger's
// length is read from the load node (c) before and after.
func followerDecrypt(ctx context.Context, c *custos.Client, cl *cluster, wrapped []byte, encCtx map[string]string, just custos.Justification) string {
	var target nodeProc
	for _, p := range cl.nodes {
		if p.ID != cl.loadNode {
			target = p
			break
		}
	}
	if target.ID == "" {
		return ""
	}
	cfg := cl.load
	cfg.Addrs = []string{target.Addr}
	cfg.CallTimeout = 10 * time.Second
	fc, err := custos.Dial(ctx, cfg)
	if err != nil {
		return fmt.Sprintf("%s: dial: %v", target.ID, err)
	}
	defer fc.Close()
	ledger := func() string {
		st, err := c.ClusterStatus(ctx)
		if err != nil {
			return "?"
		}
		return strconv.FormatUint(st.GetLedgerSeq(), 10)
	}
	before := ledger()
	r, err := fc.Keys().Decrypt(ctx, &custosv1.DecryptRequest{Ciphertext: wrapped, EncryptionContext: encCtx,
		Justification: &custosv1.Justification{Reason: just.Reason, Text: just.Text}})
	if err == nil {
		return fmt.Sprintf("%s released the data key (decision %d): it holds the domain key after all", target.ID, r.GetDecisionSeq())
	}
	st, _ := status.FromError(err)
	return fmt.Sprintf("%s answered %s: %q; ledger length on %s %s before, %s after", target.ID, st.Code(), st.Message(), cl.loadNode, before, ledger())
}

// measure runs one point and samples every node's CPU time and memory (when
// cl is not nil) and this process's CPU time around its measured window.
func measure(ctx context.Context, o options, name, kind string, conc int, cl *cluster, op loadgen.Op) (point, error) {
	var (
		pids       []int
		cpu0, cpu1 []time.Duration
		cpuErr     []error
		sup0, sup1 time.Duration
		supErr     error
		self0      time.Duration
		self1      time.Duration
	)
	if cl != nil {
		pids = cl.pids()
		cpu0, cpu1, cpuErr = make([]time.Duration, len(pids)), make([]time.Duration, len(pids)), make([]error, len(pids))
	}
	cfg := loadgen.Config{
		Concurrency: conc,
		Duration:    o.duration,
		Warmup:      o.warmup,
		OnStart: func() {
			for i, pid := range pids {
				cpu0[i], cpuErr[i] = procCPU(pid)
			}
			if cl != nil && cl.supervisor != 0 {
				sup0, supErr = procCPU(cl.supervisor)
			}
			self0 = selfCPU()
		},
		OnStop: func() {
			self1 = selfCPU()
			for i, pid := range pids {
				if cpuErr[i] == nil {
					cpu1[i], cpuErr[i] = procCPU(pid)
				}
			}
			if cl != nil && cl.supervisor != 0 && supErr == nil {
				sup1, supErr = procCPU(cl.supervisor)
			}
		},
	}
	res, err := loadgen.Run(ctx, cfg, op)
	if err != nil {
		return point{}, fmt.Errorf("%s at concurrency %d: %w", name, conc, err)
	}
	p := point{Name: name, Kind: kind, Result: res}
	perOp := func(d time.Duration) *float64 {
		v := float64(d.Microseconds()) / float64(res.Ops)
		return &v
	}
	if res.Ops > 0 {
		p.BenchCPUPerOp = *perOp(self1 - self0)
	}
	if cl == nil {
		return p, nil
	}
	var total time.Duration
	allCPU := res.Ops > 0
	for i, np := range cl.nodes {
		s := nodeSample{ID: np.ID}
		if res.Ops > 0 && cpuErr[i] == nil {
			s.CPUPerOp = perOp(cpu1[i] - cpu0[i])
			total += cpu1[i] - cpu0[i]
		} else {
			allCPU = false
		}
		if m, err := procMem(np.PID); err == nil {
			s.Mem = &m
		}
		p.PerNode = append(p.PerNode, s)
	}
	if allCPU {
		p.NodeCPUPerOp = perOp(total)
	}
	if res.Ops > 0 && cl.supervisor != 0 && supErr == nil {
		p.SupervisorCPUPerOp = perOp(sup1 - sup0)
	}
	return p, nil
}
