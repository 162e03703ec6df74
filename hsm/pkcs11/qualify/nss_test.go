package qualify_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"unsafe"

	p11 "github.com/miekg/pkcs11"

	"github.com/custos-kms/custos/hsm/pkcs11/qualify"
)

// nssModule is NSS softokn as Debian's libnss3 installs it.
const nssModule = "/usr/lib/x86_64-linux-gnu/libsoftokn3.so"

// nssToken makes a fresh NSS key database in a temporary directory, with
// the token label and user PIN given, and returns its library parameters.
// softokn creates the database itself (no certutil): the SO logs in with
// the empty PIN of a new database and sets the user PIN (C_InitPIN).
func nssToken(t *testing.T, label, pin string) string {
	t.Helper()
	if _, err := os.Stat(nssModule); err != nil {
		t.Skipf("NSS softokn not installed (%s: %v); Debian package libnss3", nssModule, err)
	}
	config := fmt.Sprintf("configdir='sql:%s' certPrefix='' keyPrefix='' secmod='secmod.db' flags= dbTokenDescription='%s'", t.TempDir(), label)
	c := p11.New(nssModule)
	if c == nil {
		t.Fatalf("cannot load %s", nssModule)
	}
	defer c.Destroy()
	params := append([]byte(config), 0)
	if err := c.Initialize(p11.InitializeWithReserved(unsafe.Pointer(&params[0]))); err != nil {
		t.Fatalf("C_Initialize: %v", err)
	}
	defer func() { _ = c.Finalize() }()
	slots, err := c.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, sl := range slots {
		ti, err := c.GetTokenInfo(sl)
		if err != nil || ti.Label != label {
			continue
		}
		s, err := c.OpenSession(sl, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.CloseSession(s) }()
		if err := c.Login(s, p11.CKU_SO, ""); err != nil {
			t.Fatalf("C_Login as SO (empty PIN of a new NSS database): %v", err)
		}
		if err := c.InitPIN(s, pin); err != nil {
			t.Fatalf("C_InitPIN: %v", err)
		}
		if err := c.Logout(s); err != nil {
			t.Fatal(err)
		}
		return config
	}
	t.Fatalf("NSS shows no token %q", label)
	return ""
}

func TestCheckNSS(t *testing.T) {
	const label, pin = "custos-nss", "nss-pin-1234"
	config := nssToken(t, label, pin)
	rep, err := qualify.Check(context.Background(), qualify.Config{
		Module: nssModule, Token: label, PIN: pin, NSSConfig: config,
		ChildCommand: childCommand(),
	})
	if err != nil {
		t.Fatal(err)
	}
	logTable(t, rep)
	// NSS softokn 3.87 as measured: the mechanisms mostly work, the key
	// policy is not enforced (docs/operations.md, "Qualifying an HSM").
	want(t, rep, "oaep-sha256", qualify.Pass, "CKR_OK")
	want(t, rep, "oaep-sha1", qualify.Pass, "")
	want(t, rep, "kwp", qualify.Pass, "")
	want(t, rep, "kwp-rfc5649", qualify.Fail, "")
	want(t, rep, "gcm", qualify.Fail, "CKR_BUFFER_TOO_SMALL (0x150)")
	want(t, rep, "wrap-with-trusted", qualify.Fail, "")
	want(t, rep, "trusted-user-refused", qualify.Fail, "")
	want(t, rep, "unwrap-template", qualify.Fail, "")
	want(t, rep, "ecdsa-p256", qualify.Pass, "")
	want(t, rep, "session-isolation", qualify.Pass, "")
	if rep.Meets(qualify.Production) || rep.Meets(qualify.Development) {
		t.Errorf("verdicts %+v; want neither profile", rep.Verdicts)
	}
	if s := qualify.Summary(rep); !strings.Contains(s, "does not enforce the key policy") {
		t.Errorf("summary %q does not say the policy is not enforced", s)
	}
}
