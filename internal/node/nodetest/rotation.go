package nodetest

import (
	"context"
	"testing"
	"time"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// WaitRotation waits until member `at` sees a running domain-key rotation
// whose entry for member i is in state want (any rotation with a
// generator when i < 0), and returns the rotation.
func (c *Cluster) WaitRotation(tb testing.TB, at, i int, want custosv1.AdmissionState) *custosv1.DomainKeyRotation {
	tb.Helper()
	st := c.Members[at].Node.Service().State()
	deadline := time.Now().Add(AdmissionTimeout)
	for {
		_, r := st.DomainKeyEpoch(true)
		if r != nil && r.Generator != "" {
			if i < 0 {
				return r
			}
			for _, a := range r.Nodes {
				if a.Node == c.Members[i].Config.ID && a.State == want {
					return r
				}
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("nodetest: rotation as %s sees it: %v, want %s's entry %v", c.Members[at].Config.ID, r, c.Members[max(i, 0)].Config.ID, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Member returns the index of the member with Raft id id (-1 if none).
func (c *Cluster) Member(id string) int {
	for i, m := range c.Members {
		if m.Config.ID == id {
			return i
		}
	}
	return -1
}

// ApproveRotation plays the customer in a running domain-key rotation for
// member i: the officers' quorum approves its offered rotation transport
// key (AdmitNode with domain_key_rotation), and the HSM security officer of
// the rotation's generator trusts it (in a child process).
func (c *Cluster) ApproveRotation(tb testing.TB, i int, hash custosv1.KeyTransportHash) {
	tb.Helper()
	r := c.WaitRotation(tb, 0, i, custosv1.AdmissionState_ADMISSION_STATE_OFFERED)
	id := c.Members[i].Config.ID
	var offer *custosv1.NodeAdmission
	for _, a := range r.Nodes {
		if a.Node == id {
			offer = a
		}
	}
	identity := c.Members[0].Node.Service().State().IdentityFingerprint(id)
	ctx, cancel := context.WithTimeout(context.Background(), AdmissionTimeout)
	defer cancel()
	gov := custosv1.NewGovernanceServiceClient(c.Conn(tb, 0, "officer-cli"))
	restore := c.Members[0].Node.Service().State().RestoreInfo().GetRestoreId()
	ss := SignStatement(tb, c.ClusterID(), c.Officers, func(st *custosv1.Statement) {
		st.RestoreId = restore
		st.Operation = &custosv1.Statement_AdmitNode{AdmitNode: &custosv1.AdmitNode{Node: id,
			TransportKeyFingerprint: offer.TransportKeyFingerprint, IdentityKeyFingerprint: identity, Hash: hash, DomainKeyRotation: true}}
	}, 0, 1)
	if _, err := gov.Submit(ctx, ss); err != nil {
		tb.Fatalf("nodetest: officers approve %s's rotation transport key: %v", id, err)
	}
	c.TrustTransportKey(tb, c.Member(r.Generator), offer)
}
