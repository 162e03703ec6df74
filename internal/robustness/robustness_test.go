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
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms"
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

	r.execute(d, r.setup, r.faults, r.heal)
}

// execute is one run of either mode: setup starts the cluster, then the
// workload runs for d while faults injects its schedule; heal ends every
// fault, and the history is checked against every node's ledger and
// reported.
func (r *run) execute(d time.Duration, setup func(), faults func(context.Context, time.Duration), heal func()) {
	setup()
	snk := &sink{key: bytes.Repeat([]byte{0x5a}, 32), got: map[uint64]bool{}}
	srv := httptest.NewServer(snk)
	r.t.Cleanup(srv.Close)
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
	go func() { defer close(faultsDone); faults(ctx, d) }()
	wg.Wait()
	<-faultsDone

	// Heal everything and wait for one ledger.
	heal()
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
	// nodetest turns the nodes' notifiers off; this suite needs them on
	// (check (d)). Node 1 initialises a development cluster: admission
	// transports the domain key with RSA-OAEP, and SoftHSM does it with
	// SHA-1 only, which only the development profile allows
	// (docs/key-transport.md, "Profiles"). Member configs are reused by
	// Restart and Join.
	c := nodetest.StartClusterWith(t, numNodes, 1, func(i int, cfg *node.Config) {
		cfg.NoNotifier = false
		if i == 0 {
			cfg.Profile = kms.ProfileDevelopment
		}
	})
	r.c = c
	r.officerKeys = c.Officers
	for i := 1; i < numNodes; i++ {
		c.Join(t, i)
	}
	r.clusterID = c.ClusterID()
	// Admit nodes 2 and 3 as custodians of the domain key before the
	// workload starts (docs/key-transport.md, "Admission"): the officers'
	// quorum approves each one's transport key, node 1's HSM security
	// officer trusts it (a child process: TestMain), node 1 sends the
	// domain key. Every node then serves key crypto itself.
	start := time.Now()
	for i := 1; i < numNodes; i++ {
		c.Admit(t, 0, i, custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA1)
	}
	t.Logf("nodes 2 and 3 admitted as custodians in %s", time.Since(start).Round(100*time.Millisecond))
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

// pickNode picks one of the three nodes, all custodians of the domain key,
// for 85 % of calls; 15 % go through the failover client.
func pickNode(rng *mrand.Rand) int {
	if rng.IntN(100) < 15 {
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
