package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/custos-kms/custos/internal/pki"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// officerList is a repeatable --officer NAME=PUBKEY.pem flag.
type officerList []string

func (o *officerList) String() string     { return strings.Join(*o, ",") }
func (o *officerList) Set(v string) error { *o = append(*o, v); return nil }

// runOfficerProposeGenesis writes an unsigned CreateCluster statement: the
// officer-signed genesis of a new cluster (docs/governance.md). It needs no
// cluster: it chooses the new cluster's id.
func runOfficerProposeGenesis(_ context.Context, a *app, args []string) error {
	const name = "officer propose genesis"
	fs := a.flags(name)
	var officers officerList
	fs.Var(&officers, "officer", "an officer, `NAME=PUBKEY.pem` (repeat for each; officer keygen writes PUBKEY.pem)")
	quorum := fs.Uint("quorum", 0, "officer signatures that loosening needs, M of the officers (required)")
	caFile := fs.String("ca", "", "PEM `FILE` of the CA certificates whose certificates identify principals (client authorities); none: not pinned")
	profile := fs.String("profile", "", `"development" for a development cluster (not CRYPTREC-compliant); leave out for production`)
	out := fs.String("out", "", "statement `FILE` to write (required; not overwritten)")
	var sf stmtFlags
	sf.register(fs)
	if _, err := a.parse(name, fs, args, 0, 0); err != nil {
		return err
	}
	switch {
	case *out == "":
		return usagef("--out is required")
	case len(officers) == 0:
		return usagef("name the officers: --officer NAME=PUBKEY.pem, once for each")
	case *quorum == 0 || int(*quorum) > len(officers):
		return usagef("--quorum %d: want 1 to %d (the number of officers)", *quorum, len(officers))
	}
	if _, err := os.Lstat(*out); err == nil {
		return fmt.Errorf("%s already exists: not overwriting a statement file", *out)
	}
	cc := &custosv1.CreateCluster{Quorum: uint32(*quorum), Profile: *profile}
	for _, o := range officers {
		n, file, ok := strings.Cut(o, "=")
		if !ok || n == "" || file == "" {
			return usagef("--officer %q: want NAME=PUBKEY.pem", o)
		}
		b, err := readSmall(file)
		if err != nil {
			return err
		}
		pub, err := governance.ParsePublicKeyPEM(b)
		if err != nil {
			return usagef("--officer %s: %s: %v", n, file, err)
		}
		cc.Officers = append(cc.Officers, &custosv1.Officer{Name: n, PublicKey: governance.MarshalPublicKey(pub)})
	}
	if *caFile != "" {
		b, err := readSmall(*caFile)
		if err != nil {
			return err
		}
		cc.ClientAuthorities = pki.CertificatesPEM(b)
		if len(cc.ClientAuthorities) == 0 {
			return usagef("--ca %s: no PEM CERTIFICATE in it", *caFile)
		}
	}
	if sf.lifetime <= 0 || sf.lifetime > governance.MaxLifetime {
		return usagef("--lifetime %s: want more than 0 and at most %s", sf.lifetime, governance.MaxLifetime)
	}
	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		return err
	}
	st, err := governance.NewStatement(hex.EncodeToString(raw), sf.lifetime, sf.comment)
	if err != nil {
		return err
	}
	st.Operation = &custosv1.Statement_CreateCluster{CreateCluster: cc}
	if err := writeStatementFile(a, *out, st); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "next: %d of the officers sign it (custos officer sign %s), then the bootstrap node's configuration names it (\"genesis\": %q) before %s\n",
		*quorum, *out, *out, time.Unix(st.NotAfterUnix, 0).UTC().Format(time.RFC3339))
	return nil
}
