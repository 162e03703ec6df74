package zzrotattack_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/hsm/pkcs11/pkcs11test"
	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"github.com/custos-kms/custos/softhsm"
)

// TestPlantedNewDomainKey: the operator (user PIN + node certificate of
// member 1) plants an AES key of known value with the domain-key attributes
// on member 1's token and proposes BeginDomainKeyRotation naming it, right
// behind the officer's RotateDomainKey. The honest custosd of member 1 then
// re-wraps every KEK under it and sends it to every custodian.
func TestPlantedNewDomainKey(t *testing.T) {
	c := nodetest.StartClusterWith(t, 3, 3, func(i int, cfg *node.Config) {
		cfg.Operators = []string{"operator"}
		if i == 0 {
			cfg.Profile = kms.ProfileDevelopment
		}
	})
	sha1 := custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA1
	c.Admit(t, 0, 1, sha1)
	c.Admit(t, 0, 2, sha1)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	app := custosv1.NewKeyServiceClient(c.Conn(t, 0, "app"))
	if _, err := app.CreateKey(ctx, &custosv1.CreateKeyRequest{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	dk, err := app.GenerateDataKey(ctx, &custosv1.GenerateDataKeyRequest{Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	state := c.Members[0].Node.Service().State()

	// 1. Operator plants a known-value key with every domain-key attribute
	// on member 1's token (user PIN, separate process).
	const gen = 1
	value := make([]byte, 32)
	_, _ = rand.Read(value)
	plantID := []byte("custos/domain/" + c.ClusterID() + "/e1/looks-normal")
	m := c.Members[gen]
	pkcs11test.Run(t, pkcs11test.Op{Module: m.Config.PKCS11.Module, Label: m.Config.PKCS11.TokenLabel, PIN: softhsm.TestPIN,
		Plant: true, Kind: pkcs11test.KindWrap, ID: plantID, Value: value})
	kcv := wrapKCV(value)
	if err := pinBackend(t, m).VerifyKey(ctx, hsm.KeyRef{ID: plantID, CheckValue: kcv}, hsm.UsageWrap); err != nil {
		t.Fatalf("planted key does not pass VerifyKey(UsageWrap) with the planter's check value: %v", err)
	}
	t.Logf("planted key passes VerifyKey(UsageWrap) with offline-computed KCV %x", kcv)

	// 2. Race: proposals as member 1 stream to the leader while an officer
	// starts the rotation; the first one after RotateDomainKey wins.
	epoch, _ := state.DomainKeyEpoch(false)
	leader := c.Leader()
	repl := nodeRepl(t, c, gen, leader)
	var won atomic.Bool
	var tries atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !won.Load() {
				select {
				case <-stop:
					return
				default:
				}
				tries.Add(1)
				_, err := propose(ctx, repl, m.Config.ID, &raftlogv1.Command{Op: &raftlogv1.Command_BeginDomainKeyRotation{
					BeginDomainKeyRotation: &raftlogv1.BeginDomainKeyRotation{Epoch: epoch + 1, NewDomainKeyId: plantID, NewDomainKeyCheckValue: kcv}}})
				if err == nil {
					won.Store(true)
				} else if !errors.Is(err, kms.ErrFailedPrecondition) {
					t.Logf("propose: %v", err)
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	gov := custosv1.NewGovernanceServiceClient(c.Conn(t, 0, "officer-cli"))
	if _, err := gov.Submit(ctx, nodetest.SignStatement(t, c.ClusterID(), c.Officers, func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_RotateDomainKey{RotateDomainKey: &custosv1.RotateDomainKey{}}
	}, 2)); err != nil {
		t.Fatal(err)
	}
	r := c.WaitRotation(t, 0, -1, 0)
	close(stop)
	wg.Wait()
	t.Logf("race: attacker won=%v after %d proposals; generator=%s new id=%q", won.Load(), tries.Load(), r.Generator, r.NewDomainKeyId)
	if !bytes.Equal(r.NewDomainKeyId, plantID) {
		t.Fatalf("attacker lost the race; generator %s", r.Generator)
	}

	// 3. The customer does exactly what the docs ask.
	for i := range c.Members {
		c.ApproveRotation(t, i, sha1)
	}
	waitFor(t, "rotation complete", 2*time.Minute, func() bool {
		e, running := state.DomainKeyEpoch(false)
		return e == epoch+1 && running == nil
	})
	if got := state.DomainKey(); !bytes.Equal(got.ID, plantID) {
		t.Fatalf("domain key after: %q", got.ID)
	}
	for i, mm := range c.Members {
		if !tokenHolds(t, mm, plantID) {
			t.Fatalf("node %d lacks the (planted) new DK", i)
		}
	}

	// 4. Offline: every KEK blob in the state/log is now KWP under a key the
	// operator knows.
	k, err := state.Key("k")
	if err != nil {
		t.Fatal(err)
	}
	kek, err := kwpUnwrap(value, k.Versions[0].WrappedKek)
	if err != nil {
		t.Fatalf("offline unwrap: %v", err)
	}
	pt, err := softDecryptWDK(kek, dk.WrappedDataKey)
	if err != nil || !bytes.Equal(pt, dk.Plaintext) {
		t.Fatalf("offline decrypt: %v", err)
	}
	t.Logf("OPERATOR HAS KEK IN CLEAR (%d bytes) and decrypted the data key offline, no ledger record", len(kek))

	// New keys after the rotation are also under the planted key.
	if _, err := app.CreateKey(ctx, &custosv1.CreateKeyRequest{Name: "after"}); err != nil {
		t.Fatal(err)
	}
	dk2, err := app.GenerateDataKey(ctx, &custosv1.GenerateDataKeyRequest{Key: "after"})
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := state.Key("after")
	kek2, err := kwpUnwrap(value, k2.Versions[0].WrappedKek)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := softDecryptWDK(kek2, dk2.WrappedDataKey); err != nil || !bytes.Equal(pt, dk2.Plaintext) {
		t.Fatalf("offline decrypt after: %v", err)
	}
	t.Logf("a key created after the rotation is readable too")
}
