package kms_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-kms/custos/clients/go/keyimport"
	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// importParams gets import parameters for key as p and the public key.
func importParams(t *testing.T, svc *kms.Service, p kms.Principal, key string, alg custosv1.ImportWrappingAlgorithm) (*custosv1.ImportParameters, *rsa.PublicKey) {
	t.Helper()
	params, err := svc.GetParametersForImport(context.Background(), p, &custosv1.GetParametersForImportRequest{Key: key, Algorithm: alg})
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.ParsePKIXPublicKey(params.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if params.NodeId != "node-1" || params.ImportToken == "" || time.Until(time.Unix(0, params.ExpireTimeUnixNano)) < 23*time.Hour {
		t.Fatalf("parameters %v", params)
	}
	return params, k.(*rsa.PublicKey)
}

// TestImportKeyMaterial: a customer's AES-256 key imported through the
// service is the key custos then uses (its check value, computed in the
// HSM, is the one the customer computes), as a version of origin EXTERNAL
// with a ledger record; bad input is refused with the right code and
// creates nothing.
func TestImportKeyMaterial(t *testing.T) {
	e := newEnvProfile(t, kms.ProfileDevelopment)
	ctx := context.Background()
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	want, err := keyimport.CheckValue(raw)
	if err != nil {
		t.Fatal(err)
	}
	const alg = custosv1.ImportWrappingAlgorithm_RSA_AES_KEY_WRAP_SHA_1
	wrap := func(pub *rsa.PublicKey) []byte {
		w, err := keyimport.Wrap(pub, keyimport.RSAAESKeyWrapSHA1, raw)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	imp := func(p kms.Principal, key, token string, material []byte) (*custosv1.Key, error) {
		return e.svc.ImportKeyMaterial(ctx, p, &custosv1.ImportKeyMaterialRequest{Key: key, ImportToken: token,
			EncryptedKeyMaterial: material, Description: "customer key"})
	}
	noKey := func(what string) {
		t.Helper()
		if _, err := e.svc.GetKey(ctx, app, &custosv1.GetKeyRequest{Name: "byok"}); !errors.Is(err, kms.ErrNotFound) {
			t.Fatalf("after %s the key exists: %v", what, err)
		}
	}

	// Bad input, each on fresh parameters.
	params, pub := importParams(t, e.svc, app, "byok", alg)
	tampered := wrap(pub)
	tampered[len(tampered)-5] ^= 1
	if _, err := imp(app, "byok", params.ImportToken, tampered); !errors.Is(err, kms.ErrInvalidArgument) || !strings.Contains(err.Error(), "does not unwrap") {
		t.Fatalf("tampered material: %v", err)
	}
	noKey("a tampered import")
	if _, err := imp(app, "byok", params.ImportToken, wrap(pub)); !errors.Is(err, kms.ErrNotFound) {
		t.Fatalf("token used twice: %v, want NotFound", err)
	}
	params, pub = importParams(t, e.svc, app, "byok", alg)
	if _, err := imp(app, "other", params.ImportToken, wrap(pub)); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("token of another key: %v", err)
	}
	if _, err := imp(kms.Principal{Name: "intruder"}, "byok", params.ImportToken, wrap(pub)); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("token of another principal: %v", err)
	}
	if _, err := imp(app, "byok", params.ImportToken, wrap(pub)[:100]); !errors.Is(err, kms.ErrInvalidArgument) || !strings.Contains(err.Error(), "100 bytes") {
		t.Fatalf("short material: %v", err)
	}
	noKey("refused imports")
	// An AES-128 key, wrapped by hand (keyimport refuses it).
	params, pub = importParams(t, e.svc, app, "byok", custosv1.ImportWrappingAlgorithm_RSAES_OAEP_SHA_1)
	short, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, raw[:16], nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := imp(app, "byok", params.ImportToken, short); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("AES-128 key: %v", err)
	}
	noKey("an AES-128 import")
	if _, err := imp(app, "byok", "node-2.00", wrap(pub)); !errors.Is(err, kms.ErrFailedPrecondition) || !strings.Contains(err.Error(), "node node-2") {
		t.Fatalf("token of another node: %v", err)
	}
	// Expired parameters: a service whose clock runs 25 hours ahead.
	var ahead atomic.Bool
	later, err := kms.NewService(kms.Config{NodeID: "node-1", HSM: e.hsm, Log: e.log, State: e.state, Logger: quiet,
		Profile: kms.ProfileDevelopment, Now: func() time.Time {
			if ahead.Load() {
				return time.Now().Add(25 * time.Hour)
			}
			return time.Now()
		}})
	if err != nil {
		t.Fatal(err)
	}
	params, pub = importParams(t, later, app, "byok", alg)
	ahead.Store(true)
	if _, err := later.ImportKeyMaterial(ctx, app, &custosv1.ImportKeyMaterialRequest{Key: "byok", ImportToken: params.ImportToken,
		EncryptedKeyMaterial: wrap(pub)}); !errors.Is(err, kms.ErrFailedPrecondition) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired parameters: %v", err)
	}
	noKey("an expired import")

	// The import.
	params, pub = importParams(t, e.svc, app, "byok", alg)
	k, err := imp(app, "byok", params.ImportToken, wrap(pub))
	if err != nil {
		t.Fatal(err)
	}
	v := k.Versions[0]
	if k.PrimaryVersion != 1 || v.Origin != custosv1.KeyOrigin_KEY_ORIGIN_EXTERNAL || !bytes.Equal(v.KeyCheckValue, want) || k.Description != "customer key" {
		t.Fatalf("imported key %v, want origin EXTERNAL and check value %x", k, want)
	}
	seq, _ := e.state.LedgerHead()
	rec, err := e.state.DecisionRecord(seq)
	if err != nil || rec.Operation != custosv1.Operation_OPERATION_CREATE_KEY || !strings.Contains(rec.Detail, "origin EXTERNAL") {
		t.Fatalf("ledger record of the import: %v %v", rec, err)
	}
	ct, err := e.svc.Encrypt(ctx, app, &custosv1.EncryptRequest{Key: "byok", Plaintext: []byte("under the customer's key")})
	if err != nil {
		t.Fatal(err)
	}
	out, err := e.svc.Decrypt(ctx, app, &custosv1.DecryptRequest{Ciphertext: ct.Ciphertext,
		Justification: &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED}})
	if err != nil || string(out.Plaintext) != "under the customer's key" {
		t.Fatalf("decrypt under the imported key: %v", err)
	}

	// An import never adds material to a key that exists — neither an
	// imported one nor a generated one — whoever asks: its users would
	// read what others encrypt under it.
	if _, err := e.svc.CreateKey(ctx, app, &custosv1.CreateKeyRequest{Name: "generated"}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"byok", "generated"} {
		_, err := e.svc.GetParametersForImport(ctx, app, &custosv1.GetParametersForImportRequest{Key: name, Algorithm: alg})
		if !errors.Is(err, kms.ErrFailedPrecondition) || !strings.Contains(err.Error(), "creates a new key") {
			t.Fatalf("import parameters for existing key %s as its user: %v", name, err)
		}
		if _, err := e.svc.GetParametersForImport(ctx, kms.Principal{Name: "other"}, &custosv1.GetParametersForImportRequest{Key: name, Algorithm: alg}); !errors.Is(err, kms.ErrPermissionDenied) {
			t.Fatalf("import parameters for existing key %s as a stranger: %v", name, err)
		}
	}
	// Parameters made for a new name cannot be used once the name exists.
	params, pub = importParams(t, e.svc, app, "late", alg)
	if _, err := e.svc.CreateKey(ctx, app, &custosv1.CreateKeyRequest{Name: "late"}); err != nil {
		t.Fatal(err)
	}
	if _, err := imp(app, "late", params.ImportToken, wrap(pub)); !errors.Is(err, kms.ErrFailedPrecondition) {
		t.Fatalf("import into a key created meanwhile: %v", err)
	}
	if k, _ := e.svc.GetKey(ctx, app, &custosv1.GetKeyRequest{Name: "late"}); len(k.GetVersions()) != 1 || k.Versions[0].Origin != custosv1.KeyOrigin_KEY_ORIGIN_HSM {
		t.Fatalf("key late after the refused import: %v", k)
	}
	// The apply refuses it too (a proposer that skips the service's check).
	res, err := e.node.Apply(ctx, &raftlogv1.Command{TimeUnixNano: time.Now().UnixNano(), Node: "node-1", Principal: app.Name,
		Op: &raftlogv1.Command_AddKeyVersion{AddKeyVersion: &raftlogv1.AddKeyVersion{Name: "generated", Version: 2,
			WrappedKek: make([]byte, 40), KekId: []byte("custos/kek/generated/2/x"), KekCheckValue: make([]byte, 16),
			Origin: custosv1.KeyOrigin_KEY_ORIGIN_EXTERNAL}}})
	if err == nil {
		err = resultErr(res)
	}
	if !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("an EXTERNAL version proposed for an existing key: %v", err)
	}
}

// TestImportPendingBounds: one principal holds at most two pending imports
// on a node, even when it asks for many at once.
func TestImportPendingBounds(t *testing.T) {
	e := newEnvProfile(t, kms.ProfileDevelopment)
	ctx := context.Background()
	var ok, exhausted atomic.Int32
	done := make(chan struct{})
	for i := 0; i < 6; i++ {
		go func() {
			defer func() { done <- struct{}{} }()
			_, err := e.svc.GetParametersForImport(ctx, app, &custosv1.GetParametersForImportRequest{Key: "n" + strings.Repeat("x", i+1),
				Algorithm: custosv1.ImportWrappingAlgorithm_RSAES_OAEP_SHA_1})
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, kms.ErrResourceExhausted):
				exhausted.Add(1)
			default:
				t.Error(err)
			}
		}()
	}
	for i := 0; i < 6; i++ {
		<-done
	}
	if ok.Load() != 2 || exhausted.Load() != 4 {
		t.Fatalf("%d parameters made, %d refused; want 2 and 4", ok.Load(), exhausted.Load())
	}
	// Another principal is not blocked by it.
	if _, err := e.svc.GetParametersForImport(ctx, kms.Principal{Name: "other"}, &custosv1.GetParametersForImportRequest{Key: "mine",
		Algorithm: custosv1.ImportWrappingAlgorithm_RSAES_OAEP_SHA_1}); err != nil {
		t.Fatal(err)
	}
}

// TestImportSHA1NeedsDevelopmentProfile: a production cluster refuses the
// SHA-1 import formats before making anything.
func TestImportSHA1NeedsDevelopmentProfile(t *testing.T) {
	e := newEnv(t)
	_, err := e.svc.GetParametersForImport(context.Background(), app, &custosv1.GetParametersForImportRequest{Key: "byok",
		Algorithm: custosv1.ImportWrappingAlgorithm_RSAES_OAEP_SHA_1})
	if !errors.Is(err, kms.ErrFailedPrecondition) || !strings.Contains(err.Error(), "CRYPTREC") {
		t.Fatalf("SHA-1 import parameters in production: %v", err)
	}
	if _, err := e.svc.GetParametersForImport(context.Background(), app, &custosv1.GetParametersForImportRequest{Key: "byok"}); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("no algorithm: %v", err)
	}
}
