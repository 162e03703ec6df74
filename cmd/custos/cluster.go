package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	custos "github.com/custos-kms/custos/clients/go"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// operatorHint explains a PermissionDenied from the ClusterService.
const operatorHint = "custos: only the principals the cluster lists as operators may change the membership or take snapshots; connect with an operator's client certificate (--tls-cert/--tls-key or CUSTOS_CERT/CUSTOS_KEY)"

// clusterErr adds the operator hint to a PermissionDenied. (A NOT_LEADER
// refusal already says where the leader is: see custos.Client.AddVoter.)
func clusterErr(err error) error {
	if err == nil {
		return nil
	}
	if status.Code(err) == codes.PermissionDenied {
		return &hintError{err, operatorHint}
	}
	return err
}

var statusJSON = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// nodeView is one row of cluster status --json: the address asked and its
// answer or error.
type nodeView struct {
	Addr   string          `json:"addr"`
	Status json.RawMessage `json:"status,omitempty"`
	Error  string          `json:"error,omitempty"`
}

func runClusterStatus(ctx context.Context, a *app, args []string) error {
	fs := a.flags("cluster status")
	asJSON := fs.Bool("json", false, "print one JSON object per address: {\"addr\", \"status\" or \"error\"}")
	if _, err := a.parse("cluster status", fs, args, 0, 0); err != nil {
		return err
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		addrs := c.Addrs()
		sts, errs := c.ClusterStatusAll(ctx)
		answered := 0
		for _, st := range sts {
			if st != nil {
				answered++
			}
		}
		if *asJSON {
			for i, addr := range addrs {
				v := nodeView{Addr: addr}
				if sts[i] != nil {
					b, err := statusJSON.Marshal(sts[i])
					if err != nil {
						return err
					}
					v.Status = b
				} else {
					v.Error = errorLine(errs[i])
				}
				b, err := json.Marshal(v)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "%s\n", b)
			}
		} else {
			printClusterTable(a.stdout, addrs, sts, errs)
		}
		if answered == 0 {
			return fmt.Errorf("no node answered: %s", errorLine(errs[0]))
		}
		return nil
	})
}

// printClusterTable prints one row per address, then the members as the
// best-informed node (the leader, else the first that answered) sees them.
func printClusterTable(w io.Writer, addrs []string, sts []*custosv1.ClusterStatus, errs []error) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDRESS\tNODE\tSTATE\tLEADER\tTERM\tCOMMIT\tAPPLIED\tLEDGER SEQ\tHSM\tDOMAIN KEY")
	var best *custosv1.ClusterStatus
	var notes []string
	for i, addr := range addrs {
		st := sts[i]
		if st == nil {
			fmt.Fprintf(tw, "%s\t-\tUNREACHABLE\t-\t-\t-\t-\t-\t-\t-\n", addr)
			notes = append(notes, fmt.Sprintf("%s: %s", addr, errorLine(errs[i])))
			continue
		}
		if best == nil || (st.GetRaftState() == "LEADER" && best.GetRaftState() != "LEADER") {
			best = st
		}
		hsmCol := "healthy"
		if !st.GetHsmHealthy() {
			hsmCol = "UNHEALTHY"
		}
		dk := "yes"
		if !st.GetHasDomainKey() {
			dk = "NO"
		}
		if d := st.GetHsmDetail(); d != "" {
			notes = append(notes, fmt.Sprintf("%s (%s): %s", addr, st.GetNodeId(), d))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", addr, st.GetNodeId(), st.GetRaftState(),
			orDash(st.GetLeaderId()), st.GetTerm(), st.GetCommitIndex(), st.GetAppliedIndex(), st.GetLedgerSeq(), hsmCol, dk)
	}
	tw.Flush()
	if best != nil {
		fmt.Fprintf(w, "\nCluster %s, members as %s sees them:\n", orDash(best.GetClusterId()), best.GetNodeId())
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  ID\tRAFT ADDRESS\tSUFFRAGE\tLEADER")
		for _, s := range best.GetServers() {
			l := ""
			if s.GetLeader() {
				l = "*"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", s.GetId(), s.GetRaftAddr(), s.GetSuffrage(), l)
		}
		tw.Flush()
		printAdmissions(w, best)
		printRestore(w, best.GetRestore())
		printRotation(w, best)
	}
	if len(notes) > 0 {
		fmt.Fprintln(w, "\nNotes:")
		for _, n := range notes {
			fmt.Fprintf(w, "  %s\n", n)
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// clusterChange is the common shape of the membership commands.
func clusterChange(ctx context.Context, a *app, name string, args []string, min, max int,
	call func(*custos.Client, context.Context, []string) (*custosv1.ClusterStatus, error)) error {
	fs := a.flags(name)
	asJSON := fs.Bool("json", false, "print the leader's view afterwards as one JSON object")
	pos, err := a.parse(name, fs, args, min, max)
	if err != nil {
		return err
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		st, err := call(c, ctx, pos)
		if err != nil {
			return clusterErr(err)
		}
		if *asJSON {
			b, err := statusJSON.Marshal(st)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "%s\n", b)
			return nil
		}
		printClusterTable(a.stdout, []string{"(leader)"}, []*custosv1.ClusterStatus{st}, []error{nil})
		return nil
	})
}

func runClusterAddVoter(ctx context.Context, a *app, args []string) error {
	return clusterChange(ctx, a, "cluster add-voter", args, 2, 2, func(c *custos.Client, ctx context.Context, pos []string) (*custosv1.ClusterStatus, error) {
		return c.AddVoter(ctx, pos[0], pos[1])
	})
}

func runClusterRemove(ctx context.Context, a *app, args []string) error {
	return clusterChange(ctx, a, "cluster remove", args, 1, 1, func(c *custos.Client, ctx context.Context, pos []string) (*custosv1.ClusterStatus, error) {
		return c.RemoveServer(ctx, pos[0])
	})
}

func runClusterTransfer(ctx context.Context, a *app, args []string) error {
	return clusterChange(ctx, a, "cluster transfer-leadership", args, 0, 1, func(c *custos.Client, ctx context.Context, pos []string) (*custosv1.ClusterStatus, error) {
		id := ""
		if len(pos) == 1 {
			id = pos[0]
		}
		return c.TransferLeadership(ctx, id)
	})
}

func runClusterSnapshotSave(ctx context.Context, a *app, args []string) error {
	fs := a.flags("cluster snapshot save")
	asJSON := fs.Bool("json", false, "print the snapshot's header as one JSON object")
	pos, err := a.parse("cluster snapshot save", fs, args, 1, 1)
	if err != nil {
		return err
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		// A snapshot can be large: --timeout does not bound the transfer
		// (interrupt to stop it; FILE is then left as it was).
		hdr, err := writeAtomicPrivate(pos[0], func(w io.Writer) (*custos.SnapshotHeader, error) {
			return c.SaveSnapshotHeader(ctx, w)
		})
		if err != nil {
			return clusterErr(err)
		}
		if *asJSON {
			b, err := json.Marshal(hdr)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "%s\n", b)
			return nil
		}
		fmt.Fprintf(a.stdout, "snapshot of cluster %s from node %s at raft index %d (term %d), %s payload bytes, created %s: %s\n",
			hdr.ClusterID, hdr.NodeID, hdr.RaftIndex, hdr.RaftTerm, strconv.FormatInt(hdr.PayloadSize, 10),
			hdr.Created.UTC().Format(time.RFC3339), pos[0])
		return nil
	})
}

// writeAtomicPrivate writes path (mode 0600: a snapshot holds the whole
// key state, wrapped) through a temporary file in the same directory,
// synced and renamed over path only when fill succeeded; the directory is
// synced after the rename.
func writeAtomicPrivate[T any](path string, fill func(io.Writer) (T, error)) (res T, err error) {
	if path == "" || path == "-" || strings.HasSuffix(path, string(os.PathSeparator)) {
		return res, usagef("FILE must name a file")
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return res, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return res, err
	}
	if res, err = fill(f); err != nil {
		return res, err
	}
	if err = f.Sync(); err != nil {
		return res, err
	}
	if err = f.Close(); err != nil {
		return res, err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return res, err
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		d.Close()
	}
	return res, nil
}

func init() {
	longHelp["cluster status"] = `Every address in CUSTOS_ADDR (or --addr, comma-separated) is asked for its
own view, so one command shows the whole cluster: per node its Raft state,
the leader it follows, term, commit and applied index, ledger sequence,
whether its HSM answers and whether that HSM holds the cluster's domain key
(a node without it replicates and decides but serves no cryptographic
request). The member list is the leader's view when it answered. An
unreachable node is a row of its own; the command fails only when no node
answers. Any authenticated principal may run it.`
	longHelp["cluster add-voter"] = `ID is the new node's Raft id (its node certificate must name it) and
RAFT_ADDR the host:port of its Raft transport. The change goes to the
leader: custos finds it among the configured addresses. The new node
replicates the log but holds no key material until the officers admit its
HSM (docs/cluster.md). Only operators may run it.`
	longHelp["cluster remove"] = `Removes the member with Raft id ID from the configuration. The leader
refuses to remove the last voter. Removing a node does not erase its
disk or HSM: decommission it (docs/cluster.md). Only operators may run it.`
	longHelp["cluster transfer-leadership"] = `Asks the leader to hand over to the voter ID, or to any other voter when
ID is omitted, e.g. before maintenance of the leader's host. Only
operators may run it.`
	longHelp["cluster snapshot save"] = `Streams a snapshot of the replicated state (keys, policies, officers,
grants, the whole decision ledger) from the node that answers, checks its
header, length and SHA-256 trailer, and writes it to FILE through a
temporary file renamed into place only on success (mode 0600). The file
names the cluster it belongs to, so it cannot be restored into another
cluster. It holds key-encryption keys only wrapped under the domain key,
which never leaves the HSMs. The file format is in docs/cluster.md. Only
operators may run it. --timeout does not bound the transfer; an interrupt
stops it and leaves FILE as it was.`
}
