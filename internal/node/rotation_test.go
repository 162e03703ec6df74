package node_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/hsm/pkcs11"
	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// tryUnwrap plays the holder of a node's user PIN with a copy of a KEK
// blob: through a fresh backend on the token it unwraps the blob under the
// domain key dk into a new object (non-extractable: the domain key's
// template allows nothing else, but usable), and destroys it again.
func tryUnwrap(t *testing.T, m *nodetest.Member, dk hsm.KeyRef, blob, kcv []byte) error {
	t.Helper()
	cfg := m.Config.PKCS11
	b, err := pkcs11.Open(context.Background(), pkcs11.Config{Module: cfg.Module, TokenLabel: cfg.TokenLabel, PIN: cfg.PIN})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	id := []byte("attacker/recovered-kek")
	err = b.UnwrapKey(context.Background(), dk, blob, hsm.KeySpec{ID: id, Usage: hsm.UsageEncrypt, CheckValue: kcv})
	if derr := b.DestroyKey(context.Background(), id); derr != nil {
		t.Fatal(derr)
	}
	return err
}

// TestDomainKeyRotationErasesDestroyedKeys is the crypto-shredding proof of
// docs/key-destruction.md: a destroyed key version's KEK is still in the
// Raft log and in snapshot files made before, wrapped under the domain key,
// and the holder of a node's user PIN can unwrap it into the HSM again —
// until the officers rotate the domain key. The rotation re-wraps every
// surviving KEK under a new domain key, moves the new key to every
// custodian, and every node destroys the old one: then the old blob
// unwraps on no token, with the PIN, while the surviving versions decrypt
// on every node and new keys work across the cluster.
func TestDomainKeyRotationErasesDestroyedKeys(t *testing.T) {
	c := nodetest.StartCustodians(t, 3, func(_ int, cfg *node.Config) { cfg.Operators = []string{"operator"} })
	sha1 := custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA1
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
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
	state := c.Members[0].Node.Service().State()
	rec, err := state.Key("k")
	if err != nil {
		t.Fatal(err)
	}
	v1Blob, v1KCV := rec.Versions[0].WrappedKek, rec.Versions[0].KekCheckValue
	oldDK := state.DomainKey()
	// A backup made before the destruction holds version 1's blob.
	backup := filepath.Join(t.TempDir(), "before.snap")
	saveSnapshot(t, c, 0, backup)
	if b, err := os.ReadFile(backup); err != nil || !bytes.Contains(b, v1Blob) {
		t.Fatalf("the snapshot file does not hold version 1's wrapped KEK (%v)", err)
	}

	gov := custosv1.NewGovernanceServiceClient(c.Conn(t, 0, "officer-cli"))
	submit := func(setOp func(*custosv1.Statement), signers ...int) {
		t.Helper()
		if _, err := gov.Submit(ctx, nodetest.SignStatement(t, c.ClusterID(), c.Officers, setOp, signers...)); err != nil {
			t.Fatal(err)
		}
	}
	submit(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_ScheduleKeyDestruction{ScheduleKeyDestruction: &custosv1.ScheduleKeyDestruction{
			Key: "k", Version: 1, WaitingSeconds: 1}}
	}, 0, 1)
	for i, m := range c.Members {
		s := m.Node.Service().State()
		waitFor(t, "version 1 destroyed", func() bool {
			k, err := s.Key("k")
			return err == nil && k.Versions[0].Destroyed
		})
		_ = i
	}
	// Destroyed, yet the PIN holder with the backup unwraps it again.
	if err := tryUnwrap(t, c.Members[1], oldDK, v1Blob, v1KCV); err != nil {
		t.Fatalf("before the rotation the old blob should still unwrap with the PIN (the gap the rotation closes): %v", err)
	}

	// One officer starts the rotation; key creation waits meanwhile.
	submit(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_RotateDomainKey{RotateDomainKey: &custosv1.RotateDomainKey{}}
	}, 2)
	r := c.WaitRotation(t, 0, -1, 0)
	if _, err := keys[1].CreateKey(ctx, &custosv1.CreateKeyRequest{Name: "during"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("CreateKey during the rotation: %v", err)
	}
	// Every custodian's rotation transport key: approved by the officers,
	// trusted by the generator's HSM security officer.
	for i := range c.Members {
		c.ApproveRotation(t, i, sha1)
	}
	for i, m := range c.Members {
		s := m.Node.Service().State()
		waitFor(t, "the rotation to complete", func() bool {
			epoch, running := s.DomainKeyEpoch(false)
			return epoch == r.Epoch && running == nil
		})
		if got := s.DomainKey(); !bytes.Equal(got.ID, r.NewDomainKeyId) {
			t.Fatalf("node %d's domain key after the rotation: %q", i, got.ID)
		}
	}
	newDK := state.DomainKey()
	for i, m := range c.Members {
		cfg := m.Config.PKCS11
		waitFor(t, "the old domain key destroyed", func() bool { return !tokenHolds(t, cfg.Module, cfg.TokenLabel, cfg.PIN, oldDK.ID) })
		if !tokenHolds(t, cfg.Module, cfg.TokenLabel, cfg.PIN, newDK.ID) {
			t.Fatalf("node %d's HSM lacks the new domain key", i)
		}
		// The PIN holder with the pre-destruction blob gets nothing.
		if err := tryUnwrap(t, m, oldDK, v1Blob, v1KCV); !errors.Is(err, hsm.ErrKeyNotFound) {
			t.Fatalf("node %d: the old blob under the old domain key: %v, want ErrKeyNotFound", i, err)
		}
		if err := tryUnwrap(t, m, newDK, v1Blob, v1KCV); err == nil {
			t.Fatalf("node %d: the old blob unwrapped under the new domain key", i)
		}
	}
	k, err := state.Key("k")
	if err != nil {
		t.Fatal(err)
	}
	if len(k.Versions[0].WrappedKek) != 0 || bytes.Equal(k.Versions[1].WrappedKek, rec.Versions[1].WrappedKek) || len(k.Versions[1].RotatedWrappedKek) != 0 {
		t.Fatalf("key versions after the rotation: %v", k.Versions)
	}
	// Version 2 works everywhere; a new key made on one node after the
	// rotation works on the others (its blob is under the new key).
	for i := range keys {
		if out, err := keys[i].Decrypt(ctx, decryptReq(cur.WrappedDataKey)); err != nil || !bytes.Equal(out.Plaintext, cur.Plaintext) {
			t.Fatalf("decrypt under version 2 on %d after the rotation: %v", i, err)
		}
		if _, err := keys[i].Decrypt(ctx, decryptReq(old.WrappedDataKey)); status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("decrypt under the destroyed version on %d: %v", i, err)
		}
	}
	if _, err := keys[2].CreateKey(ctx, &custosv1.CreateKeyRequest{Name: "after"}); err != nil {
		t.Fatal(err)
	}
	dk, err := keys[2].GenerateDataKey(ctx, &custosv1.GenerateDataKeyRequest{Key: "after"})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := keys[0].Decrypt(ctx, decryptReq(dk.WrappedDataKey)); err != nil || !bytes.Equal(out.Plaintext, dk.Plaintext) {
		t.Fatalf("decrypt of a post-rotation key on another node: %v", err)
	}
}
