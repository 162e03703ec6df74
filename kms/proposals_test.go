package kms_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/internal/webauthntest"
	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/audit"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

const consoleOrigin = "https://localhost:8443"

// registerKey binds a software security key to officer i through a
// proposal: the key's own proof stores it, two officers' PEM signatures
// apply it.
func registerKey(t *testing.T, e *env, i int) *webauthntest.Authenticator {
	t.Helper()
	a := webauthntest.New()
	b := e.statement(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_AddOfficerCredential{AddOfficerCredential: &custosv1.AddOfficerCredential{
			Officer: e.officers[i].name, Credential: a.Credential("localhost", true)}}
	})
	proof := a.Assert("localhost", consoleOrigin, governance.SignedDigest(b))
	res, err := e.svc.Propose(bg, kms.Principal{Name: "console"}, &custosv1.ProposeRequest{
		Statement: &custosv1.SignedStatement{Statement: b}, Proof: proof, Enrolment: enrolment(t, e, i)})
	if err != nil {
		t.Fatalf("proposing the credential: %v", err)
	}
	if p := res.GetProposal(); p == nil || len(p.Signers) != 0 || p.Needed != 2 || p.Proof == nil {
		t.Fatalf("proposal = %v", res)
	}
	for n, j := range []int{0, 1} {
		res, err = e.svc.Propose(bg, kms.Principal{Name: "officer"}, &custosv1.ProposeRequest{Statement: e.signed(b, j)})
		if err != nil {
			t.Fatalf("signature %d: %v", n+1, err)
		}
	}
	if res.GetApplied() == nil {
		t.Fatalf("two signatures did not apply it: %v", res)
	}
	return a
}

// enrolment is officer i's enrolment code, valid for an hour.
func enrolment(t *testing.T, e *env, i int) []byte {
	t.Helper()
	code, err := governance.MakeEnrolment(e.officers[i].key, e.state.ClusterID(), e.officers[i].name, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// webauthnSigned is statement b signed by officer i's security key.
func webauthnSigned(e *env, i int, a *webauthntest.Authenticator, b []byte) *custosv1.OfficerSignature {
	return &custosv1.OfficerSignature{Officer: e.officers[i].name, Webauthn: a.Assert("localhost", consoleOrigin, governance.SignedDigest(b))}
}

// Officers bind security keys through proposals; a quorum mixes a security
// key's and a PEM key's signatures, collected one at a time; each signature
// is checked as it comes (another officer's key, a counter that does not
// advance), and the record of the applied statement carries the assertions,
// which audit.Verify checks offline (docs/console.md).
func TestProposalsWithSecurityKeys(t *testing.T) {
	e := newEnv(t)
	if err := e.svc.EnsureCheckpointKey(bg); err != nil {
		t.Fatal(err)
	}
	createKey(t, e, "k")
	alice := registerKey(t, e, 0)
	bob := registerKey(t, e, 1)
	if g := e.state.Governance(); len(g.Officers[0].Credentials) != 1 || len(g.Officers[1].Credentials) != 1 {
		t.Fatalf("credentials not bound: %v", g.Officers)
	}

	// One officer's security key revokes at once (one signature needed).
	rb := e.statement(revokeKey("k"))
	res, err := e.svc.Propose(bg, kms.Principal{Name: "console:alice"}, &custosv1.ProposeRequest{
		Statement: &custosv1.SignedStatement{Statement: rb, Signatures: []*custosv1.OfficerSignature{webauthnSigned(e, 0, alice, rb)}}})
	if err != nil || res.GetApplied() == nil {
		t.Fatalf("revoke by security key: %v, %v", res, err)
	}

	// Re-enabling needs two: alice's key, then bob's PEM key.
	eb := e.statement(enableKey("k"))
	res, err = e.svc.Propose(bg, kms.Principal{Name: "console:alice"}, &custosv1.ProposeRequest{
		Statement: &custosv1.SignedStatement{Statement: eb, Signatures: []*custosv1.OfficerSignature{webauthnSigned(e, 0, alice, eb)}}})
	if err != nil || res.GetProposal() == nil || res.GetProposal().Signers[0] != e.officers[0].name {
		t.Fatalf("first signature: %v, %v", res, err)
	}
	// Bob's key presented as carol's signature, and alice's key replayed
	// with an old counter: refused, the proposal keeps one signature.
	stolen := &custosv1.OfficerSignature{Officer: e.officers[2].name, Webauthn: bob.Assert("localhost", consoleOrigin, governance.SignedDigest(eb))}
	if _, err := e.svc.Propose(bg, app, &custosv1.ProposeRequest{Statement: &custosv1.SignedStatement{Statement: eb,
		Signatures: []*custosv1.OfficerSignature{stolen}}}); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("another officer's key: %v", err)
	}
	if ps := e.svc.State().Proposals(e.svc.State().Clock()); len(ps) != 1 || len(ps[0].Signatures) != 1 {
		t.Fatalf("proposals after refused signatures: %v", ps)
	}
	res, err = e.svc.Propose(bg, app, &custosv1.ProposeRequest{Statement: e.signed(eb, 1)})
	if err != nil || res.GetApplied() == nil {
		t.Fatalf("second signature: %v, %v", res, err)
	}
	if k, _ := e.state.Key("k"); k.Revoked || !k.Enabled {
		t.Fatalf("key not re-enabled: %v", k)
	}
	rec := lastRecord(t, e)
	if sigs := rec.GetSignedStatement().GetSignatures(); len(sigs) != 2 || sigs[0].GetWebauthn() == nil || len(sigs[1].GetSignature()) == 0 {
		t.Fatalf("the record does not carry both signatures: %v", sigs)
	}

	// A counter that does not advance: the same key, its counter set back.
	alice.SetCount(0)
	db := e.statement(revokeKey("k"))
	if _, err := e.svc.Propose(bg, app, &custosv1.ProposeRequest{Statement: &custosv1.SignedStatement{Statement: db,
		Signatures: []*custosv1.OfficerSignature{webauthnSigned(e, 0, alice, db)}}}); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("counter regression: %v", err)
	}
	// Submit checks counters the same way.
	if _, err := e.svc.Submit(bg, app, &custosv1.SignedStatement{Statement: db,
		Signatures: []*custosv1.OfficerSignature{webauthnSigned(e, 0, alice, db)}}); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("counter regression through Submit: %v", err)
	}
	alice.SetCount(1000)

	// The officers remove bob's key (one officer) after it signed; his
	// next signature counts for nothing, and the counter it reached stays.
	bb := e.statement(revokeKey("k"))
	if _, err := e.svc.Propose(bg, app, &custosv1.ProposeRequest{Statement: &custosv1.SignedStatement{Statement: bb,
		Signatures: []*custosv1.OfficerSignature{webauthnSigned(e, 1, bob, bb)}}}); err != nil {
		t.Fatal(err)
	}
	wb := e.statement(enableKey("k"))
	if res, err := e.svc.Propose(bg, app, &custosv1.ProposeRequest{Statement: &custosv1.SignedStatement{Statement: wb,
		Signatures: []*custosv1.OfficerSignature{webauthnSigned(e, 1, bob, wb)}}}); err != nil || res.GetProposal() == nil {
		t.Fatalf("bob's key proposes: %v, %v", res, err)
	}
	if _, err := e.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_RemoveOfficerCredential{RemoveOfficerCredential: &custosv1.RemoveOfficerCredential{
			Officer: e.officers[1].name, CredentialId: bob.ID}}
	}, 0); err != nil {
		t.Fatal(err)
	}
	if ps := e.svc.State().Proposals(time.Now()); len(ps) != 0 {
		t.Fatalf("a proposal only bob's removed key signed is still waiting: %v", ps)
	}
	if e.svc.State().CredentialCounter(bob.ID) == 0 {
		t.Fatal("a removed key's counter was forgotten: bound again, its old assertions would count")
	}
	xb := e.statement(revokeKey("k"))
	if _, err := e.svc.Propose(bg, app, &custosv1.ProposeRequest{Statement: &custosv1.SignedStatement{Statement: xb,
		Signatures: []*custosv1.OfficerSignature{webauthnSigned(e, 1, bob, xb)}}}); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("removed key: %v", err)
	}

	// Proposals and counters survive a restart (snapshot and log replay).
	pb := e.statement(enableKey("k"))
	if _, err := e.svc.Propose(bg, app, &custosv1.ProposeRequest{Statement: &custosv1.SignedStatement{Statement: pb,
		Signatures: []*custosv1.OfficerSignature{webauthnSigned(e, 0, alice, pb)}}}); err != nil {
		t.Fatal(err)
	}
	e.restart()
	if ps := e.svc.State().Proposals(e.svc.State().Clock()); len(ps) != 1 || ps[0].Id != kms.ProposalID(pb) {
		t.Fatalf("proposals after restart: %v", ps)
	}

	// The whole export verifies offline: the auditor follows the
	// credentials from the records and checks every assertion.
	keys := publishedKeys(t, e)
	if rep, err := audit.Verify(bytes.NewReader(exportOf(t, e)), keys); err != nil {
		t.Fatalf("audit verify: %v (%+v)", err, rep)
	}
}

// A proposal needs a signature by an officer, or (to add a credential) the
// credential's own proof, by that credential, for an officer with no other
// such proposal, forgotten after an hour unless signed. Bounds refuse
// newcomers and never evict: one officer's proposals do not crowd out
// another's, a statement that arrives complete applies without a place, a
// change of officers drops what only removed officers signed, and a
// statement decided through Submit is no longer proposed.
func TestProposalBounds(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	b := e.statement(enableKey("k"))
	if _, err := e.svc.Propose(bg, app, &custosv1.ProposeRequest{Statement: &custosv1.SignedStatement{Statement: b}}); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("unsigned proposal: %v", err)
	}
	// A day's statements, as the console makes them.
	day := func(op func(*custosv1.Statement)) []byte {
		st, err := governance.NewStatement(e.state.ClusterID(), 24*time.Hour, "test")
		if err != nil {
			t.Fatal(err)
		}
		op(st)
		b, err := governance.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	proofOnlyWith := func(officer string, a, prover *webauthntest.Authenticator, code []byte) (string, error) {
		sb := day(func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_AddOfficerCredential{AddOfficerCredential: &custosv1.AddOfficerCredential{
				Officer: officer, Credential: a.Credential("localhost", false)}}
		})
		_, err := e.svc.Propose(bg, app, &custosv1.ProposeRequest{Statement: &custosv1.SignedStatement{Statement: sb},
			Proof: prover.Assert("localhost", consoleOrigin, governance.SignedDigest(sb)), Enrolment: code})
		return kms.ProposalID(sb), err
	}
	codes := map[string][]byte{}
	for i, o := range e.officers {
		codes[o.name] = enrolment(t, e, i)
	}
	proofOnly := func(officer string, a, prover *webauthntest.Authenticator) (string, error) {
		return proofOnlyWith(officer, a, prover, codes[officer])
	}
	a, other := webauthntest.New(), webauthntest.New()
	if _, err := proofOnly(e.officers[0].name, a, other); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("proof by another key: %v", err)
	}
	if _, err := proofOnly("mallory", a, a); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("a key for no officer: %v", err)
	}
	// Without the officer's enrolment code (none, another officer's, an
	// expired one), no one proposes a key for them.
	expired, err := governance.MakeEnrolment(e.officers[0].key, e.state.ClusterID(), e.officers[0].name, time.Now().Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	for name, code := range map[string][]byte{"none": nil, "another officer's": codes[e.officers[1].name], "expired": expired} {
		if _, err := proofOnlyWith(e.officers[0].name, a, a, code); !errors.Is(err, kms.ErrPermissionDenied) {
			t.Fatalf("enrolment code %s: %v", name, err)
		}
	}
	first, err := proofOnly(e.officers[0].name, a, a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := proofOnly(e.officers[0].name, other, other); !errors.Is(err, kms.ErrFailedPrecondition) {
		t.Fatalf("a second key waiting for the same officer: %v", err)
	}
	third, err := proofOnly(e.officers[2].name, other, other)
	if err != nil {
		t.Fatal(err)
	}

	// Officer 1 fills its places; the next is refused, officer 2 still
	// proposes, and officer 1's one-officer statement applies at once.
	var mine []string
	for range 16 {
		sb := e.statement(enableKey("k"))
		if _, err := e.svc.Propose(bg, app, &custosv1.ProposeRequest{Statement: e.signed(sb, 0)}); err != nil {
			t.Fatal(err)
		}
		mine = append(mine, kms.ProposalID(sb))
	}
	if _, err := e.svc.Propose(bg, app, &custosv1.ProposeRequest{Statement: e.signed(e.statement(enableKey("k")), 0)}); !errors.Is(err, kms.ErrResourceExhausted) {
		t.Fatalf("one officer past its bound: %v", err)
	}
	// Signing a proof-only proposal first makes it the signer's: refused
	// past the bound too (else each signed registration would free a
	// proof-only place for the next).
	firstBytes := proposalBytes(t, e, first)
	if _, err := e.svc.Propose(bg, app, &custosv1.ProposeRequest{Statement: e.signed(firstBytes, 0)}); !errors.Is(err, kms.ErrResourceExhausted) {
		t.Fatalf("first signature on a proof-only proposal past the bound: %v", err)
	}
	// A refused proposal never enters the log: not a signature too large
	// for any officer, not one that does not verify.
	before := e.node.Stats().LastLogIndex
	big := e.signed(e.statement(enableKey("k")), 1)
	big.Signatures[0].Signature = make([]byte, 900<<10)
	if _, err := e.svc.Propose(bg, app, &custosv1.ProposeRequest{Statement: big}); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("900 KiB signature: %v", err)
	}
	if _, err := e.svc.Submit(bg, app, big); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("900 KiB signature through Submit: %v", err)
	}
	bad := e.signed(e.statement(enableKey("k")), 1)
	bad.Signatures[0].Signature[10] ^= 1
	if _, err := e.svc.Propose(bg, app, &custosv1.ProposeRequest{Statement: bad}); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("a signature that does not verify: %v", err)
	}
	if _, err := e.svc.Propose(bg, app, &custosv1.ProposeRequest{Statement: e.signed(proposalBytes(t, e, mine[0]), 0)}); !errors.Is(err, kms.ErrAlreadyExists) {
		t.Fatalf("the same signature again: %v", err)
	}
	if after := e.node.Stats().LastLogIndex; after != before {
		t.Fatalf("refused proposals entered the log: index %d -> %d", before, after)
	}
	theirs := e.statement(enableKey("k"))
	if _, err := e.svc.Propose(bg, app, &custosv1.ProposeRequest{Statement: e.signed(theirs, 1)}); err != nil {
		t.Fatalf("another officer's proposal: %v", err)
	}
	if res, err := e.svc.Propose(bg, app, &custosv1.ProposeRequest{Statement: e.signed(e.statement(revokeKey("k")), 0)}); err != nil || res.GetApplied() == nil {
		t.Fatalf("a complete statement: %v, %v", res, err)
	}
	if k, _ := e.state.Key("k"); !k.Revoked {
		t.Fatal("not revoked")
	}

	// Another officer copies the nonce of a waiting proposal into a
	// statement of its own: that spends only its own statement.
	var stolen custosv1.Statement
	if err := proto.Unmarshal(theirs, &stolen); err != nil {
		t.Fatal(err)
	}
	grief := e.statement(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_RevokeGrant{RevokeGrant: &custosv1.RevokeGrant{GrantId: "g-none"}}
	})
	var gst custosv1.Statement
	if err := proto.Unmarshal(grief, &gst); err != nil {
		t.Fatal(err)
	}
	gst.Nonce = stolen.Nonce
	grief, err = governance.Marshal(&gst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Submit(bg, app, e.signed(grief, 2)); err == nil {
		t.Fatal("revoking a grant that does not exist applied")
	}

	// Submitted with both signatures, a proposed statement is decided
	// and no longer proposed.
	if _, err := e.svc.Submit(bg, app, e.signed(theirs, 1, 2)); err != nil {
		t.Fatal(err)
	}
	ids := func() map[string]bool {
		m := map[string]bool{}
		for _, p := range e.svc.State().Proposals(time.Now()) {
			m[p.Id] = true
		}
		return m
	}
	if got := ids(); got[kms.ProposalID(theirs)] || len(got) != 18 || !got[first] || !got[third] {
		t.Fatalf("after Submit: %d proposals, decided one listed: %v", len(got), got[kms.ProposalID(theirs)])
	}

	// Officer 1 leaves: what only it signed goes, with the key waiting
	// for it; officer 3's waiting key stays.
	if _, err := e.govern(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_SetOfficers{SetOfficers: &custosv1.SetOfficers{Quorum: 2, Officers: []*custosv1.Officer{
			{Name: e.officers[1].name, PublicKey: governance.MarshalPublicKey(&e.officers[1].key.PublicKey)},
			{Name: e.officers[2].name, PublicKey: governance.MarshalPublicKey(&e.officers[2].key.PublicKey)}}}}
	}, 0, 1); err != nil {
		t.Fatal(err)
	}
	if got := ids(); len(got) != 1 || !got[third] {
		t.Fatalf("after officer 1 left: %v (officer 1's: %v)", got, mine[:1])
	}

	// An hour later, a key no officer signed for no longer counts, even
	// before anything prunes it: its officer registers another at once.
	later, err := kms.NewService(kms.Config{NodeID: "node-1", HSM: e.hsm, Log: e.log, State: e.state, Logger: quiet,
		Now: func() time.Time { return time.Now().Add(61 * time.Minute) }})
	if err != nil {
		t.Fatal(err)
	}
	later2, err := governance.MakeEnrolment(e.officers[2].key, e.state.ClusterID(), e.officers[2].name, time.Now().Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	again := day(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_AddOfficerCredential{AddOfficerCredential: &custosv1.AddOfficerCredential{
			Officer: e.officers[2].name, Credential: a.Credential("localhost", false)}}
	})
	if _, err := later.Propose(bg, app, &custosv1.ProposeRequest{Statement: &custosv1.SignedStatement{Statement: again},
		Proof: a.Assert("localhost", consoleOrigin, governance.SignedDigest(again)), Enrolment: later2}); err != nil {
		t.Fatalf("registering again after the hour: %v", err)
	}
	if got := later.State().Proposals(time.Now().Add(61 * time.Minute)); len(got) != 1 || got[0].Id != kms.ProposalID(again) {
		t.Fatalf("a key no officer signed for outlived its hour: %v", got)
	}
	// Bound by the two officers, it leaves its officer's place free; the
	// same enrolment code does not serve a second time.
	if res, err := later.Propose(bg, app, &custosv1.ProposeRequest{Statement: e.signed(again, 1, 2)}); err != nil || res.GetApplied() == nil {
		t.Fatalf("binding the key: %v, %v", res, err)
	}
	if _, err := proofOnlyWith(e.officers[2].name, other, other, later2); !errors.Is(err, kms.ErrPermissionDenied) || !strings.Contains(err.Error(), "used already") {
		t.Fatalf("an enrolment code used twice: %v", err)
	}
}

// proposalBytes returns the statement of the waiting proposal id.
func proposalBytes(t *testing.T, e *env, id string) []byte {
	t.Helper()
	for _, p := range e.svc.State().Proposals(time.Now()) {
		if p.Id == id {
			return p.Statement
		}
	}
	t.Fatalf("no proposal %s", id)
	return nil
}
