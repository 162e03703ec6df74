package kmsplugin_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"
	kmsservice "k8s.io/kms/pkg/service"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/k8s/kmsplugin"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Principals of the test cluster: the plugin's certificate, and the key's
// administrator, who creates and rotates it.
const (
	pluginCN = "kube-apiserver"
	adminCN  = "k8s-key-admin"
	keyName  = "k8s-secrets"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// env is a real custos node (SoftHSM), the key set up as docs/kubernetes.md
// recommends, and the plugin serving it on a unix socket.
type env struct {
	h        *nodetest.Harness
	admin    *custos.Client // adminCN
	auditor  *custos.Client
	plugin   *kmsplugin.Plugin
	socket   string
	officers []custos.Officer
}

func dial(t *testing.T, h *nodetest.Harness, cn string) *custos.Client {
	t.Helper()
	c, err := custos.Dial(context.Background(), custos.Config{Addrs: []string{h.Addr}, TLS: h.ClientTLS(t, cn)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// startEnv starts a node, has adminCN create the key and the officers'
// quorum give it the policy of docs/kubernetes.md, and serves the plugin
// (principal pluginCN) with cfg's Status caching.
func startEnv(t *testing.T, mod func(*kmsplugin.Config)) *env {
	t.Helper()
	ctx := testCtx(t)
	h := nodetest.Start(t)
	e := &env{h: h, admin: dial(t, h, adminCN), auditor: dial(t, h, nodetest.Auditor)}
	for _, o := range h.Officers {
		e.officers = append(e.officers, custos.Officer{Name: o.Name, Signer: o.Key})
	}
	if _, err := e.admin.CreateKey(ctx, keyName, "Kubernetes Secrets (KMS v2)"); err != nil {
		t.Fatal(err)
	}
	e.submit(t, "kube-apiserver seals and unwraps Secrets' DEK seeds", &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{
		Key: keyName,
		Policy: &custosv1.KeyPolicy{
			EncryptPrincipals: []string{pluginCN},
			DecryptPrincipals: []string{pluginCN},
			AdminPrincipals:   []string{adminCN},
			// Every unwrap the plugin asks for carries its signature
			// (docs/signed-requests.md).
			RequireRequestSignature: true,
			Reasons: []*custosv1.ReasonRule{
				{Reason: custosv1.Reason_REASON_CUSTOMER_WORKFLOW, Action: custosv1.Action_ACTION_ALLOW},
				{Reason: custosv1.Reason_REASON_UNSPECIFIED, Action: custosv1.Action_ACTION_DENY},
			},
		},
	}}, 0, 1)

	pc := dial(t, h, pluginCN)
	cfg := kmsplugin.Config{Keys: pc.Keys(), Sign: pc.SignDecryptRequest, Key: keyName}
	if mod != nil {
		mod(&cfg)
	}
	p, err := kmsplugin.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.plugin = p
	e.socket = serve(t, p)
	return e
}

// serve serves p on a new socket and returns its path.
func serve(t *testing.T, p *kmsplugin.Plugin) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "kms") // short: a socket path has at most 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l, err := kmsplugin.Listen("unix://"+filepath.Join(dir, "kms.sock"), kmsplugin.DefaultSocketMode)
	if err != nil {
		t.Fatal(err)
	}
	srv := kmsplugin.NewServer(p)
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(l) })
	t.Cleanup(func() { srv.Stop(); wg.Wait() })
	return l.Path()
}

// submit signs a statement with the given officers and submits it.
func (e *env) submit(t *testing.T, comment string, op any, signers ...int) {
	t.Helper()
	ctx := testCtx(t)
	st, err := e.admin.NewStatement(ctx, comment, 0)
	if err != nil {
		t.Fatal(err)
	}
	switch o := op.(type) {
	case *custosv1.Statement_SetPolicy:
		st.Operation = o
	case *custosv1.Statement_RevokeKey:
		st.Operation = o
	default:
		t.Fatalf("statement %T", op)
	}
	var who []custos.Officer
	for _, i := range signers {
		who = append(who, e.officers[i])
	}
	if _, err := e.admin.SignAndSubmit(ctx, st, who...); err != nil {
		t.Fatalf("SignAndSubmit: %v", err)
	}
}

// records returns the ledger's records in the plugin's name.
func (e *env) records(t *testing.T) []*custosv1.DecisionRecord {
	t.Helper()
	var out []*custosv1.DecisionRecord
	for r, err := range e.auditor.Decisions(testCtx(t), &custosv1.DecisionFilter{Principal: pluginCN}, 0) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// apiServer is the API server's side: its KMS v2 gRPC client and a DEK
// state kept as the API server's encryption configuration keeps it (on
// each Status: a new seed through Encrypt when the key_id changed).
type apiServer struct {
	svc   kmsservice.Service
	name  string
	mu    sync.Mutex
	state kmsv2.State
}

func newAPIServer(t *testing.T, socket, name string) *apiServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	svc, err := kmsv2.NewGRPCService(ctx, "unix://"+socket, name, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return &apiServer{svc: svc, name: name}
}

// check asks for Status and, if it is healthy with a new key_id, makes a
// new write seed. It returns the Status.
func (a *apiServer) check(t *testing.T) *kmsservice.StatusResponse {
	t.Helper()
	ctx := testCtx(t)
	st, err := a.svc.Status(ctx)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if st.Healthz != "ok" || st.KeyID == a.state.EncryptedObjectKeyID {
		return st
	}
	uid := string(uuid.NewUUID())
	tr, obj, cacheKey, err := kmsv2.GenerateTransformer(ctx, uid, a.svc, true)
	if err != nil {
		t.Fatalf("GenerateTransformer: %v", err)
	}
	if obj.KeyID != st.KeyID {
		t.Fatalf("Encrypt's key_id %q is not Status's %q", obj.KeyID, st.KeyID)
	}
	a.state = kmsv2.State{Transformer: tr, EncryptedObjectKeyID: obj.KeyID, EncryptedObjectEncryptedDEKSource: obj.EncryptedDEKSource,
		EncryptedObjectAnnotations: obj.Annotations, EncryptedObjectEncryptedDEKSourceType: obj.EncryptedDEKSourceType,
		UID: uid, ExpirationTimestamp: time.Now().Add(3 * time.Minute), CacheKey: cacheKey, KMSProviderName: a.name}
	return st
}

func (a *apiServer) stateFunc() (kmsv2.State, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state, nil
}
