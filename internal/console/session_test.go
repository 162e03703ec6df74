package console

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// A flood of anonymous sessions never signs an officer out, nor ends a
// sign-in under way from another address; one officer's sign-ins never
// sign another out; the registration pace refills with time.
func TestSessionsAndPace(t *testing.T) {
	ss := newSessions(time.Hour)
	w := httptest.NewRecorder()
	officer := ss.signIn(w, ss.create(w, "192.0.2.1"), "alice")
	for range maxAnonymous + 10 {
		ss.create(w, "192.0.2.1")
	}
	if ss.m[officer.id] != officer {
		t.Fatal("an anonymous flood signed an officer out")
	}
	// One officer signing in again and again signs out only their own
	// oldest sessions.
	for range 3 * maxPerOfficer {
		ss.signIn(w, ss.create(w, "192.0.2.1"), "bob")
	}
	if ss.m[officer.id] != officer {
		t.Fatal("bob's sign-ins signed alice out")
	}
	for i := range maxSignedIn + 1 {
		ss.signIn(w, ss.create(w, "192.0.2.1"), fmt.Sprintf("officer-%d", i))
	}
	signedIn := 0
	for _, s := range ss.m {
		if s.officer != "" {
			signedIn++
		}
	}
	if ss.m[officer.id] != nil || signedIn != maxSignedIn {
		t.Fatalf("signed-in sessions past their bound: %d, the oldest kept: %v", signedIn, ss.m[officer.id] != nil)
	}
	// Anonymous sessions: one address churns only its own; from many
	// addresses, the largest group pays.
	as := newSessions(time.Hour)
	victim := as.create(w, clientAddr(httptest.NewRequest("GET", "/", nil)))
	as.newChallenge(victim, "signin", "alice")
	for range 10 * maxAnonymousPerAddr {
		as.create(w, "203.0.113.9")
	}
	if as.m[victim.id] != victim || len(as.m) != maxAnonymousPerAddr+1 {
		t.Fatalf("flood from one address: %d sessions, victim kept: %v", len(as.m), as.m[victim.id] == victim)
	}
	for i := range maxAnonymous + 100 {
		as.create(w, fmt.Sprintf("2001:db8:%x::/64", i%100))
	}
	if as.m[victim.id] != victim || len(as.m) != maxAnonymous {
		t.Fatalf("flood from many addresses: %d sessions, victim kept: %v", len(as.m), as.m[victim.id] == victim)
	}
	if a := clientAddr(&http.Request{RemoteAddr: "[2001:db8:1:2:3:4:5:6]:443"}); a != "2001:db8:1:2::/64" {
		t.Fatalf("IPv6 group %q", a)
	}

	b := &bucket{burst: 2, every: time.Minute}
	now := time.Now()
	for i, step := range []struct {
		at   time.Duration
		want bool
	}{{0, true}, {0, true}, {0, false}, {59 * time.Second, false}, {2 * time.Minute, true}} {
		if got := b.take(now.Add(step.at)); got != step.want {
			t.Fatalf("take %d at +%s = %v", i, step.at, got)
		}
	}
}
