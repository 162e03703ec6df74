// Command custos is the command-line client of the custos key custody
// service: it manages keys and encrypts and decrypts files with envelope
// encryption, using only the clients/go library.
//
// Usage:
//
//	custos [connection flags] COMMAND [flags] [args]
//
// Connection settings come from CUSTOS_ADDR, CUSTOS_CA, CUSTOS_CERT and
// CUSTOS_KEY (written by custosd dev to client.env); the connection flags
// --addr, --tls-ca, --tls-cert and --tls-key override them and must come
// before the command (connflags.go). Security officers sign governance
// statements with their own key (--officer-key / CUSTOS_OFFICER_KEY, or a
// PKCS#11 token). See docs/cli.md and docs/governance.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc/status"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/hsm/pkcs11/qualify"
	"github.com/custos-kms/custos/internal/flagusage"
	"github.com/custos-kms/custos/internal/version"
)

func main() {
	// hsm check runs this program again as its second process (session
	// isolation, SO login): serve that and exit.
	qualify.MaybeChild()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// app holds the global settings and the standard streams of one run.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer

	addr, ca, cert, key string
	timeout             time.Duration
}

// usageError is a mistake in the command line: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// errHelp reports that help was printed: exit code 0.
var errHelp = errors.New("help printed")

// command is one custos command or subcommand.
type command struct {
	name    string // "key create"
	args    string // "[flags] NAME"
	summary string
	run     func(ctx context.Context, a *app, args []string) error
}

var commands []*command

func init() {
	commands = []*command{
		{"key create", "[--description D] [--json] NAME", "Create an AES-256-GCM key with version 1.", runKeyCreate},
		{"key list", "[--json]", "List every key in name order.", runKeyList},
		{"key get", "[--json] NAME", "Show a key's metadata.", runKeyGet},
		{"key rotate", "[--json] NAME", "Add a key version and make it the primary (encrypting) one.", runKeyRotate},
		{"key destroy", "[--version N] [--wait D] [officer flags] [--json] NAME", "Schedule a key version's destruction, or the whole key's (ScheduleKeyDestruction statement; needs the officer quorum).", runKeyDestroy},
		{"key cancel-destroy", "[--version N] [officer flags] [--json] NAME", "Cancel a scheduled destruction (CancelKeyDestruction statement, one officer).", runKeyCancelDestroy},
		{"key import", "(--key-file FILE | --token T --material FILE) [--algorithm A] [--description D] [--json] NAME", "Import your own AES-256 key as a new key (version 1, origin EXTERNAL; BYOK).", runKeyImport},
		{"key import-params", "[--algorithm A] [--public-key FILE] [--json] NAME", "Get one-time import parameters: an import public key and a token (24 h, on the node that answered).", runKeyImportParams},
		{"key enable", "[officer flags] [--json] NAME", "Re-enable a disabled or revoked key (EnableKey statement; needs the officer quorum).", runKeyEnable},
		{"key disable", "[officer flags] [--json] NAME", "Disable a key (DisableKey statement with an officer key, else SetKeyState).", runKeyDisable},
		{"key revoke", "[officer flags] [--json] NAME", "Revoke a key at once (RevokeKey statement, one officer).", runKeyRevoke},
		{"key policy get", "[--json] NAME", "Show a key's policy.", runKeyPolicyGet},
		{"key policy set", "--file POLICY.json [officer flags] NAME", "Replace a key's policy (SetPolicy statement; needs the officer quorum).", runKeyPolicySet},
		{"officer set-min-version", "--key K --version N [officer flags] [--json]", "Set a key's minimum decryption version, lower too (SetKeyMinVersion statement; needs the officer quorum).", runKeySetMinVersionOfficers},
		{"key min-version", "[--json] NAME VERSION", "Refuse decryption under versions of the key below VERSION.", runKeyMinVersion},
		{"digest", "FILE", "Print the data digest a decrypt of FILE records; officers scope a grant to it (grant --data-digest).", runDigest},
		{"encrypt", "--key K [--context k=v]... [--segment-size N] [--force] IN OUT", "Encrypt file IN into envelope file OUT ('-' for stdin/stdout).", runEncrypt},
		{"decrypt", "[--justification REASON] [--text T] [--ticket T] [--expect-context k=v]... [--wait [--wait-timeout D]] [--force] IN OUT", "Decrypt envelope file IN into OUT ('-' for stdin/stdout).", runDecrypt},
		{"datakey", "--key K [--context k=v]... [--show-plaintext] [--json]", "Generate a data key and print it wrapped (base64).", runDataKey},
		{"officer keygen", "--name N --out FILE [--passphrase-file F]", "Create an officer key and its public key file; print the fingerprint and the officers entry.", runOfficerKeygen},
		{"officer pubkey", "[--passphrase-file F] KEYFILE", "Print the public key (PEM) of an officer key file, for public_key_file.", runOfficerPubkey},
		{"officer list", "[--json]", "Show the cluster's officers, their key fingerprints and the quorum.", runOfficerList},
		{"officer pending", "[--key K]", "List decrypt requests waiting for approval.", runOfficerPending},
		{"officer approve", "[--uses N] [--ttl D] [officer flags] REQUEST_ID", "Approve a pending request into a grant (needs the quorum).", runOfficerApprove},
		{"officer deny", "[officer flags] REQUEST_ID", "Deny a pending request (one officer).", runOfficerDeny},
		{"officer grant", "--principal P --key K --reason R [--uses N] [--ttl D] [officer flags]", "Grant decrypts in advance (needs the quorum).", runOfficerGrant},
		{"officer revoke-grant", "[officer flags] GRANT_ID", "End a grant (one officer).", runOfficerRevokeGrant},
		{"officer grants", "[--key K]", "List the grants in force.", runOfficerGrants},
		{"officer sign", "[officer flags] FILE", "Show a statement file and add your signature to it.", runOfficerSign},
		{"officer submit", "[--json] FILE", "Submit a signed statement file.", runOfficerSubmit},
		{"officer proposals", "", "List the statements waiting on the cluster for signatures (proposals).", runOfficerProposals},
		{"officer sign-proposal", "[officer flags] ID", "Show a proposal and add your signature; the last one needed applies it.", runOfficerSignProposal},
		{"officer enrol", "[--valid D] [--cluster ID] [officer flags]", "Print your enrolment code, to register a security key in the console.", runOfficerEnrol},
		{"officer propose revoke", "--key K --out FILE", "Write an unsigned RevokeKey statement file.", runOfficerPropose("revoke", 0, keyFlag)},
		{"officer propose disable", "--key K --out FILE", "Write an unsigned DisableKey statement file.", runOfficerPropose("disable", 0, keyFlag)},
		{"officer propose enable", "--key K --out FILE", "Write an unsigned EnableKey statement file.", runOfficerPropose("enable", 0, keyFlag)},
		{"officer propose policy", "--key K --file POLICY.json --out FILE", "Write an unsigned SetPolicy statement file.", runOfficerPropose("policy", 0, policyFlags)},
		{"officer propose approve", "[--uses N] [--ttl D] --out FILE REQUEST_ID", "Write an unsigned ApproveRequest statement file.", runOfficerPropose("approve", 1, limitFlags)},
		{"officer propose deny", "--out FILE REQUEST_ID", "Write an unsigned DenyRequest statement file.", runOfficerPropose("deny", 1, nil)},
		{"officer propose grant", "--principal P --key K --reason R [--uses N] [--ttl D] --out FILE", "Write an unsigned CreateGrant statement file.", runOfficerPropose("grant", 0, grantFlags)},
		{"officer propose revoke-grant", "--out FILE GRANT_ID", "Write an unsigned RevokeGrant statement file.", runOfficerPropose("revoke-grant", 1, nil)},
		{"officer propose officers", "--file OFFICERS.json --out FILE", "Write an unsigned SetOfficers statement file.", runOfficerPropose("officers", 0, officersFileFlag)},
		{"officer propose genesis", "--officer NAME=PUBKEY.pem ... --quorum M [--ca CA.pem] [--profile development] --out FILE", "Write an unsigned CreateCluster statement: the officer-signed genesis of a new cluster (no cluster needed).", runOfficerProposeGenesis},
		{"officer propose sink-add", "--name N (--webhook URL --hmac-key-file F | --file PATH) [--required-for-release] --out FILE", "Write an unsigned AddSink statement file (it holds the HMAC key: protect it).", runOfficerPropose("sink-add", 0, sinkFlags)},
		{"officer propose sink-remove", "--out FILE NAME", "Write an unsigned RemoveSink statement file.", runOfficerPropose("sink-remove", 1, nil)},
		{"officer propose notify-rules", "--file RULES.json --out FILE", "Write an unsigned SetNotifyRules statement file.", runOfficerPropose("notify-rules", 0, rulesFileFlag)},
		{"officer propose admit", "--transport-key FP --identity-key FP [--oaep sha256|sha1] --out FILE NODE", "Write an unsigned AdmitNode statement file.", runOfficerPropose("admit", 1, admitFlags)},
		{"officer propose destroy", "--key K [--version N] [--wait D] --out FILE", "Write an unsigned ScheduleKeyDestruction statement file.", runOfficerPropose("destroy", 0, proposeDestroyFlags)},
		{"officer propose cancel-destroy", "--key K [--version N] --out FILE", "Write an unsigned CancelKeyDestruction statement file.", runOfficerPropose("cancel-destroy", 0, proposeDestroyFlags)},
		{"officer propose revoke-admission", "--out FILE NODE", "Write an unsigned RevokeAdmission statement file.", runOfficerPropose("revoke-admission", 1, nil)},
		{"officer propose set-min-version", "--key K --version N --out FILE", "Write an unsigned SetKeyMinVersion statement file (the officers may lower it).", runOfficerPropose("set-min-version", 0, setMinVersionFlags)},
		{"officer propose accept-restore", "--out FILE SHA256", "Write an unsigned AcceptRestore statement file.", runOfficerPropose("accept-restore", 1, nil)},
		{"officer propose rotate-domain-key", "--out FILE", "Write an unsigned RotateDomainKey statement file.", runOfficerPropose("rotate-domain-key", 0, nil)},
		{"officer propose cancel-rotation", "--out FILE", "Write an unsigned CancelDomainKeyRotation statement file.", runOfficerPropose("cancel-rotation", 0, nil)},
		{"officer ca add", "[officer flags] [--json] CA.pem", "Trust a CA to identify principals (AddClientAuthority statement; needs the officer quorum; pins the client authorities).", runOfficerCAAdd},
		{"officer ca remove", "[officer flags] [--json] SHA256", "Stop trusting a CA: its certificates identify nobody (RemoveClientAuthority statement, one officer).", runOfficerCARemove},
		{"officer ca list", "[--json]", "Show the client authorities the officers trust, and whether they are pinned.", runOfficerCAList},
		{"officer propose ca-add", "--out FILE CA.pem", "Write an unsigned AddClientAuthority statement file.", runOfficerPropose("ca-add", 1, nil)},
		{"officer propose ca-remove", "--out FILE SHA256", "Write an unsigned RemoveClientAuthority statement file.", runOfficerPropose("ca-remove", 1, nil)},
		{"officer witness add", "[officer flags] NAME PUBKEY.pem", "Register the customer's witness and its public key (AddWitness statement; needs the officer quorum).", runOfficerWitnessAdd},
		{"officer witness remove", "[officer flags] NAME", "Remove a witness (RemoveWitness statement; needs the officer quorum).", runOfficerWitnessRemove},
		{"officer witness list", "", "Show the witnesses and their last cosignatures.", runOfficerWitnessList},
		{"officer propose witness-add", "--out FILE NAME PUBKEY.pem", "Write an unsigned AddWitness statement file.", runOfficerPropose("witness-add", 2, nil)},
		{"officer propose witness-remove", "--out FILE NAME", "Write an unsigned RemoveWitness statement file.", runOfficerPropose("witness-remove", 1, nil)},
		{"officer quotas set", "[--keys N] [--pending N] [officer flags]", "Set the per-principal quotas on keys and pending approvals (SetQuotas statement; needs the officer quorum).", runOfficerQuotasSet},
		{"officer quotas get", "", "Show the per-principal quotas.", runOfficerQuotasGet},
		{"officer propose quotas", "[--keys N] [--pending N] --out FILE", "Write an unsigned SetQuotas statement file.", runOfficerPropose("quotas", 0, quotaFlags)},
		{"officer sink add", "--name N (--webhook URL --hmac-key-file F | --file PATH) [--required-for-release] [officer flags]", "Add a notification sink (AddSink statement, one officer).", runOfficerSinkAdd},
		{"officer sink remove", "[officer flags] NAME", "Remove a notification sink (RemoveSink statement; needs the officer quorum).", runOfficerSinkRemove},
		{"officer sink list", "[--json]", "List the notification sinks and their delivery cursors (never HMAC keys).", runOfficerSinkList},
		{"officer notify-rules get", "[--json]", "Show the cluster's notify rules.", runOfficerNotifyRulesGet},
		{"officer notify-rules set", "--file RULES.json [officer flags]", "Replace the notify rules (SetNotifyRules statement; needs the officer quorum).", runOfficerNotifyRulesSet},
		{"audit list", "[--key K] [--principal P] [--reason R] [--outcome O] [--operation OP] [--since T] [--until T] [--notify-only] [--from SEQ] [--limit N | --tail N [--newest-first]] [--json]", "List ledger records in order, filtered (auditors only); --tail: the newest N.", runAuditList},
		{"audit export", "[--from SEQ] [--force] OUT", "Export the ledger to file OUT ('-' for stdout), for offline verification.", runAuditExport},
		{"audit verify", "--pubkey PEM [--pubkey PEM]... [--genesis HEX] [--witness-state FILE] [--json] FILE", "Verify an export file offline: hash chain, checkpoints, trailer, and that it holds the head a witness cosigned.", runAuditVerify},
		{"audit witness", "--name N --key FILE --state FILE [--once] [--interval D]", "Run the customer's witness: check that each new ledger head extends the last one cosigned, cosign it, and report a fork.", runAuditWitness},
		{"audit pubkey", "", "Print the cluster's checkpoint public keys as PEM (for audit verify --pubkey).", runAuditPubkey},
		{"audit report", "[--since T] [--until T] [--key K] [--export FILE --pubkey PEM...] [--json]", "Print the key-use disclosure report for a period.", runAuditReport},
		{"audit watch", "[--from SEQ] [--key K] [--notify-only] [--json]", "Print ledger records as they are committed, until interrupted.", runAuditWatch},
		{"cluster status", "[--json]", "Show every configured node's view (Raft state, leader, indexes, ledger, HSM) and the members.", runClusterStatus},
		{"cluster add-voter", "[--json] ID RAFT_ADDR", "Add a voting member (operators; sent to the leader).", runClusterAddVoter},
		{"cluster remove", "[--json] ID", "Remove a member (operators; sent to the leader).", runClusterRemove},
		{"cluster transfer-leadership", "[--json] [ID]", "Ask the leader to hand over, to ID or any other voter (operators).", runClusterTransfer},
		{"cluster admission", "[--json] [--public-key FILE] NODE", "Show a node's admission as a custodian of the domain key; write its transport public key.", runClusterAdmission},
		{"cluster admit", "--transport-key FP --identity-key FP [--oaep sha256|sha1] [officer flags] NODE", "Admit a node as a custodian of the domain key (AdmitNode statement; needs the officer quorum).", runClusterAdmit},
		{"cluster revoke-admission", "[officer flags] NODE", "Revoke a node's admission: it destroys its key copies (RevokeAdmission statement, one officer).", runClusterRevokeAdmission},
		{"cluster accept-restore", "[officer flags] SHA256", "Accept a restore from a snapshot file: the cluster serves key crypto again (AcceptRestore statement; needs the officer quorum).", runClusterAcceptRestore},
		{"cluster rotate-domain-key", "[officer flags]", "Rotate the cluster's domain key so destroyed keys cannot be recovered from old files (RotateDomainKey statement, one officer).", runClusterRotateDomainKey},
		{"cluster cancel-rotation", "[officer flags]", "Abandon a running domain-key rotation (CancelDomainKeyRotation statement, one officer).", runClusterCancelRotation},
		{"cluster snapshot save", "[--json] FILE", "Save a checked snapshot of the replicated state, ledger included, to FILE (operators).", runClusterSnapshotSave},
		{"hsm trust", "--module PATH --token LABEL --public-key FILE --fingerprint HEX [--so-pin-file F] [--id ID]", "Security officer: mark an approved node transport key trusted on this HSM (key transport; no connection).", runHSMTrust},
		{"hsm check", "--module PATH --token LABEL [--pin-file F | --pin-env VAR] [--so-pin-file F] [--nss-config S] [--require PROFILE] [--json]", "Qualify a PKCS#11 module for custos: a table of checks with return codes, and a verdict (no connection).", runHSMCheck},
		{"version", "", "Print the version of this program.", runVersion},
	}
}

// isGroup reports whether some command's name starts with group + " ".
func isGroup(group string) bool {
	for _, c := range commands {
		if strings.HasPrefix(c.name, group+" ") {
			return true
		}
	}
	return false
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// run is the whole program; it returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) == 1 && (args[0] == "--version" || args[0] == "-version") {
		fmt.Fprintln(stdout, version.String("custos")) // like custosd --version
		return exitOK
	}
	fs := flag.NewFlagSet("custos", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	legacy := a.registerConnectionFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			a.topUsage(stdout, fs)
			return exitOK
		}
		fmt.Fprintf(stderr, "custos: %s\nRun 'custos --help' for usage.\n", err)
		return exitUsage
	}
	if err := legacy.check(fs, stderr); err != nil {
		fmt.Fprintf(stderr, "custos: %s\nRun 'custos --help' for usage.\n", err)
		return exitUsage
	}
	rest := fs.Args()
	if len(rest) == 0 {
		a.topUsage(stderr, fs)
		return exitUsage
	}
	name := rest[0]
	rest = rest[1:]
	if name == "help" {
		return a.help(rest, fs)
	}
	// Groups ("key", "officer", "key policy", "officer propose") take
	// subcommands. "GROUP help [SUBCOMMAND]" is "help GROUP [SUBCOMMAND]".
	for lookup(name) == nil && isGroup(name) {
		if len(rest) > 0 && rest[0] == "help" {
			return a.help(append(strings.Fields(name), rest[1:]...), fs)
		}
		if len(rest) == 0 || rest[0] == "-h" || rest[0] == "--help" || rest[0] == "-help" {
			w, code := stderr, exitUsage
			if len(rest) > 0 {
				w, code = stdout, exitOK
			}
			a.groupUsage(w, name)
			return code
		}
		name += " " + rest[0]
		rest = rest[1:]
	}
	cmd := lookup(name)
	if cmd == nil {
		fmt.Fprintf(stderr, "custos: unknown command %q\nRun 'custos --help' for usage.\n", name)
		return exitUsage
	}
	return a.finish(cmd, cmd.run(ctx, a, rest))
}

// finish prints err, if any, and returns the exit code.
func (a *app) finish(cmd *command, err error) int {
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(a.stderr, "custos: %s: %s\nRun 'custos %s --help' for usage.\n", cmd.name, ue.msg, cmd.name)
		return exitUsage
	default:
		msg := strings.TrimPrefix(errorLine(err), cmd.name+": ")
		fmt.Fprintf(a.stderr, "custos: %s: %s\n", cmd.name, msg)
		var he *hintError
		if errors.As(err, &he) {
			fmt.Fprintln(a.stderr, he.hint)
		}
		return exitError
	}
}

// errorLine renders err on one line. A gRPC status becomes "message (Code)".
func errorLine(err error) string {
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) && se.GRPCStatus() != nil {
		st := se.GRPCStatus()
		return fmt.Sprintf("%s (%s)", st.Message(), st.Code())
	}
	msg := strings.TrimPrefix(err.Error(), "custos: ")
	return strings.ReplaceAll(msg, "\n", " ")
}

func (a *app) help(args []string, global *flag.FlagSet) int {
	if len(args) == 0 {
		a.topUsage(a.stdout, global)
		return exitOK
	}
	name := strings.Join(args, " ")
	if lookup(name) == nil && isGroup(name) {
		a.groupUsage(a.stdout, name)
		return exitOK
	}
	cmd := lookup(name)
	if cmd == nil {
		fmt.Fprintf(a.stderr, "custos: help: unknown command %q\n", name)
		return exitUsage
	}
	return a.finish(cmd, cmd.run(context.Background(), a, []string{"--help"}))
}

func (a *app) topUsage(w io.Writer, global *flag.FlagSet) {
	fmt.Fprint(w, `Usage: custos [connection flags] COMMAND [flags] [args]

custos manages keys in a custos cluster and encrypts and decrypts files
with envelope encryption. Connection settings come from CUSTOS_ADDR,
CUSTOS_CA, CUSTOS_CERT and CUSTOS_KEY (custosd dev writes them to
client.env); the connection flags (--addr, --tls-ca, --tls-cert,
--tls-key, --timeout) override them and go before COMMAND.

Security officers sign governance statements (key revoke/enable/policy,
officer ...) with the key in --officer-key or CUSTOS_OFFICER_KEY, as the
officer named by --officer or CUSTOS_OFFICER_NAME (or on a PKCS#11 token
with --officer-pkcs11); see docs/governance.md.

Commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-24s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "  %-24s %s\n", "help [COMMAND]", "Show help for a command.")
	fmt.Fprint(w, "\nConnection flags:\n")
	printFlags(w, global, legacyConnectionFlags...)
	fmt.Fprint(w, "\nRun 'custos COMMAND --help' for a command's flags.\n")
}

func (a *app) groupUsage(w io.Writer, group string) {
	fmt.Fprintf(w, "Usage: custos %s SUBCOMMAND [flags] [args]\n\nSubcommands:\n", group)
	for _, c := range commands {
		if sub, ok := strings.CutPrefix(c.name, group+" "); ok {
			fmt.Fprintf(w, "  %-22s %s\n", sub, c.summary)
		}
	}
	fmt.Fprintf(w, "\nRun 'custos %s SUBCOMMAND --help' for a subcommand's flags.\n", group)
}

// printFlags prints fs's flags with double dashes, each default once
// (internal/flagusage), leaving out those named in hide.
func printFlags(w io.Writer, fs *flag.FlagSet, hide ...string) {
	flagusage.Print(w, fs, hide...)
}

// flags returns a flag set for cmd.
func (a *app) flags(cmd string) *flag.FlagSet {
	fs := flag.NewFlagSet("custos "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parse reports errors itself
	fs.Usage = func() {}
	return fs
}

// parse parses args with fs, allowing flags before and after positional
// arguments ("--" ends the flags), and checks the number of positional
// arguments is in [min, max]. --help prints the command's help and returns
// errHelp.
func (a *app) parse(cmdName string, fs *flag.FlagSet, args []string, min, max int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				a.commandUsage(cmdName, fs)
				return nil, errHelp
			}
			return nil, usagef("%s", err)
		}
		rest := fs.Args()
		consumed := args[:len(args)-len(rest)]
		if len(consumed) > 0 && consumed[len(consumed)-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		if len(rest) == 0 {
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	switch {
	case len(pos) < min:
		return nil, usagef("too few arguments")
	case len(pos) > max:
		return nil, usagef("unexpected argument %q", pos[max])
	}
	return pos, nil
}

func (a *app) commandUsage(name string, fs *flag.FlagSet) {
	cmd := lookup(name)
	fmt.Fprintf(a.stdout, "Usage: custos [connection flags] %s %s\n\n%s\n", cmd.name, cmd.args, cmd.summary)
	if help := longHelp[name]; help != "" {
		fmt.Fprintf(a.stdout, "\n%s\n", help)
	}
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprint(a.stdout, "\nFlags:\n")
		printFlags(a.stdout, fs)
	}
}

// client dials custos with the environment and the connection flags.
// withClient connects as the flags and environment say (client), runs f
// with the client and closes it: the shape of every command that talks to
// a node.
func (a *app) withClient(ctx context.Context, f func(c *custos.Client) error) error {
	c, err := a.client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return f(c)
}

func (a *app) client(ctx context.Context) (*custos.Client, error) {
	cfg := custos.Config{CallTimeout: a.timeout}
	var missing []string
	pick := func(flagVal, env, flagName string) string {
		if flagVal != "" {
			return flagVal
		}
		if v := strings.TrimSpace(os.Getenv(env)); v != "" {
			return v
		}
		missing = append(missing, fmt.Sprintf("$%s (or --%s)", env, flagName))
		return ""
	}
	cfg.Addrs = custos.SplitAddrs(pick(a.addr, custos.EnvAddr, "addr"))
	cfg.CAFile = pick(a.ca, custos.EnvCA, "tls-ca")
	cfg.CertFile = pick(a.cert, custos.EnvCert, "tls-cert")
	cfg.KeyFile = pick(a.key, custos.EnvKey, "tls-key")
	if len(missing) > 0 {
		return nil, fmt.Errorf("not configured: set %s; custosd dev writes them to client.env in its data directory (load it with: source .dev/client.env)", strings.Join(missing, ", "))
	}
	if a.timeout <= 0 {
		cfg.CallTimeout = -1
	}
	cfg.Genesis = strings.TrimSpace(os.Getenv(custos.EnvGenesis))
	return custos.Dial(ctx, cfg)
}
