package kms_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/custos-kms/custos/kms"
)

// TestXKSProbe: the XKS health probe is deep — an HSM that still answers
// Health but cannot encrypt fails it — makes its health key once, makes it
// again when the object is gone, and destroys it on Close.
func TestXKSProbe(t *testing.T) {
	e := newEnv(t)
	p := e.svc.XKSProbe()
	if err := p.Check(bg); err != nil {
		t.Fatalf("Check: %v", err)
	}
	id := p.KeyID()
	if !strings.HasPrefix(id, "custos/xks-health/") {
		t.Fatalf("health key id %q", id)
	}
	if ok, err := e.hsm.HasKey(bg, []byte(id)); err != nil || !ok {
		t.Fatalf("health key on the token: %v, %v", ok, err)
	}
	before := e.hsm.encrypts.Load()
	if err := p.Check(bg); err != nil || p.KeyID() != id {
		t.Fatalf("second Check: %v, key %q (was %q)", err, p.KeyID(), id)
	}
	if n := e.hsm.encrypts.Load() - before; n != 1 {
		t.Fatalf("a Check made %d AES-GCM encryptions in the HSM, want 1", n)
	}

	// Health alone passes, the deep check does not.
	e.hsm.failEncrypt.Store(true)
	if err := e.svc.Health(bg); err != nil {
		t.Fatalf("Health with encryption broken: %v", err)
	}
	if err := p.Check(bg); !errors.Is(err, kms.ErrHSMFailed) {
		t.Fatalf("Check with encryption broken = %v, want ErrHSMFailed", err)
	}
	e.hsm.failEncrypt.Store(false)

	// The object gone: the next Check fails and drops it, the one after
	// makes a new one.
	if err := e.hsm.Backend.DestroyKey(bg, []byte(id)); err != nil {
		t.Fatal(err)
	}
	if err := p.Check(bg); err == nil {
		t.Fatal("Check passed with its health key destroyed")
	}
	if err := p.Check(bg); err != nil || p.KeyID() == "" || p.KeyID() == id {
		t.Fatalf("Check after the key was lost: %v, key %q", err, p.KeyID())
	}
	id = p.KeyID()
	p.Close(bg)
	if ok, err := e.hsm.HasKey(bg, []byte(id)); err != nil || ok {
		t.Fatalf("health key after Close: %v, %v", ok, err)
	}
}

// TestXKSKeyName: every externalKeyId the specification allows names one
// custos key; ids that are custos key names name themselves; the others
// are mapped, deterministically and without meeting an identity-mapped id.
func TestXKSKeyName(t *testing.T) {
	mapped := func(id string) string {
		sum := sha256.Sum256([]byte(id))
		return "xks-" + hex.EncodeToString(sum[:])[:60]
	}
	long := func(n int) string { return strings.Repeat("k", n) }
	for _, c := range []struct {
		id, want string
		isMapped bool
	}{
		{"k", "k", false},
		{"foo", "foo", false},
		{"a.b-c_d", "a.b-c_d", false},
		{long(64), long(64), false},
		{long(65), mapped(long(65)), true},
		{long(128), mapped(long(128)), true},
		{"_foo", mapped("_foo"), true},
		{"_", mapped("_"), true},
		{".", mapped("."), true},
		{"..", mapped(".."), true},
		{"-x", mapped("-x"), true},
		// An id with the form of a mapped name is mapped too, so no id
		// names the key another id is mapped to.
		{mapped("_foo"), mapped(mapped("_foo")), true},
		{"xks-" + strings.Repeat("A", 60), "xks-" + strings.Repeat("A", 60), false},
	} {
		got, isMapped, err := kms.XKSKeyName(c.id)
		if err != nil || got != c.want || isMapped != c.isMapped {
			t.Errorf("XKSKeyName(%q) = %q, %v, %v; want %q, %v", c.id, got, isMapped, err, c.want, c.isMapped)
			continue
		}
		if err := kms.ValidateKeyName(got); err != nil {
			t.Errorf("XKSKeyName(%q) = %q, not a custos key name: %v", c.id, got, err)
		}
	}
	for _, id := range []string{"", long(129), "a b", "a/b", "a%41", "a~b", "é", "a+b", "a:b"} {
		if got, _, err := kms.XKSKeyName(id); !errors.Is(err, kms.ErrXKSKeyID) || !errors.Is(err, kms.ErrInvalidArgument) {
			t.Errorf("XKSKeyName(%q) = %q, %v; want ErrXKSKeyID", id, got, err)
		}
	}
}
