package kmsplugin_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"k8s.io/apiserver/pkg/storage/value"
	"k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"
	kmstypes "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/v2"

	"github.com/custos-kms/custos/k8s/kmsplugin"
	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// secretSized returns n random bytes: a Secret's serialized form is at most
// 1 MiB.
func secretSized(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// stored decodes what the API server writes to etcd for one value.
func stored(t *testing.T, b []byte) *kmstypes.EncryptedObject {
	t.Helper()
	o := &kmstypes.EncryptedObject{}
	if err := proto.Unmarshal(b, o); err != nil {
		t.Fatalf("stored value: %v", err)
	}
	return o
}

// TestKMSv2EnvelopeWithCustos runs the API server's KMS v2 envelope
// transformer and gRPC client against the plugin and a real custos node:
// write and read a Secret-sized value; rotate the custos key, after which
// Status reports a new key_id, new writes use the new version and old and
// new values both decrypt; officers revoke the key, after which Status is
// unhealthy, no new seed is sealed and a cold transformer reads nothing.
func TestKMSv2EnvelopeWithCustos(t *testing.T) {
	e := startEnv(t, func(c *kmsplugin.Config) { c.StatusTTL = -1 }) // every Status asks custos
	ctx := testCtx(t)
	api := newAPIServer(t, e.socket, "custos")

	st := api.check(t)
	if st.Healthz != "ok" || st.Version != "v2" || !strings.HasPrefix(st.KeyID, "custos/"+keyName+"/v1/") {
		t.Fatalf("Status = %+v", st)
	}
	keyID1 := st.KeyID
	tr := kmsv2.NewEnvelopeTransformer(api.svc, api.name, api.stateFunc, "apiserver-1")

	secret1 := secretSized(t, 1<<20-4096)
	dctx1 := value.DefaultContext("/registry/secrets/default/db-password")
	out1, err := tr.TransformToStorage(ctx, secret1, dctx1)
	if err != nil {
		t.Fatalf("TransformToStorage: %v", err)
	}
	o1 := stored(t, out1)
	if o1.KeyID != keyID1 || o1.EncryptedDEKSourceType != kmstypes.EncryptedDEKSourceType_HKDF_SHA256_XNONCE_AES_GCM_SEED {
		t.Errorf("stored key_id %q, type %v", o1.KeyID, o1.EncryptedDEKSourceType)
	}
	// The seed's ciphertext is custos's, under the key's version 1.
	w, err := kms.ParseWrapped(o1.EncryptedDEKSource)
	if err != nil || w.Key != keyName || w.KeyVersion != 1 || w.Kind != kms.KindPayload {
		t.Errorf("encrypted DEK source: %+v, %v", w, err)
	}
	if bytes.Contains(out1, secret1[:64]) {
		t.Error("the stored value contains the plaintext")
	}
	got, stale, err := tr.TransformFromStorage(ctx, out1, dctx1)
	if err != nil || stale || !bytes.Equal(got, secret1) {
		t.Fatalf("TransformFromStorage: stale=%v, equal=%v, %v", stale, bytes.Equal(got, secret1), err)
	}
	if _, _, err := tr.TransformFromStorage(ctx, out1, value.DefaultContext("/registry/secrets/default/other")); err == nil {
		t.Error("a value read under another etcd key decrypted")
	}
	// A cold transformer (a restarted API server) asks custos for the seed:
	// one decision in the plugin's name.
	cold := kmsv2.NewEnvelopeTransformer(api.svc, api.name, api.stateFunc, "apiserver-2")
	if got, _, err := cold.TransformFromStorage(ctx, out1, dctx1); err != nil || !bytes.Equal(got, secret1) {
		t.Fatalf("cold read: %v", err)
	}
	recs := e.records(t)
	if len(recs) != 1 {
		t.Fatalf("%d ledger records in %s's name, want 1: %v", len(recs), "kube-apiserver", recs)
	}
	r := recs[0]
	if r.GetOperation() != custosv1.Operation_OPERATION_DECRYPT || r.GetOutcome() != custosv1.Outcome_OUTCOME_ALLOW ||
		r.GetKey() != keyName || r.GetKeyVersion() != 1 || r.GetReason() != custosv1.Reason_REASON_CUSTOMER_WORKFLOW ||
		!strings.HasPrefix(r.GetJustificationText(), kmsplugin.DefaultText+" (uid ") {
		t.Errorf("decrypt record: %v", r)
	}
	// The key requires signed requests: the plugin's signature is on record.
	if r.GetRequestSignature() == nil || len(r.GetPrincipalCertificate()) == 0 {
		t.Errorf("the decrypt record carries no request signature: %v", r)
	}
	// The record names the seed: its data digest is the SHA-256 of the
	// encrypted DEK source stored in etcd.
	if d := sha256.Sum256(o1.EncryptedDEKSource); !bytes.Equal(r.GetDataDigest(), d[:]) {
		t.Errorf("record data_digest %x, SHA-256 of the stored seed ciphertext %x", r.GetDataDigest(), d)
	}

	// Status costs no ledger record.
	for range 5 {
		if st := api.check(t); st.Healthz != "ok" || st.KeyID != keyID1 {
			t.Fatalf("Status = %+v", st)
		}
	}
	if n := len(e.records(t)); n != 1 {
		t.Errorf("5 Status calls added %d ledger records", n-1)
	}

	// Rotation: the key's administrator rotates; the plugin may not.
	if _, err := dial(t, e.h, pluginCN).RotateKey(ctx, keyName); status.Code(err) != codes.PermissionDenied {
		t.Errorf("the plugin's principal rotated the key: %v", err)
	}
	if _, err := e.admin.RotateKey(ctx, keyName); err != nil {
		t.Fatal(err)
	}
	st = api.check(t)
	if st.Healthz != "ok" || st.KeyID == keyID1 || !strings.HasPrefix(st.KeyID, "custos/"+keyName+"/v2/") {
		t.Fatalf("Status after rotation = %+v (before: %q)", st, keyID1)
	}
	secret2 := secretSized(t, 64<<10)
	dctx2 := value.DefaultContext("/registry/secrets/kube-system/token")
	out2, err := tr.TransformToStorage(ctx, secret2, dctx2)
	if err != nil {
		t.Fatal(err)
	}
	if o2 := stored(t, out2); o2.KeyID != st.KeyID {
		t.Errorf("new write under key_id %q, want %q", o2.KeyID, st.KeyID)
	} else if w, err := kms.ParseWrapped(o2.EncryptedDEKSource); err != nil || w.KeyVersion != 2 {
		t.Errorf("new seed under %+v, %v; want version 2", w, err)
	}
	for _, x := range []struct {
		tr      value.Transformer
		out, pt []byte
		dctx    value.Context
		stale   bool
	}{
		{tr, out1, secret1, dctx1, true}, {tr, out2, secret2, dctx2, false},
		{cold, out1, secret1, dctx1, true}, {cold, out2, secret2, dctx2, false},
	} {
		got, stale, err := x.tr.TransformFromStorage(ctx, x.out, x.dctx)
		if err != nil || !bytes.Equal(got, x.pt) || stale != x.stale {
			t.Errorf("read after rotation: equal=%v stale=%v (want %v), %v", bytes.Equal(got, x.pt), stale, x.stale, err)
		}
	}
	// The cold transformer had the v1 seed cached; it asked for v2's. The
	// plugin's refused rotation is on record too.
	recs = e.records(t)
	if len(recs) != 3 || recs[1].GetOperation() != custosv1.Operation_OPERATION_ROTATE_KEY || recs[1].GetOutcome() != custosv1.Outcome_OUTCOME_DENY ||
		recs[2].GetOperation() != custosv1.Operation_OPERATION_DECRYPT || recs[2].GetKeyVersion() != 2 || recs[2].GetOutcome() != custosv1.Outcome_OUTCOME_ALLOW {
		t.Errorf("records after rotation: %v", recs)
	}

	// Revocation: one officer's statement.
	e.submit(t, "incident: stop Kubernetes Secrets", &custosv1.Statement_RevokeKey{RevokeKey: &custosv1.RevokeKey{Key: keyName}}, 2)
	st = api.check(t)
	if st.Healthz == "ok" || st.KeyID != "" || !strings.Contains(st.Healthz, "REVOKED") {
		t.Errorf("Status after revocation = %+v", st)
	}
	if _, _, _, err := kmsv2.GenerateTransformer(ctx, "uid-after-revoke", api.svc, true); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("a new seed after revocation: %v, want FailedPrecondition", err)
	}
	restarted := kmsv2.NewEnvelopeTransformer(api.svc, api.name, api.stateFunc, "apiserver-3")
	for _, x := range []struct {
		out  []byte
		dctx value.Context
	}{{out1, dctx1}, {out2, dctx2}} {
		got, _, err := restarted.TransformFromStorage(ctx, x.out, x.dctx)
		if err == nil || got != nil || status.Code(err) != codes.FailedPrecondition {
			t.Errorf("read after revocation: %d bytes, %v; want nothing and FailedPrecondition", len(got), err)
		}
	}
	denied := 0
	for _, r := range e.records(t) {
		if r.GetOutcome() == custosv1.Outcome_OUTCOME_DENY && r.GetMatchedRule() == "key-state:revoked" {
			denied++
		}
	}
	if denied != 2 {
		t.Errorf("%d DENY key-state:revoked records in the plugin's name, want 2", denied)
	}
	// What custos cannot reach: seeds the running API server unwrapped
	// before the revocation stay in its memory (docs/kubernetes.md).
	if got, _, err := tr.TransformFromStorage(ctx, out1, dctx1); err != nil || !bytes.Equal(got, secret1) {
		t.Errorf("the running transformer's cached seed: %v", err)
	}
}
