package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
)

// TestRestoreCommands: a snapshot file taken with `custos cluster
// snapshot`, restored into an empty data directory (node.Restore, what
// `custosd restore` runs); `custos cluster status` says the restore waits
// for the officers and names the file's SHA-256; one officer cannot accept
// it, the quorum can with `officer propose accept-restore`, and key crypto
// works again.
func TestRestoreCommands(t *testing.T) {
	clearEnv(t)
	h := nodetest.StartWith(t, func(cfg *node.Config) { cfg.Operators = []string{"operator"} })
	usePrincipal(t, h, "operator")
	runCLI(t, "", "key", "create", "payroll").want(t, 0, "payroll")
	file := filepath.Join(t.TempDir(), "cluster.snap")
	runCLI(t, "", "cluster", "snapshot", "save", file).want(t, 0, file)

	var sum string
	h.RestartWith(t, func(cfg *node.Config) {
		cfg.DataDir = filepath.Join(t.TempDir(), "restored")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		info, err := node.Restore(ctx, *cfg, file)
		if err != nil {
			t.Fatal(err)
		}
		sum = info.SnapshotSha256
	})
	r := runCLI(t, "", "cluster", "status")
	r.want(t, 0, "Restored from a snapshot file: WAITING for the officers", "snapshot SHA-256:  "+sum, "custos cluster accept-restore "+sum)
	runCLI(t, "", "encrypt", "--key", "payroll", writeTemp(t, "secret"), filepath.Join(t.TempDir(), "x")).
		want(t, 1, "restored from a snapshot file")

	runCLI(t, "", "officer", "propose", "accept-restore", "--out", filepath.Join(t.TempDir(), "s.json"), "nothex").want(t, 2, "64 hex digits")
	runCLI(t, "", args("cluster", "accept-restore", asOfficer(h, 0), sum)...).want(t, 1, "PermissionDenied", "officer propose accept-restore "+sum)
	offlineQuorum(t, h, "accept-restore", sum).want(t, 0, "accepted", "ACCEPTED by the officers")
	if !regexp.MustCompile(`ACCEPTED`).MatchString(runCLI(t, "", "cluster", "status").stdout) {
		t.Fatal("cluster status does not show the accepted restore")
	}
	runCLI(t, "", "encrypt", "--key", "payroll", writeTemp(t, "secret"), filepath.Join(t.TempDir(), "x")).want(t, 0)
}

// writeTemp writes s into a new file and returns its path.
func writeTemp(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "in")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
