package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Node admission (docs/key-transport.md, *Admission*): officers approve a
// node's transport key and HSM identity key (`cluster admit`, quorum), the
// HSM security officer of a holder trusts the transport key (`hsm trust`,
// with the PEM `cluster admission --public-key` writes), and the nodes do
// the rest.

// admitFlags registers the flags of `cluster admit` and `officer propose
// admit`.
func admitFlags(fs *flag.FlagSet, f *opFlags) {
	fs.StringVar(&f.transportKey, "transport-key", "", "the node's transport key fingerprint the officers checked (64 hex digits; `custos cluster admission NODE`)")
	fs.StringVar(&f.identityKey, "identity-key", "", "the node's HSM identity key fingerprint the officers checked (32 hex digits)")
	fs.BoolVar(&f.rotation, "rotation", false, "approve the node's transport key for the running domain-key rotation (`custos cluster admission --rotation NODE`), not its admission")
	fs.StringVar(&f.oaep, "oaep", "sha256", "RSA-OAEP hash of the key transport: sha256 (CRYPTREC), or sha1 (development profile only: SoftHSM does no other)")
}

// buildAdmissionOp builds an AdmitNode or RevokeAdmission operation.
func buildAdmissionOp(op string, f *opFlags, pos []string) (func(*custosv1.Statement), error) {
	node := pos[0]
	if op == "revoke-admission" {
		return func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_RevokeAdmission{RevokeAdmission: &custosv1.RevokeAdmission{Node: node}}
		}, nil
	}
	norm := func(s string) string { return strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), ":", "")) }
	tk, ik := norm(f.transportKey), norm(f.identityKey)
	if tk == "" || ik == "" {
		return nil, usagef("--transport-key and --identity-key are required: the fingerprints the officers checked")
	}
	var h custosv1.KeyTransportHash
	switch strings.ToLower(f.oaep) {
	case "sha256", "":
		h = custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA256
	case "sha1":
		h = custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA1
	default:
		return nil, usagef("--oaep %q: sha256 or sha1", f.oaep)
	}
	return func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_AdmitNode{AdmitNode: &custosv1.AdmitNode{Node: node,
			TransportKeyFingerprint: tk, IdentityKeyFingerprint: ik, Hash: h, DomainKeyRotation: f.rotation}}
	}, nil
}

func runClusterAdmit(ctx context.Context, a *app, args []string) error {
	return onlineOp(ctx, a, "cluster admit", "admit", args, 1, admitFlags)
}

func runClusterRevokeAdmission(ctx context.Context, a *app, args []string) error {
	return onlineOp(ctx, a, "cluster revoke-admission", "revoke-admission", args, 1, nil)
}

// runClusterAdmission shows one node's admission with full fingerprints and
// writes its transport public key for the HSM security officer.
func runClusterAdmission(ctx context.Context, a *app, args []string) error {
	fs := a.flags("cluster admission")
	asJSON := fs.Bool("json", false, "print the admission as one JSON object")
	pubOut := fs.String("public-key", "", "write the node's transport public key to `FILE` (PEM), for custos hsm trust")
	rotation := fs.Bool("rotation", false, "show the node's part in the running domain-key rotation instead of its admission")
	pos, err := a.parse("cluster admission", fs, args, 1, 1)
	if err != nil {
		return err
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		cs, err := c.ClusterStatus(ctx)
		if err != nil {
			return err
		}
		if *rotation {
			r := cs.GetRotation()
			if r == nil {
				return fmt.Errorf("no domain-key rotation is running")
			}
			if !*asJSON {
				fmt.Fprintf(a.stdout, "domain-key rotation to epoch %d, generator %s\n", r.GetEpoch(), orDash(r.GetGenerator()))
			}
			cs = &custosv1.ClusterStatus{Admissions: r.GetNodes(), Profile: cs.GetProfile(), Rotation: r}
		}
		if *pubOut != "" {
			ad := findAdmission(cs, pos[0])
			if len(ad.GetTransportPublicKey()) == 0 {
				return fmt.Errorf("node %s has no transport key on offer (state %s)", pos[0], admissionState(ad))
			}
			if _, err := x509.ParsePKIXPublicKey(ad.GetTransportPublicKey()); err != nil {
				return fmt.Errorf("node %s's transport key: %w", pos[0], err)
			}
			if _, err := writeAtomicPrivate(*pubOut, func(w io.Writer) (struct{}, error) {
				return struct{}{}, pem.Encode(w, &pem.Block{Type: "PUBLIC KEY", Bytes: ad.GetTransportPublicKey()})
			}); err != nil {
				return err
			}
		}
		return printAdmission(a.stdout, cs, pos[0], *asJSON)
	})
}

// findAdmission returns node's admission in cs, or nil.
func findAdmission(cs *custosv1.ClusterStatus, node string) *custosv1.NodeAdmission {
	for _, ad := range cs.GetAdmissions() {
		if ad.GetNode() == node {
			return ad
		}
	}
	return nil
}

// admissionState names an admission's state ("NONE" for none).
func admissionState(ad *custosv1.NodeAdmission) string {
	if ad == nil || ad.GetState() == custosv1.AdmissionState_ADMISSION_STATE_UNSPECIFIED {
		return "NONE"
	}
	return strings.TrimPrefix(ad.GetState().String(), "ADMISSION_STATE_")
}

// printAdmission prints node's admission as cs reports it, and what is
// left to do.
func printAdmission(w io.Writer, cs *custosv1.ClusterStatus, node string, asJSON bool) error {
	ad := findAdmission(cs, node)
	if asJSON {
		if ad == nil {
			ad = &custosv1.NodeAdmission{Node: node}
		}
		b, err := statusJSON.Marshal(ad)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s\n", b)
		return nil
	}
	fmt.Fprintf(w, "node:          %s\nstate:         %s\n", node, admissionState(ad))
	if ad == nil {
		fmt.Fprintf(w, "next:          the node offers a transport key when it runs as a member without the domain key\n")
		return nil
	}
	if fp := ad.GetTransportKeyFingerprint(); fp != "" {
		fmt.Fprintf(w, "transport key: %s\n", fp)
	}
	if ad.GetApprovedFingerprint() != "" {
		fmt.Fprintf(w, "approved:      %s (%s)\n", ad.GetApprovedFingerprint(), ad.GetHash())
	}
	if id := ad.GetIdentityKeyFingerprint(); id != "" {
		fmt.Fprintf(w, "identity key:  %s\n", id)
	}
	if s := ad.GetSentBy(); s != "" {
		fmt.Fprintf(w, "sent by:       %s\n", s)
	}
	if t := ad.GetUpdateTimeUnixNano(); t != 0 {
		fmt.Fprintf(w, "since:         %s\n", time.Unix(0, t).UTC().Format(time.RFC3339))
	}
	switch ad.GetState() {
	case custosv1.AdmissionState_ADMISSION_STATE_OFFERED:
		fmt.Fprintf(w, "next:          officers check both fingerprints with the node's owner, then: custos cluster admit %s --transport-key %s --identity-key <fingerprint> [--oaep sha1]\n",
			node, ad.GetTransportKeyFingerprint())
	case custosv1.AdmissionState_ADMISSION_STATE_APPROVED:
		fmt.Fprintf(w, "next:          a holder's HSM security officer runs: custos hsm trust --module M --token T --public-key FILE --fingerprint %s\n"+
			"               (FILE from: custos cluster admission --public-key FILE %s); the holder then sends the domain key (CKA_ID %s)\n",
			ad.GetApprovedFingerprint(), node, kms.TrustedKeyID(ad.GetApprovedFingerprint()))
	case custosv1.AdmissionState_ADMISSION_STATE_SENT:
		fmt.Fprintf(w, "next:          the node unwraps the domain key into its HSM and confirms\n")
	}
	if cs.GetProfile() == kms.ProfileDevelopment {
		fmt.Fprintf(w, "profile:       development: RSA-OAEP-SHA1 key transport allowed; this cluster is NOT CRYPTREC-compliant\n")
	}
	return nil
}

// printAdmissions prints the admissions table of cluster status.
func printAdmissions(w io.Writer, cs *custosv1.ClusterStatus) {
	if len(cs.GetAdmissions()) == 0 && cs.GetProfile() == "" {
		return
	}
	profile := "production"
	if cs.GetProfile() == kms.ProfileDevelopment {
		profile = "development (RSA-OAEP-SHA1 key transport allowed: NOT CRYPTREC-compliant)"
	}
	fmt.Fprintf(w, "\nCustodians of the domain key (profile: %s):\n", profile)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  NODE\tADMISSION\tTRANSPORT KEY\tOAEP\tSENT BY")
	for _, ad := range cs.GetAdmissions() {
		fp := ad.GetTransportKeyFingerprint()
		if len(fp) > 16 {
			fp = fp[:16] + "…"
		}
		oaep := "-"
		if ad.GetHash() != custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_UNSPECIFIED {
			oaep = transportHashName(ad.GetHash())
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", ad.GetNode(), admissionState(ad), orDash(fp), oaep, orDash(ad.GetSentBy()))
	}
	tw.Flush()
}

// transportHashName names the OAEP variant of h.
func transportHashName(h custosv1.KeyTransportHash) string {
	if h == custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA1 {
		return hsm.OAEPSHA1.String()
	}
	return hsm.OAEPSHA256.String()
}

func init() {
	longHelp["cluster admit"] = `Officers admit NODE as a custodian of the cluster's domain key (an AdmitNode
statement: needs the officer quorum). NODE runs as a member without the
domain key and offers a transport key: a session RSA-3072 key of its
custosd, shown by 'custos cluster admission NODE'. Check both fingerprints
with whoever runs NODE's HSM through a channel the operator does not
control: --transport-key (64 hex digits) and --identity-key (NODE's HSM
checkpoint key, 32 hex digits). --oaep sha1 is accepted only by a cluster
with the development profile (SoftHSM wraps with no other; not
CRYPTREC-compliant). Then a holder's HSM security officer runs 'custos hsm
trust' with the key 'custos cluster admission --public-key FILE NODE'
writes; the holder wraps the domain key to it, NODE unwraps it into its HSM,
checks the key check value recorded at genesis and confirms. Every step is
a ledger record (docs/key-transport.md).`
	longHelp["cluster revoke-admission"] = `One officer revokes NODE's admission (a RevokeAdmission statement): NODE
refuses key crypto from the moment it applies it and destroys its copies of
the domain key and every KEK. The last custodian cannot be revoked. A node
that leaves the Raft configuration is revoked too; revoke before removing
it, so that it applies the revocation while it is still a member.`
	longHelp["cluster admission"] = `Shows NODE's admission: its state (OFFERED, APPROVED, SENT, ADMITTED,
REVOKED), the fingerprint of the transport key it offers, what the officers
approved, who sent the domain key, and what is left to do. --public-key
FILE writes the offered transport public key (PEM), the file the HSM
security officer gives 'custos hsm trust'. Any authenticated principal may
run it.`
}
