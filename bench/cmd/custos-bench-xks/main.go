// Command custos-bench-xks measures the XKS proxy API of a real custosd
// process: it starts `custosd dev --xks 127.0.0.1:0` as a child process (its
// own SoftHSM token, single-node Raft), creates a key, and drives SigV4-
// signed XKS requests at it over HTTPS with keep-alive (each worker keeps
// its connection, as AWS KMS does), from this process, at each
// concurrency. It prints a Markdown table (bench/RESULTS.md, "XKS proxy
// API").
//
//	go build -o bin/custosd ./cmd/custosd
//	go run ./bench/cmd/custos-bench-xks --custosd bin/custosd --concurrency 1,16 --duration 10s
//
// Operations: decrypt (every call a decision recorded in the ledger through
// Raft, then an HSM decryption), encrypt (an HSM encryption) and health
// (the deep check, reused for a second: mostly the HTTP, TLS and SigV4
// path).
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/custos-kms/custos/bench/loadgen"
	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/internal/pki"
	"github.com/custos-kms/custos/xks"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "custos-bench-xks:", err)
		os.Exit(1)
	}
}

type options struct {
	custosd          string
	conc             []int
	ops              []string
	duration, warmup time.Duration
}

func run(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("custos-bench-xks", flag.ContinueOnError)
	var o options
	fl.StringVar(&o.custosd, "custosd", "bin/custosd", "custosd binary to start (custosd dev --xks)")
	conc := fl.String("concurrency", "1,16", "comma-separated numbers of concurrent callers")
	ops := fl.String("ops", "decrypt,encrypt,health", "comma-separated operations: decrypt, encrypt, health")
	fl.DurationVar(&o.duration, "duration", 10*time.Second, "measured time per point")
	fl.DurationVar(&o.warmup, "warmup", time.Second, "untimed warm-up before each point")
	if err := fl.Parse(args); err != nil {
		return err
	}
	for s := range strings.SplitSeq(*conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("--concurrency: %q", s)
		}
		o.conc = append(o.conc, n)
	}
	for s := range strings.SplitSeq(*ops, ",") {
		switch s = strings.TrimSpace(s); s {
		case "decrypt", "encrypt", "health":
			o.ops = append(o.ops, s)
		default:
			return fmt.Errorf("--ops: unknown operation %q", s)
		}
	}
	n, err := startNode(ctx, o.custosd)
	if err != nil {
		return err
	}
	defer n.stop()
	return measure(ctx, o, n, os.Stdout)
}

// node is the custosd dev child process.
type node struct {
	cmd    *exec.Cmd
	dir    string
	env    map[string]string // xks.env
	client custos.Config     // client.env
	exited chan struct{}
}

func startNode(ctx context.Context, custosd string) (*node, error) {
	dir, err := os.MkdirTemp("", "custos-bench-xks-")
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "custosd.log"))
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	n := &node{dir: dir, exited: make(chan struct{})}
	n.cmd = exec.Command(custosd, "dev", "--data-dir", data, "--listen", "127.0.0.1:0", "--xks", "127.0.0.1:0")
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := n.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", custosd, err)
	}
	go func() { _ = n.cmd.Wait(); logf.Close(); close(n.exited) }()
	deadline := time.Now().Add(time.Minute)
	for {
		// custosd dev writes xks.env, then client.env, once it serves.
		if b, err := os.ReadFile(filepath.Join(data, "client.env")); err == nil {
			env := readEnv(b)
			if env["CUSTOS_KEY"] != "" {
				n.client = custos.Config{Addrs: custos.SplitAddrs(env["CUSTOS_ADDR"]), CAFile: env["CUSTOS_CA"],
					CertFile: env["CUSTOS_CERT"], KeyFile: env["CUSTOS_KEY"]}
				if b, err := os.ReadFile(filepath.Join(data, "xks.env")); err == nil {
					n.env = readEnv(b)
					return n, nil
				}
			}
		}
		select {
		case <-n.exited:
			return nil, fmt.Errorf("custosd dev exited; its log is in %s", dir)
		case <-ctx.Done():
			n.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			n.stop()
			return nil, errors.New("custosd dev did not start within a minute")
		}
	}
}

func (n *node) stop() {
	_ = n.cmd.Process.Signal(os.Interrupt)
	select {
	case <-n.exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
		<-n.exited
	}
	os.RemoveAll(n.dir)
}

// readEnv reads "export NAME=VALUE" lines, VALUE possibly in single quotes.
func readEnv(b []byte) map[string]string {
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "=")
		if ok && !strings.HasPrefix(k, "#") {
			env[k] = strings.Trim(v, "'")
		}
	}
	return env
}

// caller sends signed XKS requests to the node.
type caller struct {
	env    map[string]string
	base   string
	client *http.Client
	seq    atomic.Int64
}

func newCaller(n *node, conns int) (*caller, error) {
	tc, err := pki.ClientTLSConfig(strings.TrimPrefix(n.env["SECURE"], "--cacert "), "", "")
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tc.RootCAs}, MaxIdleConnsPerHost: conns, MaxIdleConns: conns}
	return &caller{env: n.env, client: &http.Client{Transport: tr, Timeout: 30 * time.Second},
		base: "https://" + n.env["XKS_PROXY_HOST"] + "/" + n.env["URI_PREFIX"] + "/kms/xks/v1/"}, nil
}

func (c *caller) post(ctx context.Context, target string, body map[string]any) (map[string]any, error) {
	raw, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, "POST", c.base+target, bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if err := xks.Sign(req, raw, c.env["SIGV4_ACCESS_KEY_ID"], c.env["SIGV4_SECRET_ACCESS_KEY"], c.env["REGION"], xks.Service, time.Now(), "content-type"); err != nil {
		return nil, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if err := json.Unmarshal(data, &out); err != nil || resp.StatusCode != 200 {
		return nil, fmt.Errorf("%s: %d %s", target, resp.StatusCode, data)
	}
	return out, nil
}

func (c *caller) md(op string) map[string]any {
	return map[string]any{"awsPrincipalArn": "arn:aws:iam::123456789012:user/bench",
		"kmsKeyArn":    "arn:aws:kms:us-east-1:123456789012:key/bench",
		"kmsOperation": op, "kmsRequestId": fmt.Sprintf("bench-%d", c.seq.Add(1))}
}

const benchKey = "bench-xks"

func measure(ctx context.Context, o options, n *node, w io.Writer) error {
	cl, err := custos.Dial(ctx, n.client)
	if err != nil {
		return err
	}
	_, err = cl.CreateKey(ctx, benchKey, "")
	cl.Close()
	if err != nil {
		return fmt.Errorf("create key: %w", err)
	}
	maxC := 1
	for _, c := range o.conc {
		maxC = max(maxC, c)
	}
	c, err := newCaller(n, maxC)
	if err != nil {
		return err
	}
	pt := base64.StdEncoding.EncodeToString(make([]byte, 32)) // a data key
	aad := base64.StdEncoding.EncodeToString([]byte("bench"))
	enc, err := c.post(ctx, "keys/"+benchKey+"/encrypt", map[string]any{"requestMetadata": c.md("GenerateDataKey"),
		"plaintext": pt, "additionalAuthenticatedData": aad, "encryptionAlgorithm": "AES_GCM"})
	if err != nil {
		return err
	}
	opFn := map[string]loadgen.Op{
		"decrypt": func(ctx context.Context) error {
			_, err := c.post(ctx, "keys/"+benchKey+"/decrypt", map[string]any{"requestMetadata": c.md("Decrypt"),
				"ciphertext": enc["ciphertext"], "initializationVector": enc["initializationVector"],
				"authenticationTag": enc["authenticationTag"], "ciphertextMetadata": enc["ciphertextMetadata"],
				"additionalAuthenticatedData": aad, "encryptionAlgorithm": "AES_GCM"})
			return err
		},
		"encrypt": func(ctx context.Context) error {
			_, err := c.post(ctx, "keys/"+benchKey+"/encrypt", map[string]any{"requestMetadata": c.md("GenerateDataKey"),
				"plaintext": pt, "additionalAuthenticatedData": aad, "encryptionAlgorithm": "AES_GCM"})
			return err
		},
		"health": func(ctx context.Context) error {
			_, err := c.post(ctx, "health", map[string]any{"requestMetadata": map[string]any{
				"kmsOperation": "KmsHealthCheck", "kmsRequestId": fmt.Sprintf("bench-h-%d", c.seq.Add(1))}})
			return err
		},
	}
	fmt.Fprintf(w, "- Command: `custos-bench-xks %s`\n", strings.Join(os.Args[1:], " "))
	fmt.Fprintf(w, "- Machine: %d vCPU (%s), Linux %s; %s\n", runtime.NumCPU(), cpuModel(), kernel(), runtime.Version())
	fmt.Fprintf(w, "- Each point: %v warm-up, then %v measured; closed loop, one HTTPS keep-alive connection per caller, every request SigV4-signed.\n\n", o.warmup, o.duration)
	fmt.Fprintln(w, "| operation | C | ops/s | p50 | p99 | p99.9 | max | errors | node CPU µs/op | bench CPU µs/op |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	pid := n.cmd.Process.Pid
	for _, op := range o.ops {
		for _, conc := range o.conc {
			var nodeCPU0, selfCPU0, nodeCPU, selfCPU time.Duration
			res, err := loadgen.Run(ctx, loadgen.Config{Concurrency: conc, Duration: o.duration, Warmup: o.warmup,
				OnStart: func() { nodeCPU0, selfCPU0 = procCPU(pid), selfCPUTime() },
				OnStop:  func() { nodeCPU, selfCPU = procCPU(pid)-nodeCPU0, selfCPUTime()-selfCPU0 }}, opFn[op])
			if err != nil {
				return err
			}
			perOp := func(d time.Duration) string {
				if res.Ops == 0 {
					return "–"
				}
				return fmt.Sprintf("%.0f", float64(d.Microseconds())/float64(res.Ops))
			}
			fmt.Fprintf(w, "| XKS %s | %d | %.0f | %s | %s | %s | %s | %d | %s | %s |\n", op, conc, res.OpsPerSec,
				ms(res.P50), ms(res.P99), ms(res.P999), ms(res.Max), res.Errors, perOp(nodeCPU), perOp(selfCPU))
			if res.FirstError != "" {
				fmt.Fprintf(os.Stderr, "%s C=%d: first error: %s\n", op, conc, res.FirstError)
			}
		}
	}
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

// procCPU is the user+system CPU time of pid (/proc/PID/stat, 10 ms ticks).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

func selfCPUTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}
