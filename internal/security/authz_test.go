package security

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"

	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// Keys of the matrix, all created by idApp (so their policies name "app"
// only). Each RPC that changes a key has its own, so that cells do not
// interfere; the refused cells of a row run before its allowed ones.
const (
	keyUse    = "authz-use"    // GenerateDataKey, Encrypt, Decrypt, ReEncrypt, BatchDecrypt, reads
	keyRotate = "authz-rotate" // RotateKey
	keyState  = "authz-state"  // SetKeyState
	keyMinVer = "authz-minver" // SetMinDecryptionVersion (two versions)
	keyGov    = "authz-gov"    // Submit by each identity (EnableKey of an enabled key)
	keySig    = "authz-sig"    // Submit's signature variants (disabled, then enabled)
)

// authzEnv is the one node the whole matrix runs on and what its cells
// share.
type authzEnv struct {
	h     *nodetest.Harness
	cc    map[identity]*grpc.ClientConn
	app   custosv1.KeyServiceClient   // as idApp
	audit custosv1.AuditServiceClient // as idAuditor
	ec    map[string]string
	// dk is a data key of app's under keyUse; requestID a pending approval
	// request of app's on it.
	dk        *custosv1.GenerateDataKeyResponse
	requestID string
}

// row is one RPC of the matrix: the request every identity makes, the code
// each one must get, and what must hold after each cell.
type row struct {
	// call makes the RPC as who over cc: a request that succeeds for the
	// identities allowed, so that a refusal is about who asks.
	call func(t *testing.T, who identity, cc *grpc.ClientConn) error
	want map[identity]codes.Code
	// after, if set, checks the state after each cell; since is the
	// ledger head before the cell.
	after func(t *testing.T, who identity, err error, since uint64)
	// variants are further cells after the identities', in order: the
	// governance signature variants.
	variants []variant
}

// variant is a cell that is not one of the identities: a signature set on
// a governance statement, carried by idApp.
type variant struct {
	name  string
	want  codes.Code
	call  func(t *testing.T) error
	after func(t *testing.T, err error, since uint64)
}

// TestAuthzMatrix is the authorization matrix of docs/security.md: every method of every
// service the node serves (and of every custos proto service), enumerated
// from the protobuf descriptors, times every identity (no certificate, the
// key's app, another app, the operator, the auditor, this node's
// certificate, a node certificate from outside the cluster), plus the
// officer signature variants of GovernanceService/Submit (valid, invalid,
// expired, insufficient). Each cell states its gRPC code; refusals leave
// the state as it was, release no key material, and the decisions they
// reach are DENY records in the ledger. A method without a row, or a row
// for a method that no longer exists, fails the test.
func TestAuthzMatrix(t *testing.T) {
	e := newAuthzEnv(t)
	rows := e.rows(t)

	methods := rpcMethods(t, e.cc[idAuditor])
	for m := range methods {
		if _, ok := rows[m]; !ok {
			t.Errorf("%s has no row in the authorization matrix: add what every identity gets", m)
		}
	}
	var names []string
	for m, r := range rows {
		if !methods[m] {
			t.Errorf("matrix row %s names a method that no longer exists", m)
		}
		for _, id := range identities {
			if _, ok := r.want[id]; !ok {
				t.Errorf("%s: no cell for identity %s", m, id)
			}
		}
		names = append(names, m)
	}
	sort.Strings(names)

	cells := 0
	for _, m := range names {
		r := rows[m]
		if !methods[m] {
			continue
		}
		t.Run(strings.TrimPrefix(m, "/"), func(t *testing.T) {
			// Refusals first, then the identities allowed: a cell that
			// changes state runs after every cell that must not.
			order := slices.Clone(identities)
			slices.SortStableFunc(order, func(a, b identity) int {
				return boolInt(r.want[a] == codes.OK) - boolInt(r.want[b] == codes.OK)
			})
			for _, who := range order {
				cells++
				t.Run(string(who), func(t *testing.T) {
					since := e.head(t, r.after != nil)
					err := r.call(t, who, e.cc[who])
					e.check(t, m+" as "+string(who), err, r.want[who])
					if r.after != nil {
						r.after(t, who, err, since)
					}
				})
			}
			for _, v := range r.variants {
				cells++
				t.Run(v.name, func(t *testing.T) {
					since := e.head(t, v.after != nil)
					err := v.call(t)
					e.check(t, m+": "+v.name, err, v.want)
					if v.after != nil {
						v.after(t, err, since)
					}
				})
			}
		})
	}
	t.Logf("authorization matrix: %d methods, %d identities, %d cells", len(rows), len(identities), cells)
}

// rows is the matrix, keyed by full method name.
func (e *authzEnv) rows(t *testing.T) map[string]row {
	h, app := e.h, idApp
	ks := func(cc *grpc.ClientConn) custosv1.KeyServiceClient { return custosv1.NewKeyServiceClient(cc) }
	gs := func(cc *grpc.ClientConn) custosv1.GovernanceServiceClient {
		return custosv1.NewGovernanceServiceClient(cc)
	}
	as := func(cc *grpc.ClientConn) custosv1.AuditServiceClient { return custosv1.NewAuditServiceClient(cc) }
	cs := func(cc *grpc.ClientConn) custosv1.ClusterServiceClient { return custosv1.NewClusterServiceClient(cc) }
	keyUnchanged := func(name string, changed func(*custosv1.Key) bool) func(*testing.T, identity, error, uint64) {
		return func(t *testing.T, who identity, err error, _ uint64) {
			if got := changed(e.key(t, name)); got != (who == app) {
				t.Errorf("after %s's call (%v), key %s changed = %v, want %v", who, err, name, got, who == app)
			}
		}
	}
	raftServers := func(t *testing.T) string {
		sv, err := h.Node.Raft().Servers()
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(sv)
	}
	membership := raftServers(t)
	sameMembership := func(t *testing.T, who identity, err error, _ uint64) {
		if got := raftServers(t); got != membership {
			t.Errorf("after %s's call (%v) the Raft configuration is %s, was %s", who, err, got, membership)
		}
	}
	rows := map[string]row{
		// ---- KeyService: the key's users (its policy) and nobody else.
		"/custos.v1.KeyService/CreateKey": {
			call: func(t *testing.T, who identity, cc *grpc.ClientConn) error {
				return errOf(ks(cc).CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: "authz-new-" + string(who)}))
			},
			// Any authenticated identity may create a key, which only it may
			// then use: nothing that exists changes (docs/security.md).
			want: authenticated(),
			after: func(t *testing.T, who identity, err error, _ uint64) {
				_, gerr := e.app.GetKey(ctx(t), &custosv1.GetKeyRequest{Name: "authz-new-" + string(who)})
				if (err == nil) != (gerr == nil) {
					t.Errorf("CreateKey as %s: %v, and then GetKey: %v", who, err, gerr)
				}
			},
		},
		"/custos.v1.KeyService/GetKey": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return errOf(ks(cc).GetKey(ctx(t), &custosv1.GetKeyRequest{Name: keyUse}))
			},
			want: authenticated(), // metadata only: any certificate may read it
		},
		"/custos.v1.KeyService/ListKeys": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return errOf(ks(cc).ListKeys(ctx(t), &custosv1.ListKeysRequest{}))
			},
			want: authenticated(),
		},
		"/custos.v1.KeyService/RotateKey": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return errOf(ks(cc).RotateKey(ctx(t), &custosv1.RotateKeyRequest{Name: keyRotate}))
			},
			want:  onlyFor(app),
			after: keyUnchanged(keyRotate, func(k *custosv1.Key) bool { return k.GetPrimaryVersion() != 1 }),
		},
		"/custos.v1.KeyService/GetParametersForImport": {
			call: func(t *testing.T, who identity, cc *grpc.ClientConn) error {
				p, err := ks(cc).GetParametersForImport(ctx(t), &custosv1.GetParametersForImportRequest{Key: keyRotate,
					Algorithm: custosv1.ImportWrappingAlgorithm_RSA_AES_KEY_WRAP_SHA_256})
				if err == nil && (len(p.GetPublicKey()) == 0 || p.GetImportToken() == "") {
					t.Errorf("import parameters for %s: %v", who, p)
				}
				return err
			},
			// An existing key: PermissionDenied to strangers, FailedPrecondition
			// to its users (an import only creates a key; a new name: anyone).
			want: with(onlyFor(), app, codes.FailedPrecondition),
		},
		"/custos.v1.KeyService/ImportKeyMaterial": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return errOf(ks(cc).ImportKeyMaterial(ctx(t), &custosv1.ImportKeyMaterialRequest{Key: keyRotate,
					ImportToken: "node1.00", EncryptedKeyMaterial: make([]byte, 424)}))
			},
			// The key exists: strangers are refused, its users told that an
			// import only creates a key.
			want: with(onlyFor(), app, codes.FailedPrecondition),
			after: func(t *testing.T, who identity, err error, _ uint64) {
				if n := len(e.key(t, keyRotate).GetVersions()); n != 1 { // RotateKey's row runs later
					t.Errorf("after %s's import (%v), key %s has %d versions, want 1", who, err, keyRotate, n)
				}
			},
		},
		"/custos.v1.KeyService/SetKeyState": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return errOf(ks(cc).SetKeyState(ctx(t), &custosv1.SetKeyStateRequest{Name: keyState, State: custosv1.KeyState_KEY_STATE_DISABLED}))
			},
			want:  onlyFor(app),
			after: keyUnchanged(keyState, func(k *custosv1.Key) bool { return k.GetState() != custosv1.KeyState_KEY_STATE_ENABLED }),
		},
		"/custos.v1.KeyService/SetMinDecryptionVersion": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return errOf(ks(cc).SetMinDecryptionVersion(ctx(t), &custosv1.SetMinDecryptionVersionRequest{Name: keyMinVer, MinDecryptionVersion: 2}))
			},
			want:  onlyFor(app),
			after: keyUnchanged(keyMinVer, func(k *custosv1.Key) bool { return k.GetMinDecryptionVersion() != 1 }),
		},
		"/custos.v1.KeyService/GenerateDataKey": {
			call: func(t *testing.T, who identity, cc *grpc.ClientConn) error {
				r, err := ks(cc).GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: keyUse, EncryptionContext: e.ec})
				if err == nil && len(r.GetPlaintext()) != 32 {
					t.Errorf("GenerateDataKey as %s returned %d key bytes", who, len(r.GetPlaintext()))
				}
				return err
			},
			want: onlyFor(app),
		},
		"/custos.v1.KeyService/Encrypt": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return errOf(ks(cc).Encrypt(ctx(t), &custosv1.EncryptRequest{Key: keyUse, Plaintext: []byte("authz"), EncryptionContext: e.ec}))
			},
			want: onlyFor(app),
		},
		"/custos.v1.KeyService/Decrypt": {
			call: func(t *testing.T, who identity, cc *grpc.ClientConn) error {
				r, err := ks(cc).Decrypt(ctx(t), e.decryptOne())
				if err == nil && !bytes.Equal(r.GetPlaintext(), e.dk.GetPlaintext()) {
					t.Errorf("Decrypt as %s returned another data key", who)
				}
				return err
			},
			want:  onlyFor(app),
			after: e.decisionAfter,
		},
		"/custos.v1.KeyService/ReEncrypt": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return errOf(ks(cc).ReEncrypt(ctx(t), &custosv1.ReEncryptRequest{Ciphertext: e.dk.GetWrappedDataKey(), EncryptionContext: e.ec, Justification: customer}))
			},
			want:  onlyFor(app),
			after: e.decisionAfter,
		},
		// The call succeeds for every certificate; each item carries the
		// code a Decrypt of it alone would get, which is the cell's code.
		"/custos.v1.KeyService/BatchDecrypt": {
			call: func(t *testing.T, who identity, cc *grpc.ClientConn) error {
				r, err := ks(cc).BatchDecrypt(ctx(t), &custosv1.BatchDecryptRequest{Requests: []*custosv1.DecryptRequest{e.decryptOne()}})
				if err != nil {
					return err
				}
				if len(r.GetResults()) != 1 {
					t.Fatalf("BatchDecrypt as %s: %d results for 1 item", who, len(r.GetResults()))
				}
				if ie := r.GetResults()[0].GetError(); ie != nil {
					return status.Error(codes.Code(ie.GetCode()), ie.GetMessage())
				}
				if !bytes.Equal(r.GetResults()[0].GetResponse().GetPlaintext(), e.dk.GetPlaintext()) {
					t.Errorf("BatchDecrypt as %s returned another data key", who)
				}
				return nil
			},
			want:  onlyFor(app),
			after: e.decisionAfter,
		},

		// ---- GovernanceService: reads for every certificate; statements
		// authorised by their signatures, whoever carries them.
		"/custos.v1.GovernanceService/Submit": e.submitRow(t),
		// A cosignature by a witness the officers did not register counts
		// for nobody, whoever carries it (docs/witness.md).
		"/custos.v1.GovernanceService/SubmitCosignature": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return errOf(gs(cc).SubmitCosignature(ctx(t), &custosv1.Cosignature{ClusterId: e.h.Node.ClusterID(), Witness: "mallory",
					Seq: 1, Head: make([]byte, 32), TimeUnixNano: time.Now().UnixNano(), Signature: []byte{0x30, 0x00}}))
			},
			want: want(codes.PermissionDenied),
		},
		// A proposal signed by a key that is no officer's, under an
		// officer's name, is refused whoever carries it, and nothing waits
		// on the cluster afterwards (docs/console.md, Proposals).
		"/custos.v1.GovernanceService/Propose": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				stranger, err := governance.GenerateKey()
				if err != nil {
					t.Fatal(err)
				}
				ss := nodetest.SignStatement(t, e.h.Node.ClusterID(), nil, func(st *custosv1.Statement) {
					st.Operation = &custosv1.Statement_EnableKey{EnableKey: &custosv1.EnableKey{Key: keySig}}
				})
				sig, err := governance.Sign(stranger, e.h.Officers[0].Name, ss.GetStatement())
				if err != nil {
					t.Fatal(err)
				}
				ss.Signatures = []*custosv1.OfficerSignature{sig}
				return errOf(gs(cc).Propose(ctx(t), &custosv1.ProposeRequest{Statement: ss}))
			},
			want: want(codes.PermissionDenied),
			after: func(t *testing.T, who identity, err error, _ uint64) {
				if ps := e.h.Node.Service().State().Proposals(time.Now()); len(ps) != 0 {
					t.Errorf("after Propose as %s (%v): %d proposals wait", who, err, len(ps))
				}
			},
		},
		"/custos.v1.GovernanceService/ListProposals": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return errOf(gs(cc).ListProposals(ctx(t), &custosv1.ListProposalsRequest{}))
			},
			want: authenticated(),
		},
		"/custos.v1.GovernanceService/GetGovernance": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return errOf(gs(cc).GetGovernance(ctx(t), &custosv1.GetGovernanceRequest{}))
			},
			want: authenticated(),
		},
		"/custos.v1.GovernanceService/ListPending": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return errOf(gs(cc).ListPending(ctx(t), &custosv1.ListPendingRequest{Key: keyUse}))
			},
			want: authenticated(),
		},
		"/custos.v1.GovernanceService/GetRequest": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return errOf(gs(cc).GetRequest(ctx(t), &custosv1.GetRequestRequest{RequestId: e.requestID}))
			},
			want: authenticated(),
		},
		"/custos.v1.GovernanceService/ListGrants": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return errOf(gs(cc).ListGrants(ctx(t), &custosv1.ListGrantsRequest{Key: keyUse}))
			},
			want: authenticated(),
		},
		"/custos.v1.GovernanceService/GetPolicy": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return errOf(gs(cc).GetPolicy(ctx(t), &custosv1.GetPolicyRequest{Key: keyUse}))
			},
			want: authenticated(),
		},

		// ---- AuditService: the configured auditors only.
		"/custos.v1.AuditService/ListDecisions": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return errOf(as(cc).ListDecisions(ctx(t), &custosv1.ListDecisionsRequest{}))
			},
			want: onlyFor(idAuditor),
		},
		"/custos.v1.AuditService/GetCheckpoint": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return errOf(as(cc).GetCheckpoint(ctx(t), &custosv1.GetCheckpointRequest{}))
			},
			want: onlyFor(idAuditor),
		},
		"/custos.v1.AuditService/Export": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return firstMsg(as(cc).Export(ctx(t), &custosv1.ExportRequest{}))
			},
			want: onlyFor(idAuditor),
		},
		"/custos.v1.AuditService/WatchDecisions": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return firstMsg(as(cc).WatchDecisions(ctx(t), &custosv1.WatchDecisionsRequest{FromSeq: 1}))
			},
			want: onlyFor(idAuditor),
		},

		// ---- ClusterService: Status for every certificate, the rest for
		// operators. The operator's requests are valid and leave the
		// single-voter membership as it is: AddVoter re-adds this node at
		// its own address (OK); RemoveServer of the only voter and
		// TransferLeadership with no other voter are refused by their
		// safety checks, which come after the operator check.
		"/custos.v1.ClusterService/Status": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return errOf(cs(cc).Status(ctx(t), &custosv1.ClusterStatusRequest{}))
			},
			want: authenticated(),
		},
		"/custos.v1.ClusterService/AddVoter": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return errOf(cs(cc).AddVoter(ctx(t), &custosv1.AddVoterRequest{Id: h.Config.ID, RaftAddr: h.Config.RaftAddr}))
			},
			want:  onlyFor(idOperator),
			after: sameMembership,
		},
		"/custos.v1.ClusterService/RemoveServer": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return errOf(cs(cc).RemoveServer(ctx(t), &custosv1.RemoveServerRequest{Id: h.Config.ID}))
			},
			want:  with(onlyFor(), idOperator, codes.FailedPrecondition),
			after: sameMembership,
		},
		"/custos.v1.ClusterService/TransferLeadership": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return errOf(cs(cc).TransferLeadership(ctx(t), &custosv1.TransferLeadershipRequest{}))
			},
			want:  with(onlyFor(), idOperator, codes.FailedPrecondition),
			after: sameMembership,
		},
		"/custos.v1.ClusterService/SaveSnapshot": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return firstMsg(cs(cc).SaveSnapshot(ctx(t), &custosv1.SaveSnapshotRequest{}))
			},
			want: onlyFor(idOperator),
		},

		// ---- Replication: cluster nodes only. The command is harmless (it
		// disables a key that does not exist); the node's call is applied
		// and answers with that NotFound inside the result.
		"/raftlog.v1.Replication/Apply": {
			call: func(t *testing.T, who identity, cc *grpc.ClientConn) error {
				r, err := raftlogv1.NewReplicationClient(cc).Apply(ctx(t), &raftlogv1.Command{
					TimeUnixNano: time.Now().UnixNano(), Node: h.Config.ID, Principal: who.cn(h),
					Op: &raftlogv1.Command_SetKeyState{SetKeyState: &raftlogv1.SetKeyState{Name: "authz-absent"}}})
				if err == nil && r.GetError() == nil {
					t.Errorf("Apply as %s: result %v, want the command's NotFound", who, r)
				}
				return err
			},
			want: onlyFor(idNode),
		},
		"/raftlog.v1.Replication/ReadRecords": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return errOf(raftlogv1.NewReplicationClient(cc).ReadRecords(ctx(t), &raftlogv1.ReadRecordsRequest{FromSeq: 1, ToSeq: 1}))
			},
			want: onlyFor(idNode),
		},
		"/raftlog.v1.Replication/ReadIndex": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return errOf(raftlogv1.NewReplicationClient(cc).ReadIndex(ctx(t), &raftlogv1.ReadIndexRequest{}))
			},
			want: onlyFor(idNode),
		},

		// ---- Health and reflection: public, no certificate needed.
		"/grpc.health.v1.Health/Check": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return errOf(healthpb.NewHealthClient(cc).Check(ctx(t), &healthpb.HealthCheckRequest{}))
			},
			want: public(),
		},
		"/grpc.health.v1.Health/List": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return errOf(healthpb.NewHealthClient(cc).List(ctx(t), &healthpb.HealthListRequest{}))
			},
			want: public(),
		},
		"/grpc.health.v1.Health/Watch": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				return firstMsg(healthpb.NewHealthClient(cc).Watch(ctx(t), &healthpb.HealthCheckRequest{}))
			},
			want: public(),
		},
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				st, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx(t))
				if err != nil {
					return err
				}
				if err := st.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
					return err
				}
				_, err = st.Recv()
				return err
			},
			want: public(),
		},
		"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": {
			call: func(t *testing.T, _ identity, cc *grpc.ClientConn) error {
				st, err := reflectionv1alpha.NewServerReflectionClient(cc).ServerReflectionInfo(ctx(t))
				if err != nil {
					return err
				}
				//lint:ignore SA1019 the server still serves v1alpha reflection (reflection.Register), so the matrix covers it
				if err := st.Send(&reflectionv1alpha.ServerReflectionRequest{MessageRequest: &reflectionv1alpha.ServerReflectionRequest_ListServices{}}); err != nil {
					return err
				}
				_, err = st.Recv()
				return err
			},
			want: public(),
		},
	}
	return rows
}

// submitRow is GovernanceService/Submit. As identities: a quorum-signed
// EnableKey of the already enabled keyGov (applies, changes nothing) is
// accepted from every certificate, since the signatures and not the
// carrier authorise it, and is recorded under the carrier's name. As
// variants, app carries EnableKey statements of the disabled keySig with
// valid, invalid, expired and insufficient signatures: each refusal leaves
// the key disabled and is a DENY record of the statement in the ledger.
func (e *authzEnv) submitRow(t *testing.T) row {
	h := e.h
	clusterID := h.Node.ClusterID()
	gc := custosv1.NewGovernanceServiceClient(e.cc[idApp])
	enable := func(key string) func(*custosv1.Statement) {
		return func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_EnableKey{EnableKey: &custosv1.EnableKey{Key: key}}
		}
	}
	disable := func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_DisableKey{DisableKey: &custosv1.DisableKey{Key: keySig}}
	}
	stranger, err := governance.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	submit := func(t *testing.T, ss *custosv1.SignedStatement) error {
		return errOf(gc.Submit(ctx(t), ss))
	}
	// sigState checks keySig's state, and the ledger record of the
	// statement b: DENY when refused, ALLOW when applied, none when refused
	// before the log.
	sigState := func(b []byte, enabled bool, outcome custosv1.Outcome) func(*testing.T, error, uint64) {
		return func(t *testing.T, err error, since uint64) {
			if got := e.key(t, keySig).GetState() == custosv1.KeyState_KEY_STATE_ENABLED; got != enabled {
				t.Errorf("after Submit (%v) key %s enabled = %v, want %v", err, keySig, got, enabled)
			}
			hash := sha256.Sum256(b)
			recs := recordsAfter(t, e.audit, since, func(r *custosv1.DecisionRecord) bool {
				return r.GetOperation() == custosv1.Operation_OPERATION_GOVERNANCE && bytes.Equal(r.GetStatementHash(), hash[:])
			})
			switch {
			case outcome == custosv1.Outcome_OUTCOME_UNSPECIFIED && len(recs) != 0:
				t.Errorf("a statement refused before the log has ledger records %v", recs)
			case outcome != custosv1.Outcome_OUTCOME_UNSPECIFIED && (len(recs) != 1 || recs[0].GetOutcome() != outcome):
				t.Errorf("ledger records of the statement: %v, want one %v", recs, outcome)
			}
		}
	}
	// variant builds a cell submitting statement bytes b with sigs.
	v := func(name string, want codes.Code, b []byte, sigs []*custosv1.OfficerSignature, enabledAfter bool, rec custosv1.Outcome) variant {
		return variant{name: name, want: want,
			call:  func(t *testing.T) error { return submit(t, &custosv1.SignedStatement{Statement: b, Signatures: sigs}) },
			after: sigState(b, enabledAfter, rec)}
	}
	deny, allow, none := custosv1.Outcome_OUTCOME_DENY, custosv1.Outcome_OUTCOME_ALLOW, custosv1.Outcome_OUTCOME_UNSPECIFIED
	stmt := func(setOp, mod func(*custosv1.Statement)) []byte { return statementBytes(t, clusterID, setOp, mod) }
	expire := func(st *custosv1.Statement) { st.NotAfterUnix = time.Now().Add(-time.Minute).Unix() }

	insufficient := stmt(enable(keySig), nil)
	otherBytes := stmt(enable(keySig), nil)
	badSig := stmt(enable(keySig), nil)
	forged := stmt(enable(keySig), nil)
	unknown := stmt(enable(keySig), nil)
	dup := stmt(enable(keySig), nil)
	expired := stmt(enable(keySig), expire)
	foreign := stmt(enable(keySig), func(st *custosv1.Statement) { st.ClusterId = "another-cluster" })
	tooLong := stmt(enable(keySig), func(st *custosv1.Statement) {
		st.NotAfterUnix = time.Now().Add(governance.MaxLifetime + time.Hour).Unix()
	})
	unsigned := stmt(enable(keySig), nil)
	valid := stmt(enable(keySig), nil)
	validSigs := officerSigs(t, h, valid, 0, 2)
	tighten := stmt(disable, nil)
	expiredTighten := stmt(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_RevokeKey{RevokeKey: &custosv1.RevokeKey{Key: keySig}}
	}, expire)

	return row{
		call: func(t *testing.T, who identity, cc *grpc.ClientConn) error {
			b := statementBytes(t, clusterID, enable(keyGov), nil)
			return errOf(custosv1.NewGovernanceServiceClient(cc).Submit(ctx(t),
				&custosv1.SignedStatement{Statement: b, Signatures: officerSigs(t, h, b, 0, 1)}))
		},
		want: authenticated(),
		after: func(t *testing.T, who identity, err error, since uint64) {
			recs := recordsAfter(t, e.audit, since, func(r *custosv1.DecisionRecord) bool {
				return r.GetOperation() == custosv1.Operation_OPERATION_GOVERNANCE && r.GetKey() == keyGov
			})
			if who == idNone {
				if len(recs) != 0 {
					t.Errorf("a Submit without a certificate reached the ledger: %v", recs)
				}
				return
			}
			if len(recs) != 1 || recs[0].GetOutcome() != allow || recs[0].GetPrincipal() != who.cn(h) ||
				!slices.Equal(recs[0].GetSigners(), []string{"officer-1", "officer-2"}) {
				t.Errorf("ledger after %s carried a quorum statement: %v, want one ALLOW naming %s and officers 1 and 2", who, recs, who.cn(h))
			}
		},
		variants: []variant{
			v("insufficient: 1 of 2 signatures", codes.PermissionDenied, insufficient, officerSigs(t, h, insufficient, 1), false, deny),
			v("invalid: officer-2's signature is over other bytes", codes.PermissionDenied, badSig,
				append(officerSigs(t, h, badSig, 0), officerSigs(t, h, otherBytes, 1)...), false, deny),
			v("invalid: a non-officer key signs as officer-2", codes.PermissionDenied, forged,
				append(officerSigs(t, h, forged, 0), signAs(t, stranger, "officer-2", forged)), false, deny),
			v("invalid: a quorum plus an unknown signer", codes.PermissionDenied, unknown,
				append(officerSigs(t, h, unknown, 0, 1), signAs(t, stranger, "mallory", unknown)), false, deny),
			v("invalid: officer-1 signs twice", codes.InvalidArgument, dup, officerSigs(t, h, dup, 0, 0), false, deny),
			v("invalid: a quorum for another cluster", codes.InvalidArgument, foreign, officerSigs(t, h, foreign, 0, 1), false, deny),
			v("invalid: a quorum, expiry beyond the maximum lifetime", codes.InvalidArgument, tooLong, officerSigs(t, h, tooLong, 0, 1), false, deny),
			v("invalid: no signatures", codes.InvalidArgument, unsigned, nil, false, none),
			v("expired: a quorum, not_after a minute ago", codes.FailedPrecondition, expired, officerSigs(t, h, expired, 0, 1), false, deny),
			v("valid: a quorum, 2 of 3", codes.OK, valid, validSigs, true, allow),
			v("valid, replayed: the same statement again", codes.FailedPrecondition, valid, validSigs, true, deny),
			v("expired: one officer revokes (tightening)", codes.FailedPrecondition, expiredTighten, officerSigs(t, h, expiredTighten, 2), true, deny),
			v("valid: one officer disables (tightening)", codes.OK, tighten, officerSigs(t, h, tighten, 2), false, allow),
		},
	}
}
