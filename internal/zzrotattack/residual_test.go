package zzrotattack_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"github.com/custos-kms/custos/softhsm"
)

func rotationRecords(t *testing.T, s *kms.State) []string {
	var out []string
	_ = s.ScanRecords(1, func(seq uint64, data []byte) error {
		var r custosv1.DecisionRecord
		if proto.Unmarshal(data, &r) == nil && (r.Operation == custosv1.Operation_OPERATION_DOMAIN_KEY_ROTATION || strings.Contains(r.MatchedRule, "rotation")) {
			out = append(out, fmt.Sprintf("#%d %s by %s: %s", seq, r.MatchedRule, r.Node, r.Detail))
		}
		return nil
	})
	return out
}

// TestRotationResiduals: an honest generator; what the rotation leaves.
func TestRotationResiduals(t *testing.T) {
	c := nodetest.StartClusterWith(t, 3, 3, func(i int, cfg *node.Config) {
		cfg.Operators = []string{"operator"}
		if i == 0 {
			cfg.Profile = kms.ProfileDevelopment
		}
	})
	sha1 := custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA1
	c.Admit(t, 0, 1, sha1)
	c.Admit(t, 0, 2, sha1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	app0 := custosv1.NewKeyServiceClient(c.Conn(t, 0, "app"))
	app1 := custosv1.NewKeyServiceClient(c.Conn(t, 1, "app"))
	if _, err := app0.CreateKey(ctx, &custosv1.CreateKeyRequest{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	old, err := app0.GenerateDataKey(ctx, &custosv1.GenerateDataKeyRequest{Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := app0.RotateKey(ctx, &custosv1.RotateKeyRequest{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	// k2: used on node 0 only.
	if _, err := app0.CreateKey(ctx, &custosv1.CreateKeyRequest{Name: "k2"}); err != nil {
		t.Fatal(err)
	}
	d2, err := app0.GenerateDataKey(ctx, &custosv1.GenerateDataKeyRequest{Key: "k2"})
	if err != nil {
		t.Fatal(err)
	}
	state := c.Members[0].Node.Service().State()
	rec, _ := state.Key("k")
	v1Blob, v1KCV := rec.Versions[0].WrappedKek, rec.Versions[0].KekCheckValue
	oldDK := state.DomainKey()

	gov := custosv1.NewGovernanceServiceClient(c.Conn(t, 0, "officer-cli"))
	submit := func(setOp func(*custosv1.Statement), signers ...int) {
		t.Helper()
		if _, err := gov.Submit(ctx, nodetest.SignStatement(t, c.ClusterID(), c.Officers, setOp, signers...)); err != nil {
			t.Fatal(err)
		}
	}
	submit(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_ScheduleKeyDestruction{ScheduleKeyDestruction: &custosv1.ScheduleKeyDestruction{Key: "k", Version: 1, WaitingSeconds: 1}}
	}, 0, 1)
	waitFor(t, "v1 destroyed", time.Minute, func() bool { k, err := state.Key("k"); return err == nil && k.Versions[0].Destroyed })

	// (a) AFTER the destruction, before the rotation: the PIN holder unwraps
	// the old blob into a token object under an id custos never looks at.
	b1 := pinBackend(t, c.Members[1])
	keep := hsm.KeyRef{ID: []byte("operator/keep-v1"), CheckValue: v1KCV}
	if err := b1.UnwrapKey(ctx, oldDK, v1Blob, hsm.KeySpec{ID: keep.ID, Usage: hsm.UsageEncrypt, CheckValue: v1KCV}); err != nil {
		t.Fatalf("keep copy: %v", err)
	}
	// (b) a copy of the SoftHSM token directory.
	tokDir := softhsm.TestDir(t).Path
	bk := filepath.Join("/tmp/rotation-attack", "backup-"+hex.EncodeToString(randBytes(4)))
	if out, err := exec.Command("cp", "-a", tokDir, bk).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	conf := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", filepath.Join(bk, "tokens"))
	if err := os.WriteFile(filepath.Join(bk, "softhsm2.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(bk) })

	// (c) node 3 goes offline; one officer revokes it (it never applies it).
	c.Kill(t, 2)
	submit(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_RevokeAdmission{RevokeAdmission: &custosv1.RevokeAdmission{Node: c.Members[2].Config.ID}}
	}, 2)

	submit(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_RotateDomainKey{RotateDomainKey: &custosv1.RotateDomainKey{}}
	}, 2)
	r := c.WaitRotation(t, 0, -1, 0)
	g := c.Member(r.Generator)
	t.Logf("generator %s (member %d)", r.Generator, g)
	// (d) with the generator's node certificate: a garbage blob for k2.
	garbage := randBytes(40)
	if _, err := propose(ctx, nodeRepl(t, c, g, c.Leader()), r.Generator, &raftlogv1.Command{Op: &raftlogv1.Command_RewrapKeks{
		RewrapKeks: &raftlogv1.RewrapKeks{Epoch: r.Epoch, Keks: []*raftlogv1.RewrappedKek{{Key: "k2", Version: 1, WrappedKek: garbage}}}}}); err != nil {
		t.Fatalf("forged RewrapKeks: %v", err)
	}
	for i := 0; i < 2; i++ {
		c.ApproveRotation(t, i, sha1)
	}
	waitFor(t, "rotation complete", 2*time.Minute, func() bool {
		e, running := state.DomainKeyEpoch(false)
		return e == r.Epoch && running == nil
	})
	for i := 0; i < 2; i++ {
		waitFor(t, "old DK destroyed", time.Minute, func() bool { return !tokenHolds(t, c.Members[i], oldDK.ID) })
	}
	for _, l := range rotationRecords(t, state) {
		t.Log("RECORD", l)
	}

	// (a) the keep copy still decrypts the destroyed version's data key.
	if pt, err := hsmDecryptWDK(ctx, b1, keep, old.WrappedDataKey); err != nil || !bytes.Equal(pt, old.Plaintext) {
		t.Errorf("(a) keep copy after rotation: %v", err)
	} else {
		t.Log("(a) token copy made after destruction decrypts v1 data key after the completed rotation")
	}
	// (b) the token-directory copy, in another process.
	m1 := c.Members[1].Config.PKCS11
	out, err := runChild(t, childOp{Conf: filepath.Join(bk, "softhsm2.conf"), Module: m1.Module, Label: m1.TokenLabel, PIN: m1.PIN,
		DKID: oldDK.ID, DKKCV: oldDK.CheckValue, Blob: v1Blob, KCV: v1KCV, WDK: old.WrappedDataKey})
	if err != nil || !strings.Contains(out, "PLAINTEXT "+hex.EncodeToString(old.Plaintext)) {
		t.Errorf("(b) backup: %v %s", err, out)
	} else {
		t.Log("(b) copy of the token directory + PIN: v1 blob unwraps, data key decrypted")
	}
	// (c) the revoked offline node's token.
	if !tokenHolds(t, c.Members[2], oldDK.ID) {
		t.Errorf("(c) offline node lost the old DK?")
	} else {
		b2 := pinBackend(t, c.Members[2])
		kr := hsm.KeyRef{ID: []byte("operator/from-node3"), CheckValue: v1KCV}
		if err := b2.UnwrapKey(ctx, oldDK, v1Blob, hsm.KeySpec{ID: kr.ID, Usage: hsm.UsageEncrypt, CheckValue: v1KCV}); err != nil {
			t.Errorf("(c) unwrap on node 3: %v", err)
		} else if pt, err := hsmDecryptWDK(ctx, b2, kr, old.WrappedDataKey); err != nil || !bytes.Equal(pt, old.Plaintext) {
			t.Errorf("(c) decrypt on node 3: %v", err)
		} else {
			t.Log("(c) revoked offline node still holds the old DK after 'completed': v1 recovered")
		}
	}
	// (d) k2 after the forged blob.
	k2, _ := state.Key("k2")
	t.Logf("(d) k2 v1 blob after rotation == forged garbage: %v", bytes.Equal(k2.Versions[0].WrappedKek, garbage))
	_, err0 := app0.Decrypt(ctx, decryptReq(d2.WrappedDataKey))
	_, err1 := app1.Decrypt(ctx, decryptReq(d2.WrappedDataKey))
	t.Logf("(d) k2 decrypt on node 1 (has token object): %v; on node 2 (must unwrap blob): %v", err0, err1)
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
