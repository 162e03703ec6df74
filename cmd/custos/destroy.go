package main

import (
	"context"
	"flag"
	"time"

	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Key destruction (docs/key-destruction.md): the officer quorum schedules,
// one officer cancels within the waiting period.

// destroyFlags registers --version and --wait (`key destroy`,
// `key cancel-destroy`: the key is the positional argument).
func destroyFlags(fs *flag.FlagSet, f *opFlags) {
	fs.UintVar(&f.version, "version", 0, "the version; 0 (default): the whole key, every version")
	fs.DurationVar(&f.wait, "wait", 0, "waiting period before the destruction completes (default 168h; at least 1h, or 1s in a development cluster; at most 720h)")
}

// proposeDestroyFlags is destroyFlags with --key (`officer propose`).
func proposeDestroyFlags(fs *flag.FlagSet, f *opFlags) {
	fs.StringVar(&f.key, "key", "", "the key")
	destroyFlags(fs, f)
}

// buildDestroyOp builds a ScheduleKeyDestruction or CancelKeyDestruction.
func buildDestroyOp(op string, f *opFlags) (func(*custosv1.Statement), error) {
	if f.key == "" {
		return nil, usagef("--key is required")
	}
	if f.version > 1<<32-1 {
		return nil, usagef("--version %d is too large", f.version)
	}
	if f.wait < 0 || (f.wait > 0 && f.wait < time.Second) || f.wait > kms.MaxDestructionWait {
		return nil, usagef("--wait %s: between 1s and %s (0 for the default, %s)", f.wait, kms.MaxDestructionWait, kms.DefaultDestructionWait)
	}
	key, version, wait := f.key, uint32(f.version), int64(f.wait/time.Second)
	if op == "cancel-destroy" {
		return func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_CancelKeyDestruction{CancelKeyDestruction: &custosv1.CancelKeyDestruction{Key: key, Version: version}}
		}, nil
	}
	return func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_ScheduleKeyDestruction{ScheduleKeyDestruction: &custosv1.ScheduleKeyDestruction{
			Key: key, Version: version, WaitingSeconds: wait}}
	}, nil
}

func runKeyDestroy(ctx context.Context, a *app, args []string) error {
	return onlineOp(ctx, a, "key destroy", "destroy", args, 1, destroyFlags)
}

func runKeyCancelDestroy(ctx context.Context, a *app, args []string) error {
	return onlineOp(ctx, a, "key cancel-destroy", "cancel-destroy", args, 1, destroyFlags)
}

func init() {
	longHelp["key destroy"] = `Schedules the destruction of version --version of NAME, or of the whole key
(every version) without --version: a ScheduleKeyDestruction statement,
which needs the officer quorum. From the moment it applies, what it names
refuses every use (each refusal is a DENY record). After the waiting period
(--wait, default 7 days; at least 1 hour, or 1 second in a development
cluster; at most 30 days) the leader completes it: the wrapped KEK leaves
the replicated state and every node destroys its HSM copy. Until then one
officer can cancel it with 'custos key cancel-destroy'. Older Raft log
segments and snapshots taken before still hold the KEK wrapped under the
domain key: see docs/key-destruction.md for what destruction does and does
not guarantee yet.`
	longHelp["key cancel-destroy"] = `Cancels a scheduled destruction of NAME (--version, or the whole key) that
has not completed: a CancelKeyDestruction statement, one officer.`
}
