package node_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/internal/pki"
	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// saveSnapshot writes member i's snapshot file (ClusterService.SaveSnapshot
// as an operator) to path and returns its SHA-256 trailer.
func saveSnapshot(t *testing.T, c *nodetest.Cluster, i int, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := custosv1.NewClusterServiceClient(c.Conn(t, i, "operator")).SaveSnapshot(ctx, &custosv1.SaveSnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for {
		ch, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(ch.Data)
	}
	if _, err := custos.VerifySnapshot(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// noRaftState fails unless dir holds no Raft or ledger state.
func noRaftState(t *testing.T, dir string) {
	t.Helper()
	for _, d := range []string{"raft", "ledger"} {
		if ents, err := os.ReadDir(filepath.Join(dir, d)); err == nil && len(ents) > 0 {
			t.Fatalf("a refused restore left %s/%s behind", dir, d)
		}
	}
}

// TestRestoreClusterFromSnapshot: every node of a cluster is lost; a node
// whose HSM holds the domain key (node2, admitted, not the initialiser) is
// restored from a snapshot file into an empty data directory. Bad files, a
// foreign cluster, a non-empty directory and an HSM without the domain key
// are refused with nothing written. The restored node records the restore
// in the ledger and serves no key crypto until the officers' quorum accepts
// that exact file; then data keys from before the snapshot decrypt, a fresh
// node (empty HSM) joins and is admitted by the officers as usual, and it
// decrypts them too.
func TestRestoreClusterFromSnapshot(t *testing.T) {
	c := nodetest.StartClusterWith(t, 3, 2, func(i int, cfg *node.Config) {
		cfg.Operators = []string{"operator"}
		if i == 0 {
			cfg.Profile = kms.ProfileDevelopment
		}
	})
	c.Admit(t, 0, 1, custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA1)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kc := custosv1.NewKeyServiceClient(c.Conn(t, 0, clusterApp))
	for _, k := range []string{"k", "r"} {
		if _, err := kc.CreateKey(ctx, &custosv1.CreateKeyRequest{Name: k}); err != nil {
			t.Fatal(err)
		}
	}
	dk, err := kc.GenerateDataKey(ctx, &custosv1.GenerateDataKeyRequest{Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "cluster.snap")
	saveSnapshot(t, c, 0, file)
	// After the snapshot, officers revoke r: the file does not know it.
	gov := custosv1.NewGovernanceServiceClient(c.Conn(t, 0, "officer-cli"))
	if _, err := gov.Submit(ctx, nodetest.SignStatement(t, c.ClusterID(), c.Officers, func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_RevokeKey{RevokeKey: &custosv1.RevokeKey{Key: "r"}}
	}, 0)); err != nil {
		t.Fatal(err)
	}
	clusterID := c.ClusterID()
	c.Kill(t, 0)
	c.Kill(t, 1)

	m := c.Members[1]
	base := m.Config
	fresh := func() node.Config {
		cfg := base
		cfg.DataDir = filepath.Join(t.TempDir(), "data")
		return cfg
	}
	// Refusals, each leaving the data directory as it was.
	if _, err := node.Restore(ctx, base, file); !errors.Is(err, node.ErrRestore) || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("restore into the old data directory: %v", err)
	}
	good, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(good)
	bad[len(bad)/2] ^= 1
	badFile := filepath.Join(t.TempDir(), "bad.snap")
	if err := os.WriteFile(badFile, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fresh()
	if _, err := node.Restore(ctx, cfg, badFile); !errors.Is(err, custos.ErrBadSnapshot) {
		t.Fatalf("restore from an altered file: %v", err)
	}
	noRaftState(t, cfg.DataDir)
	if err := os.WriteFile(badFile, good[:len(good)-1], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := node.Restore(ctx, cfg, badFile); !errors.Is(err, custos.ErrBadSnapshot) {
		t.Fatalf("restore from a truncated file: %v", err)
	}
	// A file whose trailer is right but whose ledger tail was altered (an
	// attacker can compute SHA-256): refused before anything is written.
	crafted := bytes.Clone(good)
	crafted[len(crafted)-32-5] ^= 1
	sum := sha256.Sum256(crafted[:len(crafted)-32])
	copy(crafted[len(crafted)-32:], sum[:])
	if err := os.WriteFile(badFile, crafted, 0o600); err != nil {
		t.Fatal(err)
	}
	// (The state-digest check reads the tail first and finds the broken
	// chain; loading it would too.)
	if _, err := node.Restore(ctx, cfg, badFile); !errors.Is(err, node.ErrRestore) ||
		!(strings.Contains(err.Error(), "does not load") || strings.Contains(err.Error(), "broken hash chain")) {
		t.Fatalf("restore from a file with an altered ledger tail: %v", err)
	}
	noRaftState(t, cfg.DataDir)
	foreign := cfg
	foreign.ClusterID = "0123456789abcdef0123456789abcdef"
	if _, err := node.Restore(ctx, foreign, file); !errors.Is(err, node.ErrRestore) || !strings.Contains(err.Error(), clusterID) {
		t.Fatalf("restore of another cluster's file: %v", err)
	}
	noHSM := cfg
	noHSM.PKCS11 = c.Members[2].Config.PKCS11 // never admitted: no domain key
	if _, err := node.Restore(ctx, noHSM, file); !errors.Is(err, kms.ErrFailedPrecondition) || !strings.Contains(err.Error(), "does not hold the cluster's domain key") {
		t.Fatalf("restore into an HSM without the domain key: %v", err)
	}
	noRaftState(t, cfg.DataDir)

	info, err := node.Restore(ctx, cfg, file)
	if err != nil {
		t.Fatal(err)
	}
	if info.SourceNode != c.Members[0].Config.ID || info.Node != m.Config.ID || len(info.SnapshotSha256) != 64 {
		t.Fatalf("restore record %v", info)
	}
	if _, err := node.Restore(ctx, cfg, file); !errors.Is(err, node.ErrRestore) {
		t.Fatalf("second restore into the same directory: %v", err)
	}
	m.Config.DataDir = cfg.DataDir
	c.Restart(t, 1)
	state := m.Node.Service().State()
	waitFor(t, "the restore's ledger record", func() bool { return state.RestoreInfo().GetReported() })
	// The restore is in the ledger, selected for notification by the
	// default rules (governance-class), after the file's last record.
	ac := custosv1.NewAuditServiceClient(c.Conn(t, 1, nodetest.Auditor))
	ld, err := ac.ListDecisions(ctx, &custosv1.ListDecisionsRequest{Filter: &custosv1.DecisionFilter{
		Operations: []custosv1.Operation{custosv1.Operation_OPERATION_RESTORE}, NotifyOnly: true}})
	if err != nil || len(ld.Records) != 1 || !strings.Contains(ld.Records[0].Detail, info.SnapshotSha256) ||
		ld.Records[0].MatchedRule != "restore:restored" {
		t.Fatalf("RESTORE records: %v, %v", ld.GetRecords(), err)
	}
	if a := state.Admission(c.Members[0].Config.ID); a.GetState() != custosv1.AdmissionState_ADMISSION_STATE_REVOKED {
		t.Fatalf("the initialiser's admission after the restore: %v", a)
	}
	if a := state.Admission(m.Config.ID); a.GetState() != custosv1.AdmissionState_ADMISSION_STATE_ADMITTED {
		t.Fatalf("the restored node's admission: %v", a)
	}

	// The old initialiser is still a configured peer, but not in the
	// restored Raft configuration: its node certificate proposes nothing
	// (it could move a sink's cursor past the RESTORE record, for one).
	oldTLS, err := pki.ClientTLSConfig(c.CAFile, c.Members[0].Config.TLS.Cert, c.Members[0].Config.TLS.Key)
	if err != nil {
		t.Fatal(err)
	}
	oldConn, err := grpc.NewClient(m.Addr, grpc.WithTransportCredentials(credentials.NewTLS(oldTLS)))
	if err != nil {
		t.Fatal(err)
	}
	defer oldConn.Close()
	_, err = raftlogv1.NewReplicationClient(oldConn).Apply(ctx, &raftlogv1.Command{Node: c.Members[0].Config.ID,
		Op: &raftlogv1.Command_ReportRestore{ReportRestore: &raftlogv1.ReportRestore{SnapshotSha256: info.SnapshotSha256}}})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "not a member") {
		t.Fatalf("a command from a node outside the restored configuration: %v", err)
	}

	kc = custosv1.NewKeyServiceClient(c.Conn(t, 1, clusterApp))
	_, err = kc.Decrypt(ctx, decryptReq(dk.WrappedDataKey))
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "restored from a snapshot") {
		t.Fatalf("decrypt before the officers accept the restore: %v", err)
	}
	if _, err := kc.GenerateDataKey(ctx, &custosv1.GenerateDataKeyRequest{Key: "k"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("GenerateDataKey before the officers accept the restore: %v", err)
	}
	cs, err := custosv1.NewClusterServiceClient(c.Conn(t, 1, clusterApp)).Status(ctx, &custosv1.ClusterStatusRequest{})
	if err != nil || cs.GetRestore().GetSnapshotSha256() != info.SnapshotSha256 || cs.GetRestore().GetAccepted() {
		t.Fatalf("cluster status of a restored cluster: %v, %v", cs.GetRestore(), err)
	}

	gov = custosv1.NewGovernanceServiceClient(c.Conn(t, 1, "officer-cli"))
	accept := func(sum string) func(*custosv1.Statement) {
		return func(st *custosv1.Statement) {
			st.RestoreId = info.RestoreId
			st.Operation = &custosv1.Statement_AcceptRestore{AcceptRestore: &custosv1.AcceptRestore{SnapshotSha256: sum}}
		}
	}
	if _, err := gov.Submit(ctx, nodetest.SignStatement(t, clusterID, c.Officers, accept(info.SnapshotSha256), 0)); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("one officer accepts the restore: %v", err)
	}
	other := strings.Repeat("0", 64)
	if _, err := gov.Submit(ctx, nodetest.SignStatement(t, clusterID, c.Officers, accept(other), 0, 1)); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("officers accept another file: %v", err)
	}
	acceptSS := nodetest.SignStatement(t, clusterID, c.Officers, accept(info.SnapshotSha256), 0, 2)
	if _, err := gov.Submit(ctx, acceptSS); err != nil {
		t.Fatal(err)
	}
	out, err := kc.Decrypt(ctx, decryptReq(dk.WrappedDataKey))
	if err != nil || !bytes.Equal(out.Plaintext, dk.Plaintext) {
		t.Fatalf("decrypt after the restore was accepted: %v", err)
	}
	// The file's state is what it was: r's revocation came after it. The
	// officers check before they accept (docs/operations.md).
	if k, err := state.Key("r"); err != nil || k.Revoked {
		t.Fatalf("key r in the restored state: %v, %v", k, err)
	}

	// The rest of the cluster comes back by admission: a node with an
	// empty HSM joins the restored node and the officers admit it.
	c.Join(t, 2)
	c.Admit(t, 1, 2, custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA1)
	kc2 := custosv1.NewKeyServiceClient(c.Conn(t, 2, clusterApp))
	if out, err := kc2.Decrypt(ctx, decryptReq(dk.WrappedDataKey)); err != nil || !bytes.Equal(out.Plaintext, dk.Plaintext) {
		t.Fatalf("decrypt on the node admitted after the restore: %v", err)
	}

	// The operator restores the same file once more and replays the
	// officers' acceptance of the first restore: refused (the new restore
	// has a new id), and the cluster stays without key crypto.
	c.Kill(t, 2)
	c.Kill(t, 1)
	again := fresh()
	info2, err := node.Restore(ctx, again, file)
	if err != nil {
		t.Fatal(err)
	}
	if info2.RestoreId == info.RestoreId {
		t.Fatalf("two restores with the same id %s", info.RestoreId)
	}
	m.Config.DataDir = again.DataDir
	c.Restart(t, 1)
	gov = custosv1.NewGovernanceServiceClient(c.Conn(t, 1, "officer-cli"))
	if _, err := gov.Submit(ctx, acceptSS); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "latest restore is") {
		t.Fatalf("the first restore's acceptance replayed into the second: %v", err)
	}
	kc = custosv1.NewKeyServiceClient(c.Conn(t, 1, clusterApp))
	if _, err := kc.Decrypt(ctx, decryptReq(dk.WrappedDataKey)); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("decrypt after a replayed acceptance: %v", err)
	}
}

// waitFor polls cond for up to a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
