package console

import (
	"fmt"
	"net/http/httptest"
	"testing"
	"time"
)

// A flood of anonymous sessions never signs an officer out, and the
// registration pace refills with time.
func TestSessionsAndPace(t *testing.T) {
	ss := newSessions(time.Hour)
	w := httptest.NewRecorder()
	officer := ss.signIn(w, ss.create(w), "alice")
	for range maxAnonymous + 10 {
		ss.create(w)
	}
	if len(ss.m) != maxAnonymous+1 || ss.m[officer.id] != officer {
		t.Fatalf("%d sessions, officer's kept: %v", len(ss.m), ss.m[officer.id] == officer)
	}
	// One officer signing in again and again signs out only their own
	// oldest sessions.
	for range 3 * maxPerOfficer {
		ss.signIn(w, ss.create(w), "bob")
	}
	if ss.m[officer.id] != officer {
		t.Fatal("bob's sign-ins signed alice out")
	}
	for i := range maxSignedIn + 1 {
		ss.signIn(w, ss.create(w), fmt.Sprintf("officer-%d", i))
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
