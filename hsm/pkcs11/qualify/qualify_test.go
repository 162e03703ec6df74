package qualify_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/custos-kms/custos/hsm/pkcs11/qualify"
	"github.com/custos-kms/custos/softhsm"
)

func TestMain(m *testing.M) {
	// The isolation and SO checks run this binary again as the second
	// process.
	qualify.MaybeChild()
	os.Exit(m.Run())
}

// childCommand runs this test binary as Check's second process.
func childCommand() []string { return []string{os.Args[0], "-test.run=^$"} }

// want asserts the status (and, when code is not empty, the code) of one
// check.
func want(t *testing.T, rep *qualify.Report, id string, st qualify.Status, code string) {
	t.Helper()
	r := rep.Result(id)
	if r == nil {
		t.Errorf("no result %q", id)
		return
	}
	if r.Status != st || (code != "" && !strings.Contains(r.Code, code)) {
		t.Errorf("%s: %s %s (%s); want %s %s", id, r.Status, r.Code, r.Detail, st, code)
	}
}

func logTable(t *testing.T, rep *qualify.Report) {
	t.Helper()
	var b strings.Builder
	if err := qualify.WriteTable(&b, rep); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + b.String())
}

func TestCheckSoftHSM(t *testing.T) {
	tok := softhsm.TestToken(t)
	rep, err := qualify.Check(context.Background(), qualify.Config{
		Module: tok.Module, Token: tok.Label, PIN: tok.PIN, SOPIN: tok.SOPIN,
		ChildCommand: childCommand(),
	})
	if err != nil {
		t.Fatal(err)
	}
	logTable(t, rep)
	// SoftHSM 2.6.1 as measured (docs/operations.md, "Qualifying an HSM").
	want(t, rep, "aes-keygen", qualify.Pass, "CKR_OK")
	want(t, rep, "gcm", qualify.Pass, "CKR_OK")
	want(t, rep, "gcm-iv-1", qualify.Warn, "")
	want(t, rep, "gcm-tag-8", qualify.Warn, "")
	want(t, rep, "kwp", qualify.Pass, "")
	want(t, rep, "kwp-rfc5649", qualify.Pass, "")
	want(t, rep, "rsa-keygen", qualify.Pass, "")
	want(t, rep, "oaep-sha256", qualify.Fail, "CKR_ARGUMENTS_BAD (0x7)")
	want(t, rep, "oaep-sha1", qualify.Pass, "")
	want(t, rep, "wrap-with-trusted", qualify.Pass, "CKR_KEY_NOT_WRAPPABLE (0x69)")
	want(t, rep, "trusted-user-refused", qualify.Pass, "(0x10)")
	want(t, rep, "trusted-by-so", qualify.Pass, "")
	want(t, rep, "unwrap-template", qualify.Pass, "CKR_TEMPLATE_INCONSISTENT (0xD1)")
	want(t, rep, "modifiable-last", qualify.Pass, "")
	want(t, rep, "unwrapped-attrs", qualify.Pass, "")
	want(t, rep, "generated-attrs", qualify.Pass, "")
	want(t, rep, "ecdsa-p256", qualify.Pass, "")
	want(t, rep, "session-isolation", qualify.Pass, "")
	want(t, rep, "concurrency", qualify.Pass, "")
	want(t, rep, "random", qualify.Pass, "")
	if rep.Meets(qualify.Production) || !rep.Meets(qualify.Development) {
		t.Errorf("verdicts %+v; want development only", rep.Verdicts)
	}
	if rep.Cleanup != "" {
		t.Errorf("cleanup: %s", rep.Cleanup)
	}
	if left := checkObjects(t, tok); len(left) > 0 {
		t.Errorf("objects left on the token: %q", left)
	}
}

// Without the SO PIN the SO check is skipped; development is still met.
func TestCheckSoftHSMWithoutSOPIN(t *testing.T) {
	tok := softhsm.TestToken(t)
	rep, err := qualify.Check(context.Background(), qualify.Config{
		Module: tok.Module, Token: tok.Label, PIN: tok.PIN,
		ChildCommand: childCommand(), Workers: 2, OpsPerWorker: 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	want(t, rep, "trusted-by-so", qualify.Skip, "")
	if r := rep.Result("trusted-by-so"); r != nil && !strings.Contains(r.Detail, "no SO PIN") {
		t.Errorf("skip note %q does not say the SO PIN is missing", r.Detail)
	}
	if rep.Meets(qualify.Production) || !rep.Meets(qualify.Development) {
		t.Errorf("verdicts %+v; want development only", rep.Verdicts)
	}
}

// Bad input is an error that says what is wrong, never a report.
func TestCheckBadInput(t *testing.T) {
	tok := softhsm.TestToken(t)
	cases := []struct {
		name string
		cfg  qualify.Config
		want error
	}{
		{"missing module", qualify.Config{Module: "/nonexistent/libx.so", Token: tok.Label, PIN: tok.PIN}, qualify.ErrModule},
		{"not a module", qualify.Config{Module: "/etc/hostname", Token: tok.Label, PIN: tok.PIN}, qualify.ErrModule},
		{"wrong token", qualify.Config{Module: tok.Module, Token: "no-such-token", PIN: tok.PIN}, qualify.ErrToken},
		{"wrong PIN", qualify.Config{Module: tok.Module, Token: tok.Label, PIN: "99999999"}, qualify.ErrLogin},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rep, err := qualify.Check(context.Background(), c.cfg)
			if !errors.Is(err, c.want) || rep != nil {
				t.Fatalf("err %v, report %v; want %v", err, rep != nil, c.want)
			}
			if strings.Contains(err.Error(), "99999999") || strings.Contains(err.Error(), tok.PIN+" ") {
				t.Errorf("the error shows the PIN: %v", err)
			}
		})
	}
}

// checkObjects lists the labels of the token objects whose label starts
// with qualify.LabelPrefix (logged in as user, and as nobody for public
// ones).
func checkObjects(t *testing.T, tok *softhsm.Token) []string {
	t.Helper()
	c := p11.New(tok.Module)
	if err := c.Initialize(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Finalize(); c.Destroy() }()
	slots, err := c.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, sl := range slots {
		ti, err := c.GetTokenInfo(sl)
		if err != nil || strings.TrimRight(ti.Label, " ") != tok.Label {
			continue
		}
		s, err := c.OpenSession(sl, p11.CKF_SERIAL_SESSION)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Login(s, p11.CKU_USER, tok.PIN); err != nil {
			t.Fatal(err)
		}
		if err := c.FindObjectsInit(s, []*p11.Attribute{p11.NewAttribute(p11.CKA_TOKEN, true)}); err != nil {
			t.Fatal(err)
		}
		hs, _, err := c.FindObjects(s, 1000)
		_ = c.FindObjectsFinal(s)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hs {
			as, err := c.GetAttributeValue(s, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_LABEL, nil)})
			if err == nil && strings.HasPrefix(string(as[0].Value), qualify.LabelPrefix) {
				left = append(left, string(as[0].Value))
			}
		}
		_ = c.CloseSession(s)
	}
	return left
}
