package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/internal/pki"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// The officers' client authorities: the CAs whose certificates identify
// principals (docs/identities.md).

// buildClientAuthorityOp builds an AddClientAuthority (ca-add: pos[0] is a
// PEM file holding one CA certificate) or RemoveClientAuthority (ca-remove:
// pos[0] is its SHA-256) operation.
func buildClientAuthorityOp(op string, pos []string) (func(*custosv1.Statement), error) {
	if op == "ca-remove" {
		sum := strings.ToLower(strings.TrimSpace(pos[0]))
		if len(sum) != 64 || strings.Trim(sum, "0123456789abcdef") != "" {
			return nil, usagef("SHA256 %q: want the CA certificate's SHA-256, 64 hex digits (custos officer ca list shows it)", pos[0])
		}
		return func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_RemoveClientAuthority{RemoveClientAuthority: &custosv1.RemoveClientAuthority{Sha256: sum}}
		}, nil
	}
	b, err := readSmall(pos[0])
	if err != nil {
		return nil, err
	}
	ders := pki.CertificatesPEM(b)
	if len(ders) != 1 {
		return nil, usagef("%s: want exactly one PEM CERTIFICATE, found %d", pos[0], len(ders))
	}
	if _, err := governance.ParseClientAuthority(ders[0]); err != nil {
		return nil, usagef("%s: %v", pos[0], err)
	}
	der := ders[0]
	return func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_AddClientAuthority{AddClientAuthority: &custosv1.AddClientAuthority{Certificate: der}}
	}, nil
}

func runOfficerCAAdd(ctx context.Context, a *app, args []string) error {
	return onlineOp(ctx, a, "officer ca add", "ca-add", args, 1, nil)
}

func runOfficerCARemove(ctx context.Context, a *app, args []string) error {
	return onlineOp(ctx, a, "officer ca remove", "ca-remove", args, 1, nil)
}

func runOfficerCAList(ctx context.Context, a *app, args []string) error {
	fs := a.flags("officer ca list")
	asJSON := fs.Bool("json", false, "print the client authorities as JSON")
	if _, err := a.parse("officer ca list", fs, args, 0, 0); err != nil {
		return err
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		g, err := c.GetGovernance(ctx)
		if err != nil {
			return err
		}
		return printClientAuthorities(a.stdout, g, *asJSON)
	})
}

// printClientAuthorities shows whether the client authorities are pinned
// and each one's SHA-256 and subject.
func printClientAuthorities(w io.Writer, g *custosv1.Governance, asJSON bool) error {
	if asJSON {
		type ca struct {
			SHA256  string `json:"sha256"`
			Subject string `json:"subject"`
		}
		out := struct {
			Pinned      bool `json:"pinned"`
			Authorities []ca `json:"client_authorities"`
		}{Pinned: g.GetClientAuthoritiesPinned(), Authorities: []ca{}}
		for _, c := range g.GetClientAuthorities() {
			out.Authorities = append(out.Authorities, ca{c.GetSha256(), c.GetSubject()})
		}
		b, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, string(b))
		return err
	}
	if !g.GetClientAuthoritiesPinned() {
		fmt.Fprintln(w, "client authorities: not pinned (each node's tls.ca decides who is identified; pin them with `custos officer ca add`)")
		return nil
	}
	if len(g.GetClientAuthorities()) == 0 {
		fmt.Fprintln(w, "client authorities: pinned to none (no certificate identifies anyone)")
		return nil
	}
	fmt.Fprintf(w, "client authorities: pinned (%d)\n", len(g.GetClientAuthorities()))
	for _, c := range g.GetClientAuthorities() {
		fmt.Fprintf(w, "ca %s subject=%q\n", c.GetSha256(), c.GetSubject())
	}
	return nil
}
