package audit_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"strings"
	"testing"

	"github.com/custos-kms/custos/kms/audit"
	"github.com/custos-kms/custos/kms/ledger"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// chainExport builds an export of records (linked here, seq from 1) with a
// trailer signed by key over the last one.
func chainExport(t *testing.T, cluster string, key *ecdsa.PrivateKey, recs ...*custosv1.DecisionRecord) []byte {
	t.Helper()
	var b bytes.Buffer
	w := audit.NewWriter(&b)
	if err := w.WriteItem(&custosv1.ExportItem{Item: &custosv1.ExportItem_Header{Header: &custosv1.ExportHeader{ClusterId: cluster, FirstSeq: 1}}}); err != nil {
		t.Fatal(err)
	}
	prev := ledger.ZeroHash
	for i, r := range recs {
		r.Seq, r.PrevHash = uint64(i+1), prev[:]
		data := encode(t, r)
		prev = ledger.Hash(data)
		if err := w.WriteItem(&custosv1.ExportItem{Item: &custosv1.ExportItem_Record{Record: data}}); err != nil {
			t.Fatal(err)
		}
	}
	d := sha256.Sum256(ledger.CheckpointMessage(cluster, uint64(len(recs)), prev[:]))
	sig, err := ecdsa.SignASN1(rand.Reader, key, d[:])
	if err != nil {
		t.Fatal(err)
	}
	cp := &custosv1.Checkpoint{ClusterId: cluster, Seq: uint64(len(recs)), Head: prev[:], KeyId: audit.KeyID(&key.PublicKey), Signature: sig, Node: "node-1"}
	if err := w.WriteItem(&custosv1.ExportItem{Item: &custosv1.ExportItem_Trailer{Trailer: cp}}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// In a cluster born at state machine version 2, every checkpoint key is
// registered by a NODE_KEY record: a checkpoint (or trailer) under a key
// that none registered is reported, even when the auditor trusts the key.
func TestCheckpointKeysNeedANodeKeyRecord(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	const cluster = "c1"
	genesis := func(v uint32) *custosv1.DecisionRecord {
		return &custosv1.DecisionRecord{Operation: custosv1.Operation_OPERATION_GENESIS, Outcome: custosv1.Outcome_OUTCOME_ALLOW,
			MatchedRule: "genesis", Genesis: &custosv1.Genesis{ClusterId: cluster, StateMachineVersion: v}}
	}
	nodeKey := &custosv1.DecisionRecord{Operation: custosv1.Operation_OPERATION_NODE_KEY, Outcome: custosv1.Outcome_OUTCOME_ALLOW,
		MatchedRule: "node-key", Node: "node-1", NodePublicKey: der}
	trusted := []*ecdsa.PublicKey{&key.PublicKey}

	rep, err := audit.Verify(bytes.NewReader(chainExport(t, cluster, key, genesis(2))), trusted)
	if !errors.Is(err, audit.ErrBroken) || rep.Kind != audit.ProblemUnknownKey || !strings.Contains(rep.Problem, "NODE_KEY") {
		t.Fatalf("a trailer under an unregistered key: %v (%+v)", err, rep)
	}
	if rep, err := audit.Verify(bytes.NewReader(chainExport(t, cluster, key, genesis(2), nodeKey)), trusted); err != nil {
		t.Fatalf("a trailer under a registered key: %v (%+v)", err, rep)
	}
	// A cluster born at version 1 registered its first keys without records.
	if rep, err := audit.Verify(bytes.NewReader(chainExport(t, cluster, key, genesis(0))), trusted); err != nil {
		t.Fatalf("a version 1 cluster: %v (%+v)", err, rep)
	}
}
