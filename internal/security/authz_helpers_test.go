package security

import (
	"crypto/ecdsa"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	_ "google.golang.org/grpc/reflection/grpc_reflection_v1alpha" // its descriptor, for the served v1alpha service
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/internal/pki"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	_ "github.com/custos-kms/custos/proto/raftlog/v1" // its descriptor: raftlog.v1.Replication
)

// identity is a column of the authorization matrix: who calls.
type identity string

// The identities every RPC is tried with. Officers are not among them:
// their authority is a signature on a statement, not a connection, so they
// are the signature variants of GovernanceService/Submit.
const (
	idNone     identity = "no-cert"      // TLS without a client certificate
	idApp      identity = "app"          // creator of the test keys, named by their policies
	idOther    identity = "other-app"    // valid certificate, named by no policy
	idOperator identity = "operator"     // configured operator (node.Config.Operators)
	idAuditor  identity = "auditor"      // configured auditor (nodetest.Auditor)
	idNode     identity = "node"         // this node's own certificate, custos-node:node1
	idForeign  identity = "foreign-node" // node certificate custos-node:node9, an id outside the cluster
)

// identities lists the columns in the order their refused cells run.
var identities = []identity{idNone, idOther, idOperator, idAuditor, idNode, idForeign, idApp}

// foreignNodeID is the Raft id of idForeign's node certificate: issued by
// the cluster CA, but neither in the Raft configuration nor a peer.
const foreignNodeID = "node9"

// cn returns the principal (client certificate common name) of id; "" for
// idNone.
func (id identity) cn(h *nodetest.Harness) string {
	switch id {
	case idNone:
		return ""
	case idAuditor:
		return nodetest.Auditor
	case idNode:
		return pki.NodeCNPrefix + h.Config.ID
	case idForeign:
		return pki.NodeCNPrefix + foreignNodeID
	}
	return string(id)
}

// authzRaftListener listens on a loopback port the kernel picks, for the
// node's Raft transport (node.Config.RaftListener): the port stays held
// until the node serves on it (docs/architecture.md, "Listeners"). The
// node closes it; so does the end of the test if the node never started.
func authzRaftListener(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// startAuthzNode starts the matrix's one node: the nodetest single node
// (2-of-3 officers, auditor "auditor"), made a cluster node so that it
// serves every service a production node serves: a node certificate
// (custos-node:node1) as its TLS certificate, Raft over mutual TLS (which
// registers raftlog.v1.Replication), and "operator" as its operator (the
// ClusterService's mutations).
func startAuthzNode(t *testing.T) *nodetest.Harness {
	t.Helper()
	return nodetest.StartWith(t, func(c *node.Config) {
		cert, key, err := pki.IssueNodeCert(filepath.Dir(c.TLS.CA), c.ID, []string{"127.0.0.1", "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		c.TLS.Cert, c.TLS.Key = cert, key
		c.RaftTLS = true
		c.RaftListener = authzRaftListener(t)
		c.RaftAddr = c.RaftListener.Addr().String()
		c.Operators = []string{string(idOperator)}
	})
}

// connAs returns a connection to h's node as id. Node identities present a
// node certificate (pki.IssueNodeCert: this node's own for idNode), which
// the dev PKI's client issuance cannot make; the others use h.Conn.
func connAs(t *testing.T, h *nodetest.Harness, id identity) *grpc.ClientConn {
	t.Helper()
	if id != idNode && id != idForeign {
		return h.Conn(t, id.cn(h))
	}
	certFile, keyFile := h.Config.TLS.Cert, h.Config.TLS.Key
	if id == idForeign {
		var err error
		certFile, keyFile, err = pki.IssueNodeCert(filepath.Dir(h.CAFile), foreignNodeID, []string{"127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := pki.ClientTLSConfig(h.CAFile, certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(h.Addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// rpcMethods returns the full name ("/pkg.Service/Method") of every method
// of every service the node serves, as its server reflection lists them,
// and of every service declared in custos's own proto packages (custos.*,
// raftlog.*) even if this node does not serve it. Methods come from the
// protobuf descriptors in the registry; a served service without one fails
// the test.
func rpcMethods(t *testing.T, cc *grpc.ClientConn) map[string]bool {
	t.Helper()
	services := map[protoreflect.FullName]bool{}
	st, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: "*"}}); err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatalf("server reflection: %v", err)
	}
	_ = st.CloseSend()
	for _, s := range resp.GetListServicesResponse().GetService() {
		services[protoreflect.FullName(s.GetName())] = true
	}
	if len(services) == 0 {
		t.Fatalf("server reflection listed no services: %v", resp)
	}
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		if p := string(fd.Package()); strings.HasPrefix(p, "custos.") || strings.HasPrefix(p, "raftlog.") {
			for i := 0; i < fd.Services().Len(); i++ {
				services[fd.Services().Get(i).FullName()] = true
			}
		}
		return true
	})
	out := map[string]bool{}
	for name := range services {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(name)
		if err != nil {
			t.Errorf("service %s is served but its descriptor is not in this test binary (import its Go package): %v", name, err)
			continue
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			t.Errorf("%s is a %T, not a service", name, d)
			continue
		}
		for i := 0; i < sd.Methods().Len(); i++ {
			out["/"+string(name)+"/"+string(sd.Methods().Get(i).Name())] = true
		}
	}
	return out
}

// want builds a row's expected codes: idNone gets Unauthenticated, the
// identities in ok get OK, every other identity gets denied.
func want(denied codes.Code, ok ...identity) map[identity]codes.Code {
	m := map[identity]codes.Code{idNone: codes.Unauthenticated}
	for _, id := range identities[1:] {
		m[id] = denied
		if slices.Contains(ok, id) {
			m[id] = codes.OK
		}
	}
	return m
}

// onlyFor: the listed identities may, any other certificate gets
// PermissionDenied, no certificate Unauthenticated.
func onlyFor(ok ...identity) map[identity]codes.Code { return want(codes.PermissionDenied, ok...) }

// authenticated: every client certificate may, none is Unauthenticated.
func authenticated() map[identity]codes.Code {
	return want(codes.PermissionDenied, identities[1:]...)
}

// public: everyone may, without a certificate too (health, reflection).
func public() map[identity]codes.Code {
	m := authenticated()
	m[idNone] = codes.OK
	return m
}

// with returns m with id's cell set to c.
func with(m map[identity]codes.Code, id identity, c codes.Code) map[identity]codes.Code {
	m[id] = c
	return m
}

// firstMsg opens a server stream's result: the error of opening it, or of
// its first message. A refusal arrives on the first Recv.
func firstMsg[T any](st grpc.ServerStreamingClient[T], err error) error {
	if err != nil {
		return err
	}
	_, err = st.Recv()
	return err
}

// statementBytes returns the canonical bytes of a statement for cluster
// clusterID (one hour lifetime, fresh nonce) with its operation set by
// setOp and then changed by mod (nil: no change), as officers sign them.
func statementBytes(t *testing.T, clusterID string, setOp, mod func(*custosv1.Statement)) []byte {
	t.Helper()
	st, err := governance.NewStatement(clusterID, time.Hour, "authz matrix")
	if err != nil {
		t.Fatal(err)
	}
	setOp(st)
	if mod != nil {
		mod(st)
	}
	b, err := governance.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// signAs signs statement bytes b with key under the officer name name
// (which need not be the key's owner).
func signAs(t *testing.T, key *ecdsa.PrivateKey, name string, b []byte) *custosv1.OfficerSignature {
	t.Helper()
	sig, err := governance.Sign(key, name, b)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// officerSigs signs b by the harness officers at the given indices.
func officerSigs(t *testing.T, h *nodetest.Harness, b []byte, idx ...int) []*custosv1.OfficerSignature {
	t.Helper()
	var out []*custosv1.OfficerSignature
	for _, i := range idx {
		out = append(out, signAs(t, h.Officers[i].Key, h.Officers[i].Name, b))
	}
	return out
}

// ledgerHead returns the ledger's last sequence number, read as the
// auditor.
func ledgerHead(t *testing.T, ac custosv1.AuditServiceClient) uint64 {
	t.Helper()
	r, err := ac.ListDecisions(ctx(t), &custosv1.ListDecisionsRequest{FromSeq: 1 << 62})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetHeadSeq()
}

// recordsAfter returns the ledger records after seq (at most 1000), read as
// the auditor, that match keep (nil: all).
func recordsAfter(t *testing.T, ac custosv1.AuditServiceClient, seq uint64, keep func(*custosv1.DecisionRecord) bool) []*custosv1.DecisionRecord {
	t.Helper()
	r, err := ac.ListDecisions(ctx(t), &custosv1.ListDecisionsRequest{FromSeq: seq + 1, PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var out []*custosv1.DecisionRecord
	for _, rec := range r.GetRecords() {
		if keep == nil || keep(rec) {
			out = append(out, rec)
		}
	}
	return out
}

// errOf keeps the error of a call and drops its response.
func errOf[T any](_ T, err error) error { return err }

// boolInt is 1 for true, 0 for false.
func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// check compares a cell's code with the one it must have.
func (e *authzEnv) check(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Errorf("%s: got %v (%v), want %v", what, got, err, want)
	}
}

// head returns the ledger head when needed (a cell with an after check).
func (e *authzEnv) head(t *testing.T, needed bool) uint64 {
	t.Helper()
	if !needed {
		return 0
	}
	return ledgerHead(t, e.audit)
}

// newAuthzEnv starts the node, connects every identity and creates the
// keys, a data key and a pending request of app's.
func newAuthzEnv(t *testing.T) *authzEnv {
	t.Helper()
	h := startAuthzNode(t)
	e := &authzEnv{h: h, cc: map[identity]*grpc.ClientConn{}, ec: map[string]string{"dept": "authz"}}
	for _, id := range identities {
		e.cc[id] = connAs(t, h, id)
	}
	e.app = custosv1.NewKeyServiceClient(e.cc[idApp])
	e.audit = custosv1.NewAuditServiceClient(e.cc[idAuditor])
	for _, k := range []string{keyUse, keyRotate, keyState, keyMinVer, keyGov, keySig} {
		if _, err := e.app.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: k}); err != nil {
			t.Fatalf("CreateKey(%s): %v", k, err)
		}
	}
	if _, err := e.app.RotateKey(ctx(t), &custosv1.RotateKeyRequest{Name: keyMinVer}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.app.SetKeyState(ctx(t), &custosv1.SetKeyStateRequest{Name: keySig, State: custosv1.KeyState_KEY_STATE_DISABLED}); err != nil {
		t.Fatal(err)
	}
	var err error
	if e.dk, err = e.app.GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: keyUse, EncryptionContext: e.ec}); err != nil {
		t.Fatal(err)
	}
	_, err = e.app.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: e.dk.GetWrappedDataKey(), EncryptionContext: e.ec, Justification: provider})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("set-up: Decrypt with a provider reason = %v, want a pending request", err)
	}
	p, err := custosv1.NewGovernanceServiceClient(e.cc[idApp]).ListPending(ctx(t), &custosv1.ListPendingRequest{Key: keyUse})
	if err != nil || len(p.GetRequests()) != 1 {
		t.Fatalf("set-up: ListPending = %v, %v", p, err)
	}
	e.requestID = p.GetRequests()[0].GetRequestId()
	return e
}

// key returns app's view of a key.
func (e *authzEnv) key(t *testing.T, name string) *custosv1.Key {
	t.Helper()
	k, err := e.app.GetKey(ctx(t), &custosv1.GetKeyRequest{Name: name})
	if err != nil {
		t.Fatalf("GetKey(%s): %v", name, err)
	}
	return k
}

// decisionAfter checks the ledger after a decrypt-type cell on keyUse: one
// record naming who, ALLOW for app and DENY on the principal rule for
// everyone else; no record at all for a caller without a certificate.
func (e *authzEnv) decisionAfter(t *testing.T, who identity, _ error, since uint64) {
	t.Helper()
	recs := recordsAfter(t, e.audit, since, func(r *custosv1.DecisionRecord) bool { return r.GetKey() == keyUse })
	if who == idNone {
		if len(recs) != 0 {
			t.Errorf("a call without a certificate reached the ledger: %v", recs)
		}
		return
	}
	if len(recs) != 1 || recs[0].GetPrincipal() != who.cn(e.h) {
		t.Fatalf("ledger after the call: %v, want one record of %s", recs, who.cn(e.h))
	}
	switch r := recs[0]; {
	case who == idApp && r.GetOutcome() != custosv1.Outcome_OUTCOME_ALLOW:
		t.Errorf("app's decision = %v, want ALLOW", r)
	case who != idApp && (r.GetOutcome() != custosv1.Outcome_OUTCOME_DENY || !strings.HasSuffix(r.GetMatchedRule(), ":principal")):
		t.Errorf("%s's decision = %v, want DENY by the principal rule", who, r)
	}
}

// decryptOne is a Decrypt of app's data key with a reason its policy allows.
func (e *authzEnv) decryptOne() *custosv1.DecryptRequest {
	return &custosv1.DecryptRequest{Ciphertext: e.dk.GetWrappedDataKey(), EncryptionContext: e.ec, Justification: customer}
}
