package robustness

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/internal/activation"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/internal/pki"
	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"github.com/custos-kms/custos/softhsm"
)

// The process mode of the suite (docs/robustness.md, "Process mode"): three
// `custosd serve` processes, each with its own SoftHSM2 token, Raft over
// mutual TLS through a link Proxy in front of every node's Raft and gRPC
// ports; faults are SIGKILL (and restart), SIGSTOP/SIGCONT and link
// faults (drop, blackhole, delay).

const (
	procLoopback = "127.0.0.1"
	// procServeTimeout bounds how long the suite waits for a (re)started
	// process to answer, after the run.
	procServeTimeout = 90 * time.Second
)

// procDuration is the workload duration of the process mode: the
// -robustness.duration flag or CUSTOS_ROBUSTNESS_DURATION, else 40s (30s
// with -short), which keeps the bounded run within 90 s on 2 cores.
func procDuration(t *testing.T) time.Duration {
	if *flagDuration > 0 || os.Getenv("CUSTOS_ROBUSTNESS_DURATION") != "" {
		return duration(t)
	}
	if testing.Short() {
		return 30 * time.Second
	}
	return 40 * time.Second
}

// TestRobustnessProcesses is the process mode: the workload and the checks
// of TestRobustness against real custosd processes, with SIGKILL, SIGSTOP
// and link faults.
func TestRobustnessProcesses(t *testing.T) {
	if !requested() {
		t.Skip("run with -run TestRobustnessProcesses (or CUSTOS_ROBUSTNESS=1): a minute or more with three custosd processes")
	}
	if _, err := softhsm.ModulePath(); err != nil {
		t.Fatalf("SoftHSM2: %v (%s)", err, softhsm.InstallHint) // never skipped, as softhsm.TestToken
	}
	d := procDuration(t)
	r := &run{t: t, seed: seed(t), h: &History{}, pending: make(chan string, 256), test: "TestRobustnessProcesses"}
	t.Logf("robustness (processes): seed %d, duration %s, %d clients; replay: go test -run TestRobustnessProcesses -count=1 ./internal/robustness/ -robustness.seed=%d -robustness.duration=%s",
		r.seed, d, *flagClients, r.seed, d)
	fmt.Fprintf(os.Stderr, "robustness (processes): seed %d duration %s\n", r.seed, d)

	r.execute(d, r.setupProcs, r.procFaults, r.healProcs)
}

// procCluster is the three custosd processes and their proxies.
type procCluster struct {
	t      *testing.T
	h      *History
	bin    string
	dir    string
	pkiDir string
	nodes  [numNodes]*procNode

	mu       sync.Mutex
	stopping bool // after the test: exits are expected
}

// procNode is one custosd process, restarted on the same configuration,
// data directory and token.
type procNode struct {
	i       int
	id      string
	dir     string
	config  string
	hsmConf string
	// pinsFile holds the token's user and SO PINs (JSON, 0600), for the
	// SO's trust step of admission (custosd dev-trust).
	pinsFile   string
	tokenLabel string
	api, raft  string // the addresses the process serves on
	// apiFile and raftFile are the listening sockets on api and raft,
	// opened once by the suite and passed to every process of the node
	// (socket activation, as `custosd dev` does): the ports stay held
	// across kills and restarts, so no other process can take them.
	apiFile, raftFile *os.File
	// refusers close the connections made to api and raft while the
	// node's process is down (nil while it runs).
	refusers []*refuser
	// raftProxy and apiProxy stand in front of raft and api: the other
	// nodes dial them (the Raft configuration holds raftProxy's address,
	// raft_advertise; peers name both).
	raftProxy, apiProxy *Proxy
	logPath             string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	killing bool          // the exit in progress was asked for
	paused  bool
}

// buildCustosd builds cmd/custosd into a temporary directory once per run,
// or returns CUSTOS_ROBUSTNESS_CUSTOSD (a prebuilt binary) when set.
func buildCustosd(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CUSTOS_ROBUSTNESS_CUSTOSD"); p != "" {
		return p
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("building custosd: no go command in PATH (or set CUSTOS_ROBUSTNESS_CUSTOSD to a custosd binary): %v", err)
	}
	out := filepath.Join(t.TempDir(), "custosd")
	start := time.Now()
	cmd := exec.Command(gobin, "build", "-o", out, "github.com/custos-kms/custos/cmd/custosd")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build custosd: %v\n%s", err, b)
	}
	t.Logf("built custosd in %s", time.Since(start).Round(100*time.Millisecond))
	return out
}

// holdPort listens on a loopback port the kernel picks and returns its
// address and the listening socket as a file, for activation.Pass; the
// socket stays open (the port held) until the test ends
// (docs/architecture.md, "Listeners").
func holdPort(t *testing.T) (string, *os.File) {
	t.Helper()
	l, err := net.Listen("tcp", procLoopback+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close() // the file holds a duplicate of the socket
	f, err := activation.File(l)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return l.Addr().String(), f
}

// refuser accepts the connections made to a held listening socket while
// no process serves on it and resets each at once, so that a killed node
// refuses connections as a process that is gone does (with the socket
// merely held, they would wait in its backlog like those to a stopped
// process).
type refuser struct {
	l    net.Listener
	done chan struct{}
}

func startRefuser(f *os.File) (*refuser, error) {
	l, err := net.FileListener(f) // a duplicate: stop closes it, not f
	if err != nil {
		return nil, fmt.Errorf("refuser: %w", err)
	}
	r := &refuser{l: l, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			c, err := l.Accept()
			if err != nil {
				return // stopped
			}
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // reset, not an orderly close
			}
			_ = c.Close()
		}
	}()
	return r, nil
}

// stop stops accepting; the socket stays open through the file.
func (r *refuser) stop() {
	_ = r.l.Close()
	<-r.done
}

// stopRefusers stops n's refusers; n.mu is held.
func (n *procNode) stopRefusers() {
	for _, r := range n.refusers {
		r.stop()
	}
	n.refusers = nil
}

// procConfig is the part of `custosd serve`'s configuration file
// (docs/config.md) the suite writes.
type procConfig struct {
	ID            string `json:"id"`
	DataDir       string `json:"data_dir"`
	Listen        string `json:"listen"`
	RaftAddr      string `json:"raft_addr"`
	RaftAdvertise string `json:"raft_advertise"`
	Bootstrap     bool   `json:"bootstrap,omitempty"`
	Join          bool   `json:"join,omitempty"`
	AddPeers      bool   `json:"add_peers,omitempty"`
	// Profile: "development" on node1, which initialises the cluster
	// (admission with RSA-OAEP-SHA1, all SoftHSM has).
	Profile string `json:"profile,omitempty"`
	PKCS11  struct {
		Module     string `json:"module"`
		TokenLabel string `json:"token_label"`
		PINFile    string `json:"pin_file"`
	} `json:"pkcs11"`
	TLS struct {
		CA   string `json:"ca"`
		Cert string `json:"cert"`
		Key  string `json:"key"`
	} `json:"tls"`
	Log struct {
		Level string `json:"level"`
	} `json:"log"`
	RaftTLS bool `json:"raft_tls"`
	Peers   []struct {
		ID       string `json:"id"`
		RaftAddr string `json:"raft_addr"`
		APIAddr  string `json:"api_addr"`
	} `json:"peers"`
	Officers []struct {
		Name          string `json:"name"`
		PublicKeyFile string `json:"public_key_file"`
	} `json:"officers,omitempty"`
	Quorum             uint32   `json:"quorum,omitempty"`
	Operators          []string `json:"operators"`
	Auditors           []string `json:"auditors"`
	CheckpointEvery    uint64   `json:"checkpoint_every"`
	CheckpointInterval string   `json:"checkpoint_interval"`
}

// newProcCluster prepares the PKI, the officers, one SoftHSM2 token and
// one configuration per node, and the proxies; it starts nothing.
func newProcCluster(t *testing.T, h *History) (*procCluster, []nodetest.Officer) {
	t.Helper()
	pc := &procCluster{t: t, h: h, bin: buildCustosd(t), dir: t.TempDir()}
	pc.pkiDir = filepath.Join(pc.dir, "pki")
	hosts := []string{procLoopback, "localhost"}
	if err := pki.CreateDevPKI(pc.pkiDir, hosts, appCN, provCN, officerCN, nodetest.Auditor); err != nil {
		t.Fatal(err)
	}
	officers, _ := nodetest.NewOfficers(t, pc.dir)
	for _, o := range officers {
		if err := os.WriteFile(o.KeyFile+".pub", governance.PublicKeyPEM(&o.Key.PublicKey), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	module, err := softhsm.ModulePath()
	if err != nil {
		t.Fatal(err)
	}
	source := ProcSource(pc.pids)
	for i := range numNodes {
		n := &procNode{i: i, id: fmt.Sprintf("node%d", i+1)}
		n.api, n.apiFile = holdPort(t)
		n.raft, n.raftFile = holdPort(t)
		t.Cleanup(func() { n.mu.Lock(); n.stopRefusers(); n.mu.Unlock() })
		n.dir = filepath.Join(pc.dir, n.id)
		n.config = filepath.Join(n.dir, "config.json")
		n.logPath = filepath.Join(n.dir, "custosd.log")
		if n.raftProxy, err = NewProxy(procLoopback+":0", n.raft, source); err != nil {
			t.Fatal(err)
		}
		if n.apiProxy, err = NewProxy(procLoopback+":0", n.api, source); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.raftProxy.Close(); _ = n.apiProxy.Close() })
		hsm, err := softhsm.OpenDir(filepath.Join(n.dir, "softhsm"))
		if err != nil {
			t.Fatal(err)
		}
		pin := fmt.Sprintf("user-%d-%d", i, time.Now().UnixNano())
		n.tokenLabel = "custos-rob-" + n.id
		if _, err := hsm.InitToken(n.tokenLabel, "so-"+pin, pin); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(n.dir, "softhsm", "user.pin"), []byte(pin+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		pins, err := json.Marshal(map[string]string{"user_pin": pin, "so_pin": "so-" + pin})
		if err != nil {
			t.Fatal(err)
		}
		n.pinsFile = filepath.Join(n.dir, "softhsm", "pins.json")
		if err := os.WriteFile(n.pinsFile, pins, 0o600); err != nil {
			t.Fatal(err)
		}
		n.hsmConf = hsm.ConfPath()
		pc.nodes[i] = n
	}
	for i, n := range pc.nodes {
		var c procConfig
		c.ID, c.DataDir, c.Listen, c.RaftAddr, c.RaftAdvertise = n.id, ".", n.api, n.raft, n.raftProxy.Addr()
		c.PKCS11.Module, c.PKCS11.TokenLabel, c.PKCS11.PINFile = module, n.tokenLabel, filepath.Join("softhsm", "user.pin")
		c.TLS.CA = filepath.Join(pc.pkiDir, pki.CAFile)
		if c.TLS.Cert, c.TLS.Key, err = pki.IssueNodeCert(pc.pkiDir, n.id, hosts); err != nil {
			t.Fatal(err)
		}
		c.Log.Level = "info"
		if lv := os.Getenv("CUSTOS_TEST_LOG"); lv != "" {
			c.Log.Level = strings.ToLower(lv)
		}
		c.RaftTLS = true
		for j, p := range pc.nodes {
			if j != i {
				c.Peers = append(c.Peers, struct {
					ID       string `json:"id"`
					RaftAddr string `json:"raft_addr"`
					APIAddr  string `json:"api_addr"`
				}{p.id, p.raftProxy.Addr(), p.apiProxy.Addr()})
			}
		}
		c.Operators, c.Auditors = []string{"operator"}, []string{nodetest.Auditor}
		c.CheckpointEvery, c.CheckpointInterval = nodetest.CheckpointEvery, "1s"
		if i == 0 {
			c.Bootstrap, c.AddPeers, c.Quorum = true, true, nodetest.Quorum
			c.Profile = kms.ProfileDevelopment
			for _, o := range officers {
				c.Officers = append(c.Officers, struct {
					Name          string `json:"name"`
					PublicKeyFile string `json:"public_key_file"`
				}{o.Name, o.KeyFile + ".pub"})
			}
		} else {
			c.Join = true
		}
		b, err := json.MarshalIndent(&c, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(n.config, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(pc.stopAll)
	return pc, officers
}

// pids maps the running processes' pids to their node ids (ProcSource).
func (pc *procCluster) pids() map[int]string {
	out := map[int]string{}
	for _, n := range pc.nodes {
		n.mu.Lock()
		if n.cmd != nil && n.cmd.Process != nil {
			out[n.cmd.Process.Pid] = n.id
		}
		n.mu.Unlock()
	}
	return out
}

// running reports whether node i's process is alive (paused or not).
func (n *procNode) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.done == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// start runs `custosd serve --config` for node i, appending its output to
// its log file, with the node's held sockets passed as "grpc" and "raft".
// It does not wait for the node to serve.
func (pc *procCluster) start(i int) error {
	n := pc.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.done != nil {
		select {
		case <-n.done:
		default:
			return nil // running
		}
	}
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("%s log: %w", n.id, err)
	}
	cmd := exec.Command(pc.bin, "serve", "--config", n.config)
	cmd.Dir = n.dir
	env := []string{softhsm.ConfEnv + "=" + n.hsmConf}
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != softhsm.ConfEnv && k != "CUSTOS_PKCS11_PIN" {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	if err := activation.Pass(cmd, activation.Named{Name: "grpc", File: n.apiFile}, activation.Named{Name: "raft", File: n.raftFile}); err != nil {
		_ = logf.Close()
		return fmt.Errorf("start %s: %w", n.id, err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childProcAttr()
	n.stopRefusers()
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		n.startRefusers()
		return fmt.Errorf("start %s: %w", n.id, err)
	}
	n.cmd, n.done, n.killing, n.paused = cmd, make(chan struct{}), false, false
	done := n.done
	go func() {
		werr := cmd.Wait()
		_ = logf.Close()
		pc.mu.Lock()
		stopping := pc.stopping
		pc.mu.Unlock()
		n.mu.Lock()
		expected := n.killing
		if !stopping {
			n.startRefusers() // before done closes: a restart stops them
		}
		n.mu.Unlock()
		if !expected && !stopping {
			last := lastLine(n.logPath)
			kind := "crashed"
			var ee *exec.ExitError
			if errors.As(werr, &ee) && ee.ExitCode() == 1 && strings.HasPrefix(last, "custosd: node: ") {
				kind = "start-failed" // node.Start returned an error: custosd exits 1
			}
			pc.h.AddFault(Fault{Kind: kind, Node: i, Note: fmt.Sprintf("%v: %s", werr, last)})
		}
		close(done)
	}()
	return nil
}

// startRefusers makes the node's ports refuse connections while its
// process is down; n.mu is held. A failure only costs that: connections
// then wait in the backlog until the restart.
func (n *procNode) startRefusers() {
	for _, f := range []*os.File{n.apiFile, n.raftFile} {
		if r, err := startRefuser(f); err == nil {
			n.refusers = append(n.refusers, r)
		}
	}
}

// lastLine returns the last line of file that is not empty, shortened.
func lastLine(file string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	l := lines[len(lines)-1]
	if len(l) > 300 {
		l = l[:300] + "…"
	}
	return l
}

// kill sends SIGKILL to node i (running or paused) and waits for it.
func (pc *procCluster) kill(i int) bool {
	n := pc.nodes[i]
	n.mu.Lock()
	if n.cmd == nil || n.done == nil {
		n.mu.Unlock()
		return false
	}
	select {
	case <-n.done:
		n.mu.Unlock()
		return false
	default:
	}
	n.killing = true
	p, done := n.cmd.Process, n.done
	n.mu.Unlock()
	_ = p.Signal(syscall.SIGKILL)
	<-done
	return true
}

// signal sends SIGSTOP or SIGCONT to node i's process; it reports
// whether it did (SIGCONT only to a paused process).
func (pc *procCluster) signal(i int, sig syscall.Signal) bool {
	n := pc.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.done == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
	}
	if sig == syscall.SIGCONT && !n.paused {
		return false
	}
	if err := n.cmd.Process.Signal(sig); err != nil {
		return false
	}
	n.paused = sig == syscall.SIGSTOP
	return true
}

func (pc *procCluster) stopAll() {
	pc.mu.Lock()
	pc.stopping = true
	pc.mu.Unlock()
	for i := range pc.nodes {
		pc.kill(i) // SIGKILL ends a stopped process too
	}
}

// link sets the rule of the link between nodes i and j, both ways, on
// both the Raft and the gRPC (forwarding) proxies.
func (pc *procCluster) link(i, j int, r Rule) {
	a, b := pc.nodes[i], pc.nodes[j]
	for _, p := range []*Proxy{b.raftProxy, b.apiProxy} {
		p.Set(a.id, r)
	}
	for _, p := range []*Proxy{a.raftProxy, a.apiProxy} {
		p.Set(b.id, r)
	}
}

// cut sets r on every link of node i.
func (pc *procCluster) cut(i int, r Rule) {
	for j := range numNodes {
		if j != i {
			pc.link(i, j, r)
		}
	}
}

func (pc *procCluster) clearLinks() {
	for _, n := range pc.nodes {
		n.raftProxy.Clear()
		n.apiProxy.Clear()
	}
}

func (pc *procCluster) proxySummary() string {
	var parts []string
	for _, n := range pc.nodes {
		r, a := n.raftProxy.Stats(), n.apiProxy.Stats()
		parts = append(parts, fmt.Sprintf("%s raft %d/%d/%d/%d, grpc %d/%d/%d/%d", n.id,
			r.Accepted, r.Dropped, r.Unknown, r.DialFailed, a.Accepted, a.Dropped, a.Unknown, a.DialFailed))
	}
	return "link proxies (connections accepted/dropped/unidentified/target down): " + strings.Join(parts, "; ") + "\n" +
		startFailures(pc.h.Faults())
}

// startFailures summarises the start-failed faults by cause: the error
// node.Start returned, up to its first detail.
func startFailures(faults []Fault) string {
	causes := map[string]int{}
	for _, f := range faults {
		if f.Kind != "start-failed" {
			continue
		}
		_, msg, _ := strings.Cut(f.Note, "custosd: node: ")
		if i := strings.Index(msg, ": rpc error"); i > 0 {
			msg = msg[:i]
		} else if len(msg) > 80 {
			msg = msg[:80] + "…"
		}
		causes[msg]++
	}
	if len(causes) == 0 {
		return ""
	}
	var out []string
	for c, n := range causes {
		out = append(out, fmt.Sprintf("%d× %q", n, c))
	}
	sort.Strings(out)
	return "start failures (custosd exited 1, restarted): " + strings.Join(out, ", ") + "\n"
}

// keepLogs copies the nodes' logs to $TMPDIR/custos-robustness-<seed>-logs.
func (pc *procCluster) keepLogs(seed uint64) string {
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("custos-robustness-%d-logs", seed))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return ""
	}
	for _, n := range pc.nodes {
		if b, err := os.ReadFile(n.logPath); err == nil {
			_ = os.WriteFile(filepath.Join(dir, n.id+".log"), b, 0o644)
		}
	}
	return dir
}

// status asks node i for its ClusterStatus within d.
func (r *run) status(i int, d time.Duration) (*custosv1.ClusterStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return r.cluster[i].Status(ctx, &custosv1.ClusterStatusRequest{})
}

// setupProcs starts the processes, waits for a three-voter cluster and
// connects the workload.
func (r *run) setupProcs() {
	t := r.t
	pc, officers := newProcCluster(t, r.h)
	r.pc, r.officerKeys = pc, officers
	tlsFor := func(cn string) *tls.Config {
		certFile, keyFile := pki.ClientFiles(pc.pkiDir, cn)
		cfg, err := pki.ClientTLSConfig(filepath.Join(pc.pkiDir, pki.CAFile), certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	conn := func(i int, cn string) *grpc.ClientConn {
		cc, err := grpc.NewClient(pc.nodes[i].api, grpc.WithTransportCredentials(credentials.NewTLS(tlsFor(cn))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		return cc
	}
	for i := range numNodes {
		r.keys[i] = map[string]custosv1.KeyServiceClient{
			appCN:  custosv1.NewKeyServiceClient(conn(i, appCN)),
			provCN: custosv1.NewKeyServiceClient(conn(i, provCN)),
		}
		r.gov[i] = custosv1.NewGovernanceServiceClient(conn(i, officerCN))
		r.audit[i] = custosv1.NewAuditServiceClient(conn(i, nodetest.Auditor))
		r.cluster[i] = custosv1.NewClusterServiceClient(conn(i, nodetest.Auditor))
	}
	start := time.Now()
	for i := range numNodes {
		if err := pc.start(i); err != nil {
			t.Fatal(err)
		}
	}
	// Every node answers and node1 sees three voters and a leader.
	deadline := time.Now().Add(procServeTimeout)
	for {
		ready, last := true, ""
		for i := range numNodes {
			st, err := r.status(i, 2*time.Second)
			if err != nil {
				ready, last = false, fmt.Sprintf("node%d: %v", i+1, err)
				break
			}
			voters := 0
			for _, s := range st.GetServers() {
				if s.GetSuffrage() == "VOTER" {
					voters++
				}
			}
			if voters != numNodes || st.GetLeaderId() == "" {
				ready, last = false, fmt.Sprintf("node%d sees %d voters, leader %q", i+1, voters, st.GetLeaderId())
				break
			}
			r.clusterID = st.GetClusterId()
		}
		if ready {
			break
		}
		for i, n := range pc.nodes {
			if !n.running() {
				t.Fatalf("node%d exited during setup: %s (log %s)", i+1, lastLine(n.logPath), n.logPath)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cluster did not form within %s: %s", procServeTimeout, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("three custosd processes formed cluster %s in %s", r.clusterID, time.Since(start).Round(100*time.Millisecond))
	start = time.Now()
	r.admitProcs()
	t.Logf("node2 and node3 admitted as custodians in %s", time.Since(start).Round(100*time.Millisecond))
	var addrs []string
	for _, n := range pc.nodes {
		addrs = append(addrs, n.api)
	}
	r.keys[failover] = map[string]custosv1.KeyServiceClient{}
	for _, cn := range []string{appCN, provCN} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cl, err := custos.Dial(ctx, custos.Config{Addrs: addrs, TLS: tlsFor(cn), ConnectTimeout: time.Second})
		cancel()
		if err != nil {
			t.Fatalf("clients/go Dial: %v", err)
		}
		t.Cleanup(func() { _ = cl.Close() })
		r.keys[failover][cn] = cl.Keys()
	}
}

// procAdmitTimeout bounds the admission of nodes 2 and 3 in setupProcs.
const procAdmitTimeout = 2 * time.Minute

// admitProcs admits node2 and node3 as custodians of the domain key
// (docs/key-transport.md, "Admission"), as `custosd dev` does for its
// nodes (cmd/custosd/devadmit.go): for each node's transport key offer
// (ClusterStatus), the officers' quorum signs and submits AdmitNode
// (RSA-OAEP-SHA1: a development cluster), and node1's HSM security
// officer marks the approved key trusted with `custosd dev-trust` in a
// child process on node1's token; node1 then sends the domain key and the
// node confirms. It returns when both are ADMITTED.
func (r *run) admitProcs() {
	t := r.t
	pc := r.pc
	holder := pc.nodes[0]
	approved := map[string]bool{} // node/transport fingerprint submitted
	trusted := map[string]bool{}  // node/approved fingerprint trusted
	deadline := time.Now().Add(procAdmitTimeout)
	var last []string
	for {
		st, err := r.status(0, 5*time.Second)
		admitted := 0
		last = last[:0]
		if err != nil {
			last = append(last, err.Error())
		}
		for _, ad := range st.GetAdmissions() {
			node := ad.GetNode()
			if node == holder.id {
				continue
			}
			last = append(last, fmt.Sprintf("%s %v", node, ad.GetState()))
			switch ad.GetState() {
			case custosv1.AdmissionState_ADMISSION_STATE_OFFERED:
				key := node + "/" + ad.GetTransportKeyFingerprint()
				if approved[key] || ad.GetTransportKeyFingerprint() == "" || ad.GetIdentityKeyFingerprint() == "" {
					continue
				}
				ss, err := sign(r.clusterID, r.officerKeys, func(st *custosv1.Statement) {
					st.Operation = &custosv1.Statement_AdmitNode{AdmitNode: &custosv1.AdmitNode{Node: node,
						TransportKeyFingerprint: ad.GetTransportKeyFingerprint(), IdentityKeyFingerprint: ad.GetIdentityKeyFingerprint(),
						Hash: custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA1}}
				}, 0, 1)
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err = r.gov[0].Submit(ctx, ss)
				cancel()
				if err != nil {
					last = append(last, fmt.Sprintf("officers admit %s: %v", node, err))
					continue
				}
				approved[key] = true
			case custosv1.AdmissionState_ADMISSION_STATE_APPROVED:
				key := node + "/" + ad.GetApprovedFingerprint()
				if trusted[key] {
					continue
				}
				cmd := exec.Command(pc.bin, "dev-trust", "--pins", holder.pinsFile, "--token", holder.tokenLabel,
					"--fingerprint", ad.GetApprovedFingerprint(), "--public-key-hex", hex.EncodeToString(ad.GetTransportPublicKey()))
				cmd.Env = append(envWithout(os.Environ(), softhsm.ConfEnv), softhsm.ConfEnv+"="+holder.hsmConf)
				if out, err := cmd.CombinedOutput(); err != nil {
					last = append(last, fmt.Sprintf("%s's SO: trust %s's transport key: %v: %s", holder.id, node, err, strings.TrimSpace(string(out))))
					continue
				}
				trusted[key] = true
			case custosv1.AdmissionState_ADMISSION_STATE_ADMITTED:
				admitted++
			}
		}
		if admitted == numNodes-1 {
			return
		}
		for i, n := range pc.nodes {
			if !n.running() {
				t.Fatalf("node%d exited during admission: %s (log %s)", i+1, lastLine(n.logPath), n.logPath)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node2 and node3 were not admitted within %s: %s", procAdmitTimeout, strings.Join(last, "; "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// envWithout returns env without the variable name.
func envWithout(env []string, name string) []string {
	var out []string
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k != name {
			out = append(out, kv)
		}
	}
	return out
}
