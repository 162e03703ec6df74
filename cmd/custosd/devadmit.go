package main

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/hsm/pkcs11"
	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"github.com/custos-kms/custos/softhsm"
)

// In a dev cluster the parent plays the customer: it holds the one
// officer's key and every token's SO PIN, so it admits every node that
// offers a transport key (docs/key-transport.md, *Admission*) the way the
// docs tell officers and HSM security officers to, and every node becomes
// a custodian of the domain key. Nothing here is available outside
// `custosd dev`: a production cluster's officers and SOs take these steps
// themselves with `custos cluster admit` and `custos hsm trust`.

// devAdmitPoll is how often the dev admitter looks at the admissions.
const devAdmitPoll = time.Second

// devAdmitter admits the dev cluster's nodes.
type devAdmitter struct {
	client   *custos.Client
	officer  crypto.Signer
	exe      string
	children []*clusterChild
	dir      string
	errw     io.Writer
	// trusted holds node/fingerprint pairs whose key a holder's SO
	// trusted; noted the messages already printed.
	trusted map[string]bool
	noted   map[string]bool
}

// newDevAdmitter loads the dev officer's key.
func newDevAdmitter(cfg custos.Config, officerFile, exe, dir string, children []*clusterChild, errw io.Writer) (*devAdmitter, error) {
	signer, err := governance.LoadKeyFile(officerFile, func() ([]byte, error) {
		return nil, errors.New("the dev officer key file is encrypted; custosd dev writes it unencrypted")
	})
	if err != nil {
		return nil, fmt.Errorf("dev officer key: %w", err)
	}
	cfg.CallTimeout = 30 * time.Second
	cfg.ConnectTimeout = 2 * time.Second
	c, err := custos.Dial(context.Background(), cfg)
	if err != nil {
		return nil, err
	}
	return &devAdmitter{client: c, officer: signer, exe: exe, children: children, dir: dir, errw: errw,
		trusted: map[string]bool{}, noted: map[string]bool{}}, nil
}

// run admits nodes until ctx ends.
func (d *devAdmitter) run(ctx context.Context) {
	defer d.client.Close()
	t := time.NewTicker(devAdmitPoll)
	defer t.Stop()
	for {
		d.step(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// waitAll admits nodes until every one of the n nodes is a custodian, or
// timeout passes; it reports whether they all are.
func (d *devAdmitter) waitAll(ctx context.Context, n int, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if d.step(ctx) == n {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// note prints msg once.
func (d *devAdmitter) note(msg string) {
	if !d.noted[msg] {
		d.noted[msg] = true
		fmt.Fprintln(d.errw, "custosd dev: "+msg)
	}
}

// step takes every admission one step further and returns how many nodes
// are admitted.
func (d *devAdmitter) step(ctx context.Context) int {
	cs, err := d.client.ClusterStatus(ctx)
	if err != nil {
		return 0
	}
	var holders []int
	admitted := 0
	for _, ad := range cs.GetAdmissions() {
		if ad.GetState() == custosv1.AdmissionState_ADMISSION_STATE_ADMITTED {
			admitted++
			if i := d.child(ad.GetNode()); i >= 0 {
				holders = append(holders, i)
			}
		}
	}
	// A domain-key rotation (custos cluster rotate-domain-key): the same
	// two steps for each custodian's rotation transport key, the SO step
	// on the generator's token.
	if r := cs.GetRotation(); r != nil && r.GetGenerator() != "" {
		for _, ad := range r.GetNodes() {
			switch ad.GetState() {
			case custosv1.AdmissionState_ADMISSION_STATE_OFFERED:
				if err := d.approve(ctx, ad, true); err != nil {
					d.note(fmt.Sprintf("approve %s's rotation transport key: %v", ad.GetNode(), err))
				}
			case custosv1.AdmissionState_ADMISSION_STATE_APPROVED:
				if g := d.child(r.GetGenerator()); g >= 0 {
					if err := d.trust(ctx, g, ad); err != nil {
						d.note(fmt.Sprintf("%s's SO: trust %s's rotation transport key: %v", r.GetGenerator(), ad.GetNode(), err))
					}
				}
			}
		}
	}
	for _, ad := range cs.GetAdmissions() {
		switch ad.GetState() {
		case custosv1.AdmissionState_ADMISSION_STATE_OFFERED:
			if err := d.approve(ctx, ad, false); err != nil {
				d.note(fmt.Sprintf("admit %s: %v", ad.GetNode(), err))
			}
		case custosv1.AdmissionState_ADMISSION_STATE_APPROVED:
			for _, h := range holders {
				if err := d.trust(ctx, h, ad); err != nil {
					d.note(fmt.Sprintf("%s's SO: trust %s's transport key: %v", d.children[h].id, ad.GetNode(), err))
				}
			}
		}
	}
	return admitted
}

// child returns the index of node id, or -1.
func (d *devAdmitter) child(id string) int {
	for i, c := range d.children {
		if c.id == id {
			return i
		}
	}
	return -1
}

// approve signs and submits the AdmitNode statement for ad's offer (for
// the running domain-key rotation if rotation), as the dev officer (quorum
// 1) — RSA-OAEP-SHA1: the development profile.
func (d *devAdmitter) approve(ctx context.Context, ad *custosv1.NodeAdmission, rotation bool) error {
	st, err := d.client.NewStatement(ctx, "custosd dev admits "+ad.GetNode(), time.Hour)
	if err != nil {
		return err
	}
	st.Operation = &custosv1.Statement_AdmitNode{AdmitNode: &custosv1.AdmitNode{Node: ad.GetNode(),
		TransportKeyFingerprint: ad.GetTransportKeyFingerprint(), IdentityKeyFingerprint: ad.GetIdentityKeyFingerprint(),
		Hash: custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA1, DomainKeyRotation: rotation}}
	b, err := governance.Marshal(st)
	if err != nil {
		return err
	}
	sig, err := governance.Sign(d.officer, devOfficerName, b)
	if err != nil {
		return err
	}
	if _, err := d.client.Submit(ctx, &custosv1.SignedStatement{Statement: b, Signatures: []*custosv1.OfficerSignature{sig}}); err != nil {
		return err
	}
	what := "admitted"
	if rotation {
		what = "approved the domain-key rotation's transport key of"
	}
	fmt.Fprintf(d.errw, "custosd dev: %s %s %s (transport key %s…, RSA-OAEP-SHA1: development profile)\n",
		devOfficerName, what, ad.GetNode(), ad.GetTransportKeyFingerprint()[:16])
	return nil
}

// trust runs holder h's SO step for ad's approved transport key, in a
// child process (`custosd dev-trust`): a process where the node is logged
// in as user cannot log in as SO.
func (d *devAdmitter) trust(ctx context.Context, h int, ad *custosv1.NodeAdmission) error {
	key := d.children[h].id + "/" + ad.GetApprovedFingerprint()
	if d.trusted[key] {
		return nil
	}
	holder := d.children[h]
	pins, label := holder.pins, holder.label
	if pins == "" {
		pins, label = filepath.Join(d.dir, holder.id, "softhsm", "pins.json"), "custos-dev-"+holder.id
	}
	cmd := exec.CommandContext(ctx, d.exe, "dev-trust",
		"--pins", pins,
		"--token", label,
		"--fingerprint", ad.GetApprovedFingerprint(),
		"--public-key-hex", hex.EncodeToString(ad.GetTransportPublicKey()))
	cmd.Env = append(withoutEnv(os.Environ(), softhsm.ConfEnv), softhsm.ConfEnv+"="+holder.hsmConf)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	d.trusted[key] = true
	return nil
}

// withoutEnv returns env without the variable name.
func withoutEnv(env []string, name string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k != name {
			out = append(out, kv)
		}
	}
	return out
}

// cmdDevTrust is `custosd dev-trust`, run by custosd dev only: a dev
// token's security officer (its SO PIN read from the dev pins file) marks
// an approved transport key trusted, as `custos hsm trust` does. An object
// already under the id is taken as done.
func cmdDevTrust(ctx context.Context, args []string, stderr io.Writer) error {
	fl := flag.NewFlagSet("custosd dev-trust", flag.ContinueOnError)
	fl.SetOutput(stderr)
	pinsFile := fl.String("pins", "", "the dev token's pins.json")
	token := fl.String("token", "", "token label")
	fp := fl.String("fingerprint", "", "approved fingerprint")
	pubHex := fl.String("public-key-hex", "", "transport public key, PKIX DER in hex")
	if err := fl.Parse(args); err != nil {
		return errUsage
	}
	b, err := os.ReadFile(*pinsFile)
	if err != nil {
		return err
	}
	var pins devPINs
	if err := json.Unmarshal(b, &pins); err != nil || pins.SOPIN == "" {
		return fmt.Errorf("%s: no SO PIN", *pinsFile)
	}
	der, err := hex.DecodeString(*pubHex)
	if err != nil {
		return err
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return err
	}
	pub, ok := k.(*rsa.PublicKey)
	if !ok {
		return fmt.Errorf("transport key is a %T", k)
	}
	if got, err := hsm.TransportFingerprint(pub); err != nil || got != *fp {
		return fmt.Errorf("transport key fingerprint %s (%v), not the approved %s", got, err, *fp)
	}
	module, err := softhsm.ModulePath()
	if err != nil {
		return err
	}
	err = pkcs11.TrustPublicKey(ctx, pkcs11.SOConfig{Module: module, TokenLabel: *token, SOPIN: pins.SOPIN},
		kms.TrustedKeyID(*fp), "custos transport key "+(*fp)[:16], pub)
	if errors.Is(err, hsm.ErrKeyExists) {
		return nil
	}
	return err
}
