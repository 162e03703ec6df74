package governance

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/internal/webauthntest"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

var updateVectors = flag.Bool("update-webauthn-vectors", false, "rewrite testdata/webauthn-vectors.json")

// authenticator wraps the software authenticator of internal/webauthntest.
type authenticator struct{ *webauthntest.Authenticator }

func newAuthenticator(t testing.TB) *authenticator { return &authenticator{webauthntest.New()} }

func (a *authenticator) credential(rpID string, uv bool, origins ...string) *custosv1.WebAuthnCredential {
	return a.Credential(rpID, uv, origins...)
}

type assertionParams = webauthntest.Params

func (a *authenticator) assert(t testing.TB, p assertionParams) *custosv1.WebAuthnAssertion {
	return a.AssertWith(p)
}

// sign signs statement bytes for officer with the next counter value.
func (a *authenticator) sign(t testing.TB, officer string, statement []byte, origin string) *custosv1.OfficerSignature {
	return &custosv1.OfficerSignature{Officer: officer, Webauthn: a.Assert("localhost", origin, SignedDigest(statement))}
}

// vector is one recorded assertion and what verifying it must give.
type vector struct {
	Name       string   `json:"name"`
	Credential []byte   `json:"credential_pkix"`
	CredID     []byte   `json:"credential_id"`
	RPID       string   `json:"rp_id"`
	Origins    []string `json:"origins,omitempty"`
	RequireUV  bool     `json:"require_user_verification"`
	Challenge  []byte   `json:"challenge"`
	AuthData   []byte   `json:"authenticator_data"`
	ClientData string   `json:"client_data_json"`
	Signature  []byte   `json:"signature"`
	// Want is "" for a valid assertion, else a phrase of the error.
	Want      string `json:"want_error,omitempty"`
	SignCount uint32 `json:"sign_count"`
}

const vectorsFile = "testdata/webauthn-vectors.json"

// recordVectors makes the vectors: each a validly signed assertion that
// differs from the valid one in the one property it tests.
func recordVectors(t *testing.T) []vector {
	a := newAuthenticator(t)
	other := newAuthenticator(t)
	statement := []byte("the statement's bytes stand in here; only their digest is signed")
	ch := SignedDigest(statement)
	const origin = "https://localhost:8443"
	base := assertionParams{RPID: "localhost", Origin: origin, Challenge: ch, Flags: webauthntest.FlagUP | webauthntest.FlagUV, Count: 7}
	mk := func(name, want string, by *authenticator, p assertionParams, uv bool) vector {
		as := by.assert(t, p)
		pub, err := x509.MarshalPKIXPublicKey(&a.Key.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		return vector{Name: name, Credential: pub, CredID: a.ID, RPID: "localhost", RequireUV: uv, Challenge: ch,
			AuthData: as.AuthenticatorData, ClientData: string(as.ClientDataJson), Signature: as.Signature, Want: want, SignCount: p.Count}
	}
	with := func(f func(*assertionParams)) assertionParams { p := base; f(&p); return p }
	return []vector{
		mk("valid", "", a, base, true),
		mk("valid without UV where not required", "", a, with(func(p *assertionParams) { p.Flags = webauthntest.FlagUP }), false),
		mk("wrong origin", "origin", a, with(func(p *assertionParams) { p.Origin = "https://evil.example:8443" }), true),
		mk("http origin", "origin", a, with(func(p *assertionParams) { p.Origin = "http://localhost:8443" }), true),
		mk("wrong rpId", "relying party", a, with(func(p *assertionParams) { p.RPID = "example.com" }), true),
		mk("UP not set", "user presence", a, with(func(p *assertionParams) { p.Flags = webauthntest.FlagUV }), true),
		mk("UV not set where required", "user verification", a, with(func(p *assertionParams) { p.Flags = webauthntest.FlagUP }), true),
		mk("wrong challenge", "challenge", a, with(func(p *assertionParams) { p.Challenge = SignedDigest([]byte("another statement")) }), true),
		mk("registration, not assertion", "webauthn.get", a, with(func(p *assertionParams) { p.Type = "webauthn.create" }), true),
		mk("cross-origin", "cross-origin", a, with(func(p *assertionParams) { p.CrossOrigin = true }), true),
		mk("other officer's credential signed", "does not verify", other, base, true),
		// Valid by itself; its counter is behind the valid vector's (7).
		mk("counter regression", "counter", a, with(func(p *assertionParams) { p.Count = 6 }), true),
	}
}

func loadVectors(t *testing.T) []vector {
	t.Helper()
	if *updateVectors {
		vs := recordVectors(t)
		b, err := json.MarshalIndent(vs, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vectorsFile, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) < 10 {
		t.Fatalf("%s holds %d vectors", vectorsFile, len(vs))
	}
	return vs
}

// TestWebAuthnVectors verifies recorded assertions: the valid ones verify
// and give their counter; each other fails on the check it was made for.
func TestWebAuthnVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			c := &custosv1.WebAuthnCredential{CredentialId: v.CredID, PublicKey: v.Credential, RpId: v.RPID,
				Origins: v.Origins, RequireUserVerification: v.RequireUV}
			if err := ValidateCredential(c); err != nil {
				t.Fatal(err)
			}
			a := &custosv1.WebAuthnAssertion{CredentialId: v.CredID, AuthenticatorData: v.AuthData,
				ClientDataJson: []byte(v.ClientData), Signature: v.Signature}
			n, err := VerifyAssertion(c, v.Challenge, a)
			if v.Want == "counter" {
				// The state machine keeps the newest counter (7, from the
				// valid vector) and refuses one that does not advance.
				if err != nil || CounterAdvances(7, n) || !CounterAdvances(n-1, n) {
					t.Fatalf("VerifyAssertion = %d, %v; the counter must not advance past 7", n, err)
				}
				return
			}
			if v.Want == "" {
				if err != nil || n != v.SignCount {
					t.Fatalf("VerifyAssertion = %d, %v; want %d, nil", n, err, v.SignCount)
				}
				return
			}
			if !errors.Is(err, ErrBadSignature) || !strings.Contains(err.Error(), v.Want) {
				t.Fatalf("VerifyAssertion error = %v; want ErrBadSignature saying %q", err, v.Want)
			}
		})
	}
}

// TestWebAuthnSignedStatements: an officer signs with a WebAuthn credential
// bound to it, and a quorum may mix PEM and WebAuthn signatures; another
// officer's credential, a tampered assertion or both forms in one
// signature are refused.
func TestWebAuthnSignedStatements(t *testing.T) {
	alicePEM, bobPEM := newAuthenticator(t).Key, newAuthenticator(t).Key
	aliceKey, bobKey := newAuthenticator(t), newAuthenticator(t)
	const origin = "https://localhost:9443"
	officers := []*custosv1.Officer{
		{Name: "alice", PublicKey: MarshalPublicKey(&alicePEM.PublicKey), Credentials: []*custosv1.WebAuthnCredential{aliceKey.credential("localhost", true)}},
		{Name: "bob", PublicKey: MarshalPublicKey(&bobPEM.PublicKey), Credentials: []*custosv1.WebAuthnCredential{bobKey.credential("localhost", true, origin)}},
	}
	set, err := NewOfficerSet(officers, 2)
	if err != nil {
		t.Fatal(err)
	}
	st, err := NewStatement("c1", time.Hour, "t")
	if err != nil {
		t.Fatal(err)
	}
	st.Operation = &custosv1.Statement_EnableKey{EnableKey: &custosv1.EnableKey{Key: "payroll"}}
	b, err := Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	bobPEMSig, err := Sign(bobPEM, "bob", b)
	if err != nil {
		t.Fatal(err)
	}
	aliceWA := aliceKey.sign(t, "alice", b, origin)
	_, uses, err := set.VerifyUses(&custosv1.SignedStatement{Statement: b, Signatures: []*custosv1.OfficerSignature{aliceWA, bobPEMSig}}, "c1", now)
	if err != nil {
		t.Fatalf("mixed quorum: %v", err)
	}
	if len(uses) != 2 || uses[0].Officer != "alice" || uses[0].SignCount != 1 || uses[1].CredentialID != nil {
		t.Fatalf("uses = %+v", uses)
	}
	bobWA := bobKey.sign(t, "bob", b, origin)
	if _, _, err := set.Verify(&custosv1.SignedStatement{Statement: b, Signatures: []*custosv1.OfficerSignature{aliceWA, bobWA}}, "c1", now); err != nil {
		t.Fatalf("two security keys: %v", err)
	}
	// Bob's credential presented as alice's signature.
	stolen := &custosv1.OfficerSignature{Officer: "alice", Webauthn: bobWA.Webauthn}
	if _, err := set.CheckSignature(b, stolen); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("other officer's credential: %v", err)
	}
	// Bob's credential allows only the listed origin.
	wrong := &custosv1.OfficerSignature{Officer: "bob", Webauthn: bobKey.assert(t, assertionParams{RPID: "localhost",
		Origin: "https://localhost:1234", Challenge: SignedDigest(b), Flags: webauthntest.FlagUP | webauthntest.FlagUV, Count: 9})}
	if _, err := set.CheckSignature(b, wrong); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("origin not listed: %v", err)
	}
	tampered := aliceKey.sign(t, "alice", b, origin)
	tampered.Webauthn.Signature[len(tampered.Webauthn.Signature)-1] ^= 1
	if _, err := set.CheckSignature(b, tampered); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tampered: %v", err)
	}
	both := aliceKey.sign(t, "alice", b, origin)
	both.Signature = []byte{1}
	if _, err := set.CheckSignature(b, both); !errors.Is(err, ErrMalformed) {
		t.Fatalf("both forms: %v", err)
	}
	// The same credential on two officers is refused.
	dup := []*custosv1.Officer{officers[0], {Name: "bob", PublicKey: officers[1].PublicKey, Credentials: officers[0].Credentials}}
	if _, err := NewOfficerSet(dup, 1); !errors.Is(err, ErrMalformed) {
		t.Fatalf("shared credential: %v", err)
	}
	// One public key under two credential ids (bound to two officers, or
	// twice to one) would count one touch twice: refused, as is a
	// credential whose key is an officer's key.
	twin := proto.Clone(officers[0].Credentials[0]).(*custosv1.WebAuthnCredential)
	twin.CredentialId = append([]byte("twin-"), twin.CredentialId...)
	for name, set := range map[string][]*custosv1.Officer{
		"two officers": {officers[0], {Name: "bob", PublicKey: officers[1].PublicKey, Credentials: []*custosv1.WebAuthnCredential{twin}}},
		"one officer":  {{Name: "alice", PublicKey: officers[0].PublicKey, Credentials: []*custosv1.WebAuthnCredential{officers[0].Credentials[0], twin}}, officers[1]},
		"officer key": {officers[0], {Name: "bob", PublicKey: officers[1].PublicKey, Credentials: []*custosv1.WebAuthnCredential{
			{CredentialId: []byte("bob-pem-credential-id"), PublicKey: officers[0].PublicKey, RpId: "localhost"}}}},
	} {
		if _, err := NewOfficerSet(set, 1); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "is also") {
			t.Fatalf("%s: key bound twice: %v", name, err)
		}
	}
	// Officer lists carry no credentials: they are bound one by one.
	st.Operation = &custosv1.Statement_SetOfficers{SetOfficers: &custosv1.SetOfficers{Officers: officers, Quorum: 1}}
	if _, err := Marshal(st); !errors.Is(err, ErrMalformed) {
		t.Fatalf("set_officers with credentials: %v", err)
	}
}

func TestCounterAdvances(t *testing.T) {
	for _, c := range []struct {
		last, got uint32
		ok        bool
	}{{0, 0, true}, {0, 1, true}, {5, 6, true}, {5, 5, false}, {5, 4, false}, {5, 0, false}} {
		if CounterAdvances(c.last, c.got) != c.ok {
			t.Errorf("CounterAdvances(%d, %d) != %t", c.last, c.got, c.ok)
		}
	}
}

func TestValidateCredential(t *testing.T) {
	a := newAuthenticator(t)
	good := a.credential("custos.example.gov", false, "https://console.custos.example.gov", "https://custos.example.gov:8443")
	if err := ValidateCredential(good); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(c *custosv1.WebAuthnCredential){
		"short id":         func(c *custosv1.WebAuthnCredential) { c.CredentialId = c.CredentialId[:8] },
		"bad key":          func(c *custosv1.WebAuthnCredential) { c.PublicKey = []byte{1, 2} },
		"upper-case rp id": func(c *custosv1.WebAuthnCredential) { c.RpId = "Custos.example.gov" },
		"rp id with port":  func(c *custosv1.WebAuthnCredential) { c.RpId = "custos.example.gov:443" },
		"origin elsewhere": func(c *custosv1.WebAuthnCredential) { c.Origins = []string{"https://example.gov"} },
		"http origin":      func(c *custosv1.WebAuthnCredential) { c.Origins = []string{"http://custos.example.gov"} },
		"origin with path": func(c *custosv1.WebAuthnCredential) { c.Origins = []string{"https://custos.example.gov/x"} },
		"suffix trick":     func(c *custosv1.WebAuthnCredential) { c.Origins = []string{"https://evilcustos.example.gov"} },
	} {
		c := a.credential("custos.example.gov", false)
		mut(c)
		if err := ValidateCredential(c); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// Below state machine version 3 a statement is verified as the release
// before it did: the credential operations and officers' credentials are
// unknown fields and a signature's assertion is not there, with that
// release's errors, so that replicas of both releases write the same
// records during a rolling upgrade (docs/upgrades.md).
func TestVerifyBeforeWebAuthn(t *testing.T) {
	pem := newAuthenticator(t).Key
	key := newAuthenticator(t)
	officers := []*custosv1.Officer{{Name: "alice", PublicKey: MarshalPublicKey(&pem.PublicKey), Credentials: []*custosv1.WebAuthnCredential{key.credential("localhost", false)}}}
	set, err := NewOfficerSet(officers, 1)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(op func(*custosv1.Statement)) []byte {
		st, err := NewStatement("c1", time.Hour, "t")
		if err != nil {
			t.Fatal(err)
		}
		op(st)
		b, err := Marshal(st)
		if err != nil {
			// set_officers with credentials does not Marshal: encode it as
			// a client of another release might.
			b, err = proto.MarshalOptions{Deterministic: true}.Marshal(st)
			if err != nil {
				t.Fatal(err)
			}
		}
		return b
	}
	now := time.Now()
	for _, c := range []struct {
		name string
		b    []byte
		want string
	}{
		{"add_officer_credential", mk(func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_AddOfficerCredential{AddOfficerCredential: &custosv1.AddOfficerCredential{
				Officer: "alice", Credential: newAuthenticator(t).credential("localhost", false)}}
		}), "unknown field in statement"},
		{"remove_officer_credential", mk(func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_RemoveOfficerCredential{RemoveOfficerCredential: &custosv1.RemoveOfficerCredential{
				Officer: "alice", CredentialId: key.ID}}
		}), "unknown field in statement"},
		{"set_officers with credentials", mk(func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_SetOfficers{SetOfficers: &custosv1.SetOfficers{Quorum: 1, Officers: []*custosv1.Officer{
				{Name: "x", PublicKey: MarshalPublicKey(&newAuthenticator(t).Key.PublicKey)}, officers[0]}}}
		}), "unknown field in statement.set_officers.officers[1]"},
	} {
		sig, err := Sign(pem, "alice", c.b)
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatal(err)
		}
		ss := &custosv1.SignedStatement{Statement: c.b, Signatures: []*custosv1.OfficerSignature{sig}}
		if _, _, err := set.VerifyUsesAt(ss, "c1", now, 2); !errors.Is(err, ErrMalformed) || !strings.HasSuffix(err.Error(), ": "+c.want) {
			t.Errorf("%s at version 2: %v, want ...: %s", c.name, err, c.want)
		}
	}
	// A WebAuthn signature at version 2 is an empty PEM signature.
	b := mk(func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_RevokeKey{RevokeKey: &custosv1.RevokeKey{Key: "k"}}
	})
	ss := &custosv1.SignedStatement{Statement: b, Signatures: []*custosv1.OfficerSignature{key.sign(t, "alice", b, "https://localhost:1")}}
	if _, _, err := set.VerifyUsesAt(ss, "c1", now, 2); !errors.Is(err, ErrBadSignature) || err.Error() != `governance: bad signature: officer "alice"` {
		t.Errorf("WebAuthn signature at version 2: %v", err)
	}
	if _, _, err := set.VerifyUsesAt(ss, "c1", now, 3); err != nil {
		t.Errorf("WebAuthn signature at version 3: %v", err)
	}
}
