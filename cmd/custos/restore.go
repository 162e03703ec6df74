package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
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
	fmt.Fprintf(w, "  restore id:        %s (every statement names it from now on; `officer propose --cluster-id` needs --restore-id)\n", r.GetRestoreId())
}

// buildRotationOp builds a RotateDomainKey or CancelDomainKeyRotation
// operation.
func buildRotationOp(op string) func(*custosv1.Statement) {
	return func(st *custosv1.Statement) {
		if op == "cancel-rotation" {
			st.Operation = &custosv1.Statement_CancelDomainKeyRotation{CancelDomainKeyRotation: &custosv1.CancelDomainKeyRotation{}}
			return
		}
		st.Operation = &custosv1.Statement_RotateDomainKey{RotateDomainKey: &custosv1.RotateDomainKey{}}
	}
}

func runClusterRotateDomainKey(ctx context.Context, a *app, args []string) error {
	return onlineOp(ctx, a, "cluster rotate-domain-key", "rotate-domain-key", args, 0, nil)
}

func runClusterCancelRotation(ctx context.Context, a *app, args []string) error {
	return onlineOp(ctx, a, "cluster cancel-rotation", "cancel-rotation", args, 0, nil)
}

// printRotation prints the domain key's epoch and a running rotation in
// cluster status.
func printRotation(w io.Writer, cs *custosv1.ClusterStatus) {
	r := cs.GetRotation()
	if r == nil {
		if cs.GetDomainKeyEpoch() > 0 {
			fmt.Fprintf(w, "\nDomain key: epoch %d (rotated %d time(s))\n", cs.GetDomainKeyEpoch(), cs.GetDomainKeyEpoch())
		}
		return
	}
	fmt.Fprintf(w, "\nDomain-key rotation to epoch %d: generator %s, %d of %d KEKs re-wrapped\n", r.GetEpoch(),
		orDash(r.GetGenerator()), r.GetRewrapped(), r.GetToRewrap())
	if r.GetGenerator() == "" {
		fmt.Fprintf(w, "  waiting for a custodian to generate the new key\n")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  NODE\tSTATE\tTRANSPORT KEY\tNEXT")
	for _, ad := range r.GetNodes() {
		next := "-"
		switch ad.GetState() {
		case custosv1.AdmissionState_ADMISSION_STATE_OFFERED:
			next = "officers: custos cluster admit --rotation " + ad.GetNode() + " --transport-key … (custos cluster admission --rotation " + ad.GetNode() + ")"
		case custosv1.AdmissionState_ADMISSION_STATE_APPROVED:
			next = "generator's HSM security officer: custos hsm trust --fingerprint " + ad.GetApprovedFingerprint() + " …"
		case custosv1.AdmissionState_ADMISSION_STATE_SENT:
			next = "the node unwraps the new key"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", ad.GetNode(), admissionState(ad), orDash(ad.GetTransportKeyFingerprint()), next)
	}
	tw.Flush()
}
