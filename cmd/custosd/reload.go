package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/custos-kms/custos/internal/node"
)

// reloadOnHangup re-reads the configuration at every SIGHUP until ctx ends
// and applies what a running node can change (reloadConfig).
func reloadOnHangup(ctx context.Context, reload func() error, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		watchReloads(ctx, hup, reload, log)
	}()
}

// watchReloads calls reload for every signal received on sigs until ctx
// ends, logging the outcome. A failed reload keeps the running
// configuration.
func watchReloads(ctx context.Context, sigs <-chan os.Signal, reload func() error, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-sigs:
			if err := reload(); err != nil {
				log.Error("configuration reload refused; the running configuration stays", "err", err)
				continue
			}
			log.Info("configuration reloaded")
		}
	}
}

// reloadConfig reads the configuration file again (checked as at start,
// secret files and environment read again) and applies the XKS key stores
// and SigV4 credentials to the running node (node.ReloadXKS). TLS
// certificates and CA bundles need no signal: they reload when their files
// change. Every other field is fixed at start; a change to one is logged
// and needs a restart.
func reloadConfig(n *node.Node, path string, getenv func(string) string, running node.Config, log *slog.Logger) error {
	cfg, err := loadConfig(path, getenv)
	if err != nil {
		return err
	}
	if err := n.ReloadXKS(cfg.XKS); err != nil {
		return err
	}
	if fixed := fixedChanges(running, cfg); len(fixed) > 0 {
		log.Warn("configuration fields changed that apply only at start; restart the node for them", "fields", fixed)
	}
	return nil
}

// fixedChanges names the start-only fields that differ between a and b.
func fixedChanges(a, b node.Config) []string {
	var out []string
	for _, f := range []struct {
		name string
		same bool
	}{
		{"id", a.ID == b.ID},
		{"data_dir", a.DataDir == b.DataDir},
		{"listen", a.Listen == b.Listen},
		{"raft_addr", a.RaftAddr == b.RaftAddr},
		{"pkcs11", a.PKCS11 == b.PKCS11},
		{"tls", a.TLS == b.TLS},
		{"metrics_listen", a.MetricsListen == b.MetricsListen},
	} {
		if !f.same {
			out = append(out, f.name)
		}
	}
	return out
}
