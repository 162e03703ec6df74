package kms_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

var bg = context.Background()

func createKey(t *testing.T, e *env, name string) *custosv1.Key {
	t.Helper()
	k, err := e.svc.CreateKey(bg, app, &custosv1.CreateKeyRequest{Name: name, Description: "test"})
	if err != nil {
		t.Fatalf("CreateKey(%q): %v", name, err)
	}
	return k
}

func dataKey(t *testing.T, e *env, key string, ctx map[string]string) *custosv1.GenerateDataKeyResponse {
	t.Helper()
	dk, err := e.svc.GenerateDataKey(bg, app, &custosv1.GenerateDataKeyRequest{Key: key, EncryptionContext: ctx})
	if err != nil {
		t.Fatalf("GenerateDataKey: %v", err)
	}
	return dk
}

func decrypt(e *env, ct []byte, ctx map[string]string) (*custosv1.DecryptResponse, error) {
	return e.svc.Decrypt(bg, app, &custosv1.DecryptRequest{Ciphertext: ct, EncryptionContext: ctx,
		Justification: &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Text: "monthly report", Ticket: "T-1"}})
}

func TestKeyLifecycle(t *testing.T) {
	e := newEnv(t)
	k := createKey(t, e, "payroll")
	if k.PrimaryVersion != 1 || k.State != custosv1.KeyState_KEY_STATE_ENABLED || k.Algorithm != "AES_256_GCM" {
		t.Fatalf("new key = %v", k)
	}
	if _, err := e.svc.CreateKey(bg, app, &custosv1.CreateKeyRequest{Name: "payroll"}); !errors.Is(err, kms.ErrAlreadyExists) {
		t.Fatalf("second CreateKey: got %v, want ErrAlreadyExists", err)
	}
	k, err := e.svc.RotateKey(bg, app, &custosv1.RotateKeyRequest{Name: "payroll"})
	if err != nil || k.PrimaryVersion != 2 || len(k.Versions) != 2 {
		t.Fatalf("RotateKey = %v, %v", k, err)
	}
	k, err = e.svc.SetKeyState(bg, app, &custosv1.SetKeyStateRequest{Name: "payroll", State: custosv1.KeyState_KEY_STATE_DISABLED})
	if err != nil || k.State != custosv1.KeyState_KEY_STATE_DISABLED {
		t.Fatalf("disable = %v, %v", k, err)
	}
	k, err = e.svc.SetMinDecryptionVersion(bg, app, &custosv1.SetMinDecryptionVersionRequest{Name: "payroll", MinDecryptionVersion: 2})
	if err != nil || k.MinDecryptionVersion != 2 {
		t.Fatalf("SetMinDecryptionVersion = %v, %v", k, err)
	}
	got, err := e.svc.GetKey(bg, app, &custosv1.GetKeyRequest{Name: "payroll"})
	if err != nil || got.MinDecryptionVersion != 2 || got.State != custosv1.KeyState_KEY_STATE_DISABLED {
		t.Fatalf("GetKey = %v, %v", got, err)
	}
	for _, n := range []string{"a", "b", "c"} {
		createKey(t, e, n)
	}
	var names []string
	tok := ""
	for {
		resp, err := e.svc.ListKeys(bg, app, &custosv1.ListKeysRequest{PageSize: 2, PageToken: tok})
		if err != nil {
			t.Fatalf("ListKeys: %v", err)
		}
		for _, k := range resp.Keys {
			names = append(names, k.Name)
		}
		if tok = resp.NextPageToken; tok == "" {
			break
		}
	}
	if strings.Join(names, ",") != "a,b,c,payroll" {
		t.Fatalf("ListKeys names = %v", names)
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	dk := dataKey(t, e, "k", nil)
	cases := []struct {
		name  string
		call  func() error
		want  error
		field string
	}{
		{"create empty name", func() error {
			_, err := e.svc.CreateKey(bg, app, &custosv1.CreateKeyRequest{})
			return err
		}, kms.ErrInvalidArgument, "name"},
		{"create bad name", func() error {
			_, err := e.svc.CreateKey(bg, app, &custosv1.CreateKeyRequest{Name: "-x/y"})
			return err
		}, kms.ErrInvalidArgument, "name"},
		{"create long description", func() error {
			_, err := e.svc.CreateKey(bg, app, &custosv1.CreateKeyRequest{Name: "d", Description: strings.Repeat("x", 300)})
			return err
		}, kms.ErrInvalidArgument, "description"},
		{"get unknown", func() error {
			_, err := e.svc.GetKey(bg, app, &custosv1.GetKeyRequest{Name: "nope"})
			return err
		}, kms.ErrNotFound, "nope"},
		{"datakey unknown key", func() error {
			_, err := e.svc.GenerateDataKey(bg, app, &custosv1.GenerateDataKeyRequest{Key: "nope"})
			return err
		}, kms.ErrNotFound, "nope"},
		{"datakey empty key", func() error {
			_, err := e.svc.GenerateDataKey(bg, app, &custosv1.GenerateDataKeyRequest{})
			return err
		}, kms.ErrInvalidArgument, "key"},
		{"datakey empty context key", func() error {
			_, err := e.svc.GenerateDataKey(bg, app, &custosv1.GenerateDataKeyRequest{Key: "k", EncryptionContext: map[string]string{"": "v"}})
			return err
		}, kms.ErrInvalidArgument, "encryption_context"},
		{"encrypt too large", func() error {
			_, err := e.svc.Encrypt(bg, app, &custosv1.EncryptRequest{Key: "k", Plaintext: make([]byte, kms.MaxPayload+1)})
			return err
		}, kms.ErrInvalidArgument, "plaintext"},
		{"decrypt empty", func() error { _, err := decrypt(e, nil, nil); return err }, kms.ErrInvalidArgument, "ciphertext"},
		{"decrypt garbage", func() error { _, err := decrypt(e, []byte("garbage-garbage"), nil); return err }, kms.ErrInvalidArgument, "ciphertext"},
		{"decrypt truncated", func() error {
			_, err := decrypt(e, dk.WrappedDataKey[:len(dk.WrappedDataKey)-1], nil)
			return err
		}, kms.ErrInvalidArgument, "ciphertext"},
		{"decrypt long text", func() error {
			_, err := e.svc.Decrypt(bg, app, &custosv1.DecryptRequest{Ciphertext: dk.WrappedDataKey,
				Justification: &custosv1.Justification{Text: strings.Repeat("x", 2000)}})
			return err
		}, kms.ErrInvalidArgument, "justification.text"},
		{"decrypt unknown reason", func() error {
			_, err := e.svc.Decrypt(bg, app, &custosv1.DecryptRequest{Ciphertext: dk.WrappedDataKey,
				Justification: &custosv1.Justification{Reason: 99}})
			return err
		}, kms.ErrInvalidArgument, "justification.reason"},
		{"min version zero", func() error {
			_, err := e.svc.SetMinDecryptionVersion(bg, app, &custosv1.SetMinDecryptionVersionRequest{Name: "k"})
			return err
		}, kms.ErrInvalidArgument, "min_decryption_version"},
		{"min version above primary", func() error {
			_, err := e.svc.SetMinDecryptionVersion(bg, app, &custosv1.SetMinDecryptionVersionRequest{Name: "k", MinDecryptionVersion: 5})
			return err
		}, kms.ErrInvalidArgument, "min_decryption_version"},
		{"state unspecified", func() error {
			_, err := e.svc.SetKeyState(bg, app, &custosv1.SetKeyStateRequest{Name: "k"})
			return err
		}, kms.ErrInvalidArgument, "state"},
		{"list page size", func() error {
			_, err := e.svc.ListKeys(bg, app, &custosv1.ListKeysRequest{PageSize: 5000})
			return err
		}, kms.ErrInvalidArgument, "page_size"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.call()
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.field) {
				t.Fatalf("error %q does not name %q", err, c.field)
			}
		})
	}
	// Nothing above changed the state: still one key version, enabled.
	k, _ := e.svc.GetKey(bg, app, &custosv1.GetKeyRequest{Name: "k"})
	if k.PrimaryVersion != 1 || k.MinDecryptionVersion != 1 || k.State != custosv1.KeyState_KEY_STATE_ENABLED {
		t.Fatalf("state changed by bad input: %v", k)
	}
}

// Invariant 2 (docs/architecture.md): the ALLOW record is committed before the data key is
// released, and it carries who, what, why.
func TestDecryptRecordsDecisionBeforeRelease(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "payroll")
	ctx := map[string]string{"dept": "hr"}
	dk := dataKey(t, e, "payroll", ctx)
	resp, err := decrypt(e, dk.WrappedDataKey, ctx)
	if err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	if !bytes.Equal(resp.Plaintext, dk.Plaintext) {
		t.Fatalf("Decrypt returned a different data key")
	}
	rec, err := e.state.DecisionRecord(resp.DecisionSeq)
	if err != nil {
		t.Fatalf("DecisionRecord(%d): %v", resp.DecisionSeq, err)
	}
	digest := kms.ContextDigest(ctx)
	if rec.Outcome != custosv1.Outcome_OUTCOME_ALLOW || rec.Principal != "app-1" || rec.Key != "payroll" ||
		rec.KeyVersion != 1 || rec.Reason != custosv1.Reason_REASON_CUSTOMER_INITIATED ||
		rec.JustificationText != "monthly report" || rec.Ticket != "T-1" || !bytes.Equal(rec.ContextDigest, digest[:]) ||
		rec.RequestId != resp.RequestId || rec.Node != "node-1" || rec.TimeUnixNano == 0 ||
		rec.Operation != custosv1.Operation_OPERATION_DECRYPT_DATA_KEY || rec.RaftIndex == 0 {
		t.Fatalf("decision record = %v", rec)
	}
	// A failure to commit releases nothing, and the HSM is never asked.
	before := e.hsm.decrypts.Load()
	failing := e.newService(failingLog{err: errors.New("no quorum")})
	if _, err := failing.Decrypt(bg, app, &custosv1.DecryptRequest{Ciphertext: dk.WrappedDataKey, EncryptionContext: ctx}); !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("Decrypt with a failing log: got %v, want ErrUnavailable", err)
	}
	if n := e.hsm.decrypts.Load() - before; n != 0 {
		t.Fatalf("HSM decrypted %d times without a committed decision", n)
	}
}

// Invariant 2 (docs/architecture.md), fail closed: when the ledger store fails, the decision is
// not recorded, nothing is released, and the node reports unhealthy.
func TestLedgerFailureFailsClosed(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	dk := dataKey(t, e, "k", nil)
	if err := e.led.Close(); err != nil {
		t.Fatal(err)
	}
	before := e.hsm.decrypts.Load()
	if _, err := decrypt(e, dk.WrappedDataKey, nil); !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("Decrypt with a failed ledger: got %v, want ErrUnavailable", err)
	}
	if _, err := decrypt(e, dk.WrappedDataKey, nil); !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("second Decrypt: got %v, want ErrUnavailable", err)
	}
	if n := e.hsm.decrypts.Load() - before; n != 0 {
		t.Fatalf("HSM decrypted %d times with no durable record", n)
	}
	if err := e.svc.Health(bg); !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("Health = %v, want ErrUnavailable", err)
	}
}

func TestDeniedDecisionsAreRecorded(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	v1 := dataKey(t, e, "k", nil)
	if _, err := e.svc.RotateKey(bg, app, &custosv1.RotateKeyRequest{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	v2 := dataKey(t, e, "k", nil)
	if v2.KeyVersion != 2 {
		t.Fatalf("data key after rotation has version %d", v2.KeyVersion)
	}
	// Old versions still decrypt after rotation.
	if _, err := decrypt(e, v1.WrappedDataKey, nil); err != nil {
		t.Fatalf("decrypt v1 after rotate: %v", err)
	}
	if _, err := e.svc.SetMinDecryptionVersion(bg, app, &custosv1.SetMinDecryptionVersionRequest{Name: "k", MinDecryptionVersion: 2}); err != nil {
		t.Fatal(err)
	}
	_, err := decrypt(e, v1.WrappedDataKey, nil)
	if !errors.Is(err, kms.ErrFailedPrecondition) {
		t.Fatalf("decrypt below min version: got %v, want ErrFailedPrecondition", err)
	}
	seq, _ := e.state.LedgerHead()
	rec, _ := e.state.DecisionRecord(seq)
	if rec.Outcome != custosv1.Outcome_OUTCOME_DENY || rec.MatchedRule != "key-version:below-minimum" {
		t.Fatalf("record for below-minimum decrypt = %v", rec)
	}
	if _, err := e.svc.SetKeyState(bg, app, &custosv1.SetKeyStateRequest{Name: "k", State: custosv1.KeyState_KEY_STATE_DISABLED}); err != nil {
		t.Fatal(err)
	}
	if _, err := decrypt(e, v2.WrappedDataKey, nil); !errors.Is(err, kms.ErrFailedPrecondition) {
		t.Fatalf("decrypt with disabled key: got %v, want ErrFailedPrecondition", err)
	}
	if _, err := e.svc.GenerateDataKey(bg, app, &custosv1.GenerateDataKeyRequest{Key: "k"}); !errors.Is(err, kms.ErrFailedPrecondition) {
		t.Fatalf("GenerateDataKey with disabled key: got %v, want ErrFailedPrecondition", err)
	}
	seq, _ = e.state.LedgerHead()
	rec, _ = e.state.DecisionRecord(seq)
	if rec.Outcome != custosv1.Outcome_OUTCOME_DENY || rec.MatchedRule != "key-state:disabled" {
		t.Fatalf("record for disabled decrypt = %v", rec)
	}
	// Re-enabling loosens: the key's user cannot, the officer quorum can.
	if _, err := e.svc.SetKeyState(bg, app, &custosv1.SetKeyStateRequest{Name: "k", State: custosv1.KeyState_KEY_STATE_ENABLED}); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("SetKeyState(ENABLED): got %v, want ErrPermissionDenied", err)
	}
	if _, err := e.govern(enableKey("k"), 0, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := decrypt(e, v2.WrappedDataKey, nil); err != nil {
		t.Fatalf("decrypt after enable: %v", err)
	}
}

func TestTamperedAndWrongContext(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	createKey(t, e, "other")
	ctx := map[string]string{"file": "a"}
	dk := dataKey(t, e, "k", ctx)
	if _, err := decrypt(e, dk.WrappedDataKey, map[string]string{"file": "b"}); !errors.Is(err, kms.ErrDecryptionFailed) {
		t.Fatalf("wrong context: got %v, want ErrDecryptionFailed", err)
	}
	if _, err := decrypt(e, dk.WrappedDataKey, nil); !errors.Is(err, kms.ErrDecryptionFailed) {
		t.Fatalf("missing context: got %v, want ErrDecryptionFailed", err)
	}
	for i := len(dk.WrappedDataKey) - 44; i < len(dk.WrappedDataKey); i++ {
		bad := bytes.Clone(dk.WrappedDataKey)
		bad[i] ^= 0x01
		if _, err := decrypt(e, bad, ctx); !errors.Is(err, kms.ErrDecryptionFailed) {
			t.Fatalf("flipped byte %d: got %v, want ErrDecryptionFailed", i, err)
		}
	}
	// Claiming another key or version in the header fails authentication too.
	w, _ := kms.ParseWrapped(dk.WrappedDataKey)
	w.Key = "other"
	if _, err := decrypt(e, w.Marshal(), ctx); !errors.Is(err, kms.ErrDecryptionFailed) {
		t.Fatalf("relabelled key: got %v, want ErrDecryptionFailed", err)
	}
	w.Key, w.Kind = "k", kms.KindPayload
	if _, err := decrypt(e, w.Marshal(), ctx); !errors.Is(err, kms.ErrDecryptionFailed) {
		t.Fatalf("relabelled kind: got %v, want ErrDecryptionFailed", err)
	}
	// Encrypt/Decrypt of a payload, and ReEncrypt to the newest version.
	enc, err := e.svc.Encrypt(bg, app, &custosv1.EncryptRequest{Key: "k", Plaintext: []byte("small secret"), EncryptionContext: ctx})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.RotateKey(bg, app, &custosv1.RotateKeyRequest{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	re, err := e.svc.ReEncrypt(bg, app, &custosv1.ReEncryptRequest{Ciphertext: enc.Ciphertext, EncryptionContext: ctx,
		Justification: &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_WORKFLOW}})
	if err != nil || re.KeyVersion != 2 || re.SourceKeyVersion != 1 || re.DecisionSeq == 0 {
		t.Fatalf("ReEncrypt = %v, %v", re, err)
	}
	out, err := decrypt(e, re.Ciphertext, ctx)
	if err != nil || string(out.Plaintext) != "small secret" || out.KeyVersion != 2 {
		t.Fatalf("decrypt re-encrypted = %v, %v", out, err)
	}
}

// Invariant 3 of docs/architecture.md (single node): decisions follow log order. While decrypts run
// from many goroutines a key is disabled; every ALLOW precedes, in the log,
// every decision made after the disable, and nothing started after the
// disable was acknowledged is released.
func TestDisableIsInLogOrder(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	dk := dataKey(t, e, "k", nil)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		disabled bool
		bad      []string
	)
	stop := make(chan struct{})
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				after := disabled
				mu.Unlock()
				resp, err := decrypt(e, dk.WrappedDataKey, nil)
				if after && err == nil {
					mu.Lock()
					bad = append(bad, resp.RequestId)
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < 50; i++ {
		if _, err := decrypt(e, dk.WrappedDataKey, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.svc.SetKeyState(bg, app, &custosv1.SetKeyStateRequest{Name: "k", State: custosv1.KeyState_KEY_STATE_DISABLED}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	disabled = true
	mu.Unlock()
	for i := 0; i < 50; i++ {
		if _, err := decrypt(e, dk.WrappedDataKey, nil); !errors.Is(err, kms.ErrFailedPrecondition) {
			t.Fatalf("decrypt after disable: %v", err)
		}
	}
	close(stop)
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("%d decrypts started after the disable was acknowledged succeeded", len(bad))
	}
	seq, _ := e.state.LedgerHead()
	var lastAllow, firstDeny uint64
	for i := uint64(1); i <= seq; i++ {
		rec, err := e.state.DecisionRecord(i)
		if err != nil {
			t.Fatal(err)
		}
		// Ledger order is log order, also inside one group-committed entry.
		switch rec.Outcome {
		case custosv1.Outcome_OUTCOME_ALLOW:
			lastAllow = rec.Seq
		case custosv1.Outcome_OUTCOME_DENY:
			if firstDeny == 0 {
				firstDeny = rec.Seq
			}
		}
	}
	if firstDeny == 0 || lastAllow >= firstDeny {
		t.Fatalf("last ALLOW is decision %d, first DENY is %d: want every ALLOW before every DENY", lastAllow, firstDeny)
	}
}

// Invariant 1 (docs/architecture.md): KEKs on the token are sensitive and never extractable.
func TestKEKsAreNotExtractable(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	if _, err := e.svc.RotateKey(bg, app, &custosv1.RotateKeyRequest{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	k, err := e.state.Key("k")
	if err != nil {
		t.Fatal(err)
	}
	for v := uint32(1); v <= 2; v++ {
		a, err := e.hsm.KeyAttributes(bg, k.Versions[v-1].KekId)
		if err != nil {
			t.Fatalf("KeyAttributes v%d: %v", v, err)
		}
		if !a.Token || !a.Sensitive || a.Extractable {
			t.Fatalf("KEK v%d attributes = %+v: want token, sensitive, not extractable", v, a)
		}
	}
	d, err := e.hsm.KeyAttributes(bg, e.state.DomainKeyID())
	if err != nil {
		t.Fatal(err)
	}
	if !d.Sensitive || !d.WrapWithTrusted {
		t.Fatalf("domain key attributes = %+v: want sensitive and wrap-with-trusted only", d)
	}
}
