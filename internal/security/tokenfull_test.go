//go:build linux

package security

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// TestHSMTokenFull runs a node whose SoftHSM token lives on a small tmpfs
// and fills that file system, the nearest SoftHSM has to a full token (it
// has no object limit): a key created while the token cannot store its KEK
// is committed (the KEK is a blob in the log) and every use of it fails
// with a retryable error and no key until there is space again; nothing
// crashes, the other key keeps working, and once space is freed the same
// key works with no restart. It needs root (mount), as CI and the dev VM
// run; elsewhere it is skipped, saying why.
func TestHSMTokenFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs under the token (CI runs as root)")
	}
	h, _ := startLogged(t, nil)
	kc := custosv1.NewKeyServiceClient(h.Conn(t, "app"))
	if _, err := kc.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: "before"}); err != nil {
		t.Fatal(err)
	}
	before, err := kc.GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: "before"})
	if err != nil {
		t.Fatal(err)
	}

	// Move the token's files onto a 1 MiB tmpfs mounted over its directory.
	dir := tokenDir(t, h.Token)
	saved := filepath.Join(h.Token.Dir.Path, "saved-"+filepath.Base(dir))
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v: %s", name, args, err, out)
		}
	}
	run("cp", "-a", dir, saved)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	run("sh", "-c", `cp -a "$0"/. "$1"/`, saved, dir)
	// Fill it: dd stops at ENOSPC.
	filler := filepath.Join(dir, "filler")
	_ = exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=4k").Run()

	// A new key: committed, its KEK cannot be stored in the token.
	if _, err := kc.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: "full"}); err != nil {
		t.Logf("CreateKey with the token full: %v", err)
		if c := status.Code(err); c == codes.Unknown || c == codes.Internal || c == codes.OK {
			t.Fatalf("CreateKey with the token full: %v, want a clear retryable or precondition code", err)
		}
	}
	_, err = kc.GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: "full"})
	if err == nil {
		t.Log("GenerateDataKey on the new key worked with the token full (its KEK was stored before the disk filled)")
	} else {
		t.Logf("GenerateDataKey on the new key with the token full: %v", err)
		if c := status.Code(err); c != codes.Unavailable && c != codes.FailedPrecondition && c != codes.ResourceExhausted {
			t.Errorf("GenerateDataKey with the token full: %v, want Unavailable, FailedPrecondition or ResourceExhausted", err)
		}
	}
	// The key that was stored keeps working.
	r, err := kc.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: before.GetWrappedDataKey(), Justification: customer})
	if err != nil || !bytes.Equal(r.GetPlaintext(), before.GetPlaintext()) {
		t.Fatalf("Decrypt under the stored key with the token full: %v", err)
	}

	// Space again: the new key works, no restart.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	dk, err := kc.GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: "full"})
	if err != nil {
		t.Fatalf("GenerateDataKey once the token has space: %v", err)
	}
	r, err = kc.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: dk.GetWrappedDataKey(), Justification: customer})
	if err != nil || !bytes.Equal(r.GetPlaintext(), dk.GetPlaintext()) {
		t.Fatalf("Decrypt under the new key once the token has space: %v", err)
	}
}
