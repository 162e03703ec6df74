package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/kms/audit"
	"github.com/custos-kms/custos/kms/governance"
	"github.com/custos-kms/custos/kms/ledger"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// The customer's witness (docs/witness.md): `custos audit witness` follows
// a cluster's ledger, checks that every head extends the last one it
// cosigned, and cosigns it; `officer witness add|remove|list` registers
// witnesses; `audit verify --witness-state` checks an export against the
// witness's last head.

// buildWitnessOp builds AddWitness (pos: NAME PUBKEY.pem) or RemoveWitness
// (pos: NAME).
func buildWitnessOp(op string, pos []string) (func(*custosv1.Statement), error) {
	name := pos[0]
	if op == "witness-remove" {
		return func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_RemoveWitness{RemoveWitness: &custosv1.RemoveWitness{Name: name}}
		}, nil
	}
	b, err := readSmall(pos[1])
	if err != nil {
		return nil, err
	}
	pub, err := governance.ParsePublicKeyPEM(b)
	if err != nil {
		return nil, usagef("%s: %v (write it with `custos officer keygen` and keep the private key with the witness)", pos[1], err)
	}
	der := governance.MarshalPublicKey(pub)
	return func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_AddWitness{AddWitness: &custosv1.AddWitness{Witness: &custosv1.Witness{Name: name, PublicKey: der}}}
	}, nil
}

func runOfficerWitnessAdd(ctx context.Context, a *app, args []string) error {
	return onlineOp(ctx, a, "officer witness add", "witness-add", args, 2, nil)
}

func runOfficerWitnessRemove(ctx context.Context, a *app, args []string) error {
	return onlineOp(ctx, a, "officer witness remove", "witness-remove", args, 1, nil)
}

func runOfficerWitnessList(ctx context.Context, a *app, args []string) error {
	fs := a.flags("officer witness list")
	if _, err := a.parse("officer witness list", fs, args, 0, 0); err != nil {
		return err
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		g, err := c.GetGovernance(ctx)
		if err != nil {
			return err
		}
		printWitnesses(a.stdout, g)
		return nil
	})
}

func printWitnesses(w io.Writer, g *custosv1.Governance) {
	if len(g.GetWitnesses()) == 0 {
		fmt.Fprintln(w, "no witnesses")
		return
	}
	for _, x := range g.GetWitnesses() {
		fp := "invalid-key"
		if pub, err := governance.ParsePublicKey(x.GetPublicKey()); err == nil {
			fp = governance.Fingerprint(pub)
		}
		last := "never cosigned"
		if l := x.GetLast(); l != nil {
			last = fmt.Sprintf("last cosigned seq %d at %s", l.GetSeq(), unixNanoRFC(l.GetTimeUnixNano()))
		}
		fmt.Fprintf(w, "witness %s key=%s %s\n", x.GetName(), fp, last)
	}
}

// readWitnessState reads the witness's state file; a missing file is a
// witness that has seen nothing yet.
func readWitnessState(path string) (audit.Head, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return audit.Head{}, nil
	}
	if err != nil {
		return audit.Head{}, err
	}
	var h audit.Head
	if err := json.Unmarshal(b, &h); err != nil {
		return audit.Head{}, fmt.Errorf("witness state %s: %v", path, err)
	}
	return h, nil
}

func runAuditWitness(ctx context.Context, a *app, args []string) error {
	fs := a.flags("audit witness")
	name := fs.String("name", "", "the witness's `NAME`, as the officers registered it (required)")
	keyFile := fs.String("key", "", "the witness's private key `FILE` (custos officer keygen; required)")
	passFile := fs.String("passphrase-file", "", "read the key's passphrase from `FILE`")
	stateFile := fs.String("state", "", "state `FILE`: the last head this witness cosigned (created; required)")
	once := fs.Bool("once", false, "check and cosign once, then exit")
	interval := fs.Duration("interval", 10*time.Second, "pause between rounds")
	if _, err := a.parse("audit witness", fs, args, 0, 0); err != nil {
		return err
	}
	if *name == "" || *keyFile == "" || *stateFile == "" {
		return usagef("--name, --key and --state are required")
	}
	if *interval < time.Second {
		return usagef("--interval %s: at least 1s", *interval)
	}
	signer, err := governance.LoadKeyFile(*keyFile, func() ([]byte, error) { return a.passphrase(*passFile, "Passphrase for "+*keyFile+": ") })
	if err != nil {
		return err
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		for {
			err := witnessRound(ctx, a, c, *name, signer, *stateFile)
			if err != nil && (*once || errors.Is(err, audit.ErrFork)) {
				return err
			}
			if err != nil {
				fmt.Fprintf(a.stderr, "custos: audit witness: %v (retrying)\n", err)
			}
			if *once {
				return nil
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(*interval):
			}
		}
	})
}

// witnessRound exports the ledger from the last cosigned head, checks that
// it extends that head, cosigns the new head, saves it and submits the
// cosignature. A fork is reported and nothing is cosigned.
func witnessRound(ctx context.Context, a *app, c *custos.Client, name string, signer crypto.Signer, stateFile string) error {
	last, err := readWitnessState(stateFile)
	if err != nil {
		return err
	}
	// A ledger that now ends before the head this witness cosigned was cut
	// or rolled back: a fork, not a failed export.
	cp, err := c.GetCheckpoint(ctx)
	if err != nil {
		return auditErr(err)
	}
	if last.Seq > 0 && cp.GetHeadSeq() < last.Seq {
		return fmt.Errorf("FORK: %w: the cluster's ledger ends at seq %d, before seq %d this witness cosigned (%s); not cosigning: keep %s as evidence",
			audit.ErrFork, cp.GetHeadSeq(), last.Seq, last.Hash, stateFile)
	}
	if last.ClusterID != "" && cp.GetClusterId() != last.ClusterID {
		return fmt.Errorf("FORK: %w: the node serves cluster %s, this witness follows %s", audit.ErrFork, cp.GetClusterId(), last.ClusterID)
	}
	var buf bytes.Buffer
	if _, err := c.ExportToStats(ctx, &buf, max(last.Seq, 1)); err != nil {
		return auditErr(err)
	}
	head, err := audit.Extends(&buf, last)
	if errors.Is(err, audit.ErrFork) {
		return fmt.Errorf("FORK: %w; not cosigning. The cluster no longer serves the history this witness cosigned at seq %d (%s): keep %s as evidence", err, last.Seq, last.Hash, stateFile)
	}
	if err != nil {
		return err
	}
	if head.Seq == 0 {
		fmt.Fprintln(a.stdout, "the ledger is empty: nothing to cosign")
		return nil
	}
	hb, _ := hex.DecodeString(head.Hash)
	now := time.Now().UnixNano()
	digest := sha256.Sum256(ledger.CosignatureMessage(head.ClusterID, name, head.Seq, hb, now))
	sig, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	b, _ := json.MarshalIndent(head, "", "  ")
	if _, err := writeAtomic(stateFile, true, func(w io.Writer) (int, error) { return w.Write(append(b, '\n')) }); err != nil {
		return fmt.Errorf("save witness state: %w", err)
	}
	resp, err := c.Governance().SubmitCosignature(ctx, &custosv1.Cosignature{ClusterId: head.ClusterID, Witness: name,
		Seq: head.Seq, Head: hb, TimeUnixNano: now, Signature: sig})
	if err != nil {
		return fmt.Errorf("submit cosignature of seq %d: %w", head.Seq, err)
	}
	fmt.Fprintf(a.stdout, "cosigned seq %d head %s (extends seq %d); recorded at seq %d\n", head.Seq, head.Hash, last.Seq, resp.GetLedgerSeq())
	return nil
}
