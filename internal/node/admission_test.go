package node_test

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custos-kms/custos/clients/go/keyimport"
	"github.com/custos-kms/custos/hsm/pkcs11/pkcs11test"
	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// TestMain lets pkcs11test re-run this binary as an HSM security officer's
// process (the trust step of admission).
func TestMain(m *testing.M) {
	pkcs11test.MaybeChild()
	os.Exit(m.Run())
}

// TestAdmissionEveryNodeIsACustodian: officers admit the two nodes that
// joined; each gets the domain key from the initialiser's HSM (RSA-OAEP,
// SHA-1 under the development profile: SoftHSM has no other) and then
// serves key crypto itself. With the initialiser — the leader — dead, the
// other two go on: encrypt, decrypt, GenerateDataKey, a new key made by one
// survivor and used by the other. A revoked node refuses key crypto and its
// HSM copies are destroyed.
func TestAdmissionEveryNodeIsACustodian(t *testing.T) {
	c := nodetest.StartClusterWith(t, 3, 3, func(i int, cfg *node.Config) {
		if i == 0 {
			cfg.Profile = kms.ProfileDevelopment
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	keys := make([]custosv1.KeyServiceClient, 3)
	for i := range keys {
		keys[i] = custosv1.NewKeyServiceClient(c.Conn(t, i, clusterApp))
	}
	if _, err := keys[0].CreateKey(ctx, &custosv1.CreateKeyRequest{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	dk, err := keys[0].GenerateDataKey(ctx, &custosv1.GenerateDataKeyRequest{Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys[1].Decrypt(ctx, decryptReq(dk.WrappedDataKey)); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("decrypt on node2 before admission: %v, want FailedPrecondition", err)
	}

	// Not trusted by node1's SO yet: approved, and nothing sent.
	offer := c.WaitAdmission(t, 0, 1, custosv1.AdmissionState_ADMISSION_STATE_OFFERED)
	if offer.TransportKeyFingerprint == "" || len(offer.TransportPublicKey) == 0 {
		t.Fatalf("offer %v", offer)
	}
	c.Admit(t, 0, 1, custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA1)
	c.Admit(t, 0, 2, custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA1)
	for _, i := range []int{1, 2} {
		out, err := keys[i].Decrypt(ctx, decryptReq(dk.WrappedDataKey))
		if err != nil || !bytes.Equal(out.Plaintext, dk.Plaintext) {
			t.Fatalf("decrypt on admitted %s: %v", c.Members[i].Config.ID, err)
		}
	}
	// The ledger says who sent the domain key to whom, and who holds it.
	st := c.Members[0].Node.Service().State()
	rules := map[string]int{}
	head, _ := st.LedgerHead()
	for seq := uint64(1); seq <= head; seq++ {
		rec, err := st.DecisionRecord(seq)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Operation == custosv1.Operation_OPERATION_ADMISSION {
			rules[rec.MatchedRule]++
			if rec.MatchedRule == "admission:domain-key-sent" && rec.Node != c.Members[0].Config.ID {
				t.Fatalf("domain key sent by %s", rec.Node)
			}
		}
	}
	if rules["admission:domain-key-sent"] != 2 || rules["admission:admitted"] != 2 {
		t.Fatalf("admission records %v", rules)
	}

	// The initialiser, which leads, dies: the others elect a leader and
	// serve every kind of key crypto.
	c.Kill(t, 0)
	if l := c.Leader(); l != 1 && l != 2 {
		t.Fatalf("no new leader: %d", l)
	}
	if _, err := keys[1].CreateKey(ctx, &custosv1.CreateKeyRequest{Name: "after"}); err != nil {
		t.Fatalf("create key on node2 without node1: %v", err)
	}
	for _, i := range []int{1, 2} {
		id := c.Members[i].Config.ID
		out, err := keys[i].Decrypt(ctx, decryptReq(dk.WrappedDataKey))
		if err != nil || !bytes.Equal(out.Plaintext, dk.Plaintext) {
			t.Fatalf("decrypt on %s without node1: %v", id, err)
		}
		for _, key := range []string{"k", "after"} {
			gd, err := keys[i].GenerateDataKey(ctx, &custosv1.GenerateDataKeyRequest{Key: key})
			if err != nil {
				t.Fatalf("GenerateDataKey %s on %s: %v", key, id, err)
			}
			other := keys[3-i] // the other survivor
			out, err := other.Decrypt(ctx, decryptReq(gd.WrappedDataKey))
			if err != nil || !bytes.Equal(out.Plaintext, gd.Plaintext) {
				t.Fatalf("data key of %s made on %s, decrypted on the other: %v", key, id, err)
			}
		}
	}

	// The customer imports its own key through node2; node3 uses it.
	raw := bytes.Repeat([]byte{0x5c}, 32)
	params, err := keys[1].GetParametersForImport(ctx, &custosv1.GetParametersForImportRequest{Key: "byok",
		Algorithm: custosv1.ImportWrappingAlgorithm_RSA_AES_KEY_WRAP_SHA_1})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(params.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	wrapped, err := keyimport.Wrap(pub.(*rsa.PublicKey), keyimport.RSAAESKeyWrapSHA1, raw)
	if err != nil {
		t.Fatal(err)
	}
	imported, err := keys[1].ImportKeyMaterial(ctx, &custosv1.ImportKeyMaterialRequest{Key: "byok", ImportToken: params.ImportToken,
		EncryptedKeyMaterial: wrapped})
	if err != nil {
		t.Fatalf("import on node2: %v", err)
	}
	if kcv, _ := keyimport.CheckValue(raw); !bytes.Equal(imported.Versions[0].KeyCheckValue, kcv) {
		t.Fatalf("imported check value %x, want %x", imported.Versions[0].KeyCheckValue, kcv)
	}
	gd, err := keys[1].GenerateDataKey(ctx, &custosv1.GenerateDataKeyRequest{Key: "byok"})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := keys[2].Decrypt(ctx, decryptReq(gd.WrappedDataKey)); err != nil || !bytes.Equal(out.Plaintext, gd.Plaintext) {
		t.Fatalf("decrypt under the imported key on node3: %v", err)
	}

	// One officer revokes node3: it refuses key crypto at once and
	// destroys its copies.
	gov := custosv1.NewGovernanceServiceClient(c.Conn(t, 1, "officer-cli"))
	id3 := c.Members[2].Config.ID
	if _, err := gov.Submit(ctx, nodetest.SignStatement(t, c.ClusterID(), c.Officers, func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_RevokeAdmission{RevokeAdmission: &custosv1.RevokeAdmission{Node: id3}}
	}, 2)); err != nil {
		t.Fatal(err)
	}
	c.WaitAdmission(t, 2, 2, custosv1.AdmissionState_ADMISSION_STATE_REVOKED)
	if _, err := keys[2].Decrypt(ctx, decryptReq(dk.WrappedDataKey)); status.Code(err) != codes.FailedPrecondition ||
		!strings.Contains(err.Error(), "revoked") {
		t.Fatalf("decrypt on revoked node3: %v, want FailedPrecondition (revoked)", err)
	}
	if out, err := keys[1].Decrypt(ctx, decryptReq(dk.WrappedDataKey)); err != nil || !bytes.Equal(out.Plaintext, dk.Plaintext) {
		t.Fatalf("decrypt on node2 after node3's revocation: %v", err)
	}
	cluster := custosv1.NewClusterServiceClient(c.Conn(t, 2, clusterApp))
	for deadline := time.Now().Add(nodetest.AdmissionTimeout); ; {
		s, err := cluster.Status(ctx, &custosv1.ClusterStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if !s.HasDomainKey {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node3's HSM still holds the domain key after its admission was revoked")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// With its copies gone, node3 offers a new transport key; it stays
	// revoked (and refuses key crypto) until officers admit it again.
	for deadline := time.Now().Add(nodetest.AdmissionTimeout); ; {
		a := c.Members[1].Node.Service().State().Admission(id3)
		if a.GetState() != custosv1.AdmissionState_ADMISSION_STATE_REVOKED {
			t.Fatalf("node3's offer changed its revoked admission: %v", a)
		}
		if len(a.GetTransportPublicKey()) > 0 { // revocation cleared the old one
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node3 offered no new transport key after its revocation")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := keys[2].Decrypt(ctx, decryptReq(dk.WrappedDataKey)); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("decrypt on node3 after its new offer: %v", err)
	}
}
