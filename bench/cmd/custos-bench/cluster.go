package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/internal/pki"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// nodeProc is one custosd process serving a node of the cluster under test.
type nodeProc struct {
	ID   string `json:"id"`
	PID  int    `json:"pid"`
	Addr string `json:"addr"`
}

// cluster is a custos cluster started as child processes: `custosd dev`
// for one node (one process), `custosd dev --nodes N` for N nodes (a
// supervisor that starts N `custosd serve` processes, each with its own
// SoftHSM token, and relays their output).
type cluster struct {
	size    int
	cmd     *exec.Cmd
	dir     string // temporary directory (removed by stop)
	logPath string
	exited  chan struct{}
	waitErr error

	// nodes are the processes serving the nodes, in node order; for one
	// node, the custosd dev process itself.
	nodes []nodeProc
	// supervisor is the pid of `custosd dev --nodes N`; 0 for one node.
	supervisor int
	// leader is the Raft leader's id once the cluster formed; loadNode the
	// id of node1, the first node in client.env (it initialised the
	// cluster): the node of the set-up and of the node1 load.
	leader, loadNode string
	// all is the client configuration of client.env (the dev-admin
	// identity), listing every node; load the one of the load (the
	// benchPrincipal identity), listing only loadNode (see nodeConfig for
	// the others).
	all, load custos.Config
}

// benchPrincipal is the client identity the load runs as: an application
// identity issued by the cluster's dev CA, not dev-admin, which custosd dev
// makes an operator and auditor (and an auditor may not create keys).
const benchPrincipal = "custos-bench"

// clusterStopTimeout bounds how long stop waits after SIGINT before it
// kills the process group (custosd dev --nodes gives its children 30 s).
const clusterStopTimeout = 40 * time.Second

// startPattern matches the line `custosd dev --nodes` writes to stderr for
// every node it starts (cmd/custosd/devcluster.go).
var startPattern = regexp.MustCompile(`custosd dev: (\S+) started, pid (\d+) \(gRPC (\S+), Raft `)

// startCluster starts a cluster of n nodes under custosd in a fresh
// temporary directory, waits until custosd dev has written client.env and
// until every node answers, agrees on a leader, counts n voters and holds
// the domain key (custosd dev admits every node before it writes
// client.env), and issues the benchmark's client certificate.
func startCluster(ctx context.Context, custosd string, n int, timeout time.Duration) (*cluster, error) {
	if _, err := os.Stat(custosd); err != nil {
		return nil, fmt.Errorf("custosd binary: %w (build it with `make build`, or pass --custosd)", err)
	}
	if n < 1 {
		return nil, fmt.Errorf("cluster of %d nodes", n)
	}
	dir, err := os.MkdirTemp("", fmt.Sprintf("custos-bench-%dnode-", n))
	if err != nil {
		return nil, fmt.Errorf("temporary directory: %w", err)
	}
	c := &cluster{size: n, dir: dir, logPath: filepath.Join(dir, "custosd.log"), exited: make(chan struct{})}
	logf, err := os.Create(c.logPath)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("custosd log: %w", err)
	}
	dataDir := filepath.Join(dir, "data")
	args := []string{"dev", "--data-dir", dataDir, "--listen", "127.0.0.1:0"}
	if n > 1 {
		// --base-port 0: custosd dev binds ports the system picks and
		// passes them to its nodes (socket activation), so no port is
		// picked here and bound again later by another process; the
		// addresses come back in its start lines and client.env.
		args = []string{"dev", "--nodes", strconv.Itoa(n), "--data-dir", dataDir, "--base-port", "0"}
	}
	c.cmd = exec.Command(custosd, args...)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	// Own process group (the serve children of dev --nodes inherit it): a
	// Ctrl-C on the benchmark reaches the nodes only through stop, and stop
	// can kill the whole group if it does not exit.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		logf.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", custosd, err)
	}
	go func() {
		c.waitErr = c.cmd.Wait()
		logf.Close()
		close(c.exited)
	}()
	fail := func(err error) (*cluster, error) {
		c.stop()
		return nil, err
	}

	deadline := time.Now().Add(timeout)
	envPath := filepath.Join(dataDir, "client.env")
	if err := c.waitFor(ctx, deadline, "write "+envPath, func() (bool, error) {
		b, err := os.ReadFile(envPath)
		if err != nil {
			return false, nil
		}
		// The file may be caught half written: retry until complete.
		cfg, err := configFromEnv(parseEnvFile(b), envPath)
		if err != nil {
			return false, nil
		}
		c.all = cfg
		return true, nil
	}); err != nil {
		return fail(err)
	}
	if n == 1 {
		c.nodes = []nodeProc{{PID: c.cmd.Process.Pid, Addr: c.all.Addrs[0]}}
	} else {
		b, err := os.ReadFile(c.logPath)
		if err != nil {
			return fail(fmt.Errorf("custosd log: %w", err))
		}
		if c.nodes, err = parseStartLines(b, n); err != nil {
			return fail(fmt.Errorf("%w; its log:\n%s", err, c.tail()))
		}
		c.supervisor = c.cmd.Process.Pid
		if len(c.all.Addrs) != n {
			return fail(fmt.Errorf("client.env lists %d addresses for %d nodes", len(c.all.Addrs), n))
		}
	}

	// Formed: every node answers, sees n voters and the same leader.
	cfg := c.all
	cfg.ConnectTimeout, cfg.CallTimeout = 2*time.Second, 2*time.Second
	cl, err := custos.Dial(ctx, cfg)
	if err != nil {
		return fail(err)
	}
	defer cl.Close()
	var sts []*custosv1.ClusterStatus
	ready := func(sts []*custosv1.ClusterStatus, errs []error) error {
		if err := formed(sts, errs, n); err != nil {
			return err
		}
		return admitted(sts)
	}
	if err := c.waitFor(ctx, deadline, "form (every node answering, one leader, all voters, every node holding the domain key)", func() (bool, error) {
		var errs []error
		sts, errs = cl.ClusterStatusAll(ctx)
		return ready(sts, errs) == nil, nil
	}); err != nil {
		var errs []error
		sts, errs = cl.ClusterStatusAll(ctx)
		return fail(fmt.Errorf("%w: %w", err, ready(sts, errs)))
	}
	c.leader = sts[0].GetLeaderId()
	for i, st := range sts {
		// Status answers from the node at address i; dev --nodes lists
		// the addresses in node order, like its start lines.
		if n > 1 && (c.nodes[i].ID != st.GetNodeId() || c.nodes[i].Addr != c.all.Addrs[i]) {
			return fail(fmt.Errorf("%s at %s answers as %s: the processes measured would not be the nodes", c.nodes[i].ID, c.all.Addrs[i], st.GetNodeId()))
		}
		c.nodes[i].ID = st.GetNodeId()
	}
	c.loadNode = c.nodes[0].ID
	// custosd dev keeps its CA, with its key, next to ca.pem.
	pkiDir := filepath.Dir(c.all.CAFile)
	if err := pki.CreateDevPKI(pkiDir, nil, benchPrincipal); err != nil {
		return fail(fmt.Errorf("client certificate %s from the dev CA: %w", benchPrincipal, err))
	}
	c.load = c.all
	c.load.CertFile, c.load.KeyFile = pki.ClientFiles(pkiDir, benchPrincipal)
	c.load.Addrs = []string{c.all.Addrs[0]}
	return c, nil
}

// nodeConfig is the load's client configuration pinned to node i (in node
// order): the benchPrincipal identity and that node's address only.
func (c *cluster) nodeConfig(i int) custos.Config {
	cfg := c.load
	cfg.Addrs = []string{c.nodes[i].Addr}
	return cfg
}

// admitted reports the first node that does not hold the domain key, or nil.
func admitted(sts []*custosv1.ClusterStatus) error {
	for _, st := range sts {
		if !st.GetHasDomainKey() {
			return fmt.Errorf("%s does not hold the domain key (not admitted)", st.GetNodeId())
		}
	}
	return nil
}

// formed reports why the statuses (one per node) do not yet show a formed
// cluster of n voters with one leader, or nil.
func formed(sts []*custosv1.ClusterStatus, errs []error, n int) error {
	if len(sts) != n {
		return fmt.Errorf("%d statuses for %d nodes", len(sts), n)
	}
	leader := ""
	for i, st := range sts {
		if errs[i] != nil {
			return fmt.Errorf("node at address %d does not answer: %w", i+1, errs[i])
		}
		voters := 0
		for _, s := range st.GetServers() {
			if s.GetSuffrage() == "VOTER" {
				voters++
			}
		}
		if voters != n {
			return fmt.Errorf("%s sees %d of %d voters", st.GetNodeId(), voters, n)
		}
		if st.GetLeaderId() == "" {
			return fmt.Errorf("%s knows no leader", st.GetNodeId())
		}
		if i > 0 && st.GetLeaderId() != leader {
			return fmt.Errorf("leader %q according to %s, %q according to %s", leader, sts[0].GetNodeId(), st.GetLeaderId(), st.GetNodeId())
		}
		leader = st.GetLeaderId()
	}
	return nil
}

// parseStartLines returns the n nodes from custosd dev --nodes's output, in
// node order.
func parseStartLines(log []byte, n int) ([]nodeProc, error) {
	var nodes []nodeProc
	for _, m := range startPattern.FindAllSubmatch(log, -1) {
		pid, err := strconv.Atoi(string(m[2]))
		if err != nil {
			return nil, fmt.Errorf("custosd dev output: pid %q: %w", m[2], err)
		}
		nodes = append(nodes, nodeProc{ID: string(m[1]), PID: pid, Addr: string(m[3])})
	}
	if len(nodes) != n {
		return nil, fmt.Errorf("custosd dev output names %d started nodes, want %d", len(nodes), n)
	}
	return nodes, nil
}

// waitFor polls cond every 100 ms until it holds, it fails, the child
// exits, ctx ends or deadline passes.
func (c *cluster) waitFor(ctx context.Context, deadline time.Time, what string, cond func() (bool, error)) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.exited:
			return fmt.Errorf("custosd exited before it could %s (%v); its log:\n%s", what, c.waitErr, c.tail())
		case <-timer.C:
			return fmt.Errorf("custosd did not %s in time; its log:\n%s", what, c.tail())
		case <-tick.C:
		}
	}
}

// pids returns the pids of the node processes.
func (c *cluster) pids() []int {
	out := make([]int, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.PID
	}
	return out
}

// tail returns the end of the child's log.
func (c *cluster) tail() string {
	b, _ := os.ReadFile(c.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return strings.TrimRight(string(b), "\n")
}

// stop interrupts custosd (it shuts its nodes down cleanly on SIGINT),
// kills its process group if it has not exited within clusterStopTimeout,
// and removes the temporary directory.
func (c *cluster) stop() {
	select {
	case <-c.exited:
	default:
		_ = c.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-c.exited:
		case <-time.After(clusterStopTimeout):
			_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
			<-c.exited
		}
	}
	// A serve child left behind by a supervisor that died.
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	_ = os.RemoveAll(c.dir)
}
