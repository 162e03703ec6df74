package main

import (
	"testing"

	"github.com/custos-kms/custos/internal/node/nodetest"
)

// TestKeySetMinVersionByOfficers: a key's administrator only raises its
// minimum decryption version; the officers' quorum lowers it again with
// `officer set-min-version` (or propose/sign/submit).
func TestKeySetMinVersionByOfficers(t *testing.T) {
	clearEnv(t)
	h := nodetest.Start(t)
	usePrincipal(t, h, "app")
	runCLI(t, "", "key", "create", "k").want(t, 0)
	runCLI(t, "", "key", "rotate", "k").want(t, 0)
	runCLI(t, "", "key", "min-version", "k", "2").want(t, 0, "min_decryption=2")
	runCLI(t, "", "key", "min-version", "k", "1").want(t, 1, "PermissionDenied")
	runCLI(t, "", args("officer", "set-min-version", "--key", "k", "--version", "1", asOfficer(h, 0))...).want(t, 1, "PermissionDenied", "officer propose set-min-version")
	offlineQuorum(t, h, "set-min-version", "--key", "k", "--version", "1").want(t, 0, "minimum decryption version set from 2 to 1", "min_decryption=1")
	runCLI(t, "", "officer", "propose", "set-min-version", "--key", "k", "--out", "x.json").want(t, 2, "--version")
}
