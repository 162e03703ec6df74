package main

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/internal/webauthntest"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// TestOfficerProposals: a statement one officer signed waits on the
// cluster; officer proposals lists it from its bytes with who signed and
// how many it needs; officer sign-proposal adds the second signature,
// which applies it; a proposal id that is not there is an error.
func TestOfficerProposals(t *testing.T) {
	clearEnv(t)
	h := nodetest.Start(t) // three officers, quorum 2
	usePrincipal(t, h, "app")
	runCLI(t, "", "key", "create", "payroll").want(t, 0)
	runCLI(t, "", "officer", "proposals").want(t, 0, "no proposals are waiting")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	gc := custosv1.NewGovernanceServiceClient(h.Conn(t, "app"))
	res, err := gc.Propose(ctx, &custosv1.ProposeRequest{Statement: h.Sign(t, func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_SetKeyMinVersion{SetKeyMinVersion: &custosv1.SetKeyMinVersion{Key: "payroll", MinDecryptionVersion: 1}}
	}, 0)})
	if err != nil || res.GetProposal() == nil {
		t.Fatalf("Propose: %v, %v", res, err)
	}
	id := res.GetProposal().GetId()
	runCLI(t, "", "officer", "proposals").want(t, 0, id, `set_key_min_version key="payroll"`, "signed by officer-1 (1 of 2)", "proposed by app")
	runCLI(t, "", args("officer", "sign-proposal", asOfficer(h, 1), id)...).
		want(t, 0, `statement: set_key_min_version key="payroll"`, "signed by officer-2; applied: key payroll minimum decryption version set from 1 to 1", "signers officer-1, officer-2")
	runCLI(t, "", "officer", "proposals").want(t, 0, "no proposals are waiting")
	runCLI(t, "", args("officer", "sign-proposal", asOfficer(h, 1), id)...).want(t, 1, "no proposal "+id+" is waiting")

	// A security key proposed with its own proof, bound by two officers'
	// sign-proposal; officer list shows it with its key's fingerprint.
	key := webauthntest.New()
	cred := key.Credential("localhost", false)
	ss := h.Sign(t, func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_AddOfficerCredential{AddOfficerCredential: &custosv1.AddOfficerCredential{
			Officer: h.Officers[0].Name, Credential: cred}}
	})
	proof := key.Assert("localhost", "https://localhost:8443", governance.SignedDigest(ss.Statement))
	if _, err := gc.Propose(ctx, &custosv1.ProposeRequest{Statement: ss, Proof: proof}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("Propose with a proof and no enrolment code: %v", err)
	}
	// The officer's enrolment code, as officer enrol prints it.
	enrol := runCLI(t, "", args("officer", "enrol", asOfficer(h, 0), "--valid", "10m")...)
	enrol.want(t, 0, "")
	code, err := governance.DecodeEnrolment(enrol.stdout)
	if err != nil {
		t.Fatalf("officer enrol printed %q: %v", enrol.stdout, err)
	}
	runCLI(t, "", args("officer", "enrol", asOfficer(h, 0), "--valid", "48h")...).want(t, 1, "at most 24h")
	res, err = gc.Propose(ctx, &custosv1.ProposeRequest{Statement: ss, Proof: proof, Enrolment: code})
	if err != nil || res.GetProposal() == nil {
		t.Fatalf("Propose with proof: %v, %v", res, err)
	}
	id = res.GetProposal().GetId()
	runCLI(t, "", "officer", "proposals").want(t, 0, id, "add_officer_credential", "proposed by app")
	runCLI(t, "", args("officer", "sign-proposal", asOfficer(h, 0), id)...).want(t, 0, "1 of 2")
	runCLI(t, "", args("officer", "sign-proposal", asOfficer(h, 2), id)...).want(t, 0, "applied")
	pub, err := governance.ParsePublicKey(cred.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	runCLI(t, "", "officer", "list").want(t, 0, "    security key "+governance.CredentialIDString(cred.CredentialId)+
		" fingerprint="+governance.Fingerprint(pub)+" rp_id=localhost")
}
