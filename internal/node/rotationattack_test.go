package node_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/custos-kms/custos/clients/go/keyimport"
	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/hsm/pkcs11/pkcs11test"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/internal/pki"
	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"github.com/custos-kms/custos/softhsm"
)

// wrapKeyCheckValue is the check value custos computes for a wrapping key
// of that value (hsm/pkcs11/checkvalue.go), as someone who knows the value
// computes it offline.
func wrapKeyCheckValue(t *testing.T, value []byte) []byte {
	t.Helper()
	wv := sha256.Sum256([]byte("custos/kcv/1 wrap"))
	out, err := keyimport.WrapPad(value, wv[:])
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(append([]byte("custos/kcv/1"), out...))
	return sum[:hsm.CheckValueSize]
}

// TestRotationRefusesPlantedKey: the operator, with a node's user PIN and
// its node certificate, creates on that node's token an AES key of a value
// they know, with every attribute of a domain key, and races the honest
// custodians to record it as a rotation's new domain key. Whoever wins, the
// cluster never adopts a key that was not generated inside an HSM: if the
// planted key is recorded, the named node's custosd refuses to act as its
// generator (an HSM_OBJECT_REJECTED record), sends it to nobody, and the
// officers cancel; otherwise the rotation completes with a generated key.
func TestRotationRefusesPlantedKey(t *testing.T) {
	c := nodetest.StartCustodians(t, 2, nil)
	sha1 := custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA1
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kc := custosv1.NewKeyServiceClient(c.Conn(t, 0, clusterApp))
	if _, err := kc.CreateKey(ctx, &custosv1.CreateKeyRequest{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	state := c.Members[0].Node.Service().State()
	epoch, _ := state.DomainKeyEpoch(false)
	m := c.Members[1]
	value := make([]byte, 32)
	if _, err := rand.Read(value); err != nil {
		t.Fatal(err)
	}
	plantID := []byte(kms.RotationKeyPrefix(c.ClusterID(), epoch+1) + "planted")
	pkcs11test.Run(t, pkcs11test.Op{Module: m.Config.PKCS11.Module, Label: m.Config.PKCS11.TokenLabel, PIN: softhsm.TestPIN,
		Plant: true, Kind: pkcs11test.KindWrap, ID: plantID, Value: value})
	kcv := wrapKeyCheckValue(t, value)

	// Member 1's node certificate streams BeginDomainKeyRotation for the
	// planted key to the leader while one officer requests the rotation.
	nodeTLS, err := pki.ClientTLSConfig(c.CAFile, m.Config.TLS.Cert, m.Config.TLS.Key)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(c.Members[c.Leader()].Addr, grpc.WithTransportCredentials(credentials.NewTLS(nodeTLS)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	repl := raftlogv1.NewReplicationClient(cc)
	var won atomic.Bool
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !won.Load() {
				select {
				case <-stop:
					return
				default:
				}
				res, err := repl.Apply(ctx, &raftlogv1.Command{TimeUnixNano: time.Now().UnixNano(), Node: m.Config.ID, Principal: "custosd",
					Op: &raftlogv1.Command_BeginDomainKeyRotation{BeginDomainKeyRotation: &raftlogv1.BeginDomainKeyRotation{
						Epoch: epoch + 1, NewDomainKeyId: plantID, NewDomainKeyCheckValue: kcv}}})
				if err == nil {
					if _, derr := kms.DecodeResult(res); derr == nil {
						won.Store(true)
					} else if !errors.Is(derr, kms.ErrFailedPrecondition) {
						time.Sleep(5 * time.Millisecond)
					}
				}
			}
		}()
	}
	gov := custosv1.NewGovernanceServiceClient(c.Conn(t, 0, "officer-cli"))
	submit := func(op func(*custosv1.Statement)) {
		t.Helper()
		if _, err := gov.Submit(ctx, nodetest.SignStatement(t, c.ClusterID(), c.Officers, op, 0)); err != nil {
			t.Fatal(err)
		}
	}
	submit(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_RotateDomainKey{RotateDomainKey: &custosv1.RotateDomainKey{}}
	})
	r := c.WaitRotation(t, 0, -1, 0)
	close(stop)
	wg.Wait()

	if !bytes.Equal(r.NewDomainKeyId, plantID) {
		// The honest custodian was first: the rotation completes with a key
		// generated in its HSM.
		t.Logf("an honest custodian (%s) generated the new key first", r.Generator)
		for i := range c.Members {
			c.ApproveRotation(t, i, sha1)
		}
		waitFor(t, "the rotation to complete", func() bool {
			e, running := state.DomainKeyEpoch(false)
			return e == epoch+1 && running == nil
		})
		if bytes.Equal(state.DomainKey().ID, plantID) {
			t.Fatal("the planted key became the domain key")
		}
		return
	}
	t.Logf("the planted key was recorded as the new key (generator %s)", r.Generator)
	// Member 1's custosd refuses to be its generator and says so in the
	// ledger; it offers no transport key, so nothing can be sent or
	// re-wrapped under the planted key.
	ac := custosv1.NewAuditServiceClient(c.Conn(t, 0, nodetest.Auditor))
	waitFor(t, "the planted key's rejection record", func() bool {
		ld, err := ac.ListDecisions(ctx, &custosv1.ListDecisionsRequest{Filter: &custosv1.DecisionFilter{
			Operations: []custosv1.Operation{custosv1.Operation_OPERATION_HSM_OBJECT_REJECTED}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range ld.Records {
			if bytes.Contains([]byte(rec.Detail), plantID) {
				return true
			}
		}
		return false
	})
	_, running := state.DomainKeyEpoch(false)
	for _, a := range running.GetNodes() {
		if a.Node == m.Config.ID || a.State == custosv1.AdmissionState_ADMISSION_STATE_SENT {
			t.Fatalf("the planted key's rotation went on: %v", a)
		}
	}
	if k, _ := state.Key("k"); len(k.Versions[0].RotatedWrappedKek) != 0 {
		t.Fatal("a KEK was re-wrapped under the planted key")
	}
	submit(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_CancelDomainKeyRotation{CancelDomainKeyRotation: &custosv1.CancelDomainKeyRotation{}}
	})
	if e, running := state.DomainKeyEpoch(false); e != epoch || running != nil || bytes.Equal(state.DomainKey().ID, plantID) {
		t.Fatalf("after the cancellation: epoch %d, rotation %v, key %q", e, running, state.DomainKey().ID)
	}
}
