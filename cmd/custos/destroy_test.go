package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms"
)

// TestKeyDestroyCommands: scheduling needs the quorum (the hint says how),
// one officer cancels, and a scheduled destruction completes by itself.
func TestKeyDestroyCommands(t *testing.T) {
	clearEnv(t)
	h := nodetest.StartWith(t, func(cfg *node.Config) { cfg.Profile = kms.ProfileDevelopment })
	usePrincipal(t, h, "app")
	runCLI(t, "", "key", "create", "k").want(t, 0)
	runCLI(t, "", "key", "rotate", "k").want(t, 0)

	runCLI(t, "", args("key", "destroy", "--version", "1", "--wait", "1s", asOfficer(h, 0), "k")...).want(t, 1,
		"PermissionDenied", "officer propose destroy --key k --version 1 --wait 1s")
	runCLI(t, "", args("key", "destroy", "--wait", "1ms", asOfficer(h, 0), "k")...).want(t, 2, "--wait")
	file := filepath.Join(t.TempDir(), "destroy.json")
	runCLI(t, "", "officer", "propose", "destroy", "--key", "k", "--version", "1", "--wait", "1h", "--out", file).want(t, 0, "wrote "+file)
	runCLI(t, "", args("officer", "sign", asOfficer(h, 0), file)...).want(t, 0, "schedule_key_destruction", "version=1", "waiting=1h0m0s")
	runCLI(t, "", args("officer", "sign", asOfficer(h, 1), file)...).want(t, 0)
	runCLI(t, "", "officer", "submit", file).want(t, 0, "version 1 of key k scheduled for destruction at")
	runCLI(t, "", "key", "get", "k").want(t, 0, "destruction=v1:20")
	runCLI(t, "", "key", "get", "--json", "k").want(t, 0, `"destroy_time":"20`)
	runCLI(t, "", args("key", "cancel-destroy", "--version", "1", asOfficer(h, 2), "k")...).want(t, 0, "destruction of version 1 of key k cancelled")
	runCLI(t, "", args("key", "cancel-destroy", "--version", "1", asOfficer(h, 2), "k")...).want(t, 1, "FailedPrecondition")

	// Scheduled with the quorum for one second: the leader completes it.
	file = filepath.Join(t.TempDir(), "destroy2.json")
	runCLI(t, "", "officer", "propose", "destroy", "--key", "k", "--wait", "1s", "--out", file).want(t, 0)
	runCLI(t, "", args("officer", "sign", asOfficer(h, 0), file)...).want(t, 0, "all (the whole key)")
	runCLI(t, "", args("officer", "sign", asOfficer(h, 1), file)...).want(t, 0)
	runCLI(t, "", "officer", "submit", file).want(t, 0, "key k (every version) scheduled for destruction")
	for deadline := time.Now().Add(30 * time.Second); ; {
		r := runCLI(t, "", "key", "get", "k")
		if strings.Contains(r.stdout, "state=DESTROYED") && strings.Contains(r.stdout, "destruction=v1:destroyed,v2:destroyed") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("key k not destroyed: %s", r.stdout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	runCLI(t, "", "encrypt", "--key", "k", "-", "-").want(t, 1, "destroyed")
}
