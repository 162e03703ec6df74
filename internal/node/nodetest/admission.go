package nodetest

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"testing"
	"time"

	"github.com/custos-kms/custos/hsm/pkcs11/pkcs11test"
	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"github.com/custos-kms/custos/softhsm"
)

// AdmissionTimeout bounds each wait of Admit.
const AdmissionTimeout = 60 * time.Second

// WaitAdmission waits until member `at` sees member i's admission in state
// want, and returns it.
func (c *Cluster) WaitAdmission(tb testing.TB, at, i int, want custosv1.AdmissionState) *custosv1.NodeAdmission {
	tb.Helper()
	id := c.Members[i].Config.ID
	st := c.Members[at].Node.Service().State()
	deadline := time.Now().Add(AdmissionTimeout)
	for {
		a := st.Admission(id)
		if a.GetState() == want {
			return a
		}
		if time.Now().After(deadline) {
			tb.Fatalf("nodetest: %s's admission as %s sees it: %v, want %v", id, c.Members[at].Config.ID, a, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Admit plays the customer admitting member i as a custodian of the domain
// key, with member holder's HSM sending it: it waits for i's transport key
// offer, has the officers' quorum approve it (hash), plays holder's HSM
// security officer trusting the key (in a child process: the test binary's
// TestMain must call pkcs11test.MaybeChild), and waits until i is admitted.
func (c *Cluster) Admit(tb testing.TB, holder, i int, hash custosv1.KeyTransportHash) {
	tb.Helper()
	offer := c.WaitAdmission(tb, holder, i, custosv1.AdmissionState_ADMISSION_STATE_OFFERED)
	id := c.Members[i].Config.ID
	identity := c.Members[holder].Node.Service().State().IdentityFingerprint(id)
	ctx, cancel := context.WithTimeout(context.Background(), AdmissionTimeout)
	defer cancel()
	gov := custosv1.NewGovernanceServiceClient(c.Conn(tb, holder, "officer-cli"))
	restore := c.Members[holder].Node.Service().State().RestoreInfo().GetRestoreId()
	ss := SignStatement(tb, c.ClusterID(), c.Officers, func(st *custosv1.Statement) {
		st.RestoreId = restore
		st.Operation = &custosv1.Statement_AdmitNode{AdmitNode: &custosv1.AdmitNode{Node: id,
			TransportKeyFingerprint: offer.TransportKeyFingerprint, IdentityKeyFingerprint: identity, Hash: hash}}
	}, 0, 1)
	if _, err := gov.Submit(ctx, ss); err != nil {
		tb.Fatalf("nodetest: officers admit %s: %v", id, err)
	}
	c.TrustTransportKey(tb, holder, offer)
	c.WaitAdmission(tb, holder, i, custosv1.AdmissionState_ADMISSION_STATE_ADMITTED)
}

// TrustTransportKey plays member holder's HSM security officer running
// `custos hsm trust` for a's transport key, in a child process.
func (c *Cluster) TrustTransportKey(tb testing.TB, holder int, a *custosv1.NodeAdmission) {
	tb.Helper()
	k, err := x509.ParsePKIXPublicKey(a.TransportPublicKey)
	if err != nil {
		tb.Fatal(err)
	}
	pub := k.(*rsa.PublicKey)
	cfg := c.Members[holder].Config
	pkcs11test.Run(tb, pkcs11test.Op{Module: cfg.PKCS11.Module, Label: cfg.PKCS11.TokenLabel, SOPIN: softhsm.TestSOPIN,
		Trust: true, ID: kms.TrustedKeyID(a.TransportKeyFingerprint), Modulus: pub.N.Bytes(), Exponent: pub.E})
}

// StartCustodians starts an n-node cluster whose genesis has the
// development profile (SoftHSM transports the domain key with
// RSA-OAEP-SHA1 only) and admits every node as a custodian, node 0 sending
// the domain key; mod, if not nil, changes each configuration first, as
// for StartClusterWith.
func StartCustodians(tb testing.TB, n int, mod func(i int, cfg *node.Config)) *Cluster {
	tb.Helper()
	c := StartClusterWith(tb, n, n, func(i int, cfg *node.Config) {
		if i == 0 {
			cfg.Profile = kms.ProfileDevelopment
		}
		if mod != nil {
			mod(i, cfg)
		}
	})
	for i := 1; i < n; i++ {
		c.Admit(tb, 0, i, custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA1)
	}
	return c
}
