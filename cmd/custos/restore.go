package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// buildAcceptRestoreOp builds an AcceptRestore operation naming the
// snapshot file's SHA-256 (as `custosd restore` and `custos cluster status`
// print it).
func buildAcceptRestoreOp(pos []string) (func(*custosv1.Statement), error) {
	sum := strings.ToLower(strings.TrimSpace(pos[0]))
	if len(sum) != 64 || strings.Trim(sum, "0123456789abcdef") != "" {
		return nil, usagef("SHA256 %q: want the snapshot file's SHA-256, 64 hex digits (custos cluster status shows it)", pos[0])
	}
	return func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_AcceptRestore{AcceptRestore: &custosv1.AcceptRestore{SnapshotSha256: sum}}
	}, nil
}

func runClusterAcceptRestore(ctx context.Context, a *app, args []string) error {
	return onlineOp(ctx, a, "cluster accept-restore", "accept-restore", args, 1, nil)
}

// printRestore prints a restored cluster's restore record in cluster status.
func printRestore(w io.Writer, r *custosv1.ClusterRestore) {
	if r == nil {
		return
	}
	state := "ACCEPTED by the officers at " + unixNano(r.GetAcceptTimeUnixNano())
	if !r.GetAccepted() {
		state = "WAITING for the officers: no key crypto until they accept it (custos cluster accept-restore " + r.GetSnapshotSha256() + ")"
	}
	fmt.Fprintf(w, "\nRestored from a snapshot file: %s\n", state)
	fmt.Fprintf(w, "  snapshot SHA-256:  %s\n", r.GetSnapshotSha256())
	fmt.Fprintf(w, "  written by:        %s at Raft index %d, term %d, %s\n", r.GetSourceNode(), r.GetSourceRaftIndex(),
		r.GetSourceRaftTerm(), time.Unix(0, r.GetCreatedUnixNano()).UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "  restored into:     %s at %s\n", r.GetNode(), unixNano(r.GetRestoreTimeUnixNano()))
}
