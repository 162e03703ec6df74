package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// officer sign and officer submit: a statement file passes from officer to
// officer, each adding a signature, and anyone submits it.

func runOfficerSign(ctx context.Context, a *app, args []string) error {
	fs := a.flags("officer sign")
	var of officerFlags
	of.register(fs)
	pos, err := a.parse("officer sign", fs, args, 1, 1)
	if err != nil {
		return err
	}
	f, err := governance.ReadFile(pos[0])
	if err != nil {
		return err
	}
	st, err := governance.Parse(f.Statement)
	if err != nil {
		return err
	}
	// Show what the bytes say, never the file's description field.
	fmt.Fprintf(a.stdout, "statement: %s\n", governance.Describe(st))
	if time.Now().Unix() > st.GetNotAfterUnix() {
		return fmt.Errorf("%s: the statement expired at %s", pos[0], time.Unix(st.GetNotAfterUnix(), 0).UTC().Format(time.RFC3339))
	}
	officer, closer, err := of.load(a)
	if err != nil {
		return err
	}
	defer closer.Close()
	sig, err := governance.Sign(officer.Signer, officer.Name, f.Statement)
	if err != nil {
		return err
	}
	f.AddSignature(sig)
	f.Description = governance.Describe(st)
	if err := governance.WriteFile(pos[0], f); err != nil {
		return err
	}
	names := make([]string, 0, len(f.Signatures))
	for _, s := range f.Signatures {
		names = append(names, s.Officer)
	}
	fmt.Fprintf(a.stdout, "signed by %s (key fingerprint %s); %s now has %d signature(s): %s; %s\n",
		officer.Name, fingerprintOf(officer.Signer), pos[0], len(names), strings.Join(names, ", "), a.signReadiness(ctx, st, f, pos[0]))
	return nil
}

// signLookupTimeout bounds how long officer sign asks the cluster for its
// officer set: signing works offline, and an unreachable cluster must not
// hold it up.
const signLookupTimeout = 5 * time.Second

// signReadiness says whether the signatures in f meet what statement st
// needs, and what comes next: submitting, or another officer signing. One
// signature suffices for a tightening statement. For one that needs the
// quorum, the cluster's officer set decides: officer sign asks for it when
// a connection is configured, and checks the signatures as the cluster
// will; offline it cannot know, and says so.
func (a *app) signReadiness(ctx context.Context, st *custosv1.Statement, f *governance.File, path string) string {
	submit := "custos officer submit " + path
	if cc := st.GetCreateCluster(); cc != nil {
		return genesisReadiness(cc, f, path)
	}
	if governance.Need(st) == governance.One {
		return "one officer's signature suffices: ready to submit: " + submit
	}
	gov, why := a.signGovernance(ctx, st.GetClusterId())
	if gov == nil {
		return fmt.Sprintf("it needs the officer quorum, which is not known here (%s): once enough officers have signed, submit it: %s", why, submit)
	}
	set, err := governance.NewOfficerSetFromGovernance(gov)
	if err != nil {
		return fmt.Sprintf("it needs the officer quorum; the cluster's officer set is unusable (%v)", err)
	}
	q := set.Quorum()
	_, _, err = set.Verify(f.Signed(), st.GetClusterId(), time.Now())
	switch {
	case err == nil || errors.Is(err, governance.ErrTooFarAhead):
		return fmt.Sprintf("that meets the quorum of %d of the cluster's %d officers: ready to submit: %s", q, len(set.Names()), submit)
	case errors.Is(err, governance.ErrInsufficientSignatures):
		more := int(q) - len(f.Signatures)
		return fmt.Sprintf("it needs the quorum, %d of the cluster's %d officers: %d more signature(s); the next officer runs 'custos officer sign %s'", q, len(set.Names()), more, path)
	default:
		return fmt.Sprintf("the cluster would refuse it: %v", strings.TrimPrefix(err.Error(), "governance: "))
	}
}

// genesisReadiness is signReadiness for an officer-signed genesis (a
// CreateCluster statement): the officer set is the one the statement
// names, there is no cluster to ask, and a complete genesis is not
// submitted but named in the bootstrap node's configuration.
func genesisReadiness(cc *custosv1.CreateCluster, f *governance.File, path string) string {
	n, q := len(cc.GetOfficers()), cc.GetQuorum()
	_, _, err := governance.VerifyGenesis(f.Signed(), time.Now())
	switch {
	case err == nil:
		return fmt.Sprintf("that meets the quorum of %d of the %d officers it names: ready: the bootstrap node's configuration names it (\"genesis\": %q)", q, n, path)
	case errors.Is(err, governance.ErrInsufficientSignatures):
		return fmt.Sprintf("it needs %d of the %d officers it names: %d more signature(s); the next of them runs 'custos officer sign %s'", q, n, int(q)-len(f.Signatures), path)
	default:
		return fmt.Sprintf("the bootstrap node would refuse it: %v", strings.TrimPrefix(err.Error(), "governance: "))
	}
}

// signGovernance asks the cluster for its governance (officers and
// quorum), within signLookupTimeout, if a connection is configured and
// the cluster is the statement's. Otherwise it returns nil and why.
func (a *app) signGovernance(ctx context.Context, clusterID string) (*custosv1.Governance, string) {
	if envOr(a.addr, custos.EnvAddr) == "" {
		return nil, "no connection is configured to ask the cluster: $" + custos.EnvAddr + " or --addr"
	}
	cctx, cancel := context.WithTimeout(ctx, signLookupTimeout)
	defer cancel()
	c, err := a.client(cctx)
	if err != nil {
		return nil, "the cluster could not be asked: " + errorLine(err)
	}
	defer c.Close()
	gov, err := c.GetGovernance(cctx)
	if err != nil {
		return nil, "the cluster could not be asked: " + errorLine(err)
	}
	if gov.GetClusterId() != clusterID {
		return nil, fmt.Sprintf("the configured cluster is %s, the statement's is %s", gov.GetClusterId(), clusterID)
	}
	return gov, ""
}

func runOfficerSubmit(ctx context.Context, a *app, args []string) error {
	fs := a.flags("officer submit")
	asJSON := fs.Bool("json", false, "print the resulting state as JSON where it is a key or policy")
	pos, err := a.parse("officer submit", fs, args, 1, 1)
	if err != nil {
		return err
	}
	f, err := governance.ReadFile(pos[0])
	if err != nil {
		return err
	}
	st, err := governance.Parse(f.Statement)
	if err != nil {
		return err
	}
	if len(f.Signatures) == 0 {
		return fmt.Errorf("%s has no signature: each officer runs 'custos officer sign %s' first", pos[0], pos[0])
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		fmt.Fprintf(a.stdout, "statement: %s\n", governance.Describe(st))
		res, err := c.Submit(ctx, f.Signed())
		if err != nil {
			if status.Code(err) == codes.PermissionDenied && governance.Need(st) == governance.Quorum {
				return &hintError{err, fmt.Sprintf("custos: more officers must sign it first: custos officer sign %s", pos[0])}
			}
			return err
		}
		printSubmit(a.stdout, res)
		return a.showState(ctx, c, st, res, *asJSON)
	})
}
