package custos_test

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/codes"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms/audit"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// The Go client signs its decrypt requests with its certificate's key
// (docs/signed-requests.md): against a real node over mutual TLS, a key
// whose policy requires signed requests releases to the client, refuses
// the same application's unsigned request (a raw gRPC call, as a member
// node's own proposal in its name would be), and the export's ALLOW
// records carry proofs that `audit verify` checks.
func TestSignedRequestsThroughTheClient(t *testing.T) {
	h := nodetest.Start(t)
	c := dial(t, h)
	if !c.SignsRequests() {
		t.Fatal("the client does not sign with its P-256 certificate key")
	}
	ctx := testCtx(t)
	if _, err := c.CreateKey(ctx, "signed", ""); err != nil {
		t.Fatal(err)
	}
	p, err := c.GetPolicy(ctx, "signed")
	if err != nil {
		t.Fatal(err)
	}
	p.RequireRequestSignature = true
	st, err := c.NewStatement(ctx, "signed requests only", 0)
	if err != nil {
		t.Fatal(err)
	}
	st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "signed", Policy: p}}
	if _, err := c.SignAndSubmit(ctx, st, officers(h, 0, 1)...); err != nil {
		t.Fatalf("set_policy: %v", err)
	}
	ec := map[string]string{"dept": "hr"}
	dk, err := c.GenerateDataKey(ctx, "signed", ec)
	if err != nil {
		t.Fatal(err)
	}
	j := custos.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Text: "nightly"}
	for range 2 { // each call signs afresh: no replay
		pt, err := c.DecryptDataKey(ctx, dk.Wrapped, ec, j)
		if err != nil || !bytes.Equal(pt, dk.Plaintext) {
			t.Fatalf("signed decrypt: %v", err)
		}
	}
	res, err := c.BatchDecrypt(ctx, []custos.DecryptItem{{Ciphertext: dk.Wrapped, EncryptionContext: ec, Justification: j}})
	if err != nil || res[0].Err != nil || !bytes.Equal(res[0].Plaintext, dk.Plaintext) {
		t.Fatalf("signed batch decrypt: %v %+v", err, res)
	}
	raw := custosv1.NewKeyServiceClient(h.Conn(t, "app"))
	_, err = raw.Decrypt(ctx, &custosv1.DecryptRequest{Ciphertext: dk.Wrapped, EncryptionContext: ec,
		Justification: &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED}})
	wantCode(t, "an unsigned decrypt", err, codes.PermissionDenied)

	// The export: three proofs, checked offline.
	ac := custosv1.NewAuditServiceClient(h.Conn(t, nodetest.Auditor))
	cp, err := ac.GetCheckpoint(ctx, &custosv1.GetCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := audit.ParseKeys(cp.GetPublicKeys())
	if err != nil {
		t.Fatal(err)
	}
	stream, err := ac.Export(ctx, &custosv1.ExportRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var file bytes.Buffer
	if _, err := audit.Copy(&file, stream.Recv); err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify(bytes.NewReader(file.Bytes()), keys)
	if err != nil || !rep.Recomputed || rep.ReleasesChecked != 3 {
		t.Fatalf("audit verify: %v (%+v), want recomputed with 3 releases checked", err, rep)
	}
}
