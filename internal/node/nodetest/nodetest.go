// Package nodetest starts real custos nodes for tests: a fresh SoftHSM2
// token, a temporary data directory, a dev PKI and mutual TLS on loopback.
//
//	h := nodetest.Start(t)
//	kc := custosv1.NewKeyServiceClient(h.Conn(t, "app"))
//
// SoftHSM2 sees only the tokens that existed when the PKCS#11 module was
// loaded into the process, and the module stays loaded while any node of the
// process is open: to run several nodes at once, create all their tokens
// (softhsm.TestToken) before starting the first.
//
// Logs are discarded unless CUSTOS_TEST_LOG is set (to debug, info, warn or
// error), in which case they go to stderr.
package nodetest

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/pki"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"github.com/custos-kms/custos/softhsm"
)

// StartTimeout bounds a node start in tests.
const StartTimeout = 60 * time.Second

// Harness is one running single-node cluster.
type Harness struct {
	// Node is the running node (replaced by Restart).
	Node *node.Node
	// Addr is the node's gRPC address (127.0.0.1:port).
	Addr string
	// Dir is the harness directory: Dir/data is the node's DataDir, Dir/pki
	// the dev PKI.
	Dir string
	// CAFile is the PEM file of the harness CA.
	CAFile string
	// Token is the SoftHSM2 token the node uses.
	Token *softhsm.Token
	// Config is the node configuration (Restart reuses it).
	Config node.Config
	// Officers are the cluster's security officers (names "officer-1",
	// "officer-2", "officer-3"; quorum 2). Their key files are in
	// Dir/officers/<name>.pem.
	Officers []Officer

	mu    sync.Mutex // serialises certificate issuance
	conns []*grpc.ClientConn
	// port holds the gRPC port across restarts (keptPort), unless the
	// test gave the node a listener of its own.
	port *keptPort
}

// Logger returns the logger nodes started by this package use.
func Logger() *slog.Logger {
	lv := os.Getenv("CUSTOS_TEST_LOG")
	if lv == "" {
		return slog.New(slog.DiscardHandler)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(strings.ToUpper(lv))); err != nil {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// Config returns the configuration of a fresh single node in dir on token
// tok, creating the dev PKI in dir/pki. The node bootstraps and listens on
// 127.0.0.1:0. It has no officers: add them with SetOfficers. Its auditor
// is Auditor; it checkpoints every CheckpointEvery records or
// CheckpointInterval. Its own notifier is off (NoNotifier).
func Config(tb testing.TB, dir string, tok *softhsm.Token) node.Config {
	tb.Helper()
	pkiDir := filepath.Join(dir, "pki")
	if err := pki.CreateDevPKI(pkiDir, []string{"127.0.0.1", "localhost"}); err != nil {
		tb.Fatal(err)
	}
	var cfg node.Config
	cfg.ID = "node1"
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Listen = "127.0.0.1:0"
	cfg.PKCS11.Module = tok.Module
	cfg.PKCS11.TokenLabel = tok.Label
	cfg.PKCS11.PIN = tok.PIN
	cfg.TLS.CA = filepath.Join(pkiDir, pki.CAFile)
	cfg.TLS.Cert = filepath.Join(pkiDir, pki.ServerFile)
	cfg.TLS.Key = filepath.Join(pkiDir, pki.ServerKeyFile)
	cfg.Bootstrap = true
	cfg.RaftLocalTimeouts = true
	cfg.Auditors = []string{Auditor}
	// Tests of notification delivery drive their own notify.Notifier; a
	// second one in the node would deliver everything twice. StartWith
	// can turn the node's own back on.
	cfg.NoNotifier = true
	cfg.CheckpointEvery = CheckpointEvery
	cfg.CheckpointInterval = CheckpointInterval
	cfg.Logger = Logger()
	return cfg
}

// Auditor is the principal configured as the nodes' auditor: Conn(t,
// Auditor) may call the AuditService.
const Auditor = "auditor"

// CheckpointEvery and CheckpointInterval are the test nodes' checkpoint
// cadence: small, so that tests see several checkpoints.
const (
	CheckpointEvery    = 20
	CheckpointInterval = time.Second
)

// Officer is a test security officer.
type Officer struct {
	Name    string
	Key     *ecdsa.PrivateKey
	KeyFile string
}

// NumOfficers and Quorum are the harness's officer set: 2 of 3.
const (
	NumOfficers = 3
	Quorum      = 2
)

// NewOfficers creates NumOfficers test officers ("officer-1", ...) with
// unencrypted key files in dir/officers, and returns them with the public
// form node.Config.Officers takes.
func NewOfficers(tb testing.TB, dir string) ([]Officer, []*custosv1.Officer) {
	tb.Helper()
	var out []Officer
	var pub []*custosv1.Officer
	for i := 1; i <= NumOfficers; i++ {
		name := fmt.Sprintf("officer-%d", i)
		k, err := governance.GenerateKey()
		if err != nil {
			tb.Fatal(err)
		}
		file := filepath.Join(dir, "officers", name+".pem")
		if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
			tb.Fatal(err)
		}
		if err := governance.WriteKeyFile(file, k, nil); err != nil {
			tb.Fatal(err)
		}
		out = append(out, Officer{Name: name, Key: k, KeyFile: file})
		pub = append(pub, &custosv1.Officer{Name: name, PublicKey: governance.MarshalPublicKey(&k.PublicKey)})
	}
	return out, pub
}

// SetOfficers gives cfg (from Config) a fresh 2-of-3 officer set, with key
// files in dir/officers, and returns the officers. A test that starts its
// own node with node.Start needs it: a new cluster refuses to start without
// officers.
func SetOfficers(tb testing.TB, cfg *node.Config, dir string) []Officer {
	tb.Helper()
	officers, pub := NewOfficers(tb, dir)
	cfg.Officers, cfg.Quorum = pub, Quorum
	return officers
}

// Sign builds a statement for the harness cluster with op set by setOp,
// signed by the given officers (indices into h.Officers).
func (h *Harness) Sign(tb testing.TB, setOp func(*custosv1.Statement), signers ...int) *custosv1.SignedStatement {
	tb.Helper()
	return SignStatement(tb, h.Node.ClusterID(), h.Officers, setOp, signers...)
}

// SignStatement builds a statement for cluster clusterID with op set by
// setOp, signed by the given officers (indices into officers).
func SignStatement(tb testing.TB, clusterID string, officers []Officer, setOp func(*custosv1.Statement), signers ...int) *custosv1.SignedStatement {
	tb.Helper()
	st, err := governance.NewStatement(clusterID, time.Hour, "test")
	if err != nil {
		tb.Fatal(err)
	}
	setOp(st)
	b, err := governance.Marshal(st)
	if err != nil {
		tb.Fatal(err)
	}
	ss := &custosv1.SignedStatement{Statement: b}
	for _, i := range signers {
		sig, err := governance.Sign(officers[i].Key, officers[i].Name, b)
		if err != nil {
			tb.Fatal(err)
		}
		ss.Signatures = append(ss.Signatures, sig)
	}
	return ss
}

// Start starts a single node on a fresh SoftHSM2 token in a temporary
// directory. t.Cleanup closes it (and the connections made by Conn).
func Start(tb testing.TB) *Harness {
	tb.Helper()
	return StartWith(tb, nil)
}

// StartWith is Start with the node configuration changed by mod (if not
// nil) before the node starts, e.g. to turn its notifier on.
func StartWith(tb testing.TB, mod func(*node.Config)) *Harness {
	tb.Helper()
	tok := softhsm.TestToken(tb)
	dir := tb.TempDir()
	cfg := Config(tb, dir, tok)
	officers := SetOfficers(tb, &cfg, dir)
	if mod != nil {
		mod(&cfg)
	}
	h := &Harness{Dir: dir, CAFile: cfg.TLS.CA, Token: tok, Config: cfg, Officers: officers}
	h.start(tb)
	tb.Cleanup(func() { h.close(tb) })
	return h
}

func (h *Harness) start(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	if h.port == nil && h.Config.Listener == nil {
		h.port = keepPort(tb)
		h.Config.Listen = h.port.l.Addr().String()
	}
	if h.port != nil {
		h.Config.Listener = h.port.lend()
	}
	n, err := node.Start(ctx, h.Config)
	if err != nil {
		tb.Fatalf("nodetest: start node: %v", err)
	}
	h.Node, h.Addr = n, n.Addr()
}

func (h *Harness) close(tb testing.TB) {
	h.mu.Lock()
	conns := h.conns
	h.conns = nil
	h.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	if h.Node != nil {
		if err := h.Node.Close(); err != nil {
			tb.Errorf("nodetest: close node: %v", err)
		}
	}
}

// Restart closes the node and starts it again on the same data directory
// and token, on the same port, which the harness held meanwhile (a
// connection attempt in between is reset). Connections made by Conn
// reconnect by themselves.
func (h *Harness) Restart(tb testing.TB) {
	tb.Helper()
	h.RestartWith(tb, nil)
}

// RestartWith is Restart with between(&h.Config), if not nil, called
// while the node is stopped (e.g. to restore its data directory).
func (h *Harness) RestartWith(tb testing.TB, between func(cfg *node.Config)) {
	tb.Helper()
	if err := h.Node.Close(); err != nil {
		tb.Fatalf("nodetest: close node: %v", err)
	}
	h.Node = nil
	if between != nil {
		between(&h.Config)
	}
	h.Config.Listen = h.Addr
	h.start(tb)
}

// ClientTLS returns a client TLS configuration with a certificate whose
// subject common name is cn, issued by the harness CA (created on first
// use). With cn == "" the configuration presents no client certificate.
func (h *Harness) ClientTLS(tb testing.TB, cn string) *tls.Config {
	tb.Helper()
	pkiDir := filepath.Dir(h.CAFile)
	if cn == "" {
		cfg, err := pki.ClientTLSConfig(h.CAFile, "", "")
		if err != nil {
			tb.Fatal(err)
		}
		return cfg
	}
	h.mu.Lock()
	err := pki.CreateDevPKI(pkiDir, nil, cn)
	h.mu.Unlock()
	if err != nil {
		tb.Fatal(err)
	}
	certFile, keyFile := pki.ClientFiles(pkiDir, cn)
	cfg, err := pki.ClientTLSConfig(h.CAFile, certFile, keyFile)
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// Conn returns a gRPC connection to the node authenticated as cn (no client
// certificate if cn is ""). It is closed when the test ends.
func (h *Harness) Conn(tb testing.TB, cn string) *grpc.ClientConn {
	tb.Helper()
	cc, err := grpc.NewClient(h.Addr, grpc.WithTransportCredentials(credentials.NewTLS(h.ClientTLS(tb, cn))))
	if err != nil {
		tb.Fatal(err)
	}
	h.mu.Lock()
	h.conns = append(h.conns, cc)
	h.mu.Unlock()
	return cc
}
