package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/kms/governance"
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
	fmt.Fprintf(a.stdout, "signed by %s (key fingerprint %s); %s now has %d signature(s): %s; it needs %s\n",
		officer.Name, fingerprintOf(officer.Signer), pos[0], len(names), strings.Join(names, ", "), governance.Need(st))
	return nil
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
