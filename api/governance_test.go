package api_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/api"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/internal/webauthntest"
	"github.com/custos-kms/custos/kms/governance"
	"github.com/custos-kms/custos/kms/ledger"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

var (
	customer = &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Text: "test"}
	provider = &custosv1.Justification{Reason: custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST, Text: "subpoena"}
)

func enableKey(name string) func(*custosv1.Statement) {
	return func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_EnableKey{EnableKey: &custosv1.EnableKey{Key: name}}
	}
}

// approvalInfo returns the APPROVAL_REQUIRED ErrorInfo of err.
func approvalInfo(t *testing.T, err error) *errdetails.ErrorInfo {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition {
		t.Fatalf("err = %v, want FailedPrecondition", err)
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == api.ReasonApprovalRequired {
			if info.GetDomain() != api.ErrorDomain {
				t.Errorf("ErrorInfo domain = %q", info.GetDomain())
			}
			return info
		}
	}
	t.Fatalf("status %v has no %s ErrorInfo (details %v)", st, api.ReasonApprovalRequired, st.Details())
	return nil
}

// TestGovernanceService drives the GovernanceService over mTLS against a
// real node with the harness's 2-of-3 officers.
func TestGovernanceService(t *testing.T) {
	h := nodetest.Start(t)
	kc := custosv1.NewKeyServiceClient(h.Conn(t, "app"))
	gc := custosv1.NewGovernanceServiceClient(h.Conn(t, "app"))
	if _, err := kc.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: "payroll"}); err != nil {
		t.Fatal(err)
	}
	ec := map[string]string{"dept": "hr"}
	dk, err := kc.GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: "payroll", EncryptionContext: ec})
	if err != nil {
		t.Fatal(err)
	}
	state := func() custosv1.KeyState {
		t.Helper()
		k, err := kc.GetKey(ctx(t), &custosv1.GetKeyRequest{Name: "payroll"})
		if err != nil {
			t.Fatal(err)
		}
		return k.GetState()
	}

	t.Run("GetGovernance", func(t *testing.T) {
		gov, err := gc.GetGovernance(ctx(t), &custosv1.GetGovernanceRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if gov.GetClusterId() != h.Node.ClusterID() || gov.GetQuorum() != nodetest.Quorum {
			t.Errorf("governance = %v, want cluster %s, quorum %d", gov, h.Node.ClusterID(), nodetest.Quorum)
		}
		var names []string
		for _, o := range gov.GetOfficers() {
			names = append(names, o.GetName())
		}
		if !slices.Equal(names, []string{"officer-1", "officer-2", "officer-3"}) {
			t.Errorf("officers = %v", names)
		}
		if pub, err := governance.ParsePublicKey(gov.GetOfficers()[0].GetPublicKey()); err != nil || !pub.Equal(&h.Officers[0].Key.PublicKey) {
			t.Errorf("officer-1's public key does not match the harness key (err %v)", err)
		}
	})

	t.Run("GetPolicy names the creator only", func(t *testing.T) {
		p, err := gc.GetPolicy(ctx(t), &custosv1.GetPolicyRequest{Key: "payroll"})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(p.GetDecryptPrincipals(), []string{"app"}) || !slices.Equal(p.GetEncryptPrincipals(), []string{"app"}) {
			t.Errorf("policy = %v", p)
		}
		_, err = gc.GetPolicy(ctx(t), &custosv1.GetPolicyRequest{Key: "no-such-key"})
		wantCode(t, "GetPolicy(no-such-key)", err, codes.NotFound)
	})

	t.Run("re-enable needs the quorum", func(t *testing.T) {
		if _, err := kc.SetKeyState(ctx(t), &custosv1.SetKeyStateRequest{Name: "payroll", State: custosv1.KeyState_KEY_STATE_DISABLED}); err != nil {
			t.Fatal(err)
		}
		_, err := kc.SetKeyState(ctx(t), &custosv1.SetKeyStateRequest{Name: "payroll", State: custosv1.KeyState_KEY_STATE_ENABLED})
		wantCode(t, "SetKeyState(ENABLED)", err, codes.PermissionDenied)
		if msg := status.Convert(err).Message(); strings.HasPrefix(msg, "permission denied") {
			t.Errorf("message %q repeats the code", msg)
		}

		_, err = gc.Submit(ctx(t), h.Sign(t, enableKey("payroll"), 0))
		wantCode(t, "EnableKey with one signature", err, codes.PermissionDenied)
		if got := state(); got != custosv1.KeyState_KEY_STATE_DISABLED {
			t.Fatalf("after a refused EnableKey the key is %v", got)
		}

		ss := h.Sign(t, enableKey("payroll"), 0, 2)
		resp, err := gc.Submit(ctx(t), ss)
		if err != nil {
			t.Fatalf("EnableKey signed 2 of 3: %v", err)
		}
		if !slices.Equal(resp.GetSigners(), []string{"officer-1", "officer-3"}) || resp.GetLedgerSeq() == 0 || resp.GetResult() == "" {
			t.Errorf("Submit = %v", resp)
		}
		if got := state(); got != custosv1.KeyState_KEY_STATE_ENABLED {
			t.Errorf("after EnableKey the key is %v", got)
		}
		// A statement applies once.
		_, err = gc.Submit(ctx(t), ss)
		wantCode(t, "replayed EnableKey", err, codes.FailedPrecondition)
	})

	var requestID string
	t.Run("REQUIRE_APPROVAL decrypt is pending", func(t *testing.T) {
		_, err := kc.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: dk.GetWrappedDataKey(), EncryptionContext: ec, Justification: provider})
		info := approvalInfo(t, err)
		requestID = info.GetMetadata()["request_id"]
		seq, serr := strconv.ParseUint(info.GetMetadata()["decision_seq"], 10, 64)
		if requestID == "" || serr != nil || seq == 0 {
			t.Fatalf("ErrorInfo metadata = %v", info.GetMetadata())
		}
		if msg := status.Convert(err).Message(); !strings.Contains(msg, requestID) {
			t.Errorf("message %q does not name the request", msg)
		}

		pending, err := gc.ListPending(ctx(t), &custosv1.ListPendingRequest{Key: "payroll"})
		if err != nil {
			t.Fatal(err)
		}
		if len(pending.GetRequests()) != 1 || pending.GetRequests()[0].GetRequestId() != requestID {
			t.Fatalf("ListPending = %v, want request %s", pending, requestID)
		}
		r, err := gc.GetRequest(ctx(t), &custosv1.GetRequestRequest{RequestId: requestID})
		if err != nil {
			t.Fatal(err)
		}
		if r.GetState() != custosv1.RequestState_REQUEST_STATE_PENDING || r.GetPrincipal() != "app" || r.GetKey() != "payroll" ||
			r.GetReason() != custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST || r.GetDecisionSeq() != seq {
			t.Errorf("GetRequest = %v", r)
		}
		_, err = gc.GetRequest(ctx(t), &custosv1.GetRequestRequest{RequestId: "no-such-request"})
		wantCode(t, "GetRequest(no-such-request)", err, codes.NotFound)
		_, err = gc.GetRequest(ctx(t), &custosv1.GetRequestRequest{})
		wantCode(t, "GetRequest()", err, codes.InvalidArgument)
	})

	t.Run("approval by the quorum releases once", func(t *testing.T) {
		if requestID == "" {
			t.Skip("no pending request")
		}
		approve := func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_ApproveRequest{ApproveRequest: &custosv1.ApproveRequest{RequestId: requestID, Uses: 1}}
		}
		_, err := gc.Submit(ctx(t), h.Sign(t, approve, 1))
		wantCode(t, "ApproveRequest with one signature", err, codes.PermissionDenied)
		resp, err := gc.Submit(ctx(t), h.Sign(t, approve, 1, 2))
		if err != nil {
			t.Fatalf("ApproveRequest 2 of 3: %v", err)
		}
		if resp.GetGrantId() == "" {
			t.Errorf("Submit = %v, want a grant id", resp)
		}
		grants, err := gc.ListGrants(ctx(t), &custosv1.ListGrantsRequest{Key: "payroll"})
		if err != nil {
			t.Fatal(err)
		}
		if len(grants.GetGrants()) != 1 || grants.GetGrants()[0].GetGrantId() != resp.GetGrantId() {
			t.Errorf("ListGrants = %v", grants)
		}
		dec, err := kc.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: dk.GetWrappedDataKey(), EncryptionContext: ec, Justification: provider})
		if err != nil {
			t.Fatalf("Decrypt after approval: %v", err)
		}
		if string(dec.GetPlaintext()) != string(dk.GetPlaintext()) {
			t.Error("Decrypt after approval returned another data key")
		}
		// The grant had one use: the next attempt waits again.
		_, err = kc.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: dk.GetWrappedDataKey(), EncryptionContext: ec, Justification: provider})
		approvalInfo(t, err)
		if r, err := gc.GetRequest(ctx(t), &custosv1.GetRequestRequest{RequestId: requestID}); err != nil ||
			r.GetState() != custosv1.RequestState_REQUEST_STATE_APPROVED {
			t.Errorf("GetRequest after approval = %v, %v", r, err)
		}
	})

	t.Run("bad requests are InvalidArgument", func(t *testing.T) {
		_, err := gc.Submit(ctx(t), &custosv1.SignedStatement{})
		wantCode(t, "Submit(empty)", err, codes.InvalidArgument)
		_, err = gc.ListPending(ctx(t), &custosv1.ListPendingRequest{Key: "bad name/.."})
		wantCode(t, "ListPending(bad name)", err, codes.InvalidArgument)
	})

	t.Run("no client certificate is Unauthenticated", func(t *testing.T) {
		anon := custosv1.NewGovernanceServiceClient(h.Conn(t, ""))
		_, err := anon.GetGovernance(ctx(t), &custosv1.GetGovernanceRequest{})
		wantCode(t, "GetGovernance without a certificate", err, codes.Unauthenticated)
		_, err = anon.Submit(ctx(t), h.Sign(t, enableKey("payroll"), 0, 1))
		wantCode(t, "Submit without a certificate", err, codes.Unauthenticated)
	})
}

// TestOperatorCannotLoosen is "the operator can loosen nothing" (docs/architecture.md, invariant 4): an
// mTLS identity that is neither the key's user nor an officer tries every
// RPC on keys created by "app", and nothing about them loosens. The table
// must cover every method of KeyService, GovernanceService and
// AuditService (whose reads are for the configured auditors only).
func TestOperatorCannotLoosen(t *testing.T) {
	h := nodetest.Start(t)
	app := custosv1.NewKeyServiceClient(h.Conn(t, "app"))
	kc := custosv1.NewKeyServiceClient(h.Conn(t, "operator"))
	gc := custosv1.NewGovernanceServiceClient(h.Conn(t, "operator"))
	ac := custosv1.NewAuditServiceClient(h.Conn(t, "operator"))
	appAudit := custosv1.NewAuditServiceClient(h.Conn(t, "app"))
	appGov := custosv1.NewGovernanceServiceClient(h.Conn(t, "app"))

	// "locked": two versions, minimum decryption version 2, disabled by its
	// user after officers had once re-enabled it. "open": enabled.
	ec := map[string]string{"dept": "hr"}
	for _, name := range []string{"locked", "open"} {
		if _, err := app.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	lockedV1, err := app.GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: "locked", EncryptionContext: ec})
	if err != nil {
		t.Fatal(err)
	}
	openDK, err := app.GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: "open", EncryptionContext: ec})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := app.RotateKey(ctx(t), &custosv1.RotateKeyRequest{Name: "locked"}); err != nil {
		t.Fatal(err)
	}
	if _, err := app.SetMinDecryptionVersion(ctx(t), &custosv1.SetMinDecryptionVersionRequest{Name: "locked", MinDecryptionVersion: 2}); err != nil {
		t.Fatal(err)
	}
	disable := func() {
		t.Helper()
		if _, err := app.SetKeyState(ctx(t), &custosv1.SetKeyStateRequest{Name: "locked", State: custosv1.KeyState_KEY_STATE_DISABLED}); err != nil {
			t.Fatal(err)
		}
	}
	disable()
	// An EnableKey the officers signed earlier, which the operator saw.
	oldEnable := h.Sign(t, enableKey("locked"), 0, 1)
	if _, err := appGov.Submit(ctx(t), oldEnable); err != nil {
		t.Fatal(err)
	}
	disable()
	// A pending request of app's, which the operator would like approved.
	_, err = app.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: openDK.GetWrappedDataKey(), EncryptionContext: ec, Justification: provider})
	requestID := approvalInfo(t, err).GetMetadata()["request_id"]

	// A notification sink the officers configured (one signature suffices
	// to add one: it loosens nothing).
	sink := func(name string) func(*custosv1.Statement) {
		return func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_AddSink{AddSink: &custosv1.AddSink{Sink: &custosv1.Sink{
				Name: name, Type: custosv1.SinkType_SINK_TYPE_WEBHOOK, Url: "http://127.0.0.1:1/custos",
				HmacKey: []byte("0123456789abcdef0123456789abcdef")}}}
		}
	}
	removeSink := func(name string) func(*custosv1.Statement) {
		return func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_RemoveSink{RemoveSink: &custosv1.RemoveSink{Name: name}}
		}
	}
	if _, err := appGov.Submit(ctx(t), h.Sign(t, sink("siem"), 0)); err != nil {
		t.Fatal(err)
	}
	quiet := func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_SetNotifyRules{SetNotifyRules: &custosv1.SetNotifyRules{Rules: &custosv1.NotifyRules{}}}
	}

	// The operator's own key, and one it claims is an officer's.
	opKey, err := governance.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	signAs := func(key *ecdsa.PrivateKey, name string, setOp func(*custosv1.Statement)) *custosv1.SignedStatement {
		ss := h.Sign(t, setOp)
		sig, err := governance.Sign(key, name, ss.GetStatement())
		if err != nil {
			t.Fatal(err)
		}
		ss.Signatures = append(ss.Signatures, sig)
		return ss
	}
	loosePolicy := func(st *custosv1.Statement) {
		p := proto.Clone(mustPolicy(t, appGov, "open")).(*custosv1.KeyPolicy)
		p.DecryptPrincipals = append(p.DecryptPrincipals, "operator")
		for _, r := range p.Reasons {
			r.Action = custosv1.Action_ACTION_ALLOW
		}
		st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "open", Policy: p}}
	}
	grant := func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_CreateGrant{CreateGrant: &custosv1.CreateGrant{
			Principal: "operator", Key: "open", Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Uses: 100}}
	}
	approve := func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_ApproveRequest{ApproveRequest: &custosv1.ApproveRequest{RequestId: requestID, Uses: 100}}
	}
	takeOver := func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_SetOfficers{SetOfficers: &custosv1.SetOfficers{
			Officers: []*custosv1.Officer{{Name: "operator", PublicKey: governance.MarshalPublicKey(&opKey.PublicKey)}}, Quorum: 1}}
	}

	before := snapshot(t, appGov, app)
	for _, k := range before.keys.GetKeys() {
		if k.GetName() == "locked" && (k.GetState() != custosv1.KeyState_KEY_STATE_DISABLED || k.GetMinDecryptionVersion() != 2) {
			t.Fatalf("set-up: locked key = %v", k)
		}
	}

	type attempt struct {
		method string // "Service/Method"
		what   string
		call   func() error
		want   []codes.Code // refused with one of these; OK only for reads and AddSink
	}
	denied := []codes.Code{codes.PermissionDenied}
	read := []codes.Code{codes.OK, codes.PermissionDenied} // reads loosen nothing either way
	decrypt := func(dk []byte, j *custosv1.Justification) func() error {
		return func() error {
			_, err := kc.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: dk, EncryptionContext: ec, Justification: j})
			return err
		}
	}
	submit := func(ss *custosv1.SignedStatement) func() error {
		return func() error { _, err := gc.Submit(ctx(t), ss); return err }
	}
	attempts := []attempt{
		{"KeyService/CreateKey", "create a key under app's key name", func() error {
			_, err := kc.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: "locked"})
			return err
		}, []codes.Code{codes.AlreadyExists}},
		{"KeyService/GetKey", "read", func() error { _, err := kc.GetKey(ctx(t), &custosv1.GetKeyRequest{Name: "locked"}); return err }, read},
		{"KeyService/ListKeys", "read", func() error { _, err := kc.ListKeys(ctx(t), &custosv1.ListKeysRequest{}); return err }, read},
		{"KeyService/RotateKey", "rotate app's key", func() error {
			_, err := kc.RotateKey(ctx(t), &custosv1.RotateKeyRequest{Name: "open"})
			return err
		}, denied},
		{"KeyService/SetKeyState", "enable after a disable", func() error {
			_, err := kc.SetKeyState(ctx(t), &custosv1.SetKeyStateRequest{Name: "locked", State: custosv1.KeyState_KEY_STATE_ENABLED})
			return err
		}, denied},
		{"KeyService/SetKeyState", "enable, as the key's own user", func() error {
			_, err := app.SetKeyState(ctx(t), &custosv1.SetKeyStateRequest{Name: "locked", State: custosv1.KeyState_KEY_STATE_ENABLED})
			return err
		}, denied},
		{"KeyService/GetParametersForImport", "import parameters for app's key", func() error {
			_, err := kc.GetParametersForImport(ctx(t), &custosv1.GetParametersForImportRequest{Key: "open",
				Algorithm: custosv1.ImportWrappingAlgorithm_RSA_AES_KEY_WRAP_SHA_256})
			return err
		}, denied},
		{"KeyService/ImportKeyMaterial", "import material of its choice into app's key", func() error {
			_, err := kc.ImportKeyMaterial(ctx(t), &custosv1.ImportKeyMaterialRequest{Key: "open", ImportToken: "node1.00",
				EncryptedKeyMaterial: make([]byte, 424)})
			return err
		}, denied},
		{"KeyService/SetMinDecryptionVersion", "lower the minimum", func() error {
			_, err := kc.SetMinDecryptionVersion(ctx(t), &custosv1.SetMinDecryptionVersionRequest{Name: "locked", MinDecryptionVersion: 1})
			return err
		}, denied},
		{"KeyService/SetMinDecryptionVersion", "lower the minimum, as the key's own user", func() error {
			_, err := app.SetMinDecryptionVersion(ctx(t), &custosv1.SetMinDecryptionVersionRequest{Name: "locked", MinDecryptionVersion: 1})
			return err
		}, denied},
		{"KeyService/GenerateDataKey", "use app's key", func() error {
			_, err := kc.GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: "open", EncryptionContext: ec})
			return err
		}, denied},
		{"KeyService/Encrypt", "use app's key", func() error {
			_, err := kc.Encrypt(ctx(t), &custosv1.EncryptRequest{Key: "open", Plaintext: []byte("x")})
			return err
		}, denied},
		{"KeyService/Decrypt", "decrypt app's data key", decrypt(openDK.GetWrappedDataKey(), customer), denied},
		{"KeyService/Decrypt", "decrypt app's data key with a provider reason", decrypt(openDK.GetWrappedDataKey(), provider), denied},
		{"KeyService/Decrypt", "decrypt under the disabled key", decrypt(lockedV1.GetWrappedDataKey(), customer), []codes.Code{codes.FailedPrecondition}},
		{"KeyService/BatchDecrypt", "decrypt app's data keys in a batch (each item refused on its own)", func() error {
			items := []*custosv1.DecryptRequest{
				{Ciphertext: openDK.GetWrappedDataKey(), EncryptionContext: ec, Justification: customer},
				{Ciphertext: openDK.GetWrappedDataKey(), EncryptionContext: ec, Justification: provider},
			}
			resp, err := kc.BatchDecrypt(ctx(t), &custosv1.BatchDecryptRequest{Requests: items})
			if err != nil {
				return err
			}
			var first error
			for i, r := range resp.GetResults() {
				if r.GetResponse() != nil {
					return fmt.Errorf("item %d released a data key to the operator", i)
				}
				if e := r.GetError(); first == nil || codes.Code(e.GetCode()) != codes.PermissionDenied {
					first = status.Error(codes.Code(e.GetCode()), e.GetMessage())
				}
			}
			if len(resp.GetResults()) != len(items) {
				return fmt.Errorf("%d results for %d items", len(resp.GetResults()), len(items))
			}
			return first
		}, denied},
		{"KeyService/ReEncrypt", "rewrap app's data key", func() error {
			_, err := kc.ReEncrypt(ctx(t), &custosv1.ReEncryptRequest{Ciphertext: openDK.GetWrappedDataKey(), EncryptionContext: ec, Justification: customer})
			return err
		}, denied},
		{"GovernanceService/Submit", "EnableKey with no signatures", submit(h.Sign(t, enableKey("locked"))), []codes.Code{codes.InvalidArgument}},
		{"GovernanceService/Submit", "EnableKey signed by a non-officer key under an officer's name",
			submit(signAs(opKey, "officer-1", enableKey("locked"))), denied},
		{"GovernanceService/Submit", "EnableKey signed by a non-officer", submit(signAs(opKey, "operator", enableKey("locked"))), denied},
		{"GovernanceService/Submit", "EnableKey with one officer signature", submit(h.Sign(t, enableKey("locked"), 2)), denied},
		{"GovernanceService/Submit", "replay of an applied EnableKey", submit(oldEnable), []codes.Code{codes.FailedPrecondition}},
		{"GovernanceService/Submit", "SetPolicy with one officer signature", submit(h.Sign(t, loosePolicy, 0)), denied},
		{"GovernanceService/Submit", "CreateGrant with one officer signature", submit(h.Sign(t, grant, 1)), denied},
		{"GovernanceService/Submit", "ApproveRequest with one officer signature", submit(h.Sign(t, approve, 2)), denied},
		{"GovernanceService/Submit", "SetOfficers with one officer signature", submit(h.Sign(t, takeOver, 0)), denied},
		{"GovernanceService/Submit", "SetOfficers signed by the operator", submit(signAs(opKey, "operator", takeOver)), denied},
		{"GovernanceService/GetGovernance", "read", func() error { _, err := gc.GetGovernance(ctx(t), &custosv1.GetGovernanceRequest{}); return err }, read},
		{"GovernanceService/ListPending", "read", func() error { _, err := gc.ListPending(ctx(t), &custosv1.ListPendingRequest{}); return err }, read},
		{"GovernanceService/GetRequest", "read", func() error {
			_, err := gc.GetRequest(ctx(t), &custosv1.GetRequestRequest{RequestId: requestID})
			return err
		}, read},
		{"GovernanceService/ListGrants", "read", func() error { _, err := gc.ListGrants(ctx(t), &custosv1.ListGrantsRequest{}); return err }, read},
		{"GovernanceService/GetPolicy", "read", func() error { _, err := gc.GetPolicy(ctx(t), &custosv1.GetPolicyRequest{Key: "open"}); return err }, read},
		{"GovernanceService/SubmitCosignature", "a cosignature by a witness the officers did not register", func() error {
			head := make([]byte, 32)
			d := sha256.Sum256(ledger.CosignatureMessage(h.Node.ClusterID(), "operator", 1, head, time.Now().UnixNano()))
			sig, err := ecdsa.SignASN1(rand.Reader, opKey, d[:])
			if err != nil {
				t.Fatal(err)
			}
			_, err = gc.SubmitCosignature(ctx(t), &custosv1.Cosignature{ClusterId: h.Node.ClusterID(), Witness: "operator", Seq: 1, Head: head,
				TimeUnixNano: time.Now().UnixNano(), Signature: sig})
			return err
		}, []codes.Code{codes.PermissionDenied, codes.FailedPrecondition}},
		{"GovernanceService/Propose", "SetOfficers proposed with the operator's signature", func() error {
			_, err := gc.Propose(ctx(t), &custosv1.ProposeRequest{Statement: signAs(opKey, "operator", takeOver)})
			return err
		}, denied},
		{"GovernanceService/Propose", "SetPolicy proposed with one officer's signature: stored, never applied", func() error {
			res, err := gc.Propose(ctx(t), &custosv1.ProposeRequest{Statement: h.Sign(t, loosePolicy, 0)})
			if err == nil && res.GetApplied() != nil {
				return fmt.Errorf("one signature applied a loosening: %v", res.GetApplied())
			}
			if err == nil {
				return status.Error(codes.PermissionDenied, "stored as a proposal only")
			}
			return err
		}, denied},
		{"GovernanceService/Propose", "the operator's own security key proposed for an officer (no enrolment code), then signing with it", func() error {
			a := webauthntest.New()
			ss := h.Sign(t, func(st *custosv1.Statement) {
				st.Operation = &custosv1.Statement_AddOfficerCredential{AddOfficerCredential: &custosv1.AddOfficerCredential{
					Officer: "officer-1", Credential: a.Credential("localhost", false)}}
			})
			proof := a.Assert("localhost", "https://localhost:1", governance.SignedDigest(ss.GetStatement()))
			if res, err := gc.Propose(ctx(t), &custosv1.ProposeRequest{Statement: ss, Proof: proof}); status.Code(err) != codes.PermissionDenied {
				return fmt.Errorf("the key's proof without the officer's enrolment code: %v, %v", res, err)
			}
			en := h.Sign(t, enableKey("locked"))
			en.Signatures = []*custosv1.OfficerSignature{{Officer: "officer-1", Webauthn: a.Assert("localhost", "https://localhost:1", governance.SignedDigest(en.GetStatement()))}}
			_, err := gc.Propose(ctx(t), &custosv1.ProposeRequest{Statement: en})
			return err
		}, denied},
		{"GovernanceService/ListProposals", "read", func() error { _, err := gc.ListProposals(ctx(t), &custosv1.ListProposalsRequest{}); return err }, read},
		{"GovernanceService/Submit", "AddWitness (the operator's key) with one officer signature", submit(h.Sign(t, func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_AddWitness{AddWitness: &custosv1.AddWitness{Witness: &custosv1.Witness{
				Name: "operator", PublicKey: governance.MarshalPublicKey(&opKey.PublicKey)}}}
		}, 1)), denied},
		{"GovernanceService/Submit", "AddClientAuthority with one officer signature", submit(h.Sign(t, func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_AddClientAuthority{AddClientAuthority: &custosv1.AddClientAuthority{Certificate: operatorCA(t)}}
		}, 2)), denied},
		{"GovernanceService/Submit", "RemoveSink with one officer signature", submit(h.Sign(t, removeSink("siem"), 1)), denied},
		{"GovernanceService/Submit", "SetNotifyRules (notify nothing) with one officer signature", submit(h.Sign(t, quiet, 2)), denied},
		// One officer may add a sink: the customer is told more, nothing
		// loosens. The quorum removes it again inside the attempt, so the
		// compared state (which includes the sinks) must be unchanged.
		{"GovernanceService/Submit", "AddSink with one officer signature (allowed), removed again by the quorum", func() error {
			if _, err := gc.Submit(ctx(t), h.Sign(t, sink("extra"), 1)); err != nil {
				return err
			}
			_, err := gc.Submit(ctx(t), h.Sign(t, removeSink("extra"), 0, 2))
			return err
		}, []codes.Code{codes.OK}},
		{"AuditService/ListDecisions", "read the ledger", func() error {
			_, err := ac.ListDecisions(ctx(t), &custosv1.ListDecisionsRequest{})
			return err
		}, denied},
		{"AuditService/ListDecisions", "read the ledger, as the key's own user", func() error {
			_, err := appAudit.ListDecisions(ctx(t), &custosv1.ListDecisionsRequest{})
			return err
		}, denied},
		{"AuditService/GetCheckpoint", "read the checkpoint", func() error {
			_, err := ac.GetCheckpoint(ctx(t), &custosv1.GetCheckpointRequest{})
			return err
		}, denied},
		{"AuditService/Export", "export the ledger", func() error {
			st, err := ac.Export(ctx(t), &custosv1.ExportRequest{})
			if err != nil {
				return err
			}
			_, err = st.Recv()
			return err
		}, denied},
		{"AuditService/WatchDecisions", "follow the ledger", func() error {
			st, err := appAudit.WatchDecisions(ctx(t), &custosv1.WatchDecisionsRequest{})
			if err != nil {
				return err
			}
			_, err = st.Recv()
			return err
		}, denied},
	}

	covered := map[string]bool{}
	for _, a := range attempts {
		covered[a.method] = true
	}
	for _, sd := range []struct {
		name    string
		methods []string
	}{
		{"KeyService", methodNames(custosv1.KeyService_ServiceDesc)},
		{"GovernanceService", methodNames(custosv1.GovernanceService_ServiceDesc)},
		{"AuditService", methodNames(custosv1.AuditService_ServiceDesc)},
	} {
		for _, m := range sd.methods {
			if !covered[sd.name+"/"+m] {
				t.Errorf("%s/%s has no entry in this test: add what an operator could try with it", sd.name, m)
			}
		}
	}

	for _, a := range attempts {
		t.Run(a.method+": "+a.what, func(t *testing.T) {
			err := a.call()
			if !slices.Contains(a.want, status.Code(err)) {
				t.Errorf("code = %v (%v), want one of %v", status.Code(err), err, a.want)
			}
			if after := snapshot(t, appGov, app); !after.equal(before) {
				t.Errorf("state changed:\nbefore %v\nafter  %v", before, after)
			}
		})
	}

	// The same loosening with the quorum works: the refusals above were
	// about who asked, not about the statements.
	if _, err := gc.Submit(ctx(t), h.Sign(t, enableKey("locked"), 0, 2)); err != nil {
		t.Fatalf("EnableKey signed 2 of 3, submitted by the operator: %v", err)
	}
	if after := snapshot(t, appGov, app); after.equal(before) {
		t.Error("a quorum EnableKey changed nothing")
	}
}

// methodNames lists a service's methods, unary and streaming.
func methodNames(sd grpc.ServiceDesc) []string {
	var out []string
	for _, m := range sd.Methods {
		out = append(out, m.MethodName)
	}
	for _, m := range sd.Streams {
		out = append(out, m.StreamName)
	}
	return out
}

func mustPolicy(t *testing.T, gc custosv1.GovernanceServiceClient, key string) *custosv1.KeyPolicy {
	t.Helper()
	p, err := gc.GetPolicy(ctx(t), &custosv1.GetPolicyRequest{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// loosenable is what loosening would change: the keys (state, versions,
// minimum decryption version), their policies, the grants in force, the
// approval requests and the officer set.
type loosenable struct {
	keys     *custosv1.ListKeysResponse
	policies []*custosv1.KeyPolicy
	grants   *custosv1.ListGrantsResponse
	pending  *custosv1.ListPendingResponse
	gov      *custosv1.Governance
}

func (a *loosenable) equal(b *loosenable) bool {
	return proto.Equal(a.keys, b.keys) && slices.EqualFunc(a.policies, b.policies, func(x, y *custosv1.KeyPolicy) bool { return proto.Equal(x, y) }) &&
		proto.Equal(a.grants, b.grants) && proto.Equal(a.pending, b.pending) && proto.Equal(a.gov, b.gov)
}

func (a *loosenable) String() string {
	return fmt.Sprintf("keys %v\npolicies %v\ngrants %v\npending %v\ngovernance %v", a.keys, a.policies, a.grants, a.pending, a.gov)
}

func snapshot(t *testing.T, gc custosv1.GovernanceServiceClient, kc custosv1.KeyServiceClient) *loosenable {
	t.Helper()
	var s loosenable
	var err error
	if s.keys, err = kc.ListKeys(ctx(t), &custosv1.ListKeysRequest{}); err != nil {
		t.Fatal(err)
	}
	for _, k := range s.keys.GetKeys() {
		s.policies = append(s.policies, mustPolicy(t, gc, k.GetName()))
	}
	if s.grants, err = gc.ListGrants(ctx(t), &custosv1.ListGrantsRequest{}); err != nil {
		t.Fatal(err)
	}
	if s.pending, err = gc.ListPending(ctx(t), &custosv1.ListPendingRequest{}); err != nil {
		t.Fatal(err)
	}
	if s.gov, err = gc.GetGovernance(ctx(t), &custosv1.GetGovernanceRequest{}); err != nil {
		t.Fatal(err)
	}
	return &s
}

// operatorCA returns a CA certificate (DER) the operator made.
func operatorCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "operator CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
