package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/custos-kms/custos/internal/flagusage"
	"github.com/custos-kms/custos/internal/node"
)

// devFlags are the flags of `custosd dev`, for the single node and for a
// local cluster (--nodes) alike: both modes register every flag, so that
// either one's --help shows all of them, and refuse those of the other
// mode (check).
type devFlags struct {
	dataDir  string
	listen   string
	logLevel string
	level    slog.Level // parsed from logLevel; info when unset
	xks      string     // the single node's XKS proxy address (devxks.go)
	xksMTLS  bool
	console  string // the single node's officer console address
	nodes    int
	basePort int
	set      map[string]bool // the flags given
}

// parseDevFlags parses the arguments of `custosd dev`; cluster says which
// mode runDev chose (wantsDevCluster). It returns flag.ErrHelp after
// printing the help, errUsage after printing why.
func parseDevFlags(args []string, cluster bool, stderr io.Writer) (*devFlags, error) {
	name := "custosd dev"
	if cluster {
		name += " --nodes"
	}
	fl := flag.NewFlagSet(name, flag.ContinueOnError)
	fl.SetOutput(stderr)
	d := &devFlags{set: map[string]bool{}}
	defDir := ".dev"
	if cluster {
		defDir = clusterDefaultDir
	}
	fl.StringVar(&d.dataDir, "data-dir", defDir, "`DIR` for the token, PKI, officer, Raft log and ledger, kept across restarts (default .dev; with --nodes: "+clusterDefaultDir+", one directory per node)")
	fl.StringVar(&d.listen, "listen", node.DefaultListen, "gRPC listen `ADDR` of the single node (not with --nodes: see --base-port)")
	fl.StringVar(&d.logLevel, "log-level", "info", "`LEVEL` of the node's log on standard error: debug, info, warn or error; at info each administrative call and each failed call is one line, successful data-path calls (Encrypt, Decrypt, GenerateDataKey, ...) only at debug")
	fl.StringVar(&d.xks, "xks", "", "also serve the AWS KMS XKS proxy API on `ADDR` (e.g. 127.0.0.1:0) and write DIR/xks.env (the single node only)")
	fl.BoolVar(&d.xksMTLS, "xks-mtls", false, "with --xks: require a client certificate of the dev CA with CN "+devXKSClientCN)
	fl.StringVar(&d.console, "console", "127.0.0.1:0", "serve the officer console (docs/console.md) on `ADDR`, at https://localhost:<port>/; \"\" turns it off (the single node; with --nodes every node serves one on a port the system picks)")
	fl.IntVar(&d.nodes, "nodes", 0, fmt.Sprintf("run a local cluster of `N` nodes (%d to %d), one process each, instead of a single node", clusterMinNodes, clusterMaxNodes))
	fl.IntVar(&d.basePort, "base-port", clusterDefaultBasePort,
		fmt.Sprintf("with --nodes: gRPC `PORT` of node1; node i serves gRPC on PORT+i-1 and Raft on PORT+%d+i-1, all on %s; 0: ports the system picks (kept for restarts)", clusterRaftOffset, clusterHost))
	fl.Usage = func() {
		fmt.Fprint(fl.Output(), devUsage)
		fmt.Fprint(fl.Output(), "\nFlags:\n")
		flagusage.Print(fl.Output(), fl)
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, errUsage
	}
	fl.Visit(func(f *flag.Flag) { d.set[f.Name] = true })
	fail := func(format string, args ...any) (*devFlags, error) {
		fmt.Fprintf(stderr, "custosd dev: "+format+"\n", args...)
		return nil, errUsage
	}
	if fl.NArg() > 0 {
		fmt.Fprintf(stderr, "custosd dev: unexpected argument %q\n", fl.Arg(0))
		fl.Usage()
		return nil, errUsage
	}
	if err := d.level.UnmarshalText([]byte(d.logLevel)); err != nil {
		return fail("--log-level must be debug, info, warn or error, not %q", d.logLevel)
	}
	switch {
	case !cluster && d.set["base-port"]:
		return fail("--base-port goes with --nodes (a local cluster); the single node listens on --listen")
	case cluster && d.set["listen"]:
		return fail("--listen is for the single node; a cluster's nodes listen on --base-port and the ports after it")
	case cluster && (d.set["xks"] || d.set["xks-mtls"]):
		return fail("--xks and --xks-mtls are for the single node (a cluster's nodes serve XKS from their config.json)")
	case d.xksMTLS && d.xks == "":
		return fail("--xks-mtls goes with --xks ADDR")
	case cluster && d.set["console"]:
		return fail("--console is for the single node; a cluster's nodes serve the console from their config.json (on ports the system picks)")
	}
	return d, nil
}

const devUsage = `Usage:
  custosd dev [--data-dir DIR] [--listen ADDR] [--log-level LEVEL] [--xks ADDR [--xks-mtls]]
  custosd dev --nodes N [--data-dir DIR] [--base-port PORT] [--log-level LEVEL]

Without --nodes: starts a single custos node for development: a SoftHSM2
token in DIR/softhsm (random PINs in DIR/softhsm/pins.json), a throwaway CA
and certificates in DIR/pki (client certificate CN "dev-admin"), one
security officer "officer-1" with an unencrypted key in
DIR/officers/officer-1.pem (quorum 1), Raft and ledger in DIR. It writes
DIR/client.env with the CUSTOS_* variables the custos CLI reads. With
--xks it also serves the AWS KMS XKS proxy API (docs/xks.md) and writes
DIR/xks.env. Restarting on the same DIR keeps keys, officer and ledger.
Stop it with Ctrl-C.

With --nodes N: starts a local cluster of N custos nodes, each one a child
process "custosd serve --config DIR/nodeI/config.json" with its own SoftHSM2
token (DIR/nodeI/softhsm), all with node certificates of one dev CA
(DIR/pki, client certificate CN "dev-admin") and Raft over mutual TLS on
127.0.0.1. node1 bootstraps the cluster with one security officer
"officer-1" (key DIR/officers/officer-1.pem, quorum 1) and adds the other
nodes as voters once they answer; the others join. When node1 reports N
voters it writes DIR/client.env (CUSTOS_ADDR lists every node). With
--base-port 0 the system picks free ports at the first start; they are
printed, written to client.env and kept in DIR/cluster.json for restarts.
The parent binds every address before starting the nodes and passes each
node its listeners (socket activation, docs/config.md). The cluster has
the development profile; this process plays the officer and each token's
security officer and admits every node as a custodian of the domain key
(RSA-OAEP-SHA1 key transport), so every node serves key crypto; see
docs/key-transport.md. A node that dies leaves the others running; SIGHUP
to this process (kill -HUP PID; the PID is printed) starts every dead node
again on its sockets. Restarting on the same DIR keeps everything. Stop it
with Ctrl-C.
`
