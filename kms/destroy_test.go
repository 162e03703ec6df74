package kms_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

func scheduleDestruction(key string, version uint32, wait time.Duration) func(*custosv1.Statement) {
	return func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_ScheduleKeyDestruction{ScheduleKeyDestruction: &custosv1.ScheduleKeyDestruction{
			Key: key, Version: version, WaitingSeconds: int64(wait / time.Second)}}
	}
}

func cancelDestruction(key string, version uint32) func(*custosv1.Statement) {
	return func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_CancelKeyDestruction{CancelKeyDestruction: &custosv1.CancelKeyDestruction{Key: key, Version: version}}
	}
}

// waitKey polls the key until done says so.
func waitKey(t *testing.T, e *env, name string, done func(*custosv1.Key) bool) *custosv1.Key {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		k, err := e.svc.GetKey(context.Background(), app, &custosv1.GetKeyRequest{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		if done(k) {
			return k
		}
		if time.Now().After(deadline) {
			t.Fatalf("key %s did not reach the state in time: %v", name, k)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestKeyDestruction: the officers' quorum schedules, one officer cancels,
// the version refuses every use while pending (each refusal a DENY
// record), and once due the leader completes it: the wrapped KEK leaves the
// state and its snapshots, the HSM object is destroyed, decrypts under it
// are refused and recorded, and the other versions go on.
func TestKeyDestruction(t *testing.T) {
	e := newEnvProfile(t, kms.ProfileDevelopment)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := e.svc.CreateKey(ctx, app, &custosv1.CreateKeyRequest{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	enc := func() []byte {
		out, err := e.svc.Encrypt(ctx, app, &custosv1.EncryptRequest{Key: "k", Plaintext: []byte("secret")})
		if err != nil {
			t.Fatal(err)
		}
		return out.Ciphertext
	}
	dec := func(ct []byte) error {
		_, err := e.svc.Decrypt(ctx, app, &custosv1.DecryptRequest{Ciphertext: ct,
			Justification: &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED}})
		return err
	}
	ct1 := enc()
	if _, err := e.svc.RotateKey(ctx, app, &custosv1.RotateKeyRequest{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	ct2 := enc()
	v1 := keyRecord(t, e.state).Versions[0]

	if _, err := e.govern(scheduleDestruction("k", 1, time.Hour), 0); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("one officer schedules a destruction: %v", err)
	}
	if _, err := e.govern(scheduleDestruction("k", 3, time.Hour), 0, 1); !errors.Is(err, kms.ErrNotFound) {
		t.Fatalf("destruction of a version that does not exist: %v", err)
	}
	if _, err := e.govern(scheduleDestruction("k", 1, 40*24*time.Hour), 0, 1); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("a 40-day wait: %v", err)
	}
	if _, err := e.govern(scheduleDestruction("k", 1, time.Hour), 0, 1); err != nil {
		t.Fatal(err)
	}
	if err := dec(ct1); !errors.Is(err, kms.ErrFailedPrecondition) || !strings.Contains(err.Error(), "scheduled for destruction") {
		t.Fatalf("decrypt under a version pending destruction: %v", err)
	}
	seq, _ := e.state.LedgerHead()
	if rec, err := e.state.DecisionRecord(seq); err != nil || rec.Outcome != custosv1.Outcome_OUTCOME_DENY || rec.MatchedRule != "key-version:pending-destruction" {
		t.Fatalf("the refusal's record: %v %v", rec, err)
	}
	if err := dec(ct2); err != nil {
		t.Fatalf("decrypt under version 2: %v", err)
	}
	// Not due: the leader's completion is refused.
	res, err := e.node.Apply(ctx, &raftlogv1.Command{TimeUnixNano: time.Now().UnixNano(), Node: "node-1", Principal: "custosd",
		Op: &raftlogv1.Command_CompleteKeyDestruction{CompleteKeyDestruction: &raftlogv1.CompleteKeyDestruction{Key: "k", Version: 1}}})
	if err == nil {
		err = resultErr(res)
	}
	if !errors.Is(err, kms.ErrFailedPrecondition) || !strings.Contains(err.Error(), "not due") {
		t.Fatalf("completion before the time: %v", err)
	}
	if k := keyRecord(t, e.state); k.Versions[0].Destroyed {
		t.Fatal("destroyed before its time")
	}
	// One officer cancels.
	if _, err := e.govern(cancelDestruction("k", 1), 2); err != nil {
		t.Fatal(err)
	}
	if err := dec(ct1); err != nil {
		t.Fatalf("decrypt after the cancellation: %v", err)
	}

	// Scheduled again, one second (development profile), then completed.
	go e.svc.RunDestructions(ctx)
	if _, err := e.govern(scheduleDestruction("k", 1, time.Second), 0, 1); err != nil {
		t.Fatal(err)
	}
	k := waitKey(t, e, "k", func(k *custosv1.Key) bool { return k.Versions[0].Destroyed })
	if k.State != custosv1.KeyState_KEY_STATE_ENABLED || k.Versions[1].Destroyed {
		t.Fatalf("key after version 1's destruction: %v", k)
	}
	if _, err := e.govern(cancelDestruction("k", 1), 2); !errors.Is(err, kms.ErrFailedPrecondition) {
		t.Fatalf("cancel after completion: %v", err)
	}
	e.svc.AdmissionStep(ctx) // every node's worker destroys its copy
	if has, err := e.hsm.HasKey(ctx, v1.KekId); err != nil || has {
		t.Fatalf("version 1's KEK is still in the HSM: %v %v", has, err)
	}
	for _, kr := range snapshotState(t, e.state).Keys {
		if kr.Name == "k" && (len(kr.Versions[0].WrappedKek) != 0 || !kr.Versions[0].Destroyed) {
			t.Fatal("a snapshot after the destruction still holds version 1's wrapped KEK")
		}
	}
	if err := dec(ct1); !errors.Is(err, kms.ErrFailedPrecondition) || !strings.Contains(err.Error(), "destroyed") {
		t.Fatalf("decrypt under a destroyed version: %v", err)
	}
	if err := dec(ct2); err != nil {
		t.Fatalf("decrypt under version 2 after version 1's destruction: %v", err)
	}
	found := false
	head, _ := e.state.LedgerHead()
	for s := uint64(1); s <= head; s++ {
		if rec, err := e.state.DecisionRecord(s); err == nil && rec.Operation == custosv1.Operation_OPERATION_DESTROY_KEY && rec.KeyVersion == 1 {
			found = true
		}
	}
	if !found {
		t.Fatal("no DESTROY_KEY record")
	}

	// The whole key.
	if _, err := e.govern(scheduleDestruction("k", 0, time.Second), 0, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Encrypt(ctx, app, &custosv1.EncryptRequest{Key: "k", Plaintext: []byte("x")}); !errors.Is(err, kms.ErrFailedPrecondition) {
		t.Fatalf("encrypt with a key pending destruction: %v", err)
	}
	waitKey(t, e, "k", func(k *custosv1.Key) bool { return k.State == custosv1.KeyState_KEY_STATE_DESTROYED })
	if _, err := e.svc.RotateKey(ctx, app, &custosv1.RotateKeyRequest{Name: "k"}); !errors.Is(err, kms.ErrFailedPrecondition) {
		t.Fatalf("rotate a destroyed key: %v", err)
	}
	e.svc.AdmissionStep(ctx)
	if has, err := e.hsm.HasKey(ctx, keyRecord(t, e.state).Versions[1].KekId); err != nil || has {
		t.Fatalf("version 2's KEK is still in the HSM: %v %v", has, err)
	}
}

// TestKeyDestructionWaitInProduction: a production cluster waits at least
// an hour, seven days by default.
func TestKeyDestructionWaitInProduction(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.svc.CreateKey(ctx, app, &custosv1.CreateKeyRequest{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.govern(scheduleDestruction("k", 1, time.Second), 0, 1); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("a one-second wait in production: %v", err)
	}
	before := time.Now()
	if _, err := e.govern(scheduleDestruction("k", 1, 0), 0, 1); err != nil {
		t.Fatal(err)
	}
	k, err := e.svc.GetKey(ctx, app, &custosv1.GetKeyRequest{Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if at := time.Unix(0, k.Versions[0].DestroyTimeUnixNano); at.Before(before.Add(kms.DefaultDestructionWait)) || at.After(time.Now().Add(kms.DefaultDestructionWait)) {
		t.Fatalf("scheduled for %s, want 7 days ahead", at)
	}
}
