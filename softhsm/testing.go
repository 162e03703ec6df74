package softhsm

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/custos-kms/custos/hsm/pkcs11"
)

// Test PINs used by TestToken.
const (
	TestPIN   = "1234"
	TestSOPIN = "12345678"
)

var (
	testDirOnce sync.Once
	testDir     *Dir
	testDirErr  error
	testSeq     atomic.Uint64
)

// TestDir returns the process-wide Dir used by TestToken, creating it in a
// temporary directory and activating it on first use. The directory is not
// removed: SoftHSM may still hold files in it until the process exits.
func TestDir(tb testing.TB) *Dir {
	tb.Helper()
	testDirOnce.Do(func() {
		if _, err := ModulePath(); err != nil {
			testDirErr = err
			return
		}
		if _, err := utilPath(); err != nil {
			testDirErr = err
			return
		}
		path, err := os.MkdirTemp("", "custos-softhsm-")
		if err != nil {
			testDirErr = err
			return
		}
		d, err := OpenDir(path)
		if err != nil {
			testDirErr = err
			return
		}
		if err := d.Activate(); err != nil {
			testDirErr = err
			return
		}
		testDir = d
	})
	if testDirErr != nil {
		tb.Fatalf("SoftHSM2 test token: %v (%s)", testDirErr, InstallHint)
	}
	return testDir
}

// TestToken initialises a fresh SoftHSM2 token with a unique label in the
// process-wide test Dir (see TestDir), through the module in this process
// (pkcs11.InitToken), so it is usable at once even while other Backends are
// open, and returns it, with PIN TestPIN and SO
// PIN TestSOPIN. Each call gives a new, empty token, so tests are isolated.
// If SoftHSM2 is not installed the test fails (it is never skipped) with a
// hint to run softhsm/install.sh.
func TestToken(tb testing.TB) *Token {
	tb.Helper()
	d := TestDir(tb)
	module, err := ModulePath()
	if err != nil {
		tb.Fatalf("SoftHSM2 test token: %v (%s)", err, InstallHint)
	}
	label := fmt.Sprintf("custos-test-%d-%d", os.Getpid(), testSeq.Add(1))
	// In-process C_InitToken, not softhsm2-util: SoftHSM reads its token
	// directory only at C_Initialize, so a token made by another process
	// would be invisible while any Backend in this process is open.
	if err := pkcs11.InitToken(context.Background(), module, label, TestSOPIN, TestPIN); err != nil {
		tb.Fatalf("SoftHSM2 test token: %v", err)
	}
	return &Token{Module: module, Label: label, PIN: TestPIN, SOPIN: TestSOPIN, Dir: d}
}
