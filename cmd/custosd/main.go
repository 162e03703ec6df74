// Command custosd runs a custos node.
//
//	custosd dev   [--data-dir DIR] [--listen ADDR]   single node on an embedded SoftHSM token
//	custosd dev   --nodes N [--data-dir DIR] [--base-port P]   local cluster, one process per node
//	custosd serve --config FILE                      a node from a JSON configuration
//	custosd restore --config FILE --snapshot FILE    rebuild a node from a snapshot file
//	custosd version
//
// The logic lives in internal/node; this file only turns flags into a
// configuration and runs it until SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/version"
)

const usage = `custosd runs a custos key-custody node.

Usage:
  custosd dev   [--data-dir DIR] [--listen ADDR]   start a single development node
  custosd dev   --nodes N [--data-dir DIR] [--base-port P]
                                                   start a local N-node development cluster
  custosd serve --config FILE                      start a node from a JSON config
  custosd restore --config FILE --snapshot FILE    rebuild a lost cluster's node from a snapshot file
  custosd version                                  print the version

Run "custosd COMMAND --help" or "custosd help COMMAND" for a command's flags.
`

func main() {
	tuneGC(os.Getenv)
	// Everything custosd writes — Raft snapshots (wrapped KEKs), the
	// ledger, sink files, configuration it generates — is for its own
	// user only: files 0600, directories 0700 (docs/operations.md).
	restrictUmask()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// Garbage collector settings of custosd unless GOGC / GOMEMLIMIT are set
// (docs/performance.md): the node's live heap is small (tens of MiB, the
// ledger lives in bbolt files) and every Decrypt allocates, so collecting
// at 400 % growth instead of 100 % saves ~15 % of the node's CPU per
// decrypt; the soft limit makes the collector work harder before the heap
// could grow past it.
const (
	defaultGCPercent   = 400
	defaultMemoryLimit = 1 << 30
)

// tuneGC applies the defaults above where the environment sets nothing.
func tuneGC(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
}

// run runs custosd with args and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// "custosd help COMMAND" is "custosd COMMAND --help".
	if args[0] == "help" && len(args) == 2 && args[1] != "help" {
		args = []string{args[1], "--help"}
	}
	var err error
	switch args[0] {
	case "dev":
		if wantsDevCluster(args[1:]) {
			err = cmdDevCluster(ctx, args[1:], stdout, stderr)
		} else {
			err = cmdDev(ctx, args[1:], stdout, stderr)
		}
	case "serve":
		err = cmdServe(ctx, args[1:], stderr)
	case "restore":
		err = cmdRestore(ctx, args[1:], stdout, stderr)
	case "dev-trust":
		// Internal: custosd dev runs it as a dev token's security officer.
		err = cmdDevTrust(ctx, args[1:], stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, version.String("custosd"))
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "custosd: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	default:
		fmt.Fprintf(stderr, "custosd: %v\n", err)
		return 1
	}
}

// errUsage reports bad flags; the flag package has printed why.
var errUsage = errors.New("usage")

// newLogger returns the process logger: text on stderr.
func newLogger(w io.Writer, level slog.Level, json bool) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if json {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serveUntilSignal waits for ctx (SIGINT/SIGTERM) and closes n.
func serveUntilSignal(ctx context.Context, n *node.Node, log *slog.Logger) error {
	<-ctx.Done()
	log.Info("signal received, stopping")
	return n.Close()
}
