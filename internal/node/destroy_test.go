package node_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custos-kms/custos/hsm/pkcs11"
	"github.com/custos-kms/custos/internal/node/nodetest"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// TestKeyDestructionOnEveryNode: a destroyed key version leaves every
// custodian's HSM — checked through a fresh backend on each token with the
// user PIN: no object with its id, token or session copy — and the
// replicated state of every node; the other versions keep working
// everywhere.
func TestKeyDestructionOnEveryNode(t *testing.T) {
	c := nodetest.StartCustodians(t, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	keys := make([]custosv1.KeyServiceClient, 3)
	for i := range keys {
		keys[i] = custosv1.NewKeyServiceClient(c.Conn(t, i, clusterApp))
	}
	if _, err := keys[0].CreateKey(ctx, &custosv1.CreateKeyRequest{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	old, err := keys[1].GenerateDataKey(ctx, &custosv1.GenerateDataKeyRequest{Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys[0].RotateKey(ctx, &custosv1.RotateKeyRequest{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	cur, err := keys[2].GenerateDataKey(ctx, &custosv1.GenerateDataKeyRequest{Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	// Every node has used version 1's KEK, so every HSM holds it.
	for i := range keys {
		if out, err := keys[i].Decrypt(ctx, decryptReq(old.WrappedDataKey)); err != nil || !bytes.Equal(out.Plaintext, old.Plaintext) {
			t.Fatalf("decrypt under version 1 on %d: %v", i, err)
		}
	}
	st, err := c.Members[0].Node.Service().State().Key("k")
	if err != nil {
		t.Fatal(err)
	}
	kek1 := st.Versions[0].KekId

	gov := custosv1.NewGovernanceServiceClient(c.Conn(t, 1, "officer-cli"))
	if _, err := gov.Submit(ctx, nodetest.SignStatement(t, c.ClusterID(), c.Officers, func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_ScheduleKeyDestruction{ScheduleKeyDestruction: &custosv1.ScheduleKeyDestruction{
			Key: "k", Version: 1, WaitingSeconds: 1}}
	}, 0, 1)); err != nil {
		t.Fatal(err)
	}
	for i, m := range c.Members {
		s := m.Node.Service().State()
		for deadline := time.Now().Add(30 * time.Second); ; {
			k, err := s.Key("k")
			if err != nil {
				t.Fatal(err)
			}
			if k.Versions[0].Destroyed && len(k.Versions[0].WrappedKek) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d: version 1 not destroyed", i)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Each custodian's worker destroys its HSM copies.
	for i, m := range c.Members {
		cfg := m.Config.PKCS11
		for deadline := time.Now().Add(30 * time.Second); ; {
			if !tokenHolds(t, cfg.Module, cfg.TokenLabel, cfg.PIN, kek1) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d's HSM still holds version 1's KEK", i)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if _, err := keys[i].Decrypt(ctx, decryptReq(old.WrappedDataKey)); status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("decrypt under the destroyed version on %d: %v", i, err)
		}
		if out, err := keys[i].Decrypt(ctx, decryptReq(cur.WrappedDataKey)); err != nil || !bytes.Equal(out.Plaintext, cur.Plaintext) {
			t.Fatalf("decrypt under version 2 on %d: %v", i, err)
		}
	}
}

// tokenHolds reports whether any object with id is on the token, looked up
// through a fresh backend (another module user: the objects on the token,
// not this process's caches).
func tokenHolds(t *testing.T, module, label, pin string, id []byte) bool {
	t.Helper()
	b, err := pkcs11.Open(context.Background(), pkcs11.Config{Module: module, TokenLabel: label, PIN: pin})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	has, err := b.HasKey(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return has
}
