package robustness

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms/audit"
	"github.com/custos-kms/custos/kms/governance"
	"github.com/custos-kms/custos/kms/notify"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

var (
	flagDuration = flag.Duration("robustness.duration", 0,
		"how long the workload and the fault injector run (0: the bounded CI default, 45s, or 30s with -short; env CUSTOS_ROBUSTNESS_DURATION)")
	flagSeed    = flag.Uint64("robustness.seed", 0, "seed of the fault schedule and the workload (0: random; env CUSTOS_ROBUSTNESS_SEED)")
	flagClients = flag.Int("robustness.clients", 4, "workload client goroutines")
	flagStrict  = flag.Bool("robustness.strict", false, "fail on known issues too (env CUSTOS_ROBUSTNESS_STRICT=1); make robustness sets it")
	flagReport  = flag.String("robustness.report", "", "write the run report (markdown) to this file (env CUSTOS_ROBUSTNESS_REPORT)")
)

const (
	numNodes  = 3
	appCN     = "app"
	provCN    = "provider"
	officerCN = "officer-cli"
	callLimit = 4 * time.Second
)

var keyNames = []string{"k0", "k1", "k2"}

func duration(t *testing.T) time.Duration {
	if *flagDuration > 0 {
		return *flagDuration
	}
	if s := os.Getenv("CUSTOS_ROBUSTNESS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("CUSTOS_ROBUSTNESS_DURATION: %v", err)
		}
		return d
	}
	if testing.Short() {
		return 30 * time.Second
	}
	return 45 * time.Second
}

func seed(t *testing.T) uint64 {
	if *flagSeed != 0 {
		return *flagSeed
	}
	if s := os.Getenv("CUSTOS_ROBUSTNESS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CUSTOS_ROBUSTNESS_SEED: %v", err)
		}
		return v
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	v := uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])
	return v + 1
}

func hash(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

// sign builds a statement for the cluster signed by the given officers,
// without the t.Fatal of nodetest.SignStatement (it runs off the test
// goroutine).
func sign(clusterID string, officers []nodetest.Officer, op func(*custosv1.Statement), signers ...int) (*custosv1.SignedStatement, error) {
	st, err := governance.NewStatement(clusterID, time.Hour, "robustness")
	if err != nil {
		return nil, err
	}
	op(st)
	b, err := governance.Marshal(st)
	if err != nil {
		return nil, err
	}
	ss := &custosv1.SignedStatement{Statement: b}
	for _, i := range signers {
		sig, err := governance.Sign(officers[i].Key, officers[i].Name, b)
		if err != nil {
			return nil, err
		}
		ss.Signatures = append(ss.Signatures, sig)
	}
	return ss, nil
}

// sink is the webhook receiver: it records every record seq delivered
// with a valid signature.
type sink struct {
	key []byte
	mu  sync.Mutex
	got map[uint64]bool
	bad int
}

func (s *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := notify.VerifySignature(s.key, r.Header.Get(notify.HeaderTimestamp), r.Header.Get(notify.HeaderSignature), body, time.Now(), 0); err != nil {
		s.mu.Lock()
		s.bad++
		s.mu.Unlock()
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var msg struct {
		Records []struct {
			Seq string `json:"seq"`
		} `json:"records"`
	}
	if err := json.Unmarshal(body, &msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	for _, r := range msg.Records {
		if v, err := strconv.ParseUint(r.Seq, 10, 64); err == nil {
			s.got[v] = true
		}
	}
	s.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (s *sink) delivered() map[uint64]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[uint64]bool, len(s.got))
	for k, v := range s.got {
		out[k] = v
	}
	return out
}

// wrappedKey is a data key the workload may decrypt.
type wrappedKey struct {
	op      int // the GenerateDataKey op
	key     string
	wrapped []byte
}

// run is one robustness run.
type run struct {
	t         *testing.T
	seed      uint64
	c         *nodetest.Cluster // in-process mode (TestRobustness)
	pc        *procCluster      // process mode (TestRobustnessProcesses)
	clusterID string
	h         *History
	// officerKeys sign the officers' statements; test names the test in
	// the replay command.
	officerKeys []nodetest.Officer
	test        string

	// keys[node][principal]; keys[failover] is a clients/go client over
	// all three addresses (failover on Unavailable).
	keys  [numNodes + 1]map[string]custosv1.KeyServiceClient
	gov   [numNodes]custosv1.GovernanceServiceClient
	audit [numNodes]custosv1.AuditServiceClient
	// cluster: ClusterService clients (process mode).
	cluster [numNodes]custosv1.ClusterServiceClient

	poolMu sync.Mutex
	pool   []wrappedKey

	pending chan string // approval request ids

	killed   [numNodes]bool // owned by the fault goroutine until it ends
	isolated [numNodes]bool
	lost     [numNodes]string   // why a node could not be restarted
	broken   [numNodes][]string // restart failures repaired by rebuild
}

var encCtx = map[string]string{"tenant": "robustness"}

// requested reports whether this run asked for the suite: by -run naming
// it, or CUSTOS_ROBUSTNESS=1. A plain `go test ./...` (make test) skips it,
// so CI runs it once, from its own line in .ci/run.
func requested() bool {
	if os.Getenv("CUSTOS_ROBUSTNESS") == "1" {
		return true
	}
	f := flag.Lookup("test.run")
	return f != nil && strings.Contains(f.Value.String(), "Robustness")
}

func TestRobustness(t *testing.T) {
	if !requested() {
		t.Skip("run with -run TestRobustness (or CUSTOS_ROBUSTNESS=1): a minute or more with three nodes")
	}
	d := duration(t)
	r := &run{t: t, seed: seed(t), h: &History{}, pending: make(chan string, 256), test: "TestRobustness$"}
	t.Logf("robustness: seed %d, duration %s, %d clients; replay: go test -run 'TestRobustness$' -count=1 ./internal/robustness/ -robustness.seed=%d -robustness.duration=%s",
		r.seed, d, *flagClients, r.seed, d)
	fmt.Fprintf(os.Stderr, "robustness: seed %d duration %s\n", r.seed, d)

	r.setup()
	snk := &sink{key: bytes.Repeat([]byte{0x5a}, 32), got: map[uint64]bool{}}
	srv := httptest.NewServer(snk)
	t.Cleanup(srv.Close)
	sinkSeq := r.setupGovernance(srv.URL, snk.key)

	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < *flagClients; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); r.client(ctx, i) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); r.officers(ctx) }()
	faultsDone := make(chan struct{})
	go func() { defer close(faultsDone); r.faults(ctx, d) }()
	wg.Wait()
	<-faultsDone

	// Heal everything and wait for one ledger.
	r.heal()
	records := r.converge(snk, sinkSeq)

	in := Input{Ops: r.h.Ops(), Records: records, SinkFrom: sinkSeq, Delivered: snk.delivered()}
	for i := range numNodes {
		if r.lost[i] == "" {
			in.KeyStates = append(in.KeyStates, r.keyStates(i))
		} else {
			in.KeyStates = append(in.KeyStates, nil)
		}
	}
	viol := r.verifyLedgers(records)
	viol = append(viol, Check(in)...)
	if snk.bad > 0 {
		viol = append(viol, Violation{Check: "d", Detail: fmt.Sprintf("%d webhook deliveries with a bad signature", snk.bad)})
	}
	r.report(d, records, viol)
}

// setup starts the cluster with every node's notifier on, and connects.
func (r *run) setup() {
	t := r.t
	c := nodetest.StartClusterOf(t, numNodes, 1)
	r.c = c
	r.officerKeys = c.Officers
	// nodetest turns the nodes' notifiers off; this suite needs them on
	// (check (d)). Member configs are reused by Restart and Join.
	for _, m := range c.Members {
		m.Config.NoNotifier = false
	}
	c.Kill(t, 0)
	c.Restart(t, 0)
	for i := 1; i < numNodes; i++ {
		c.Join(t, i)
	}
	r.clusterID = c.ClusterID()
	for i := range numNodes {
		st := c.Members[i].Node.Service().State()
		deadline := time.Now().Add(30 * time.Second)
		for st.NodeAPIAddr(c.Members[0].Config.ID) == "" {
			if time.Now().After(deadline) {
				t.Fatalf("member %d does not learn node1's gRPC address", i)
			}
			time.Sleep(20 * time.Millisecond)
		}
		r.keys[i] = map[string]custosv1.KeyServiceClient{
			appCN:  custosv1.NewKeyServiceClient(c.Conn(t, i, appCN)),
			provCN: custosv1.NewKeyServiceClient(c.Conn(t, i, provCN)),
		}
		r.gov[i] = custosv1.NewGovernanceServiceClient(c.Conn(t, i, officerCN))
		r.audit[i] = custosv1.NewAuditServiceClient(c.Conn(t, i, nodetest.Auditor))
	}
	var addrs []string
	for _, m := range c.Members {
		addrs = append(addrs, m.Addr)
	}
	r.keys[failover] = map[string]custosv1.KeyServiceClient{}
	for _, cn := range []string{appCN, provCN} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cl, err := custos.Dial(ctx, custos.Config{Addrs: addrs, TLS: c.ClientTLS(t, cn), ConnectTimeout: time.Second})
		cancel()
		if err != nil {
			t.Fatalf("clients/go Dial: %v", err)
		}
		t.Cleanup(func() { _ = cl.Close() })
		r.keys[failover][cn] = cl.Keys()
	}
}

func basePolicy() *custosv1.KeyPolicy {
	ra := custosv1.Action_ACTION_REQUIRE_APPROVAL
	return &custosv1.KeyPolicy{
		EncryptPrincipals: []string{appCN},
		DecryptPrincipals: []string{appCN, provCN},
		Reasons: []*custosv1.ReasonRule{
			{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Action: custosv1.Action_ACTION_ALLOW},
			{Reason: custosv1.Reason_REASON_CUSTOMER_WORKFLOW, Action: custosv1.Action_ACTION_ALLOW},
			{Reason: custosv1.Reason_REASON_PROVIDER_SERVICE, Action: ra},
			{Reason: custosv1.Reason_REASON_PROVIDER_SUPPORT, Action: ra},
			{Reason: custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST, Action: ra},
			{Reason: custosv1.Reason_REASON_EMERGENCY, Action: ra},
		},
	}
}

// setupGovernance adds the webhook sink, creates the keys with their
// policies and a few data keys; it returns the AddSink ledger position.
func (r *run) setupGovernance(url string, hmacKey []byte) uint64 {
	t := r.t
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	submit := func(op func(*custosv1.Statement), signers ...int) *custosv1.SubmitResponse {
		ss, err := sign(r.clusterID, r.officerKeys, op, signers...)
		if err != nil {
			t.Fatal(err)
		}
		res, err := r.gov[0].Submit(ctx, ss)
		if err != nil {
			t.Fatalf("setup statement: %v", err)
		}
		return res
	}
	res := submit(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_AddSink{AddSink: &custosv1.AddSink{Sink: &custosv1.Sink{
			Name: "webhook", Type: custosv1.SinkType_SINK_TYPE_WEBHOOK, Url: url, HmacKey: hmacKey}}}
	}, 0)
	sinkSeq := res.LedgerSeq
	for _, k := range keyNames {
		if _, err := r.keys[0][appCN].CreateKey(ctx, &custosv1.CreateKeyRequest{Name: k}); err != nil {
			t.Fatalf("create key %s: %v", k, err)
		}
		submit(func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: k, Policy: basePolicy()}}
		}, 0, 1)
		for range 2 {
			r.generate(ctx, "setup", 0, k)
		}
	}
	if len(r.pool) == 0 {
		t.Fatal("setup: no data key generated")
	}
	return sinkSeq
}

func codeOf(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return codes.DeadlineExceeded
	}
	return status.Code(err)
}

func (r *run) generate(ctx context.Context, client string, n int, key string) {
	o := r.h.Begin(&Op{Client: client, Kind: OpGenerateDataKey, Node: n, Principal: appCN, Key: key})
	cctx, cancel := context.WithTimeout(ctx, callLimit)
	res, err := r.keys[n][appCN].GenerateDataKey(cctx, &custosv1.GenerateDataKeyRequest{Key: key, EncryptionContext: encCtx})
	cancel()
	if err == nil {
		o.DataKeyHash = hash(res.Plaintext)
		r.poolMu.Lock()
		r.pool = append(r.pool, wrappedKey{op: o.ID, key: key, wrapped: res.WrappedDataKey})
		r.poolMu.Unlock()
	}
	r.h.Finish(o, codeOf(err), err)
}

var reasons = []struct {
	reason    custosv1.Reason
	principal string
	weight    int
}{
	{custosv1.Reason_REASON_CUSTOMER_INITIATED, appCN, 55},
	{custosv1.Reason_REASON_CUSTOMER_WORKFLOW, appCN, 10},
	{custosv1.Reason_REASON_PROVIDER_SERVICE, provCN, 15},
	{custosv1.Reason_REASON_PROVIDER_SUPPORT, provCN, 5},
	{custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST, provCN, 5},
	{custosv1.Reason_REASON_EMERGENCY, provCN, 5},
}

func (r *run) decrypt(ctx context.Context, rng *mrand.Rand, client string, n int) {
	r.poolMu.Lock()
	wk := r.pool[rng.IntN(len(r.pool))]
	r.poolMu.Unlock()
	x := rng.IntN(100)
	rs := reasons[0]
	for _, c := range reasons {
		if x < c.weight {
			rs = c
			break
		}
		x -= c.weight
	}
	o := r.h.Begin(&Op{Client: client, Kind: OpDecrypt, Node: n, Principal: rs.principal, Key: wk.key,
		Reason: strings.TrimPrefix(rs.reason.String(), "REASON_"), Wrapped: wk.op})
	cctx, cancel := context.WithTimeout(ctx, callLimit)
	res, err := r.keys[n][rs.principal].Decrypt(cctx, &custosv1.DecryptRequest{Ciphertext: wk.wrapped, EncryptionContext: encCtx,
		Justification: &custosv1.Justification{Reason: rs.reason, Text: "robustness " + client, Ticket: fmt.Sprintf("R-%d", o.ID)}})
	cancel()
	if err == nil {
		o.DecisionSeq, o.RequestID, o.DataKeyHash = res.DecisionSeq, res.RequestId, hash(res.Plaintext)
	} else if id, ok := custos.PendingRequestID(err); ok {
		o.RequestID = id
		select {
		case r.pending <- id:
		default:
		}
	}
	r.h.Finish(o, codeOf(err), err)
}

// failover is the "node" of calls made through the clients/go failover
// client.
const failover = FailoverNode

// pickNode prefers node 1 (index 0): only it can do key crypto; 15 % of
// calls go through the failover client.
func pickNode(rng *mrand.Rand) int {
	switch x := rng.IntN(100); {
	case x < 45:
		return 0
	case x < 60:
		return failover
	}
	return rng.IntN(numNodes)
}

func (r *run) client(ctx context.Context, i int) {
	rng := mrand.New(mrand.NewPCG(r.seed, uint64(i+1)))
	name := fmt.Sprintf("client-%d", i)
	for ctx.Err() == nil {
		n := pickNode(rng)
		if rng.IntN(100) < 30 {
			r.generate(ctx, name, n, keyNames[rng.IntN(len(keyNames))])
		} else {
			r.decrypt(ctx, rng, name, n)
		}
		time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
	}
}

// officers is the single officer workload goroutine: revokes, disables,
// re-enables, policy changes, approvals and denials, one at a time.
func (r *run) officers(ctx context.Context) {
	rng := mrand.New(mrand.NewPCG(r.seed, 1000))
	stopped := map[string]bool{} // what the officers believe
	pair := func() []int {
		p := [][]int{{0, 1}, {1, 2}, {0, 2}}
		return p[rng.IntN(len(p))]
	}
	for ctx.Err() == nil {
		time.Sleep(time.Duration(150+rng.IntN(400)) * time.Millisecond)
		if ctx.Err() != nil {
			return
		}
		key := keyNames[rng.IntN(len(keyNames))]
		var kind OpKind
		var setOp func(*custosv1.Statement)
		var signers []int
		var request, reqID string
		switch x := rng.IntN(100); {
		case x < 10:
			kind, signers = OpRevoke, []int{rng.IntN(3)}
			setOp = func(st *custosv1.Statement) {
				st.Operation = &custosv1.Statement_RevokeKey{RevokeKey: &custosv1.RevokeKey{Key: key}}
			}
		case x < 17:
			kind, signers = OpDisable, []int{rng.IntN(3)}
			setOp = func(st *custosv1.Statement) {
				st.Operation = &custosv1.Statement_DisableKey{DisableKey: &custosv1.DisableKey{Key: key}}
			}
		case x < 55:
			for _, k := range keyNames {
				if stopped[k] {
					key = k
					break
				}
			}
			kind, signers = OpEnable, pair()
			setOp = func(st *custosv1.Statement) {
				st.Operation = &custosv1.Statement_EnableKey{EnableKey: &custosv1.EnableKey{Key: key}}
			}
		case x < 70:
			p := basePolicy()
			actions := []custosv1.Action{custosv1.Action_ACTION_ALLOW, custosv1.Action_ACTION_REQUIRE_APPROVAL, custosv1.Action_ACTION_DENY}
			p.Reasons[2].Action = actions[rng.IntN(3)]
			p.Reasons[5].Action = actions[rng.IntN(2)]
			p.NotifyAll = rng.IntN(2) == 0
			kind, signers = OpSetPolicy, pair()
			request = fmt.Sprintf("provider_service=%s emergency=%s notify_all=%v",
				strings.TrimPrefix(p.Reasons[2].Action.String(), "ACTION_"), strings.TrimPrefix(p.Reasons[5].Action.String(), "ACTION_"), p.NotifyAll)
			setOp = func(st *custosv1.Statement) {
				st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: key, Policy: p}}
			}
		default:
			select {
			case reqID = <-r.pending:
			default:
				continue
			}
			key, request = "", reqID
			if x < 93 {
				kind, signers = OpApprove, pair()
				setOp = func(st *custosv1.Statement) {
					st.Operation = &custosv1.Statement_ApproveRequest{ApproveRequest: &custosv1.ApproveRequest{RequestId: reqID, Uses: 1, TtlSeconds: 600}}
				}
			} else {
				kind, signers = OpDeny, []int{rng.IntN(3)}
				setOp = func(st *custosv1.Statement) {
					st.Operation = &custosv1.Statement_DenyRequest{DenyRequest: &custosv1.DenyRequest{RequestId: reqID}}
				}
			}
		}
		ss, err := sign(r.clusterID, r.officerKeys, setOp, signers...)
		if err != nil {
			r.t.Errorf("sign: %v", err)
			return
		}
		n := rng.IntN(numNodes)
		o := r.h.Begin(&Op{Client: "officers", Kind: kind, Node: n, Principal: officerCN, Key: key, Request: request,
			StmtHash: hex.EncodeToString(sha256Sum(ss.Statement))})
		cctx, cancel := context.WithTimeout(ctx, callLimit)
		res, err := r.gov[n].Submit(cctx, ss)
		cancel()
		if err == nil {
			o.LedgerSeq = res.LedgerSeq
			switch kind {
			case OpRevoke, OpDisable:
				stopped[key] = true
			case OpEnable:
				delete(stopped, key)
			}
		}
		r.h.Finish(o, codeOf(err), err)
	}
}

func sha256Sum(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}

// plannedFault is one entry of the seeded fault schedule.
type plannedFault struct {
	at     time.Duration
	kind   string // kill, leader-kill, isolate, kill+isolate
	node   int
	second int
	dur    time.Duration
}

// schedule is the fault plan for a run of length d: a pure function of
// the seed.
func schedule(seed uint64, d time.Duration) []plannedFault {
	rng := mrand.New(mrand.NewPCG(seed, 7))
	var out []plannedFault
	at := 2 * time.Second
	for at < d-3*time.Second {
		f := plannedFault{at: at, node: rng.IntN(numNodes), dur: time.Duration(500+rng.IntN(2500)) * time.Millisecond}
		switch x := rng.IntN(100); {
		case x < 30:
			f.kind = "kill"
		case x < 50:
			f.kind = "leader-kill"
		case x < 85:
			f.kind = "isolate"
		default:
			f.kind = "kill+isolate"
			f.second = (f.node + 1 + rng.IntN(numNodes-1)) % numNodes
		}
		out = append(out, f)
		at += f.dur + time.Duration(300+rng.IntN(1200))*time.Millisecond
	}
	return out
}

func (r *run) leader() int {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for i, m := range r.c.Members {
			if m.Node != nil && !r.isolated[i] && m.Node.Raft().IsLeader() {
				return i
			}
		}
	}
	return -1
}

func (r *run) kill(i int, note string) {
	m := r.c.Members[i]
	if m.Node == nil {
		return
	}
	r.h.AddFault(Fault{Kind: "kill", Node: i, Note: note})
	if err := m.Node.Close(); err != nil {
		r.h.AddFault(Fault{Kind: "close-error", Node: i, Note: err.Error()})
	}
	m.Node = nil
	r.killed[i] = true
}

func (r *run) restart(i int) error {
	m := r.c.Members[i]
	if m.Node != nil {
		return nil
	}
	if r.lost[i] != "" {
		return errors.New(r.lost[i])
	}
	if werr := walUnreadable(m.Config.DataDir); werr != nil {
		// node.Start would panic in hashicorp/raft.NewRaft and leak the
		// node's Raft listener: record it and rebuild the node instead.
		msg := "node.Start would panic in raft.NewRaft: " + werr.Error()
		r.broken[i] = append(r.broken[i], msg)
		r.h.AddFault(Fault{Kind: "restart-panic", Node: i, Note: msg})
		nd, err := r.rebuild(i)
		if err != nil {
			r.lost[i] = err.Error()
			return err
		}
		m.Node = nd
		r.killed[i] = false
		return nil
	}
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		var nd *node.Node
		nd, err = startNode(m.Config)
		var p *startPanic
		if errors.As(err, &p) {
			// The node's stored state cannot be opened again (a violation,
			// reported by verifyLedgers). Do what an operator would: wipe
			// its Raft state and ledger and let it rejoin from the leader
			// (its HSM token, and so node 1's domain key, is kept).
			r.broken[i] = append(r.broken[i], err.Error())
			r.h.AddFault(Fault{Kind: "restart-panic", Node: i, Note: err.Error()})
			if nd, err = r.rebuild(i); err == nil {
				m.Node = nd
				r.killed[i] = false
				return nil
			}
			r.lost[i] = err.Error()
			return err
		}
		if err == nil {
			m.Node = nd
			r.killed[i] = false
			r.h.AddFault(Fault{Kind: "restart", Node: i})
			return nil
		}
		r.h.AddFault(Fault{Kind: "restart-failed", Node: i, Note: err.Error()})
		time.Sleep(time.Second)
	}
	return err
}

// rebuild wipes member i's Raft state and ledger and starts it as a
// joining node, which the leader (it is still a voter) brings up to date.
func (r *run) rebuild(i int) (*node.Node, error) {
	m := r.c.Members[i]
	for _, d := range []string{"raft", "ledger"} {
		if err := os.RemoveAll(filepath.Join(m.Config.DataDir, d)); err != nil {
			return nil, err
		}
	}
	m.Config.Join = true
	nd, err := startNode(m.Config)
	if err != nil {
		r.h.AddFault(Fault{Kind: "rebuild-failed", Node: i, Note: err.Error()})
		return nil, fmt.Errorf("rebuild after %s: %w", r.broken[i][len(r.broken[i])-1], err)
	}
	r.h.AddFault(Fault{Kind: "rebuild", Node: i, Note: "raft state and ledger wiped, rejoined"})
	return nd, nil
}

// startPanic is a panic of node.Start (e.g. in hashicorp/raft's NewRaft
// on a log store it cannot read).
type startPanic struct{ v any }

func (p *startPanic) Error() string { return fmt.Sprintf("node.Start panicked: %v", p.v) }

func startNode(cfg node.Config) (nd *node.Node, err error) {
	defer func() {
		if v := recover(); v != nil {
			nd, err = nil, &startPanic{v}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), nodetest.StartTimeout)
	defer cancel()
	return node.Start(ctx, cfg)
}

func (r *run) isolate(i int, on bool) {
	r.c.Members[i].Isolated.Store(on)
	r.isolated[i] = on
	kind := "isolate"
	if !on {
		kind = "heal"
	}
	r.h.AddFault(Fault{Kind: kind, Node: i})
}

// faults runs the seeded schedule until ctx ends; it leaves healing to
// heal.
func (r *run) faults(ctx context.Context, d time.Duration) {
	start := time.Now()
	for _, f := range schedule(r.seed, d) {
		if !sleepCtx(ctx, time.Until(start.Add(f.at))) {
			return
		}
		switch f.kind {
		case "kill":
			r.kill(f.node, "")
		case "leader-kill":
			l := r.leader()
			if l < 0 {
				l = f.node
			}
			r.kill(l, "leader")
			f.node = l
		case "isolate":
			r.isolate(f.node, true)
		case "kill+isolate":
			r.kill(f.node, "with isolate of node"+strconv.Itoa(f.second+1))
			r.isolate(f.second, true)
		}
		sleepCtx(ctx, f.dur)
		switch f.kind {
		case "kill", "leader-kill":
			_ = r.restart(f.node)
		case "isolate":
			r.isolate(f.node, false)
		case "kill+isolate":
			r.isolate(f.second, false)
			_ = r.restart(f.node)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

func (r *run) heal() {
	for i := range numNodes {
		if r.isolated[i] {
			r.isolate(i, false)
		}
	}
	for i := range numNodes {
		if err := r.restart(i); err != nil {
			var p *startPanic
			if r.lost[i] == "" && !errors.As(err, &p) {
				r.t.Fatalf("seed %d: node%d does not restart after the run: %v", r.seed, i+1, err)
			}
		}
	}
	if r.live() < 2 {
		r.t.Fatalf("seed %d: fewer than two nodes could be restarted: %q", r.seed, r.lost)
	}
}

// live returns the number of nodes running after heal.
func (r *run) live() int {
	n := 0
	for _, m := range r.c.Members {
		if m.Node != nil {
			n++
		}
	}
	return n
}

// sameHead waits until every member has the same ledger head, up to d.
func (r *run) sameHead(d time.Duration) (uint64, bool) {
	if r.pc != nil {
		return r.sameHeadProcs(d)
	}
	deadline := time.Now().Add(d)
	for {
		var seqs []uint64
		var heads [][32]byte
		for _, m := range r.c.Members {
			if m.Node == nil {
				continue
			}
			s, h := m.Node.Service().State().LedgerHead()
			seqs, heads = append(seqs, s), append(heads, h)
		}
		same := true
		for i := 1; i < len(seqs); i++ {
			if seqs[i] != seqs[0] || heads[i] != heads[0] {
				same = false
			}
		}
		if same {
			return seqs[0], true
		}
		if time.Now().After(deadline) {
			r.t.Logf("ledger heads differ: %v", seqs)
			return seqs[0], false
		}
		if l := r.leader(); l >= 0 {
			bctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = r.c.Members[l].Node.Raft().Barrier(bctx)
			cancel()
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// converge waits for one ledger on every node, for the checkpointer to
// settle and for the notifier to deliver, and returns the records (of node
// 1's export).
func (r *run) converge(snk *sink, sinkSeq uint64) []*custosv1.DecisionRecord {
	t := r.t
	// hashicorp/raft backs off replication to a follower that was
	// unreachable (up to ~40s), so healing may take a while.
	if _, ok := r.sameHead(90 * time.Second); !ok {
		t.Fatalf("seed %d: (c) the ledgers did not converge within 90s of healing", r.seed)
	}
	var records []*custosv1.DecisionRecord
	deadline := time.Now().Add(60 * time.Second)
	for {
		// Settle: the checkpointer records a checkpoint CheckpointInterval
		// after the last record; notifier cursor updates go through the log.
		time.Sleep(nodetest.CheckpointInterval + 500*time.Millisecond)
		seq, ok := r.sameHead(60 * time.Second)
		if !ok {
			t.Fatalf("seed %d: (c) the ledgers diverged while settling", r.seed)
		}
		records = r.records(r.first())
		got := snk.delivered()
		waiting := 0
		for _, rec := range records {
			if rec.Notify && rec.Seq > sinkSeq && !got[rec.Seq] {
				waiting++
			}
		}
		if again, _ := r.sameHead(0); waiting == 0 && again == seq && uint64(len(records)) == seq {
			return records
		}
		if time.Now().After(deadline) {
			t.Logf("notifier: %d notify records still undelivered after 60s", waiting)
			return records
		}
	}
}

// export returns node i's verified export (the raw file) and the report.
func (r *run) export(i int) ([]byte, *audit.Report, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cp, err := r.audit[i].GetCheckpoint(ctx, &custosv1.GetCheckpointRequest{})
	if err != nil {
		return nil, nil, fmt.Errorf("GetCheckpoint: %w", err)
	}
	trusted, err := audit.ParseKeys(cp.PublicKeys)
	if err != nil {
		return nil, nil, err
	}
	stream, err := r.audit[i].Export(ctx, &custosv1.ExportRequest{})
	if err != nil {
		return nil, nil, fmt.Errorf("Export: %w", err)
	}
	var buf bytes.Buffer
	if _, err := audit.Copy(&buf, stream.Recv); err != nil {
		return nil, nil, fmt.Errorf("Export: %w", err)
	}
	rep, err := audit.Verify(bytes.NewReader(buf.Bytes()), trusted)
	return buf.Bytes(), rep, err
}

func parseRecords(file []byte) ([][]byte, error) {
	rd := audit.NewReader(bytes.NewReader(file))
	var out [][]byte
	for {
		it, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if b := it.GetRecord(); b != nil {
			out = append(out, b)
		}
	}
}

// first returns the first running member.
func (r *run) first() int {
	if r.pc != nil {
		for i := range numNodes {
			if r.lost[i] == "" {
				return i
			}
		}
		return 0
	}
	for i, m := range r.c.Members {
		if m.Node != nil {
			return i
		}
	}
	return 0
}

func (r *run) records(i int) []*custosv1.DecisionRecord {
	file, _, err := r.export(i)
	if err != nil {
		r.t.Fatalf("seed %d: export node%d: %v", r.seed, i+1, err)
	}
	raw, err := parseRecords(file)
	if err != nil {
		r.t.Fatal(err)
	}
	var out []*custosv1.DecisionRecord
	for _, b := range raw {
		rec := &custosv1.DecisionRecord{}
		if err := proto.Unmarshal(b, rec); err != nil {
			r.t.Fatal(err)
		}
		out = append(out, rec)
	}
	return out
}

// verifyLedgers is check (c): every node's export verifies, with
// checkpoints, and all hold the same records.
func (r *run) verifyLedgers(records []*custosv1.DecisionRecord) []Violation {
	var out []Violation
	var first [][]byte
	f := r.first()
	for i := range numNodes {
		for _, b := range r.broken[i] {
			v := Violation{Check: "c", Detail: fmt.Sprintf("node%d did not restart after a kill (rebuilt from the leader): %s", i+1, b)}
			if r.pc != nil {
				v.Detail = fmt.Sprintf("node%d: %s", i+1, b)
			}
			if strings.Contains(b, "sealed segment has no index block") {
				v.Known = KnownWALRestart
			}
			out = append(out, v)
		}
		if r.lost[i] != "" {
			v := Violation{Check: "c", Detail: fmt.Sprintf("node%d cannot be restarted after a kill (its ledger cannot be checked): %s", i+1, r.lost[i])}
			if strings.Contains(r.lost[i], "sealed segment has no index block") {
				v.Known = KnownWALRestart
			}
			out = append(out, v)
			continue
		}
		file, rep, err := r.export(i)
		if err != nil {
			out = append(out, Violation{Check: "c", Detail: fmt.Sprintf("node%d export does not verify: %v (report %+v)", i+1, err, rep)})
			continue
		}
		if !rep.OK() || !rep.Trailer || rep.Checkpoints == 0 || rep.VerifiedThrough != rep.LastSeq || rep.Partial {
			out = append(out, Violation{Check: "c", Detail: fmt.Sprintf("node%d export: %+v", i+1, rep)})
		}
		raw, err := parseRecords(file)
		if err != nil {
			out = append(out, Violation{Check: "c", Detail: fmt.Sprintf("node%d export: %v", i+1, err)})
			continue
		}
		r.t.Logf("node%d ledger: %d records, %d checkpoints verified, verified through %d", i+1, rep.Records, rep.Checkpoints, rep.VerifiedThrough)
		if i == f {
			first = raw
			if len(raw) != len(records) {
				out = append(out, Violation{Check: "c", Detail: fmt.Sprintf("node1 ledger grew after convergence: %d then %d records", len(records), len(raw))})
			}
			continue
		}
		if len(raw) != len(first) {
			out = append(out, Violation{Check: "c", Detail: fmt.Sprintf("node%d has %d records, node%d %d", i+1, len(raw), f+1, len(first))})
		}
		for j := 0; j < len(raw) && j < len(first); j++ {
			if !bytes.Equal(raw[j], first[j]) {
				out = append(out, Violation{Check: "c", Detail: fmt.Sprintf("node%d record %d differs from node%d's", i+1, j+1, f+1)})
				break
			}
		}
	}
	return out
}

func (r *run) keyStates(i int) map[string]string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[string]string{}
	for _, k := range keyNames {
		key, err := r.keys[i][appCN].GetKey(ctx, &custosv1.GetKeyRequest{Name: k})
		if err != nil {
			r.t.Logf("node%d GetKey %s: %v", i+1, k, err)
			continue
		}
		out[k] = strings.TrimPrefix(key.State.String(), "KEY_STATE_")
	}
	return out
}

func (r *run) report(d time.Duration, records []*custosv1.DecisionRecord, viol []Violation) {
	t := r.t
	ops := r.h.Ops()
	var allow, deny, pending, gov, ckpt, notif int
	for _, rec := range records {
		switch {
		case rec.Operation == custosv1.Operation_OPERATION_GOVERNANCE:
			gov++
		case rec.Operation == custosv1.Operation_OPERATION_CHECKPOINT:
			ckpt++
		case rec.Outcome == custosv1.Outcome_OUTCOME_ALLOW:
			allow++
		case rec.Outcome == custosv1.Outcome_OUTCOME_DENY:
			deny++
		case rec.Outcome == custosv1.Outcome_OUTCOME_PENDING:
			pending++
		}
		if rec.Notify {
			notif++
		}
	}
	var b strings.Builder
	mode := "in-process nodes"
	if r.pc != nil {
		mode = "custosd processes"
	}
	fmt.Fprintf(&b, "seed %d, workload %s, %d clients + 1 officer goroutine, %d nodes (%s)\n\n", r.seed, d, *flagClients, numNodes, mode)
	b.WriteString(r.h.Summary())
	if r.pc != nil {
		b.WriteString(r.pc.proxySummary())
	}
	fmt.Fprintf(&b, "final ledger: %d records (decisions: ALLOW %d, DENY %d, PENDING %d; governance %d; checkpoints %d; %d with notify)\n",
		len(records), allow, deny, pending, gov, ckpt, notif)
	strict := *flagStrict || os.Getenv("CUSTOS_ROBUSTNESS_STRICT") == "1"
	var failing []Violation
	known := map[string]int{}
	for _, v := range viol {
		if v.Known != "" {
			known[v.Known]++
		}
		if v.Known == "" || strict {
			failing = append(failing, v)
		}
	}
	nknown := 0
	for _, n := range known {
		nknown += n
	}
	fmt.Fprintf(&b, "violations: %d new, %d of known issues %v (strict=%v)\n", len(viol)-nknown, nknown, known, strict)
	for i, v := range viol {
		if i == 20 {
			fmt.Fprintf(&b, "… %d more\n", len(viol)-20)
			break
		}
		fmt.Fprintf(&b, "- %v\n", v)
	}
	t.Logf("robustness report\n%s", b.String())
	if path := reportPath(); path != "" {
		_ = os.WriteFile(path, []byte(b.String()), 0o644)
	}
	var decided int
	for _, o := range ops {
		if o.Kind == OpDecrypt && o.OK() {
			decided++
		}
	}
	hist := os.Getenv("CUSTOS_ROBUSTNESS_HISTORY")
	if hist == "" && (len(viol) > 0 || decided == 0) {
		hist = filepath.Join(os.TempDir(), fmt.Sprintf("custos-robustness-%d.history", r.seed))
	}
	if hist != "" {
		var hb strings.Builder
		for _, f := range r.h.Faults() {
			fmt.Fprintf(&hb, "FAULT %v\n", f)
		}
		for _, o := range ops {
			fmt.Fprintf(&hb, "%v\n", o)
		}
		_ = os.WriteFile(hist, []byte(hb.String()), 0o644)
	}
	if r.pc != nil && hist != "" {
		if dir := r.pc.keepLogs(r.seed); dir != "" {
			t.Logf("node logs kept in %s", dir)
		}
	}
	if len(failing) > 0 || decided == 0 {
		if decided == 0 {
			t.Fatalf("seed %d: no Decrypt released a data key: the run checked nothing (history: %s)", r.seed, hist)
		}
		t.Fatalf("seed %d: %d violations (history: %s); replay: go test -run '%s' -count=1 ./internal/robustness/ -robustness.seed=%d -robustness.duration=%s\nfirst: %v",
			r.seed, len(failing), hist, r.test, r.seed, d, failing[0])
	}
	if len(viol) > 0 {
		t.Logf("seed %d: %d violations, all of known issues (history: %s); -robustness.strict fails on them", r.seed, len(viol), hist)
	}
}

func reportPath() string {
	if *flagReport != "" {
		return *flagReport
	}
	return os.Getenv("CUSTOS_ROBUSTNESS_REPORT")
}
