package governance

import (
	"crypto/ecdsa"
	"errors"
	"testing"
	"time"
)

// An enrolment code verifies for its officer, cluster and lifetime only.
func TestEnrolmentCodes(t *testing.T) {
	alice, bob := newAuthenticator(t).Key, newAuthenticator(t).Key
	now := time.Now()
	code, err := MakeEnrolment(alice, "c1", "alice", now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	round, err := DecodeEnrolment(" " + EncodeEnrolment(code) + "\n")
	if err != nil || string(round) != string(code) {
		t.Fatalf("round trip: %v", err)
	}
	if err := VerifyEnrolment(&alice.PublicKey, "c1", "alice", code, now); err != nil {
		t.Fatalf("valid code: %v", err)
	}
	tampered := append([]byte(nil), code...)
	tampered[len(tampered)-1] ^= 1
	later, _ := MakeEnrolment(alice, "c1", "alice", now.Add(25*time.Hour))
	for name, tc := range map[string]struct {
		pub            *ecdsa.PublicKey
		cluster, owner string
		code           []byte
		at             time.Time
	}{
		"other officer's key": {&bob.PublicKey, "c1", "alice", code, now},
		"other officer named": {&alice.PublicKey, "c1", "bob", code, now},
		"other cluster":       {&alice.PublicKey, "c2", "alice", code, now},
		"expired":             {&alice.PublicKey, "c1", "alice", code, now.Add(2 * time.Hour)},
		"too long ahead":      {&alice.PublicKey, "c1", "alice", later, now},
		"tampered":            {&alice.PublicKey, "c1", "alice", tampered, now},
		"empty":               {&alice.PublicKey, "c1", "alice", nil, now},
	} {
		if err := VerifyEnrolment(tc.pub, tc.cluster, tc.owner, tc.code, tc.at); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := DecodeEnrolment("not a code!"); !errors.Is(err, ErrMalformed) {
		t.Errorf("garbage: %v", err)
	}
}
