package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"

	custos "github.com/custos-kms/custos/clients/go"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// quotaFlags registers the flags of `officer quotas set` and `officer
// propose quotas`.
func quotaFlags(fs *flag.FlagSet, f *opFlags) {
	fs.UintVar(&f.quotaKeys, "keys", 0, "keys one principal may create (0: the default, 1000)")
	fs.UintVar(&f.quotaPending, "pending", 0, "requests one principal may have waiting for approval (0: the default, 16)")
}

// buildQuotasOp builds a SetQuotas operation.
func buildQuotasOp(f *opFlags) (func(*custosv1.Statement), error) {
	if f.quotaKeys > math.MaxUint32 || f.quotaPending > math.MaxUint32 {
		return nil, usagef("--keys and --pending must fit 32 bits")
	}
	q := &custosv1.Quotas{MaxKeysPerPrincipal: uint32(f.quotaKeys), MaxPendingPerPrincipal: uint32(f.quotaPending)}
	return func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_SetQuotas{SetQuotas: &custosv1.SetQuotas{Quotas: q}}
	}, nil
}

func runOfficerQuotasSet(ctx context.Context, a *app, args []string) error {
	return onlineOp(ctx, a, "officer quotas set", "quotas", args, 0, quotaFlags)
}

func runOfficerQuotasGet(ctx context.Context, a *app, args []string) error {
	fs := a.flags("officer quotas get")
	if _, err := a.parse("officer quotas get", fs, args, 0, 0); err != nil {
		return err
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		g, err := c.GetGovernance(ctx)
		if err != nil {
			return err
		}
		printQuotas(a.stdout, g)
		return nil
	})
}

func printQuotas(w io.Writer, g *custosv1.Governance) {
	q := g.GetQuotas()
	or := func(v uint32, def string) string {
		if v == 0 {
			return def + " (default)"
		}
		return fmt.Sprint(v)
	}
	fmt.Fprintf(w, "quotas: max_keys_per_principal=%s max_pending_per_principal=%s\n",
		or(q.GetMaxKeysPerPrincipal(), "1000"), or(q.GetMaxPendingPerPrincipal(), "16"))
}
