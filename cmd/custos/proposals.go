package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// officer proposals and officer sign-proposal: statements waiting on the
// cluster for signatures (docs/console.md, Proposals), which officers sign
// there one after another — in the console with a security key, or here
// with a key file or a PKCS#11 key; the signature that completes what the
// statement needs applies it.

func runOfficerProposals(ctx context.Context, a *app, args []string) error {
	fs := a.flags("officer proposals")
	if _, err := a.parse("officer proposals", fs, args, 0, 0); err != nil {
		return err
	}
	c, err := a.client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	res, err := c.Governance().ListProposals(ctx, &custosv1.ListProposalsRequest{})
	if err != nil {
		return fmt.Errorf("list proposals: %w", err)
	}
	if len(res.GetProposals()) == 0 {
		fmt.Fprintln(a.stdout, "no proposals are waiting")
		return nil
	}
	for _, p := range res.GetProposals() {
		st, err := governance.Parse(p.Statement)
		if err != nil {
			continue
		}
		signers := "nobody yet"
		if len(p.Signers) > 0 {
			signers = strings.Join(p.Signers, ", ")
		}
		fmt.Fprintf(a.stdout, "%s  %s\n  signed by %s (%d of %d); proposed by %s at %s; expires %s\n",
			p.Id, governance.Describe(st), signers, len(p.Signers), p.Needed, p.Proposer,
			time.Unix(0, p.CreateTimeUnixNano).UTC().Format(time.RFC3339), time.Unix(st.NotAfterUnix, 0).UTC().Format(time.RFC3339))
	}
	return nil
}

func runOfficerSignProposal(ctx context.Context, a *app, args []string) error {
	fs := a.flags("officer sign-proposal")
	var of officerFlags
	of.register(fs)
	pos, err := a.parse("officer sign-proposal", fs, args, 1, 1)
	if err != nil {
		return err
	}
	c, err := a.client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	res, err := c.Governance().ListProposals(ctx, &custosv1.ListProposalsRequest{})
	if err != nil {
		return fmt.Errorf("list proposals: %w", err)
	}
	var p *custosv1.Proposal
	for _, x := range res.GetProposals() {
		if x.Id == pos[0] {
			p = x
		}
	}
	if p == nil {
		return fmt.Errorf("no proposal %s is waiting (see custos officer proposals)", pos[0])
	}
	st, err := governance.Parse(p.Statement)
	if err != nil {
		return err
	}
	// Show what the bytes say, never a description the server sent.
	fmt.Fprintf(a.stdout, "statement: %s\n", governance.Describe(st))
	if ac := st.GetAddOfficerCredential(); ac != nil {
		proof := "none"
		if p.Proof != nil {
			proof = "an assertion by that key (checked by the cluster)"
		}
		fmt.Fprintf(a.stdout, "the key's proof of possession: %s\n", proof)
	}
	officer, closer, err := of.load(a)
	if err != nil {
		return err
	}
	defer closer.Close()
	sig, err := governance.Sign(officer.Signer, officer.Name, p.Statement)
	if err != nil {
		return err
	}
	out, err := c.Governance().Propose(ctx, &custosv1.ProposeRequest{Statement: &custosv1.SignedStatement{Statement: p.Statement,
		Signatures: []*custosv1.OfficerSignature{sig}}})
	if err != nil {
		return fmt.Errorf("sign proposal %s: %w", p.Id, err)
	}
	if ap := out.GetApplied(); ap != nil {
		fmt.Fprintf(a.stdout, "signed by %s; applied: %s (signers %s, ledger %d)\n", officer.Name, ap.Result, strings.Join(ap.Signers, ", "), ap.LedgerSeq)
		if ap.GrantId != "" {
			fmt.Fprintf(a.stdout, "grant: %s\n", ap.GrantId)
		}
		return nil
	}
	np := out.GetProposal()
	fmt.Fprintf(a.stdout, "signed by %s; proposal %s has %d of %d signatures (%s)\n", officer.Name, np.Id, len(np.Signers), np.Needed, strings.Join(np.Signers, ", "))
	return nil
}

// runOfficerEnrol prints the officer's enrolment code (docs/console.md,
// Enrolment codes): their officer key's signature that they are
// registering a security key, which the console and the cluster want with
// a registration no officer signed yet.
func runOfficerEnrol(ctx context.Context, a *app, args []string) error {
	fs := a.flags("officer enrol")
	var of officerFlags
	of.register(fs)
	valid := fs.Duration("valid", time.Hour, "how long the code serves (at most 24h)")
	cluster := fs.String("cluster", "", "the cluster `ID` (default: asked from the cluster)")
	if _, err := a.parse("officer enrol", fs, args, 0, 0); err != nil {
		return err
	}
	if *valid <= 0 || *valid > governance.MaxEnrolmentLifetime {
		return fmt.Errorf("--valid %s: a code serves at most 24h (and more than 0s)", *valid)
	}
	id := *cluster
	if id == "" {
		c, err := a.client(ctx)
		if err != nil {
			return err
		}
		defer c.Close()
		g, err := c.GetGovernance(ctx)
		if err != nil {
			return err
		}
		id = g.GetClusterId()
	}
	officer, closer, err := of.load(a)
	if err != nil {
		return err
	}
	defer closer.Close()
	notAfter := time.Now().Add(*valid)
	code, err := governance.MakeEnrolment(officer.Signer, id, officer.Name, notAfter)
	if err != nil {
		return err
	}
	fmt.Fprintln(a.stdout, governance.EncodeEnrolment(code))
	fmt.Fprintf(a.stderr, "enrolment code of officer %s for cluster %s, valid until %s: paste it into the console's Register a security key form\n",
		officer.Name, id, notAfter.UTC().Format(time.RFC3339))
	return nil
}
