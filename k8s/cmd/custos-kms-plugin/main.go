// Command custos-kms-plugin is a Kubernetes KMS v2 plugin backed by custos
// (docs/kubernetes.md): the API server encrypts Secrets with DEK seeds that
// custos seals under one of its keys, and every unwrap of a seed is a
// decision in custos's ledger.
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
	"strconv"
	"strings"
	"syscall"
	"time"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/k8s/kmsplugin"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

const usage = `Usage: custos-kms-plugin --listen unix:///PATH --custos-key NAME [flags]

Serves the Kubernetes KMS v2 API on a unix socket and keeps the key in a
custos cluster, reached over mutual TLS with the plugin's own client
certificate (its common name is the principal custos records, e.g.
kube-apiserver). Connection flags default to the CUSTOS_ADDR, CUSTOS_CA,
CUSTOS_CERT, CUSTOS_KEY and CUSTOS_GENESIS variables. Stop it with SIGTERM
or SIGINT: it finishes the calls in progress and removes its socket.

Flags:
`

// options are the parsed flags.
type options struct {
	listen, custosKey            string
	socketMode                   string
	addr, ca, cert, key, genesis string
	reason, text, ticket, encCtx string
	statusTTL, statusErrTTL      time.Duration
	timeout, shutdownGrace       time.Duration
	logLevel                     string
	logJSON                      bool
}

// usageError is a command-line mistake: exit code 2.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func parse(args []string, stderr io.Writer) (*options, error) {
	fl := flag.NewFlagSet("custos-kms-plugin", flag.ContinueOnError)
	fl.SetOutput(stderr)
	o := &options{}
	fl.StringVar(&o.listen, "listen", "", "the socket to serve: unix:///absolute/path (as the EncryptionConfiguration's endpoint) or /absolute/path; required")
	fl.StringVar(&o.socketMode, "socket-mode", "0600", "the socket's permission bits (octal)")
	fl.StringVar(&o.custosKey, "custos-key", "", "the custos key that seals the API server's DEK seeds; required")
	fl.StringVar(&o.addr, "addr", os.Getenv(custos.EnvAddr), "custos node address host:port, or a comma-separated list (default $CUSTOS_ADDR)")
	fl.StringVar(&o.ca, "ca", os.Getenv(custos.EnvCA), "PEM CA bundle that verifies the custos nodes (default $CUSTOS_CA)")
	fl.StringVar(&o.cert, "cert", os.Getenv(custos.EnvCert), "the plugin's client certificate, PEM (default $CUSTOS_CERT)")
	fl.StringVar(&o.key, "key", os.Getenv(custos.EnvKey), "the plugin's client private key, PEM (default $CUSTOS_KEY)")
	fl.StringVar(&o.genesis, "genesis", os.Getenv(custos.EnvGenesis), "optional genesis fingerprint of the only custos cluster to use (default $CUSTOS_GENESIS)")
	fl.StringVar(&o.reason, "reason", custos.ReasonString(kmsplugin.DefaultReason), "justification reason recorded with every decrypt: one of "+strings.Join(custos.ReasonNames(), ", "))
	fl.StringVar(&o.text, "justification", kmsplugin.DefaultText, "justification text recorded with every decrypt (the API server's request uid is appended)")
	fl.StringVar(&o.ticket, "ticket", "", "optional ticket reference recorded with every decrypt")
	fl.StringVar(&o.encCtx, "context", "", "extra encryption context, k=v[,k=v...], e.g. cluster=prod-tokyo; never change it once Secrets are written")
	fl.DurationVar(&o.statusTTL, "status-ttl", kmsplugin.DefaultStatusTTL, "how long a healthy Status answer is reused")
	fl.DurationVar(&o.statusErrTTL, "status-error-ttl", kmsplugin.DefaultStatusErrorTTL, "how long an unhealthy Status answer is reused")
	fl.DurationVar(&o.timeout, "timeout", kmsplugin.DefaultStatusTimeout, "bound on each custos call without a deadline of its own, and on one Status probe")
	fl.DurationVar(&o.shutdownGrace, "shutdown-grace", 10*time.Second, "how long a stop waits for calls in progress")
	fl.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.BoolVar(&o.logJSON, "log-json", true, "log JSON lines (false: text)")
	fl.Usage = func() {
		fmt.Fprint(fl.Output(), usage)
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	if fl.NArg() > 0 {
		return nil, usageError{fmt.Errorf("unexpected argument %q", fl.Arg(0))}
	}
	if o.listen == "" || o.custosKey == "" {
		return nil, usageError{errors.New("--listen and --custos-key are required")}
	}
	return o, nil
}

// config turns the options into the client and plugin configurations.
func (o *options) config(log *slog.Logger) (custos.Config, kmsplugin.Config, os.FileMode, error) {
	var cc custos.Config
	var pc kmsplugin.Config
	mode, err := strconv.ParseUint(o.socketMode, 8, 32)
	if err != nil || mode > 0o777 {
		return cc, pc, 0, fmt.Errorf("--socket-mode %q: want octal permission bits such as 0600", o.socketMode)
	}
	reason, err := custos.ParseReason(o.reason)
	if err != nil {
		return cc, pc, 0, fmt.Errorf("--reason: %w", err)
	}
	encCtx := map[string]string{}
	for kv := range strings.SplitSeq(o.encCtx, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return cc, pc, 0, fmt.Errorf("--context %q: want k=v[,k=v...]", o.encCtx)
		}
		if k == kmsplugin.PurposeContextKey {
			return cc, pc, 0, fmt.Errorf("--context: the entry %q is the plugin's own", k)
		}
		encCtx[k] = v
	}
	cc = custos.Config{Addrs: custos.SplitAddrs(o.addr), CAFile: o.ca, CertFile: o.cert, KeyFile: o.key,
		Genesis: o.genesis, CallTimeout: o.timeout}
	pc = kmsplugin.Config{Key: o.custosKey, Reason: reason, Text: o.text, Ticket: o.ticket, Context: encCtx,
		StatusTTL: o.statusTTL, StatusErrorTTL: o.statusErrTTL, StatusTimeout: o.timeout, Logger: log}
	return cc, pc, os.FileMode(mode), nil
}

func newLogger(w io.Writer, level string, json bool) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	if json {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

// run serves until ctx ends. ready, if not nil, is called with the socket
// path once the plugin accepts calls.
func run(ctx context.Context, args []string, stderr io.Writer, ready func(string)) error {
	o, err := parse(args, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, o.logLevel, o.logJSON)
	if err != nil {
		return err
	}
	cc, pc, mode, err := o.config(log)
	if err != nil {
		return err
	}
	// Dial does not wait for custos: the plugin starts while custos is
	// down and reports unhealthy until it answers.
	c, err := custos.Dial(ctx, cc)
	if err != nil {
		return err
	}
	defer c.Close()
	pc.Keys, pc.Sign = c.Keys(), c.SignDecryptRequest
	p, err := kmsplugin.New(pc)
	if err != nil {
		return err
	}
	lis, err := kmsplugin.Listen(o.listen, mode)
	if err != nil {
		return err
	}
	defer lis.Close()
	srv := kmsplugin.NewServer(p)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	log.Info("serving KMS v2", "socket", lis.Path(), "mode", fmt.Sprintf("%#o", mode), "custos_key", p.Key(),
		"custos", strings.Join(cc.Addrs, ","), "reason", custosv1.Reason_name[int32(pc.Reason)])
	if ready != nil {
		ready(lis.Path())
	}
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("stopping")
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	t := time.NewTimer(o.shutdownGrace)
	defer t.Stop()
	select {
	case <-stopped:
	case <-t.C:
		srv.Stop()
	}
	return nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr, nil); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "custos-kms-plugin:", err)
		if errors.As(err, new(usageError)) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
