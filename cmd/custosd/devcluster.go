package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/custos-kms/custos/internal/atomicfile"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/internal/activation"
	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/pki"
	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"github.com/custos-kms/custos/softhsm"
)

// The local cluster of `custosd dev --nodes N` (docs/cluster.md): node i
// (1-based) serves gRPC on 127.0.0.1:BASE+i-1 and Raft on
// 127.0.0.1:BASE+clusterRaftOffset+i-1, or, with --base-port 0, on ports
// the system picks, recorded in DIR/cluster.json. The parent binds every
// address before it starts any node and passes each node its two
// listeners (socket activation, internal/activation): no port is picked,
// released and bound again (docs/architecture.md, "Listeners").
const (
	clusterDefaultDir      = ".cluster"
	clusterDefaultBasePort = 7401
	clusterRaftOffset      = 10
	clusterMinNodes        = 2
	clusterMaxNodes        = clusterRaftOffset - 1
	clusterHost            = "127.0.0.1"
	// clusterReadyTimeout bounds how long the parent waits for every node
	// to answer and node1 to report N voters.
	clusterReadyTimeout = 90 * time.Second
	// clusterAdmitTimeout bounds the wait for every node to be admitted
	// before client.env is written.
	clusterAdmitTimeout = 90 * time.Second
	// clusterStopTimeout bounds how long the children get to stop after
	// SIGINT/SIGTERM before they are killed (a node's Close gives in-flight
	// RPCs up to 10 s).
	clusterStopTimeout = 30 * time.Second
	clusterLayoutFile  = "cluster.json"
)

// clusterLayout is DIR/cluster.json: what the cluster was created with, so
// that a restart on DIR reuses the same nodes and ports. BasePort 0: the
// ports were picked by the system at the first start and are listed in
// APIPorts and RaftPorts.
type clusterLayout struct {
	Nodes     int   `json:"nodes"`
	BasePort  int   `json:"base_port"`
	APIPorts  []int `json:"api_ports,omitempty"`
	RaftPorts []int `json:"raft_ports,omitempty"`
}

func (l clusterLayout) nodeID(i int) string { return fmt.Sprintf("node%d", i+1) }

func (l clusterLayout) apiAddr(i int) string {
	if l.BasePort == 0 {
		return hostPort(l.APIPorts[i])
	}
	return hostPort(l.BasePort + i)
}

func (l clusterLayout) raftAddr(i int) string {
	if l.BasePort == 0 {
		return hostPort(l.RaftPorts[i])
	}
	return hostPort(l.BasePort + clusterRaftOffset + i)
}

// ephemeral reports whether the layout asks for system-picked ports that
// are not known yet (a first start with --base-port 0).
func (l clusterLayout) ephemeral() bool { return l.BasePort == 0 && len(l.APIPorts) == 0 }

func hostPort(port int) string { return clusterHost + ":" + strconv.Itoa(port) }

// wantsDevCluster reports whether `custosd dev` args ask for a local
// cluster (a --nodes flag before any "--").
func wantsDevCluster(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && name == "nodes" {
			return true
		}
	}
	return false
}

// cmdDevCluster is `custosd dev --nodes N`: it prepares DIR (PKI, one
// SoftHSM2 token and one serve configuration per node, the dev officer),
// runs `custosd serve` once per node as child processes and waits for them.
func cmdDevCluster(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl, err := parseDevFlags(args, true, stderr)
	if err != nil {
		return err
	}
	if fl.nodes == 1 {
		fmt.Fprintln(stderr, "custosd dev: --nodes 1 is the single development node: run custosd dev without --nodes")
		return errUsage
	}
	if fl.nodes < clusterMinNodes || fl.nodes > clusterMaxNodes {
		fmt.Fprintf(stderr, "custosd dev: --nodes must be between %d and %d\n", clusterMinNodes, clusterMaxNodes)
		return errUsage
	}
	if fl.basePort < 0 || fl.basePort+clusterRaftOffset+fl.nodes-1 > 65535 {
		fmt.Fprintf(stderr, "custosd dev: --base-port %d leaves no room for %d gRPC and Raft ports\n", fl.basePort, fl.nodes)
		return errUsage
	}
	dir, err := filepath.Abs(fl.dataDir)
	if err != nil {
		return err
	}
	// Before the layout, the ports or anything else in dir: one custosd
	// dev uses it at a time (each node also locks its own DIR/nodeI).
	lock, err := node.LockDataDir(dir)
	if err != nil {
		return err
	}
	defer lock.Release()
	layout, fresh, err := clusterLoadLayout(dir, clusterLayout{Nodes: fl.nodes, BasePort: fl.basePort}, fl.set["base-port"])
	if err != nil {
		return err
	}
	// Every node's addresses are bound here, before any node starts, and
	// handed to the node: a busy port is reported now, and no other
	// process can take one in between.
	lis, err := clusterListen(&layout)
	if err != nil {
		return err
	}
	defer func() {
		for _, l := range lis {
			l.close()
		}
	}()
	if fresh {
		if err := clusterSaveLayout(dir, layout); err != nil {
			return err
		}
	}
	module, err := softhsm.ModulePath()
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the custosd executable: %w", err)
	}

	// One dev CA: node certificates (gRPC server, forwarding, Raft) and the
	// dev-admin client certificate.
	pkiDir := filepath.Join(dir, "pki")
	hosts := []string{clusterHost, "localhost"}
	if err := pki.CreateDevPKI(pkiDir, hosts, devClientName); err != nil {
		return fmt.Errorf("dev PKI: %w", err)
	}
	for i := range layout.Nodes {
		if _, _, err := pki.IssueNodeCert(pkiDir, layout.nodeID(i), hosts); err != nil {
			return fmt.Errorf("dev PKI: %w", err)
		}
	}
	officersDir := filepath.Join(dir, "officers")
	officerFile, officer, err := devOfficer(officersDir)
	if err != nil {
		return err
	}
	officerPub := filepath.Join(officersDir, devOfficerName+".pub.pem")
	if err := clusterWritePublicKey(officerPub, officer); err != nil {
		return err
	}

	children := make([]*clusterChild, layout.Nodes)
	for i := range layout.Nodes {
		c, err := clusterPrepareNode(dir, layout, i, module)
		if err != nil {
			return err
		}
		if fl.set["log-level"] {
			c.logLevel = fl.logLevel
		}
		children[i] = c
	}

	var mu sync.Mutex
	out := &lockedWriter{mu: &mu, w: stdout}
	errw := &lockedWriter{mu: &mu, w: stderr}
	exits := make(chan clusterExit, len(children))
	running := 0
	stop := func(sig os.Signal) {
		clusterStop(children, exits, &running, sig, errw)
	}
	for i, c := range children {
		if err := c.start(exe, out, errw, exits, i, lis[i]); err != nil {
			stop(os.Interrupt)
			return err
		}
		running++
		fmt.Fprintf(errw, "custosd dev: %s started, pid %d (gRPC %s, Raft %s)\n", c.id, c.cmd.Process.Pid, layout.apiAddr(i), layout.raftAddr(i))
	}

	addrs := make([]string, layout.Nodes)
	for i := range addrs {
		addrs[i] = layout.apiAddr(i)
	}
	caFile := filepath.Join(pkiDir, pki.CAFile)
	certFile, keyFile := pki.ClientFiles(pkiDir, devClientName)
	st, err := clusterWaitReady(ctx, custos.Config{Addrs: addrs, CAFile: caFile, CertFile: certFile, KeyFile: keyFile},
		layout.Nodes, exits, children, &running)
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(errw, "custosd dev: signal received, stopping the nodes")
			stop(os.Interrupt)
			return nil
		}
		stop(os.Interrupt)
		return err
	}

	// The parent plays the customer's officer and SOs: every node becomes
	// a custodian of the domain key (devadmit.go), before client.env is
	// written, and again whenever a node comes back without it.
	admitter, err := newDevAdmitter(custos.Config{Addrs: addrs, CAFile: caFile, CertFile: certFile, KeyFile: keyFile},
		officerFile, exe, dir, children, errw)
	if err != nil {
		stop(os.Interrupt)
		return err
	}
	custodians := "every node is a custodian of the domain key"
	if !admitter.waitAll(ctx, layout.Nodes, clusterAdmitTimeout) {
		custodians = "not every node is a custodian of the domain key yet (custos cluster status shows which)"
		fmt.Fprintf(errw, "custosd dev: %s after %s; the admission goes on in the background\n", custodians, clusterAdmitTimeout)
	}
	admitCtx, admitStop := context.WithCancel(ctx)
	admitDone := make(chan struct{})
	go func() { defer close(admitDone); admitter.run(admitCtx) }()
	defer func() { admitStop(); <-admitDone }()

	envFile := filepath.Join(dir, "client.env")
	env := fmt.Sprintf("# written by custosd dev --nodes %d; load with: source %s\n"+
		"export CUSTOS_ADDR=%s\nexport CUSTOS_CA=%s\nexport CUSTOS_CERT=%s\nexport CUSTOS_KEY=%s\n"+
		"export CUSTOS_OFFICER_KEY=%s\nexport CUSTOS_OFFICER_NAME=%s\n",
		layout.Nodes, shellQuote(envFile), shellQuote(strings.Join(addrs, ",")), shellQuote(caFile), shellQuote(certFile), shellQuote(keyFile),
		shellQuote(officerFile), shellQuote(devOfficerName))
	if err := atomicfile.Write(envFile, []byte(env), 0o600, true); err != nil {
		stop(os.Interrupt)
		return fmt.Errorf("write %s: %w", envFile, err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\ncustos dev cluster of %d nodes is running (leader %s).\n", layout.Nodes, st.GetLeaderId())
	for i, c := range children {
		fmt.Fprintf(&b, "  %-6s gRPC %s  Raft %s  pid %d  config %s\n", c.id, layout.apiAddr(i), layout.raftAddr(i), c.cmd.Process.Pid, c.config)
	}
	for i, c := range children {
		if c.console {
			fmt.Fprintf(&b, "  %-6s officer console https://localhost:%d/ (WebAuthn; trust the dev CA %s in the browser)\n",
				c.id, lis[i].console.Addr().(*net.TCPAddr).Port, caFile)
		}
	}
	fmt.Fprintf(&b, `  cluster id: %s
  data dir:   %s
  client env: %s
  officer:    %s (quorum 1), key %s

The dev officer and each token's security officer admitted the nodes
(RSA-OAEP-SHA1 key transport: the development profile, NOT CRYPTREC-compliant):
%s, so any node serves key crypto and the cluster
survives the loss of any one node; see docs/key-transport.md.

%s
A node that dies leaves the others running; start it again with:
  kill -HUP %d
Stop with Ctrl-C; restarting on the same data dir keeps keys, officer and ledger.
`, st.GetClusterId(), dir, envFile, devOfficerName, officerFile, custodians,
		devNextSteps(envFile, cliDir(), "custos cluster status", "custos key create payroll"), os.Getpid())
	fmt.Fprint(out, b.String())

	// A node that dies leaves the others running (a cluster survives the
	// loss of one node); SIGHUP starts every dead node again on its own
	// sockets, which this process kept.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(errw, "custosd dev: signal received, stopping the nodes")
			stop(os.Interrupt)
			return nil
		case e := <-exits:
			running--
			children[e.i].exited = true
			if running == 0 {
				fmt.Fprintf(errw, "custosd dev: %s exited (%s); no node is left\n", children[e.i].id, exitText(e.err))
				return fmt.Errorf("every node exited (last %s: %s)", children[e.i].id, exitText(e.err))
			}
			lis[e.i].down()
			fmt.Fprintf(errw, "custosd dev: %s exited (%s); the other %d keep running. Start it again with: kill -HUP %d\n",
				children[e.i].id, exitText(e.err), running, os.Getpid())
		case <-hup:
			restarted := 0
			for i, c := range children {
				if !c.exited {
					continue
				}
				if err := c.start(exe, out, errw, exits, i, lis[i]); err != nil {
					fmt.Fprintf(errw, "custosd dev: restart %s: %v\n", c.id, err)
					continue
				}
				c.exited = false
				running++
				restarted++
				fmt.Fprintf(errw, "custosd dev: %s started, pid %d (gRPC %s, Raft %s)\n", c.id, c.cmd.Process.Pid, layout.apiAddr(i), layout.raftAddr(i))
			}
			if restarted == 0 {
				fmt.Fprintln(errw, "custosd dev: SIGHUP: every node is running")
			}
		}
	}
}

// clusterLoadLayout reads DIR/cluster.json, or returns want with fresh
// set when there is none (clusterSaveLayout writes it once the ports are
// bound). A restart must ask for the same number of nodes; the base port
// is taken from the file unless --base-port names another one (then it
// refuses: the Raft configuration holds the old addresses).
func clusterLoadLayout(dir string, want clusterLayout, basePortSet bool) (_ clusterLayout, fresh bool, _ error) {
	file := filepath.Join(dir, clusterLayoutFile)
	b, err := os.ReadFile(file)
	switch {
	case err == nil:
		var have clusterLayout
		if err := json.Unmarshal(b, &have); err != nil || have.Nodes < clusterMinNodes || have.BasePort < 0 ||
			(have.BasePort == 0 && (len(have.APIPorts) != have.Nodes || len(have.RaftPorts) != have.Nodes)) {
			return have, false, fmt.Errorf("%s is damaged; remove %s to start a fresh dev cluster", file, dir)
		}
		if have.Nodes != want.Nodes {
			return have, false, fmt.Errorf("%s holds a cluster of %d nodes, not %d: use --nodes %d, or remove it to start over", dir, have.Nodes, want.Nodes, have.Nodes)
		}
		if basePortSet && have.BasePort != want.BasePort {
			return have, false, fmt.Errorf("%s was created with --base-port %d; its nodes keep their addresses: use --base-port %d, or remove it to start over", dir, have.BasePort, have.BasePort)
		}
		return have, false, nil
	case errors.Is(err, fs.ErrNotExist):
		return want, true, nil
	default:
		return want, false, fmt.Errorf("read %s: %w", file, err)
	}
}

// clusterSaveLayout writes DIR/cluster.json.
func clusterSaveLayout(dir string, l clusterLayout) error {
	file := filepath.Join(dir, clusterLayoutFile)
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(file, append(b, '\n'), 0o600, true); err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	return nil
}

// clusterListeners are one node's gRPC and Raft listeners, bound by the
// parent and passed to the node's process. The parent keeps them for its
// whole run, so a node started again serves on the same sockets, and
// never accepts on them while the node runs; while the node is down it
// accepts and resets every connection (downWhile), so the node's addresses
// refuse at once, as those of a process that is gone, instead of letting
// connections wait in the backlog.
type clusterListeners struct {
	api, raft net.Listener
	// console is the officer console's listener, on a port the system
	// picks at every start of the dev cluster.
	console   net.Listener
	resetting sync.WaitGroup
	stopReset chan struct{}
}

// down starts resetting connections to the node's addresses.
func (c *clusterListeners) down() {
	c.stopReset = make(chan struct{})
	for _, l := range []net.Listener{c.api, c.raft, c.console} {
		c.resetting.Add(1)
		go func(l net.Listener, stop <-chan struct{}) {
			defer c.resetting.Done()
			for {
				conn, err := l.Accept()
				if err != nil {
					select {
					case <-stop:
						return
					default:
					}
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						continue
					}
					return // closed: the parent is stopping
				}
				if tc, ok := conn.(*net.TCPConn); ok {
					_ = tc.SetLinger(0)
				}
				_ = conn.Close()
			}
		}(l, c.stopReset)
	}
}

// up stops resetting connections, before the sockets go to a node again.
func (c *clusterListeners) up() {
	if c.stopReset == nil {
		return
	}
	close(c.stopReset)
	for _, l := range []net.Listener{c.api, c.raft, c.console} {
		if d, ok := l.(interface{ SetDeadline(time.Time) error }); ok {
			_ = d.SetDeadline(time.Now()) // unblocks Accept
		}
	}
	c.resetting.Wait()
	for _, l := range []net.Listener{c.api, c.raft, c.console} {
		if d, ok := l.(interface{ SetDeadline(time.Time) error }); ok {
			_ = d.SetDeadline(time.Time{})
		}
	}
	c.stopReset = nil
}

func (c *clusterListeners) close() {
	for _, l := range []net.Listener{c.api, c.raft, c.console} {
		if l != nil {
			_ = l.Close()
		}
	}
}

// clusterListen binds every node's gRPC and Raft address. On a first start
// with --base-port 0 it listens on port 0 and records the ports the
// system picked in layout.
func clusterListen(layout *clusterLayout) ([]*clusterListeners, error) {
	pick := layout.ephemeral()
	out := make([]*clusterListeners, layout.Nodes)
	fail := func(err error) ([]*clusterListeners, error) {
		for _, l := range out {
			if l != nil {
				l.close()
			}
		}
		return nil, err
	}
	listen := func(i int, what, addr string) (net.Listener, error) {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			hint := "stop what uses it, or start a fresh --data-dir with another --base-port (or --base-port 0)"
			return nil, fmt.Errorf("%s %s address %s: %w (%s)", layout.nodeID(i), what, addr, err, hint)
		}
		return l, nil
	}
	for i := range layout.Nodes {
		apiAddr, raftAddr := hostPort(0), hostPort(0)
		if !pick {
			apiAddr, raftAddr = layout.apiAddr(i), layout.raftAddr(i)
		}
		c := &clusterListeners{}
		out[i] = c
		var err error
		if c.api, err = listen(i, "gRPC", apiAddr); err != nil {
			return fail(err)
		}
		if c.raft, err = listen(i, "Raft", raftAddr); err != nil {
			return fail(err)
		}
		if c.console, err = listen(i, "console", hostPort(0)); err != nil {
			return fail(err)
		}
		if pick {
			layout.APIPorts = append(layout.APIPorts, c.api.Addr().(*net.TCPAddr).Port)
			layout.RaftPorts = append(layout.RaftPorts, c.raft.Addr().(*net.TCPAddr).Port)
		}
	}
	return out, nil
}

// clusterWritePublicKey writes the officer's public key as PEM, for the
// officers field of node1's configuration.
func clusterWritePublicKey(file string, o *custosv1.Officer) error {
	pub, err := governance.ParsePublicKey(o.GetPublicKey())
	if err != nil {
		return fmt.Errorf("dev officer: %w", err)
	}
	if err := os.WriteFile(file, governance.PublicKeyPEM(pub), 0o644); err != nil {
		return fmt.Errorf("dev officer: %w", err)
	}
	return nil
}

// clusterChild is one node's child process.
type clusterChild struct {
	id      string
	config  string // DIR/nodeI/config.json
	hsmConf string // the node's SOFTHSM2_CONF
	// pins and label name the node's token for its SO step (devadmit.go);
	// empty: DIR/<id>/softhsm/pins.json and custos-dev-<id>.
	pins, label string
	// logLevel, if set, is passed as serve --log-level (custosd dev
	// --log-level); else the node's config.json decides.
	logLevel string
	// console: the node's configuration has a console section, so the
	// console's socket is passed to it.
	console bool
	cmd     *exec.Cmd
	outs    []*prefixWriter
	exited  bool
}

type clusterExit struct {
	i   int
	err error
}

// clusterPrepareNode creates (first start) or reuses node i's directory:
// its SoftHSM2 token with random PINs and its serve configuration.
func clusterPrepareNode(dir string, layout clusterLayout, i int, module string) (*clusterChild, error) {
	id := layout.nodeID(i)
	nodeDir := filepath.Join(dir, id)
	if err := os.MkdirAll(nodeDir, 0o700); err != nil {
		return nil, fmt.Errorf("%s: %w", id, err)
	}
	hsmDir, err := clusterToken(filepath.Join(nodeDir, "softhsm"), "custos-dev-"+id)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", id, err)
	}
	c := &clusterChild{id: id, config: filepath.Join(nodeDir, "config.json"), hsmConf: hsmDir.ConfPath()}
	if b, err := os.ReadFile(c.config); err == nil {
		// Reuse it (it may have been edited, e.g. the log level).
		var has struct {
			Console *json.RawMessage `json:"console"`
		}
		c.console = json.Unmarshal(b, &has) == nil && has.Console != nil
		return c, nil
	}
	c.console = true
	cfg := clusterNodeConfig(layout, i, module)
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(c.config, append(b, '\n'), 0o600, true); err != nil {
		return nil, fmt.Errorf("%s: write %s: %w", id, c.config, err)
	}
	return c, nil
}

// clusterServeConfig is the part of `custosd serve`'s configuration
// (fileConfig, docs/config.md) that the dev cluster writes, without the
// fields it leaves at their defaults.
type clusterServeConfig struct {
	ID        string `json:"id"`
	DataDir   string `json:"data_dir"`
	Listen    string `json:"listen"`
	RaftAddr  string `json:"raft_addr"`
	Bootstrap bool   `json:"bootstrap,omitempty"`
	Join      bool   `json:"join,omitempty"`
	AddPeers  bool   `json:"add_peers,omitempty"`
	PKCS11    struct {
		Module     string `json:"module"`
		TokenLabel string `json:"token_label"`
		PINFile    string `json:"pin_file"`
	} `json:"pkcs11"`
	TLS struct {
		CA   string `json:"ca"`
		Cert string `json:"cert"`
		Key  string `json:"key"`
	} `json:"tls"`
	RaftTLS   bool          `json:"raft_tls"`
	Peers     []filePeer    `json:"peers"`
	Officers  []fileOfficer `json:"officers,omitempty"`
	Quorum    uint32        `json:"quorum,omitempty"`
	Profile   string        `json:"profile,omitempty"`
	Operators []string      `json:"operators"`
	Auditors  []string      `json:"auditors"`
	Console   *fileConsole  `json:"console,omitempty"`
}

// clusterNodeConfig is node i's `custosd serve` configuration. Paths are
// relative to DIR/nodeI, so DIR can be moved.
func clusterNodeConfig(layout clusterLayout, i int, module string) *clusterServeConfig {
	id := layout.nodeID(i)
	var fc clusterServeConfig
	fc.ID = id
	fc.DataDir = "."
	fc.Listen = layout.apiAddr(i)
	fc.RaftAddr = layout.raftAddr(i)
	fc.PKCS11.Module = module
	fc.PKCS11.TokenLabel = "custos-dev-" + id
	fc.PKCS11.PINFile = filepath.Join("softhsm", "user.pin")
	fc.TLS.CA = filepath.Join("..", "pki", pki.CAFile)
	fc.TLS.Cert, fc.TLS.Key = pki.NodeFiles(filepath.Join("..", "pki"), id)
	fc.RaftTLS = true
	for j := range layout.Nodes {
		if j != i {
			fc.Peers = append(fc.Peers, filePeer{ID: layout.nodeID(j), RaftAddr: layout.raftAddr(j), APIAddr: layout.apiAddr(j)})
		}
	}
	fc.Operators = []string{devClientName}
	fc.Auditors = []string{devClientName}
	// The officer console, on a port custosd dev picks at each start,
	// with the node's certificate (the dev CA's, for localhost).
	fc.Console = &fileConsole{Listen: hostPort(0), RPID: "localhost"}
	if i == 0 {
		fc.Bootstrap = true
		fc.AddPeers = true
		fc.Officers = []fileOfficer{{Name: devOfficerName, PublicKeyFile: filepath.Join("..", "officers", devOfficerName+".pub.pem")}}
		fc.Quorum = 1
		fc.Profile = kms.ProfileDevelopment
	} else {
		fc.Join = true
	}
	return &fc
}

// clusterToken creates (or reuses) a SoftHSM2 token labelled label in its
// own configuration in dir, with random PINs kept in dir/pins.json and the
// user PIN alone in dir/user.pin (the node's pkcs11.pin_file), both 0600.
// Unlike devToken it leaves this process's SOFTHSM2_CONF alone: the token
// is used by a child process, which gets it in its environment.
func clusterToken(dir, label string) (*softhsm.Dir, error) {
	d, err := softhsm.OpenDir(dir)
	if err != nil {
		return nil, err
	}
	pins, err := tokenPINs(d, dir, label)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "user.pin"), []byte(pins.UserPIN+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("write the PIN file: %w", err)
	}
	if _, err := d.InitToken(label, pins.SOPIN, pins.UserPIN); err != nil {
		return nil, err
	}
	return d, nil
}

// start runs `custosd serve --config` for the node, with its own
// SOFTHSM2_CONF, its output prefixed "[nodeI] " and its listeners passed
// as the sockets "grpc" and "raft" (socket activation). The parent keeps
// its own copies (clusterListeners) to start the node again.
func (c *clusterChild) start(exe string, stdout, stderr io.Writer, exits chan<- clusterExit, i int, lis *clusterListeners) error {
	lis.up()
	args := []string{"serve", "--config", c.config}
	if c.logLevel != "" {
		args = append(args, "--log-level", c.logLevel)
	}
	cmd := exec.Command(exe, args...)
	cmd.Dir = filepath.Dir(c.config)
	env := []string{softhsm.ConfEnv + "=" + c.hsmConf}
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != softhsm.ConfEnv && k != PINEnv {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	var files []activation.Named
	for _, s := range []struct {
		name string
		l    net.Listener
	}{{socketGRPC, lis.api}, {socketRaft, lis.raft}, {socketConsole, lis.console}} {
		if s.name == socketConsole && !c.console {
			continue // a configuration written before the console existed
		}
		f, err := activation.File(s.l)
		if err != nil {
			return fmt.Errorf("%s: %w", c.id, err)
		}
		defer f.Close()
		files = append(files, activation.Named{Name: s.name, File: f})
	}
	if err := activation.Pass(cmd, files...); err != nil {
		return fmt.Errorf("%s: %w", c.id, err)
	}
	prefix := "[" + c.id + "] "
	c.outs = []*prefixWriter{{w: stdout, prefix: prefix}, {w: stderr, prefix: prefix}}
	cmd.Stdout, cmd.Stderr = c.outs[0], c.outs[1]
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", c.id, err)
	}
	c.cmd = cmd
	go func() {
		err := cmd.Wait()
		for _, o := range c.outs {
			o.flush()
		}
		exits <- clusterExit{i: i, err: err}
	}()
	return nil
}

// clusterWaitReady waits until every node answers ClusterService.Status
// and node1 sees n voters and a leader. It returns node1's status, or an
// error when a child exits, ctx ends or clusterReadyTimeout passes.
func clusterWaitReady(ctx context.Context, cfg custos.Config, n int, exits <-chan clusterExit, children []*clusterChild, running *int) (*custosv1.ClusterStatus, error) {
	cfg.ConnectTimeout = 2 * time.Second
	cfg.CallTimeout = 2 * time.Second
	cl, err := custos.Dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	deadline := time.NewTimer(clusterReadyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e := <-exits:
			*running--
			children[e.i].exited = true
			return nil, fmt.Errorf("%s exited before the cluster formed (%s); see its output above", children[e.i].id, exitText(e.err))
		case <-deadline.C:
			return nil, fmt.Errorf("the cluster did not form within %v (%s); see the nodes' output above", clusterReadyTimeout, last)
		case <-tick.C:
		}
		sts, errs := cl.ClusterStatusAll(ctx)
		ready := true
		for i, err := range errs {
			if err != nil {
				ready, last = false, fmt.Sprintf("%s does not answer yet", children[i].id)
				break
			}
		}
		if !ready {
			continue
		}
		st := sts[0]
		voters := 0
		for _, s := range st.GetServers() {
			if s.GetSuffrage() == "VOTER" {
				voters++
			}
		}
		if voters == n && st.GetLeaderId() != "" {
			return st, nil
		}
		last = fmt.Sprintf("node1 sees %d of %d voters, leader %q", voters, n, st.GetLeaderId())
	}
}

// clusterStop sends sig to every running child and waits for them,
// killing those still running after clusterStopTimeout.
func clusterStop(children []*clusterChild, exits <-chan clusterExit, running *int, sig os.Signal, errw io.Writer) {
	for _, c := range children {
		if c.cmd != nil && !c.exited {
			_ = c.cmd.Process.Signal(sig)
		}
	}
	timeout := time.NewTimer(clusterStopTimeout)
	defer timeout.Stop()
	for *running > 0 {
		select {
		case e := <-exits:
			*running--
			children[e.i].exited = true
			if e.err != nil {
				fmt.Fprintf(errw, "custosd dev: %s exited (%s)\n", children[e.i].id, exitText(e.err))
			}
		case <-timeout.C:
			for _, c := range children {
				if c.cmd != nil && !c.exited {
					fmt.Fprintf(errw, "custosd dev: %s did not stop within %v; killing it\n", c.id, clusterStopTimeout)
					_ = c.cmd.Process.Kill()
				}
			}
			timeout.Reset(clusterStopTimeout)
		}
	}
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// lockedWriter serialises writes to w with the other writers sharing mu.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// prefixWriter writes each complete line with a prefix to w. exec.Cmd
// copies a child's output into it from one goroutine.
type prefixWriter struct {
	w      io.Writer
	prefix string
	mu     sync.Mutex
	buf    []byte
}

// prefixMaxLine is how long a line may grow before it is written anyway.
const prefixMaxLine = 64 << 10

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			if len(p.buf) >= prefixMaxLine {
				p.emit(append(p.buf, '\n'))
				p.buf = p.buf[:0]
			}
			return len(b), nil
		}
		p.emit(p.buf[:i+1])
		p.buf = p.buf[i+1:]
	}
}

// flush writes what remains of an unfinished last line.
func (p *prefixWriter) flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.buf) > 0 {
		p.emit(append(p.buf, '\n'))
		p.buf = nil
	}
}

func (p *prefixWriter) emit(line []byte) {
	out := make([]byte, 0, len(p.prefix)+len(line))
	out = append(append(out, p.prefix...), line...)
	_, _ = p.w.Write(out) // one Write per line, so lines do not interleave
}
