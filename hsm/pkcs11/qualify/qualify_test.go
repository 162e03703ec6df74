package qualify_test

import (
	"context"
	"os"
	"strings"
	"testing"

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
}
