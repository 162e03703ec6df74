// Package node wires one custosd node together: the HSM (PKCS#11), the
// decision ledger, the replicated state, Raft, the kms service, the gRPC
// server and, while the node leads, the checkpointer and the notifier. cmd/custosd and the test harness (node/nodetest) both start nodes
// through Start, so the wiring lives in one place.
package node

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/custos-kms/custos/api"
	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/hsm/pkcs11"
	"github.com/custos-kms/custos/internal/pki"
	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/governance"
	"github.com/custos-kms/custos/kms/ledger"
	"github.com/custos-kms/custos/kms/notify"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"github.com/custos-kms/custos/raft"
)

// Defaults applied by Start to zero Config fields.
const (
	DefaultListen   = "127.0.0.1:7400"
	DefaultRaftAddr = "127.0.0.1:0"
	// DefaultLeaderTimeout bounds how long Start waits for a Raft leader
	// when ctx has no deadline.
	DefaultLeaderTimeout = 30 * time.Second
	// gracefulTimeout bounds how long Close lets in-flight RPCs finish.
	gracefulTimeout = 10 * time.Second
	// DefaultCheckpointEvery and DefaultCheckpointInterval: the leader
	// signs the chain head after this many records, or after this long
	// when anything was recorded.
	DefaultCheckpointEvery = 1000
	// MaxCheckpointEvery bounds CheckpointEvery, so that the newest
	// records every snapshot carries hold a state digest.
	MaxCheckpointEvery        = 1000
	DefaultCheckpointInterval = 30 * time.Second
	// leaderPoll is how often the node checks whether it leads, to start
	// or stop the leader's background work (checkpoints, notifications).
	leaderPoll = 250 * time.Millisecond
)

// InstallHint tells an operator how to get SoftHSM2 when the module is
// missing.
const InstallHint = "install SoftHSM2 with `make run` or softhsm/install.sh (apt-get install -y softhsm2 opensc), or point the PKCS#11 module path at your HSM's library"

// Config configures a node.
type Config struct {
	// ID is the node's stable Raft server id. Required.
	ID string
	// Officers and Quorum are the customer's security officers and the
	// number of signatures that loosening needs. They are recorded when the
	// cluster is initialised (first start; required then) and change
	// afterwards only by a statement signed by the quorum, so later starts
	// ignore them (and may leave them empty).
	Officers []*custosv1.Officer
	Quorum   uint32
	// Genesis, an officer-signed CreateCluster statement, initialises a
	// new cluster instead of Officers, Quorum, Profile and
	// ClientAuthorities (docs/governance.md, Officer-signed genesis).
	Genesis *custosv1.SignedStatement
	// Profile is recorded when the cluster is initialised, like Officers:
	// kms.ProfileDevelopment lets the cluster move its domain key between
	// HSMs with RSA-OAEP-SHA1, which is not CRYPTREC-listed (SoftHSM does no
	// other); "" is production (docs/key-transport.md).
	Profile string
	// ClientAuthorities are the CA certificates (DER) that a new cluster
	// pins as the officers' client authorities (docs/identities.md),
	// recorded like Officers; nil: the CA certificates of TLS.CA.
	ClientAuthorities [][]byte
	// DataDir holds the node's state: DataDir/raft and
	// DataDir/ledger/ledger.db. Required. One process uses it at a time:
	// Start locks it (LockDataDir) before it opens anything, and Close
	// releases the lock.
	DataDir string
	// DataDirLock, if set, is the caller's lock on DataDir (LockDataDir),
	// taken before it prepared the directory (custosd dev); Start then
	// takes none, and the caller releases it after Close.
	DataDirLock *DataDirLock
	// Listen is the gRPC listen address, e.g. 127.0.0.1:7400 or :0.
	// Default 127.0.0.1:7400.
	Listen string
	// RaftAddr is the Raft transport bind address. Default 127.0.0.1:0.
	RaftAddr string
	// Listener and RaftListener, if set, are open TCP listeners the gRPC
	// server and the Raft transport (RaftTLS only) serve on instead of
	// listening on Listen and RaftAddr; Listen and RaftAddr must still name
	// their addresses (peers are configured with them). Start takes them
	// over: Close, or a failed Start, closes them. For a harness that
	// listens on port 0 and writes the ports into the other nodes'
	// configurations before they start (docs/architecture.md, "Listeners").
	Listener, RaftListener net.Listener
	// RaftAdvertise, if set, is the Raft address this node gives the other
	// nodes (its address in the Raft configuration) when it differs from
	// RaftAddr, e.g. behind a proxy or NAT. Default: the bound RaftAddr.
	RaftAdvertise string
	// PKCS11 names the HSM token: the module's path, the token label and the
	// user PIN (never logged).
	PKCS11 struct{ Module, TokenLabel, PIN string }
	// TLS names the PEM files of the cluster CA (which client certificates
	// must chain to) and of this server's certificate and key.
	TLS struct{ CA, Cert, Key string }
	// Bootstrap forms a single-node cluster when DataDir has no Raft state;
	// ignored when it has (safe to leave on across restarts).
	Bootstrap bool
	// RaftLocalTimeouts selects short Raft election timeouts, suited to
	// single-node and loopback clusters (dev, tests).
	RaftLocalTimeouts bool
	// Auditors are the principals (client certificate common names) that
	// may read the ledger through the AuditService. Empty: nobody.
	Auditors []string
	// NoNotifier leaves notification delivery off on this node: no
	// delivery loop, and keys that require notification before release
	// release nothing. For tests that drive their own notify.Notifier;
	// production nodes leave it false.
	NoNotifier bool
	// CheckpointEvery and CheckpointInterval: while this node leads, it
	// records a signed checkpoint of the chain head after CheckpointEvery
	// new records, or CheckpointInterval after the last one when anything
	// was recorded since. Defaults 1000 and 30s.
	CheckpointEvery    uint64
	CheckpointInterval time.Duration
	// MaxStreamsPerPrincipal bounds the audit streams one principal keeps
	// open on this node (kms.DefaultMaxStreamsPerPrincipal if 0).
	MaxStreamsPerPrincipal int
	// DecisionsPerSecond and RefusalsPerSecond are this node's
	// per-principal rate quotas (docs/quotas.md; kms defaults if 0), and
	// ThrottleSummaryInterval how often it records what it throttled.
	DecisionsPerSecond      float64
	RefusalsPerSecond       float64
	ThrottleSummaryInterval time.Duration
	// MaxStateMachineVersion is the newest state machine version this node
	// reports it can apply (kms.StateMachineVersion if 0;
	// docs/upgrades.md). Lower only to stand in for an older release in
	// tests of rolling upgrades.
	MaxStateMachineVersion uint32
	// Logger; slog.Default() if nil.
	Logger *slog.Logger

	// RaftTLS runs Raft over mutual TLS (raft.NewTLSTransport) with the
	// certificate in TLS.Cert, which must then be a node certificate (CN
	// custos-node:<ID>, serverAuth and clientAuth: pki.IssueNodeCert); the
	// node also forwards commands to the leader's gRPC server with it.
	// Cluster configurations turn it on; without it Raft uses plain TCP,
	// which suits a single node only.
	RaftTLS bool
	// Peers are the other nodes of the cluster. The Raft transport talks
	// to the ids in the current Raft configuration and to these; commands
	// are forwarded to the leader's APIAddr found here (or registered
	// through the log).
	Peers []Peer
	// Join starts a node that is to be added to an existing cluster: it
	// does not bootstrap and waits for the leader to add it (ClusterService
	// AddVoter, or AddPeers on the leader). Once it has replayed the log it
	// serves everything, but until officers admit it and its HSM holds the
	// cluster's domain key (docs/key-transport.md, *Admission*; it offers
	// a transport key by itself) it refuses key crypto with
	// FailedPrecondition.
	Join bool
	// ClusterID, if set, is the cluster this node belongs to: a node whose
	// state (its own or the one it learns when joining) names another
	// cluster refuses to start.
	ClusterID string
	// AddPeers makes the leader add configured Peers that are missing from
	// the Raft configuration as voters, once their Raft port answers. The
	// configuration is then the admission: used by `custosd dev`.
	AddPeers bool
	// Operators are the principals (client certificate common names)
	// allowed to call the ClusterService's mutations.
	Operators []string
	// Isolate, if set and true, cuts the node off from every other node:
	// the Raft transport allows nobody and nothing is forwarded. For fault
	// tests (a network partition).
	Isolate *atomic.Bool

	// XKS, if set, serves the AWS KMS External Key Store proxy API on its
	// own HTTPS listener (xks.go, docs/xks.md).
	XKS *XKSConfig
	// Console, if set, serves the officer console on its own HTTPS
	// listener (console.go, docs/console.md).
	Console *ConsoleConfig
	// MetricsListen, if set, serves Prometheus metrics at /metrics over
	// plain HTTP on this address (e.g. 127.0.0.1:7490; metrics.go,
	// docs/operations.md). Empty: no metrics are collected.
	MetricsListen string
	// MetricsListener, if set (with MetricsListen), is an open listener
	// the metrics are served on instead of listening on MetricsListen;
	// Start takes it over as it does Listener.
	MetricsListener net.Listener
	// Now, if set, is the node's clock: the time stamped into the commands
	// it proposes, and, while it leads, the clock forwarded commands'
	// stamps are checked against (api.NewReplicationServer). time.Now if
	// nil; tests set it to move a node's clock.
	Now func() time.Time
}

// Node is a running custosd node.
type Node struct {
	cfg     Config
	log     *slog.Logger
	hsm     *pkcs11.Backend
	ledger  *ledger.Store
	raft    *raft.Node
	svc     *kms.Service
	grpc    *grpc.Server
	lis     net.Listener
	serveCh chan error
	cancel  context.CancelFunc // stops the health poller and the leader work
	bgDone  chan struct{}      // closed when the leader work has stopped
	// custodyDone is closed when the admission worker has stopped.
	custodyDone chan struct{}
	// throttleDone is closed when the throttle summaries have stopped.
	throttleDone chan struct{}
	// advertiseDone is closed when the advertisement retries have stopped
	// (nil if the first one succeeded).
	advertiseDone chan struct{}
	// notifier delivers notify records to the sinks (Run on the leader)
	// and before release (installed on every node); nil with NoNotifier.
	notifier *notify.Notifier

	trans      io.Closer // Raft TLS transport (closed after Raft)
	allowed    *allowedSet
	fwd        *forwarder
	ri         *readIndexes
	memStop    context.CancelFunc
	memDone    chan struct{}
	metrics    *nodeMetrics   // nil without MetricsListen
	xks        *xksServer     // nil without XKS
	console    *consoleServer // nil without Console
	consoleURL string

	// dirLock is the lock on the data directory that Start took (nil
	// when the caller holds it: Config.DataDirLock).
	dirLock *DataDirLock

	closeOnce sync.Once
	closeErr  error
}

// Start opens everything cfg names and serves gRPC until Close. ctx bounds
// the start only. On error, whatever was opened is closed again, and the
// error says what to fix.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	if err := cfg.check(); err != nil {
		cfg.closeListeners()
		return nil, err
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.RaftAddr == "" {
		cfg.RaftAddr = DefaultRaftAddr
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.CheckpointEvery == 0 {
		cfg.CheckpointEvery = DefaultCheckpointEvery
	}
	if cfg.CheckpointEvery > MaxCheckpointEvery {
		// Every snapshot's ledger tail must reach a state digest to check
		// the snapshot against (kms.State.Restore).
		return nil, fmt.Errorf("node: config: CheckpointEvery %d is more than %d", cfg.CheckpointEvery, MaxCheckpointEvery)
	}
	if cfg.CheckpointInterval <= 0 {
		cfg.CheckpointInterval = DefaultCheckpointInterval
	}
	n := &Node{cfg: cfg, log: cfg.Logger, serveCh: make(chan error, 1)}
	// The data directory first: a second node on it stops here, before
	// it opens the HSM, the ledger or Raft.
	if cfg.DataDirLock == nil {
		if n.dirLock, err = LockDataDir(cfg.DataDir); err != nil {
			cfg.closeListeners()
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			_ = n.Close()
			// Listeners handed in are ours, used or not (closing one
			// twice is harmless).
			cfg.closeListeners()
		}
	}()
	defer func() {
		// A panic (hashicorp/raft's NewRaft on a log it cannot read)
		// leaves the rest to the caller, but not the directory locked.
		if p := recover(); p != nil {
			_ = n.dirLock.Release()
			panic(p)
		}
	}()

	// TLS first: cheap to check, and a typo should not wait for the HSM.
	tlsCfg, err := pki.ServerTLSConfig(cfg.TLS.CA, cfg.TLS.Cert, cfg.TLS.Key)
	if err != nil {
		return nil, fmt.Errorf("node: TLS (ca %s, cert %s, key %s): %w", cfg.TLS.CA, cfg.TLS.Cert, cfg.TLS.Key, err)
	}

	if cfg.MetricsListen != "" {
		if n.metrics, err = newNodeMetrics(); err != nil {
			return nil, fmt.Errorf("node: metrics: %w", err)
		}
	}
	var xksTLS *tls.Config
	if cfg.XKS != nil {
		if xksTLS, err = xksTLSConfig(cfg.XKS); err != nil {
			return nil, fmt.Errorf("node: XKS TLS: %w", err)
		}
	}
	if n.hsm, err = openHSM(ctx, cfg); err != nil {
		return nil, err
	}
	var backend hsm.Backend = n.hsm
	if n.metrics != nil {
		backend = newInstrumentedHSM(n.hsm, n.metrics)
	}

	ledgerPath := filepath.Join(cfg.DataDir, "ledger", "ledger.db")
	if err := os.MkdirAll(filepath.Dir(ledgerPath), 0o700); err != nil {
		return nil, fmt.Errorf("node: data dir: %w", err)
	}
	if err := os.Chmod(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("node: data dir: %w", err)
	}
	tightenDataDir(cfg.DataDir, cfg.Logger)
	if n.ledger, err = ledger.Open(ledgerPath, ledger.Options{NoSync: true}); err != nil {
		return nil, fmt.Errorf("node: open ledger %s: %w", ledgerPath, err)
	}
	state := kms.NewState(n.ledger)

	rc := raft.Config{
		ID:            cfg.ID,
		Dir:           filepath.Join(cfg.DataDir, "raft"),
		Addr:          cfg.RaftAddr,
		Advertise:     cfg.RaftAdvertise,
		Bootstrap:     cfg.Bootstrap && !cfg.Join,
		Logger:        cfg.Logger.With("component", "raft"),
		LocalTimeouts: cfg.RaftLocalTimeouts,
	}
	var log kms.Log
	if cfg.RaftTLS {
		nt, err := loadNodeTLS(cfg)
		if err != nil {
			return nil, fmt.Errorf("node: node certificate: %w", err)
		}
		n.allowed = newAllowedSet(cfg.ID, cfg.Peers, cfg.Isolate)
		trans, err := raft.NewTLSTransport(raft.TLSTransportConfig{
			BindAddr:    cfg.RaftAddr,
			Listener:    cfg.RaftListener,
			Advertise:   cfg.RaftAdvertise,
			CAPools:     nt.pools.Current,
			Certificate: nt.cert.Current,
			Allowed:     n.allowed.Allowed,
			Logger:      cfg.Logger.With("component", "raft-transport"),
		})
		if err != nil {
			return nil, fmt.Errorf("node: raft transport on %s: %w", cfg.RaftAddr, err)
		}
		n.trans = trans
		rc.Transport = trans
		peers := map[string]string{}
		for _, p := range cfg.Peers {
			peers[p.ID] = p.APIAddr
		}
		n.fwd = &forwarder{tls: nt, peers: peers, state: state, isolate: cfg.Isolate, conns: map[string]*grpc.ClientConn{}}
	}
	n.raft, err = raft.Open(rc, state)
	if err != nil {
		return nil, fmt.Errorf("node: open raft in %s: %w", filepath.Join(cfg.DataDir, "raft"), err)
	}
	log = n.raft
	if n.fwd != nil {
		log = &kms.ForwardingLog{Local: n.raft, Forward: n.fwd.Forward}
	}
	// A restarted node knows its cluster from its snapshot at once.
	if id := state.ClusterID(); cfg.ClusterID != "" && id != "" && id != cfg.ClusterID {
		return nil, fmt.Errorf("node: data dir %s belongs to cluster %s, not to the configured cluster %s", cfg.DataDir, id, cfg.ClusterID)
	}
	memCtx, memStop := context.WithCancel(context.Background())
	n.memStop, n.memDone = memStop, make(chan struct{})
	go func() { defer close(n.memDone); n.followMembershipAndBackfill(memCtx) }()

	n.ri = newReadIndexes(n, state, kms.DefaultReadIndexTimeout)
	authorities := cfg.ClientAuthorities
	if authorities == nil && state.ClusterID() == "" && !cfg.Join {
		// A new cluster pins the CAs of its bundle as they are now.
		if authorities, err = pki.LoadCACerts(cfg.TLS.CA); err != nil {
			return nil, fmt.Errorf("node: client authorities: %w", err)
		}
	}
	n.svc, err = kms.NewService(kms.Config{
		NodeID:    cfg.ID,
		HSM:       backend,
		Log:       log,
		State:     state,
		Logger:    cfg.Logger.With("component", "kms"),
		Auditors:  cfg.Auditors,
		Now:       cfg.Now,
		ReadIndex: n.ri.any,
		// A node that joined waits for officers to admit it (its HSM to
		// hold the domain key) before any key crypto, on every front door.
		RequireAdmission:       cfg.Join,
		Profile:                cfg.Profile,
		ClientAuthorities:      authorities,
		MaxStreamsPerPrincipal: cfg.MaxStreamsPerPrincipal,
		DecisionsPerSecond:     cfg.DecisionsPerSecond,
		RefusalsPerSecond:      cfg.RefusalsPerSecond,
		MaxStateMachineVersion: cfg.MaxStateMachineVersion,
		Genesis:                cfg.Genesis,
	})
	if err != nil {
		return nil, fmt.Errorf("node: kms: %w", err)
	}
	if err := n.waitReady(ctx); err != nil {
		return nil, err
	}
	if err := n.waitCaughtUp(ctx); err != nil {
		return nil, err
	}
	// The state this node loaded must be the one its ledger's newest
	// checkpoint recorded (docs/ledger.md, State digest): an edited
	// snapshot is refused here, before anything is served.
	switch checked, at, err := state.VerifyStateDigest(cfg.ID); {
	case err != nil:
		return nil, fmt.Errorf("node: %w", err)
	case checked:
		n.log.Info("state verified against the ledger's state digest", "checkpoint_seq", at)
	default:
		n.log.Info("state not verifiable at start: state-changing records since the newest checkpoint, or none on this node yet")
	}
	// And it must be the state the genesis and the officers' statements
	// give, recomputed from this node's ledger with the auditor's code
	// (docs/ledger.md, Recomputed state): digests rewritten to match an
	// edited state do not pass this.
	recheck, err := state.VerifyRecomputed()
	switch {
	case err != nil:
		return nil, fmt.Errorf("node: %w", err)
	case recheck.Checked:
		n.log.Info("state recomputed from the genesis and the officers' statements", "records", recheck.Records, "keys", recheck.Keys)
	default:
		n.log.Info("state not recomputed at start", "why", recheck.Why)
	}
	for _, why := range recheck.NotPermitted {
		n.log.Error("this node's ledger holds a record the officers' statements did not permit (custos audit verify reports it)", "record", why)
	}
	if id := state.ClusterID(); cfg.ClusterID != "" && id != "" && id != cfg.ClusterID {
		return nil, fmt.Errorf("node: refusing to join cluster %s: this node is configured for cluster %s", id, cfg.ClusterID)
	}
	if v, max := state.StateMachineVersion(), cmp.Or(cfg.MaxStateMachineVersion, kms.StateMachineVersion); v > max {
		return nil, fmt.Errorf("node: the cluster runs state machine version %d and this custosd applies at most %d: run a newer release (docs/upgrades.md)", v, max)
	}
	if cfg.Join && state.ClusterID() != "" {
		// A joined node: no InitCluster (its HSM has no domain key unless
		// officers admitted it); it refuses crypto until it has one.
		if !n.svc.Admitted(ctx) {
			n.log.Warn("this node's HSM does not hold the cluster's domain key: serving without key crypto until the node is admitted", "cluster", state.ClusterID())
		}
	} else if err := n.svc.InitCluster(ctx, cfg.Officers, cfg.Quorum); err != nil {
		if len(cfg.Officers) == 0 && cfg.Genesis == nil && errors.Is(err, kms.ErrInvalidArgument) {
			return nil, fmt.Errorf("node: initialise cluster: a new cluster needs its security officers and quorum (configuration fields officers and quorum, or an officer-signed genesis): %w", err)
		}
		return nil, fmt.Errorf("node: initialise cluster: %w", err)
	}
	// This node's HSM-resident checkpoint key, registered through the log
	// so that every node (and every auditor) knows its public key.
	// TODO(kms): register the node's gRPC address with it (api_addr), so
	// that nodes missing from Peers can be forwarded to.
	if err := n.svc.EnsureCheckpointKey(ctx); err != nil {
		return nil, fmt.Errorf("node: checkpoint signing key: %w", err)
	}

	if !cfg.NoNotifier {
		// Any node may serve a decrypt, so every node delivers before
		// release; only the leader runs the delivery loop (leaderWork).
		n.notifier = notify.New(notify.Config{State: state, Service: n.svc, Logger: cfg.Logger})
		n.notifier.Install()
	}

	healthCtx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.bgDone = make(chan struct{})
	go n.leaderWork(healthCtx)
	n.custodyDone = make(chan struct{})
	go func() { defer close(n.custodyDone); n.svc.RunAdmission(healthCtx) }()
	n.throttleDone = make(chan struct{})
	go func() {
		defer close(n.throttleDone)
		n.svc.RunThrottleSummaries(healthCtx, cfg.ThrottleSummaryInterval)
	}()
	opts := api.Options{
		Service: n.svc,
		TLS:     tlsCfg,
		Logger:  cfg.Logger.With("component", "api"),
		Health:  n.health,
		Context: healthCtx,
	}
	if n.fwd != nil {
		opts.Replication = replicationLeader{Node: n.raft, ri: n.ri, members: n.allowed, now: cfg.Now}
	}
	operators := map[string]bool{}
	for _, o := range cfg.Operators {
		operators[o] = true
	}
	if n.metrics != nil {
		opts.Metrics = n.metrics.grpc
		if err := n.metrics.start(cfg.MetricsListen, cfg.MetricsListener, n.raft, state, cfg.Logger.With("component", "metrics")); err != nil {
			return nil, err
		}
	}
	opts.Cluster = &api.ClusterDeps{Raft: n.raft, Service: n.svc, HSM: backend,
		IsOperator: func(p string) bool { return operators[p] }, Logger: cfg.Logger.With("component", "cluster")}
	n.grpc, err = api.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("node: gRPC server: %w", err)
	}
	if cfg.Listener != nil {
		n.lis = cfg.Listener
	} else if n.lis, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("node: listen on %s (change the listen address or stop what uses it): %w", cfg.Listen, err)
	}
	go func() { n.serveCh <- n.grpc.Serve(n.lis) }()
	if cfg.XKS != nil {
		if n.xks, err = n.startXKS(cfg.XKS, xksTLS, n.health); err != nil {
			return nil, err
		}
	}
	if cfg.Console != nil {
		if n.console, err = n.startConsole(cfg.Console, cfg.TLS.Cert, cfg.TLS.Key, *opts.Cluster); err != nil {
			return nil, err
		}
		n.consoleURL = consoleOrigin(cfg.Console, n.console.lis) + "/"
	}
	// Publish where this node serves, so followers can forward to it when
	// it leads, and which state machine versions it applies, so that the
	// cluster upgrades once every node can (docs/upgrades.md). A failure
	// only delays both: it is retried in the background.
	if err := n.svc.AdvertiseAPIAddr(ctx, n.Addr()); err != nil {
		n.log.Warn("could not advertise the gRPC address and version yet: retrying", "err", err)
		n.advertiseDone = make(chan struct{})
		go func() { defer close(n.advertiseDone); n.advertise(healthCtx) }()
	}
	n.log.Info("custos node started", "id", cfg.ID, "addr", n.Addr(), "raft", n.raft.Addr(), "cluster", n.svc.ClusterID(),
		"xks", n.XKSAddr(), "metrics", n.MetricsAddr())
	return n, nil
}

// closeListeners closes the listeners handed in with c.
func (c Config) closeListeners() {
	ls := []net.Listener{c.Listener, c.RaftListener, c.MetricsListener}
	if c.XKS != nil {
		ls = append(ls, c.XKS.Listener)
	}
	if c.Console != nil {
		ls = append(ls, c.Console.Listener)
	}
	for _, l := range ls {
		if l != nil {
			_ = l.Close()
		}
	}
}

func (c Config) check() error {
	switch {
	case c.ID == "":
		return errors.New("node: config: ID is required")
	case c.DataDir == "":
		return errors.New("node: config: DataDir is required")
	case c.RaftListener != nil && !c.RaftTLS:
		return errors.New("node: config: RaftListener needs RaftTLS (the plain-TCP Raft transport listens itself)")
	case c.MetricsListener != nil && c.MetricsListen == "":
		return errors.New("node: config: MetricsListener needs MetricsListen (metrics are collected only then)")
	case c.PKCS11.Module == "":
		return fmt.Errorf("node: config: PKCS#11 module path is required; %s", InstallHint)
	case c.PKCS11.TokenLabel == "":
		return errors.New("node: config: PKCS#11 token label is required")
	case c.TLS.CA == "" || c.TLS.Cert == "" || c.TLS.Key == "":
		return errors.New("node: config: TLS CA, certificate and key files are required")
	case len(c.Officers) == 0 && c.Quorum != 0:
		return errors.New("node: config: Quorum is set but there are no Officers")
	}
	if c.XKS != nil {
		if err := c.XKS.check(); err != nil {
			return err
		}
	}
	if c.Console != nil {
		if err := c.Console.check(); err != nil {
			return err
		}
	}
	if len(c.Officers) > 0 {
		if _, err := governance.NewOfficerSet(c.Officers, c.Quorum); err != nil {
			return fmt.Errorf("node: config: %w", err)
		}
	}
	return nil
}

// openHSM opens the token and turns the pkcs11 errors into messages that
// say what to do.
func openHSM(ctx context.Context, cfg Config) (*pkcs11.Backend, error) {
	b, err := pkcs11.Open(ctx, pkcs11.Config{
		Module:     cfg.PKCS11.Module,
		TokenLabel: cfg.PKCS11.TokenLabel,
		PIN:        cfg.PKCS11.PIN,
	})
	switch {
	case err == nil:
		return b, nil
	case errors.Is(err, pkcs11.ErrModule):
		return nil, fmt.Errorf("node: PKCS#11 module %s cannot be loaded (%s): %w", cfg.PKCS11.Module, InstallHint, err)
	case errors.Is(err, pkcs11.ErrTokenNotFound):
		return nil, fmt.Errorf("node: no initialised HSM token labelled %q (create it, e.g. softhsm2-util --init-token --free --label %q, or use `custosd dev`, which creates one): %w",
			cfg.PKCS11.TokenLabel, cfg.PKCS11.TokenLabel, err)
	case errors.Is(err, pkcs11.ErrPIN):
		return nil, fmt.Errorf("node: HSM token %q refused the PIN (check the PIN file or CUSTOS_PKCS11_PIN): %w", cfg.PKCS11.TokenLabel, err)
	default:
		return nil, fmt.Errorf("node: open HSM token %q: %w", cfg.PKCS11.TokenLabel, err)
	}
}

// waitReady waits for a Raft leader and, on the leader, for the log to be
// replayed into the state.
func (n *Node) waitReady(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultLeaderTimeout)
		defer cancel()
	}
	if err := n.raft.WaitLeader(ctx); err != nil {
		hint := ""
		if !n.cfg.Bootstrap || n.cfg.Join {
			hint = " (a new single node needs Bootstrap; a joining node needs the cluster to admit it)"
		}
		return fmt.Errorf("node: no Raft leader%s: %w", hint, err)
	}
	if n.raft.IsLeader() {
		if err := n.raft.Barrier(ctx); err != nil {
			return fmt.Errorf("node: replay the Raft log: %w", err)
		}
	}
	return nil
}

// leaderWork runs the leader's background work while this node leads: the
// checkpointer and the notification delivery loop. It polls the Raft state,
// starts the work on gaining leadership and stops it on losing it, and
// returns, with the work stopped, when ctx ends.
func (n *Node) leaderWork(ctx context.Context) {
	defer close(n.bgDone)
	var (
		stop context.CancelFunc
		wg   sync.WaitGroup
	)
	halt := func() {
		if stop != nil {
			stop()
			wg.Wait()
			stop = nil
		}
	}
	defer halt()
	t := time.NewTicker(leaderPoll)
	defer t.Stop()
	for {
		leads := n.raft.IsLeader()
		switch {
		case leads && stop == nil:
			lctx, cancel := context.WithCancel(ctx)
			stop = cancel
			n.log.Debug("leading: starting the checkpointer and the notifier", "every", n.cfg.CheckpointEvery, "interval", n.cfg.CheckpointInterval)
			wg.Add(1)
			go func() {
				defer wg.Done()
				n.svc.RunCheckpointer(lctx, n.cfg.CheckpointEvery, n.cfg.CheckpointInterval)
			}()
			wg.Add(1)
			go func() {
				defer wg.Done()
				n.svc.RunDestructions(lctx) // key destructions whose waiting period is over
			}()
			wg.Add(1)
			go func() {
				defer wg.Done()
				n.svc.RunStateMachineUpgrades(lctx) // once every server can apply a newer version
			}()
			if n.notifier != nil {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := n.notifier.Run(lctx); err != nil && lctx.Err() == nil {
						n.log.Error("notification delivery stopped", "err", err)
					}
				}()
			}
		case !leads && stop != nil:
			n.log.Debug("no longer leading: stopping the checkpointer and the notifier")
			halt()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// health is the node's readiness: a Raft leader is known, and the kms
// service says the HSM answers and the ledger is sound.
func (n *Node) health(ctx context.Context) error {
	if n.raft.Stats().Leader == "" {
		return errors.New("no raft leader")
	}
	return n.svc.Health(ctx)
}

// Addr returns the gRPC listen address (host:port, the real port when
// Listen asked for :0).
func (n *Node) Addr() string {
	if n.lis == nil {
		return ""
	}
	return n.lis.Addr().String()
}

// RaftAddr returns the Raft transport address other nodes dial: the
// bound address, or Config.RaftAdvertise when set.
func (n *Node) RaftAddr() string {
	if n.raft == nil {
		return ""
	}
	return n.raft.Addr()
}

// ClusterID returns the cluster id recorded by InitCluster.
func (n *Node) ClusterID() string {
	if n.svc == nil {
		return ""
	}
	return n.svc.ClusterID()
}

// Service returns the node's kms service (for in-process tests and tools).
func (n *Node) Service() *kms.Service { return n.svc }

// Raft returns the node's Raft member.
func (n *Node) Raft() *raft.Node { return n.raft }

// Close stops the node gracefully: the gRPC server (in-flight RPCs get up
// to 10s), then Raft, the ledger and the HSM, in that order. It is
// idempotent and safe on a partly started node.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		// XKS first: AWS's in-flight requests finish while the node can
		// still answer them.
		if err := n.xks.close(); err != nil {
			errs = append(errs, fmt.Errorf("xks: %w", err))
		}
		_ = n.console.close()
		n.metrics.close()
		if n.cancel != nil {
			n.cancel()
		}
		if n.bgDone != nil {
			<-n.bgDone // the checkpointer stops before Raft closes
		}
		if n.custodyDone != nil {
			<-n.custodyDone
		}
		if n.throttleDone != nil {
			<-n.throttleDone
		}
		if n.advertiseDone != nil {
			<-n.advertiseDone
		}
		if n.grpc != nil {
			done := make(chan struct{})
			go func() { n.grpc.GracefulStop(); close(done) }()
			select {
			case <-done:
			case <-time.After(gracefulTimeout):
				n.grpc.Stop()
				<-done
			}
			if n.lis != nil {
				if err := <-n.serveCh; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
					errs = append(errs, fmt.Errorf("grpc: %w", err))
				}
			}
		} else if n.lis != nil {
			_ = n.lis.Close()
		}
		if n.svc != nil {
			// What was throttled since the last summary, now that no call
			// can be throttled any more (best effort: the log may not take
			// it; docs/quotas.md).
			fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if err := n.svc.FlushThrottled(fctx); err != nil {
				n.log.Warn("stopping: could not record throttled requests", "err", err)
			}
			cancel()
		}
		if n.memStop != nil {
			n.memStop()
			<-n.memDone
		}
		if n.fwd != nil {
			n.fwd.close()
		}
		if n.raft != nil {
			if err := n.raft.Close(); err != nil {
				errs = append(errs, fmt.Errorf("raft: %w", err))
			}
		}
		if n.trans != nil {
			if err := n.trans.Close(); err != nil {
				errs = append(errs, fmt.Errorf("raft transport: %w", err))
			}
		}
		if n.ledger != nil {
			if err := n.ledger.Close(); err != nil {
				errs = append(errs, fmt.Errorf("ledger: %w", err))
			}
		}
		if n.hsm != nil {
			if err := n.hsm.Close(); err != nil {
				errs = append(errs, fmt.Errorf("hsm: %w", err))
			}
		}
		// Last: the directory is free once everything in it is closed.
		if err := n.dirLock.Release(); err != nil {
			errs = append(errs, fmt.Errorf("data dir lock: %w", err))
		}
		if len(errs) > 0 {
			n.closeErr = fmt.Errorf("node: close: %w", errors.Join(errs...))
		}
		if n.svc != nil {
			n.log.Info("custos node stopped", "id", n.cfg.ID)
		}
	})
	return n.closeErr
}

// advertisePoll is how often a node retries advertising its address and
// state machine version after a failure.
const advertisePoll = 2 * time.Second

// advertise retries AdvertiseAPIAddr until it succeeds or ctx ends.
func (n *Node) advertise(ctx context.Context) {
	t := time.NewTicker(advertisePoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := n.svc.AdvertiseAPIAddr(ctx, n.Addr()); err == nil {
			n.log.Info("advertised the gRPC address and state machine version")
			return
		}
	}
}
