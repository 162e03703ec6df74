package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/custos-kms/custos/internal/flagusage"
	"github.com/custos-kms/custos/internal/node"
)

// cmdRestore prepares a node's empty data directory from a snapshot file
// (node.Restore; docs/operations.md, "Restore").
func cmdRestore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("custosd restore", flag.ContinueOnError)
	fl.SetOutput(stderr)
	configFile := fl.String("config", "", "the node's JSON configuration `FILE` (docs/config.md)")
	snapshot := fl.String("snapshot", "", "snapshot `FILE` written by 'custos cluster snapshot save'")
	fl.Usage = func() {
		fmt.Fprint(fl.Output(), `Usage: custosd restore --config FILE --snapshot FILE

Rebuilds a cluster from a snapshot file when its nodes' data are lost: the
node of the configuration becomes a new single-node cluster holding the
file's state (docs/operations.md, "Restore"). Its data_dir must be empty and
its HSM must hold the cluster's domain key (a former custodian's HSM, or one
restored from the HSM's own backup). The file is checked (length, SHA-256
trailer, its cluster against a configured cluster_id) before anything is
written. Then start the node with custosd serve: it records the restore in
the ledger and serves no key crypto until the officers accept the restore
(custos cluster accept-restore SHA256, officer quorum). Other nodes come back
by joining and being admitted again.

Flags:
`)
		flagusage.Print(fl.Output(), fl)
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if *configFile == "" || *snapshot == "" || fl.NArg() > 0 {
		fmt.Fprintln(stderr, "custosd restore: --config FILE and --snapshot FILE are required")
		fl.Usage()
		return errUsage
	}
	cfg, err := loadConfig(*configFile, os.Getenv)
	if err != nil {
		return err
	}
	info, err := node.Restore(ctx, cfg, *snapshot)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restored node %s of cluster from %s\n", cfg.ID, *snapshot)
	fmt.Fprintf(stdout, "  snapshot SHA-256: %s (written by %s at Raft index %d)\n", info.GetSnapshotSha256(), info.GetSourceNode(), info.GetSourceRaftIndex())
	fmt.Fprintf(stdout, "  restore id:       %s (statements must name it; the custos CLI adds it by itself)\n", info.GetRestoreId())
	fmt.Fprintf(stdout, "next: start it (custosd serve --config %s); it serves no key crypto until the officers accept the restore:\n", *configFile)
	fmt.Fprintf(stdout, "      custos cluster accept-restore %s (officer quorum; check the restored state first)\n", info.GetSnapshotSha256())
	return nil
}
