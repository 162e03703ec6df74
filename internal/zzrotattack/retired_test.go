package zzrotattack_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// TestBeginNamesAnotherObject: a member node certificate alone races
// BeginDomainKeyRotation naming node1's checkpoint (identity) key id; once
// the rotation is cancelled (one officer), every node destroys that id.
func TestBeginNamesAnotherObject(t *testing.T) {
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
	state := c.Members[0].Node.Service().State()
	victim := c.Members[0].Config.ID
	target := []byte("custos/checkpoint/" + victim)
	if !tokenHolds(t, c.Members[0], target) {
		t.Fatal("no checkpoint key?")
	}
	fpBefore := state.IdentityFingerprint(victim)
	epoch, _ := state.DomainKeyEpoch(false)
	repl := nodeRepl(t, c, 2, c.Leader())
	var won atomic.Bool
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
				_, err := propose(ctx, repl, c.Members[2].Config.ID, &raftlogv1.Command{Op: &raftlogv1.Command_BeginDomainKeyRotation{
					BeginDomainKeyRotation: &raftlogv1.BeginDomainKeyRotation{Epoch: epoch + 1, NewDomainKeyId: target, NewDomainKeyCheckValue: make([]byte, 16)}}})
				if err == nil {
					won.Store(true)
				} else if !errors.Is(err, kms.ErrFailedPrecondition) {
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	gov := custosv1.NewGovernanceServiceClient(c.Conn(t, 0, "officer-cli"))
	submit := func(setOp func(*custosv1.Statement), signers ...int) {
		t.Helper()
		if _, err := gov.Submit(ctx, nodetest.SignStatement(t, c.ClusterID(), c.Officers, setOp, signers...)); err != nil {
			t.Fatal(err)
		}
	}
	submit(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_RotateDomainKey{RotateDomainKey: &custosv1.RotateDomainKey{}}
	}, 2)
	r := c.WaitRotation(t, 0, -1, 0)
	close(stop)
	wg.Wait()
	t.Logf("won=%v generator=%s id=%q", won.Load(), r.Generator, r.NewDomainKeyId)
	if string(r.NewDomainKeyId) != string(target) {
		t.Fatal("lost the race")
	}
	// The rotation cannot progress; the officers cancel it.
	time.Sleep(3 * time.Second)
	submit(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_CancelDomainKeyRotation{CancelDomainKeyRotation: &custosv1.CancelDomainKeyRotation{}}
	}, 2)
	waitFor(t, "checkpoint key destroyed", time.Minute, func() bool { return !tokenHolds(t, c.Members[0], target) })
	t.Logf("node %s's checkpoint/identity key destroyed on its token", victim)
	_, err := c.Members[0].Node.Service().Checkpoint(ctx)
	t.Logf("Checkpoint on %s now: %v", victim, err)
	c.Kill(t, 0)
	c.Restart(t, 0)
	time.Sleep(5 * time.Second)
	t.Logf("after restart: token holds checkpoint key=%v; identity fingerprint before %s now %s", tokenHolds(t, c.Members[0], target), fpBefore, c.Members[1].Node.Service().State().IdentityFingerprint(victim))
	_, err = c.Members[0].Node.Service().Checkpoint(ctx)
	t.Logf("Checkpoint on %s after restart: %v", victim, err)
}
