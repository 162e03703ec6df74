package governance_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

func TestNeed(t *testing.T) {
	for _, tc := range operations(t) {
		if got := governance.Need(statement(tc.op)); got != tc.need {
			t.Errorf("%s: Need = %s, want %s", tc.name, got, tc.need)
		}
	}
	if got := governance.Need(statement(nil)); got != governance.Quorum {
		t.Errorf("no operation: Need = %s, want quorum", got)
	}
}

// TestQuorum signs every operation with one, two and three of three
// officers under quorum 2.
func TestQuorum(t *testing.T) {
	offs := newOfficers(t, "alice", "bob", "carol")
	set := officerSet(t, offs, 2)
	for _, tc := range operations(t) {
		t.Run(tc.name, func(t *testing.T) {
			b := mustMarshal(t, statement(tc.op))
			for n := 1; n <= 3; n++ {
				st, signers, err := set.Verify(signAll(t, b, offs[:n]...), testCluster, testNow)
				if n == 1 && tc.need == governance.Quorum {
					if !errors.Is(err, governance.ErrInsufficientSignatures) {
						t.Fatalf("1 signature: err = %v, want ErrInsufficientSignatures", err)
					}
					if !strings.Contains(err.Error(), tc.name) {
						t.Errorf("error %q does not name the operation", err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%d signatures: %v", n, err)
				}
				if governance.OperationName(st) != tc.name {
					t.Errorf("operation = %s", governance.OperationName(st))
				}
				want := []string{"alice", "bob", "carol"}[:n]
				if !slices.Equal(signers, want) {
					t.Errorf("signers = %v, want %v", signers, want)
				}
			}
			// Signature order does not matter; signers come back sorted.
			_, signers, err := set.Verify(signAll(t, b, offs[2], offs[0]), testCluster, testNow)
			if err != nil || !slices.Equal(signers, []string{"alice", "carol"}) {
				t.Errorf("carol+alice: signers %v, err %v", signers, err)
			}
		})
	}
}

func TestQuorumOfOne(t *testing.T) {
	offs := newOfficers(t, "alice", "bob")
	set := officerSet(t, offs, 1)
	b := mustMarshal(t, statement(&custosv1.EnableKey{Key: "k"}))
	if _, _, err := set.Verify(signAll(t, b, offs[1]), testCluster, testNow); err != nil {
		t.Fatal(err)
	}
	if _, _, err := set.Verify(signAll(t, b), testCluster, testNow); !errors.Is(err, governance.ErrInsufficientSignatures) {
		t.Fatalf("no signatures: %v", err)
	}
	// Tightening with no signature at all is refused too.
	r := mustMarshal(t, statement(&custosv1.RevokeKey{Key: "k"}))
	if _, _, err := set.Verify(signAll(t, r), testCluster, testNow); !errors.Is(err, governance.ErrInsufficientSignatures) {
		t.Fatalf("no signatures on revoke: %v", err)
	}
}

func TestVerifyRefusals(t *testing.T) {
	offs := newOfficers(t, "alice", "bob", "carol")
	set := officerSet(t, offs, 2)
	mallory := newOfficers(t, "mallory")[0]
	enable := mustMarshal(t, statement(&custosv1.EnableKey{Key: "payroll"}))
	revoke := mustMarshal(t, statement(&custosv1.RevokeKey{Key: "payroll"}))
	other := statement(&custosv1.EnableKey{Key: "payroll"})
	other.Nonce[0] ^= 1
	otherBytes := mustMarshal(t, other)

	check := func(name string, ss *custosv1.SignedStatement, now time.Time, want error, mention string) {
		t.Helper()
		st, signers, err := set.Verify(ss, testCluster, now)
		if !errors.Is(err, want) {
			t.Errorf("%s: err = %v, want %v", name, err, want)
			return
		}
		if st != nil || signers != nil {
			t.Errorf("%s: got a statement or signers with an error", name)
		}
		if mention != "" && !strings.Contains(err.Error(), mention) {
			t.Errorf("%s: error %q does not mention %q", name, err, mention)
		}
	}

	flipped := signAll(t, enable, offs[0], offs[1])
	flipped.Signatures[1].Signature[len(flipped.Signatures[1].Signature)-1] ^= 0x01
	check("flipped bit", flipped, testNow, governance.ErrBadSignature, "bob")

	// A one-signature statement with a bad signature is refused, not
	// counted as zero.
	flippedRevoke := signAll(t, revoke, offs[0], offs[1])
	flippedRevoke.Signatures[0].Signature[10] ^= 0x80
	check("flipped bit on revoke", flippedRevoke, testNow, governance.ErrBadSignature, "alice")

	// Bob's signature is over other bytes.
	mixed := signAll(t, enable, offs[0])
	mixed.Signatures = append(mixed.Signatures, signAll(t, otherBytes, offs[1]).Signatures...)
	check("signature over other bytes", mixed, testNow, governance.ErrBadSignature, "bob")

	// The statement bytes changed after signing.
	swapped := signAll(t, enable, offs[0], offs[1])
	swapped.Statement = otherBytes
	check("statement swapped", swapped, testNow, governance.ErrBadSignature, "")

	// Bob's signature presented under Carol's name.
	renamed := signAll(t, enable, offs[0], offs[1])
	renamed.Signatures[1].Officer = "carol"
	check("signature under another name", renamed, testNow, governance.ErrBadSignature, "carol")

	// Empty and garbage signature bytes.
	empty := signAll(t, revoke, offs[0])
	empty.Signatures[0].Signature = nil
	check("empty signature", empty, testNow, governance.ErrBadSignature, "alice")

	unknown := signAll(t, enable, offs[0], mallory)
	check("unknown officer", unknown, testNow, governance.ErrUnknownOfficer, "mallory")
	check("unknown officer alone on revoke", signAll(t, revoke, mallory), testNow, governance.ErrUnknownOfficer, "mallory")

	dup := signAll(t, enable, offs[0], offs[0])
	check("same officer twice", dup, testNow, governance.ErrDuplicateSigner, "alice")
	// Two different valid signatures by the same officer (ECDSA is
	// randomised) are still one officer.
	dup2 := signAll(t, enable, offs[1])
	dup2.Signatures = append(dup2.Signatures, signAll(t, enable, offs[1]).Signatures...)
	if string(dup2.Signatures[0].Signature) == string(dup2.Signatures[1].Signature) {
		t.Fatal("expected two distinct signatures")
	}
	check("same officer, two signatures", dup2, testNow, governance.ErrDuplicateSigner, "bob")

	ok := signAll(t, enable, offs[0], offs[1])
	notAfter := time.Unix(statement(nil).NotAfterUnix, 0)
	check("expired", ok, notAfter.Add(time.Second), governance.ErrExpired, "")
	if _, _, err := set.Verify(ok, testCluster, notAfter); err != nil {
		t.Errorf("at not_after exactly: %v", err)
	}
	// Too far ahead: refused, but the signed statement comes back with the
	// error so that its nonce can be spent; with a bad signature it does not.
	if st, signers, err := set.Verify(ok, testCluster, notAfter.Add(-governance.MaxLifetime-time.Second)); !errors.Is(err, governance.ErrTooFarAhead) || st == nil || len(signers) != 2 {
		t.Errorf("too far ahead: statement %v, signers %v, error %v; want the statement, 2 signers and ErrTooFarAhead", st != nil, signers, err)
	}
	check("too far ahead, flipped bit", flipped, notAfter.Add(-governance.MaxLifetime-time.Second), governance.ErrBadSignature, "bob")
	short := signAll(t, enable, offs[0])
	check("too far ahead, short of signatures", short, notAfter.Add(-governance.MaxLifetime-time.Second), governance.ErrInsufficientSignatures, "")
	if _, _, err := set.Verify(ok, testCluster, notAfter.Add(-governance.MaxLifetime)); err != nil {
		t.Errorf("exactly MaxLifetime ahead: %v", err)
	}

	if _, _, err := set.Verify(ok, "cluster-other", testNow); !errors.Is(err, governance.ErrWrongCluster) {
		t.Errorf("other cluster: %v", err)
	}

	garbage := &custosv1.SignedStatement{Statement: []byte("not a statement")}
	check("garbage statement", garbage, testNow, governance.ErrMalformed, "")
	check("nil signed statement", nil, testNow, governance.ErrMalformed, "")
	nilSig := signAll(t, revoke, offs[0])
	nilSig.Signatures = append(nilSig.Signatures, nil)
	check("nil signature entry", nilSig, testNow, governance.ErrMalformed, "")
}

// TestVerifyDeterministic: the same inputs give the same outputs, whatever
// the wall clock.
func TestVerifyDeterministic(t *testing.T) {
	offs := newOfficers(t, "alice", "bob", "carol")
	set := officerSet(t, offs, 2)
	b := mustMarshal(t, statement(&custosv1.EnableKey{Key: "payroll"}))
	ss := signAll(t, b, offs[1], offs[0])
	var first []string
	for i := 0; i < 5; i++ {
		_, signers, err := set.Verify(ss, testCluster, testNow)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = signers
		} else if !slices.Equal(first, signers) {
			t.Fatalf("run %d: %v != %v", i, signers, first)
		}
	}
}

func TestSignRefusals(t *testing.T) {
	offs := newOfficers(t, "alice")
	b := mustMarshal(t, statement(&custosv1.RevokeKey{Key: "k"}))
	if _, err := governance.Sign(offs[0].key, "alice", []byte("garbage")); !errors.Is(err, governance.ErrMalformed) {
		t.Errorf("garbage bytes: %v", err)
	}
	if _, err := governance.Sign(offs[0].key, "", b); !errors.Is(err, governance.ErrMalformed) {
		t.Errorf("empty officer name: %v", err)
	}
	if _, err := governance.Sign(nil, "alice", b); !errors.Is(err, governance.ErrBadKey) {
		t.Errorf("nil signer: %v", err)
	}
	p384 := p384Key(t)
	if _, err := governance.Sign(p384, "alice", b); !errors.Is(err, governance.ErrBadKey) {
		t.Errorf("P-384 signer: %v", err)
	}
	ed := ed25519Key(t)
	if _, err := governance.Sign(ed, "alice", b); !errors.Is(err, governance.ErrBadKey) {
		t.Errorf("Ed25519 signer: %v", err)
	}
}

func TestNewOfficerSet(t *testing.T) {
	offs := newOfficers(t, "alice", "bob")
	good := protoOfficers(offs)
	if _, err := governance.NewOfficerSet(good, 2); err != nil {
		t.Fatal(err)
	}
	s, _ := governance.NewOfficerSet(good, 1)
	if s.Quorum() != 1 || !slices.Equal(s.Names(), []string{"alice", "bob"}) || s.PublicKey("bob") == nil {
		t.Errorf("accessors: %d %v", s.Quorum(), s.Names())
	}
	sameKey := protoOfficers(offs)
	sameKey[1].PublicKey = sameKey[0].PublicKey
	sameName := protoOfficers(offs)
	sameName[1].Name = "alice"
	badKey := protoOfficers(offs)
	badKey[1].PublicKey = []byte{0x30, 0x00}
	p384 := protoOfficers(offs)
	p384[1].PublicKey = p384PublicDER(t)
	noName := protoOfficers(offs)
	noName[0].Name = ""
	ctrl := protoOfficers(offs)
	ctrl[0].Name = "ali\x1bce"
	for _, tc := range []struct {
		name   string
		offs   []*custosv1.Officer
		quorum uint32
	}{
		{"quorum 0", good, 0},
		{"quorum > n", good, 3},
		{"no officers", nil, 1},
		{"same key", sameKey, 1},
		{"same name", sameName, 1},
		{"unparseable key", badKey, 1},
		{"P-384 key", p384, 1},
		{"empty name", noName, 1},
		{"control character in name", ctrl, 1},
		{"nil officer", []*custosv1.Officer{nil}, 1},
	} {
		if _, err := governance.NewOfficerSet(tc.offs, tc.quorum); !errors.Is(err, governance.ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", tc.name, err)
		}
	}
	var nilSet *governance.OfficerSet
	if _, _, err := nilSet.Verify(&custosv1.SignedStatement{}, testCluster, testNow); err == nil {
		t.Error("nil set verified something")
	}
}

func TestNewStatement(t *testing.T) {
	before := time.Now()
	st, err := governance.NewStatement(testCluster, time.Hour, "why")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Nonce) != governance.NonceSize || st.ClusterId != testCluster || st.Comment != "why" {
		t.Fatalf("statement %v", st)
	}
	if d := time.Unix(st.NotAfterUnix, 0).Sub(before); d < time.Hour-time.Second || d > time.Hour+time.Minute {
		t.Errorf("not_after %v after now", d)
	}
	st2, _ := governance.NewStatement(testCluster, time.Hour, "why")
	if string(st.Nonce) == string(st2.Nonce) {
		t.Error("two statements got the same nonce")
	}
	if _, err := governance.Marshal(st); !errors.Is(err, governance.ErrMalformed) {
		t.Errorf("marshal without operation: %v", err)
	}
	st.Operation = &custosv1.Statement_RevokeKey{RevokeKey: &custosv1.RevokeKey{Key: "k"}}
	b, err := governance.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	// An online sign-and-verify with the real clock.
	offs := newOfficers(t, "alice")
	if _, _, err := officerSet(t, offs, 1).Verify(signAll(t, b, offs[0]), testCluster, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, lt := range []time.Duration{0, -time.Second, governance.MaxLifetime + time.Second} {
		if _, err := governance.NewStatement(testCluster, lt, ""); !errors.Is(err, governance.ErrMalformed) {
			t.Errorf("lifetime %v: %v", lt, err)
		}
	}
	if _, err := governance.NewStatement("", time.Hour, ""); !errors.Is(err, governance.ErrMalformed) {
		t.Errorf("empty cluster: %v", err)
	}
}

func TestDescribe(t *testing.T) {
	for _, tc := range operations(t) {
		d := governance.Describe(statement(tc.op))
		if !strings.HasPrefix(d, tc.name+" ") || strings.Contains(d, "\n") {
			t.Errorf("%s: %q", tc.name, d)
		}
		if !strings.Contains(d, "not_after=2026-03-01T13:00:00Z") || !strings.Contains(d, "needs "+tc.need.String()) {
			t.Errorf("%s: %q lacks expiry or requirement", tc.name, d)
		}
		t.Log(d)
	}
	d := governance.Describe(statement(&custosv1.RevokeKey{Key: "payroll"}))
	if !strings.Contains(d, `key="payroll"`) || !strings.Contains(d, `cluster="cluster-test-1"`) {
		t.Errorf("%q", d)
	}
	pol := governance.Describe(statement(&custosv1.SetPolicy{Key: "k", Policy: &custosv1.KeyPolicy{DecryptPrincipals: []string{"app one"}}}))
	if !strings.Contains(pol, `"app one"`) {
		t.Errorf("policy description mangles strings: %q", pol)
	}
	st := statement(&custosv1.RevokeKey{Key: "k"})
	st.Comment = "line1\nline2\x1b[2J"
	if d := governance.Describe(st); strings.ContainsAny(d, "\n\x1b") {
		t.Errorf("control characters leak into %q", d)
	}
	_ = governance.Describe(nil)
	_ = governance.Describe(&custosv1.Statement{})
}
