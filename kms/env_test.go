package kms_test

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/hsm/pkcs11"
	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/governance"
	"github.com/custos-kms/custos/kms/ledger"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"github.com/custos-kms/custos/raft"
	"github.com/custos-kms/custos/softhsm"
)

// env is a real single node below the gRPC layer: a SoftHSM token, a Raft
// node with raft-wal on disk, a bbolt ledger and the service.
type env struct {
	t        testing.TB
	officers []officer
	dir      string
	tok      *softhsm.Token
	hsm      *countingHSM
	led      *ledger.Store
	node     *raft.Node
	state    *kms.State
	svc      *kms.Service
	log      kms.Log // what the service proposes through (node, or a wrapper)
	closed   bool
	profile  string // recorded at InitCluster
	maxSMV   uint32 // Config.MaxStateMachineVersion (0: this release's)
}

var app = kms.Principal{Name: "app-1"}

// quiet drops logs below ERROR so test output shows failures only.
var quiet = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvProfile(t, "")
}

// newEnvProfile is newEnv for a cluster with the genesis profile.
func newEnvProfile(t testing.TB, profile string) *env {
	t.Helper()
	return newEnvWith(t, &env{t: t, dir: t.TempDir(), tok: softhsm.TestToken(t), profile: profile})
}

// newEnvVersion is newEnv for a cluster of nodes that apply at most state
// machine version v (a release before this one).
func newEnvVersion(t testing.TB, v uint32) *env {
	t.Helper()
	return newEnvWith(t, &env{t: t, dir: t.TempDir(), tok: softhsm.TestToken(t), maxSMV: v})
}

func newEnvWith(t testing.TB, e *env) *env {
	t.Helper()
	var pub []*custosv1.Officer
	for i := 1; i <= 3; i++ {
		k, err := governance.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		o := officer{name: fmt.Sprintf("officer-%d", i), key: k}
		e.officers = append(e.officers, o)
		pub = append(pub, &custosv1.Officer{Name: o.name, PublicKey: governance.MarshalPublicKey(&k.PublicKey)})
	}
	e.open()
	if err := e.svc.InitCluster(context.Background(), pub, 2); err != nil {
		t.Fatalf("InitCluster: %v", err)
	}
	t.Cleanup(e.close)
	return e
}

func (e *env) open() {
	t := e.t
	t.Helper()
	ctx := context.Background()
	b, err := pkcs11.Open(ctx, pkcs11.Config{Module: e.tok.Module, TokenLabel: e.tok.Label, PIN: e.tok.PIN, Sessions: 4})
	if err != nil {
		t.Fatalf("pkcs11.Open: %v", err)
	}
	e.hsm = &countingHSM{Backend: b}
	e.led, err = ledger.Open(filepath.Join(e.dir, "ledger.db"), ledger.Options{NoSync: true})
	if err != nil {
		t.Fatalf("ledger.Open: %v", err)
	}
	e.state = kms.NewState(e.led)
	e.node, err = raft.Open(raft.Config{ID: "node-1", Dir: filepath.Join(e.dir, "raft"), Bootstrap: true,
		LocalTimeouts: true, Logger: quiet}, e.state)
	if err != nil {
		t.Fatalf("raft.Open: %v", err)
	}
	if err := e.node.WaitLeader(ctx); err != nil {
		t.Fatalf("WaitLeader: %v", err)
	}
	// Entries after the last snapshot are applied once the leader commits:
	// serve nothing before the state has caught up with the log.
	if err := e.node.Barrier(ctx); err != nil {
		t.Fatalf("Barrier: %v", err)
	}
	e.log = e.node
	e.svc = e.newService(e.node)
	e.closed = false
}

func (e *env) newService(l kms.Log) *kms.Service {
	e.t.Helper()
	svc, err := kms.NewService(kms.Config{NodeID: "node-1", HSM: e.hsm, Log: l, State: e.state, Logger: quiet,
		Auditors: []string{"auditor"}, Profile: e.profile, MaxStateMachineVersion: e.maxSMV})
	if err != nil {
		e.t.Fatalf("NewService: %v", err)
	}
	return svc
}

func (e *env) close() {
	if e.closed {
		return
	}
	e.closed = true
	_ = e.node.Close()
	_ = e.led.Close()
	_ = e.hsm.Close()
}

// restart closes every component and opens them again on the same disk
// state and token.
func (e *env) restart() {
	e.t.Helper()
	e.close()
	e.open()
	if err := e.svc.InitCluster(context.Background(), nil, 0); err != nil {
		e.t.Fatalf("InitCluster after restart: %v", err)
	}
}

// countingHSM is the real backend, counting the calls that could release
// key material so tests can prove none happened.
type countingHSM struct {
	hsm.Backend
	decrypts atomic.Int64
	encrypts atomic.Int64
	// failEncrypt makes EncryptGCM fail as a broken module would, while
	// every other call (Health among them) still answers.
	failEncrypt atomic.Bool
}

func (c *countingHSM) EncryptGCM(ctx context.Context, id hsm.KeyRef, iv, pt, aad []byte) ([]byte, error) {
	c.encrypts.Add(1)
	if c.failEncrypt.Load() {
		return nil, fmt.Errorf("%w: injected C_Encrypt failure", hsm.ErrUnavailable)
	}
	return c.Backend.EncryptGCM(ctx, id, iv, pt, aad)
}

func (c *countingHSM) DecryptGCM(ctx context.Context, id hsm.KeyRef, iv, ct, aad []byte) ([]byte, error) {
	c.decrypts.Add(1)
	return c.Backend.DecryptGCM(ctx, id, iv, ct, aad)
}

// failingLog never commits: the decision cannot be recorded.
type failingLog struct{ err error }

func (f failingLog) Apply(context.Context, *raftlogv1.Command) (any, error) { return nil, f.err }

// officer is a test security officer (3 of them, quorum 2).
type officer struct {
	name string
	key  *ecdsa.PrivateKey
}

// statement builds a statement for this cluster; setOp fills the operation.
func (e *env) statement(setOp func(*custosv1.Statement)) []byte {
	e.t.Helper()
	st, err := governance.NewStatement(e.state.ClusterID(), time.Hour, "test")
	if err != nil {
		e.t.Fatal(err)
	}
	setOp(st)
	b, err := governance.Marshal(st)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// signed signs statement bytes by the officers with the given indices.
func (e *env) signed(b []byte, signers ...int) *custosv1.SignedStatement {
	e.t.Helper()
	ss := &custosv1.SignedStatement{Statement: b}
	for _, i := range signers {
		sig, err := governance.Sign(e.officers[i].key, e.officers[i].name, b)
		if err != nil {
			e.t.Fatal(err)
		}
		ss.Signatures = append(ss.Signatures, sig)
	}
	return ss
}

// govern builds, signs and submits a statement.
func (e *env) govern(setOp func(*custosv1.Statement), signers ...int) (*custosv1.SubmitResponse, error) {
	e.t.Helper()
	return e.svc.Submit(context.Background(), kms.Principal{Name: "anyone"}, e.signed(e.statement(setOp), signers...))
}

func enableKey(k string) func(*custosv1.Statement) {
	return func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_EnableKey{EnableKey: &custosv1.EnableKey{Key: k}}
	}
}

func revokeKey(k string) func(*custosv1.Statement) {
	return func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_RevokeKey{RevokeKey: &custosv1.RevokeKey{Key: k}}
	}
}
