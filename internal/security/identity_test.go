package security

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/internal/pki"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// caDER returns the DER of the CA certificate of the PKI in dir.
func caDER(t *testing.T, dir string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, pki.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("no PEM block in the CA file")
	}
	return blk.Bytes
}

// TestAppendedCAIdentifiesNobody is the operator who appends a CA of its
// own to a node's tls.ca (picked up without a restart) and mints
// CN=hr-app: the node's TLS layer accepts the certificate, but it
// identifies nobody, because the cluster pinned its client authorities at
// genesis; nothing is decided in hr-app's name. Only the officers' quorum
// makes that CA count, and then every record names which CA issued the
// caller's certificate; one officer takes it away again
// (docs/identities.md).
func TestAppendedCAIdentifiesNobody(t *testing.T) {
	h := nodetest.Start(t)
	legitCA := caDER(t, filepath.Dir(h.CAFile))

	// hr-app, issued by the cluster's CA, creates a key and a data key.
	app := h.Conn(t, "hr-app")
	kc := custosv1.NewKeyServiceClient(app)
	if _, err := kc.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: "payroll"}); err != nil {
		t.Fatal(err)
	}
	dk, err := kc.GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: "payroll"})
	if err != nil {
		t.Fatal(err)
	}
	dec, err := kc.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: dk.WrappedDataKey, Justification: customer})
	if err != nil {
		t.Fatal(err)
	}
	_, recs := export(t, h, 1)
	last := recs[len(recs)-1]
	legitSum := sha256.Sum256(legitCA)
	if last.Seq != dec.DecisionSeq || !bytes.Equal(last.PrincipalIssuerSha256, legitSum[:]) || len(last.PrincipalCertSha256) != sha256.Size {
		t.Fatalf("hr-app's decision record: seq %d issuer %x cert %x, want seq %d issuer %x (the cluster CA)",
			last.Seq, last.PrincipalIssuerSha256, last.PrincipalCertSha256, dec.DecisionSeq, legitSum)
	}

	// The operator's CA, appended to the node's bundle.
	rogueDir := t.TempDir()
	if err := pki.CreateDevPKI(rogueDir, nil, "unused"); err != nil {
		t.Fatal(err)
	}
	rogueCA := caDER(t, rogueDir)
	bundle, err := os.ReadFile(h.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rogueCA})...)
	if err := os.WriteFile(h.CAFile, bundle, 0o600); err != nil {
		t.Fatal(err)
	}
	rogueTLS := h.ClientTLS(t, "hr-app").Clone()
	rogueTLS.Certificates = []tls.Certificate{issue(t, rogueDir, "hr-app", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))}
	rogue, err := grpc.NewClient(h.Addr, grpc.WithTransportCredentials(credentials.NewTLS(rogueTLS)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rogue.Close() })
	rkc := custosv1.NewKeyServiceClient(rogue)
	decryptAsRogue := func() error {
		_, err := rkc.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: dk.WrappedDataKey, Justification: customer})
		return err
	}
	// Until the node reloads its bundle the handshake fails (Unavailable);
	// after, the certificate passes TLS and must identify nobody.
	deadline := time.Now().Add(30 * time.Second)
	err = decryptAsRogue()
	for status.Code(err) == codes.Unavailable && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond) // polling the node's bundle reload (checked once a second)
		err = decryptAsRogue()
	}
	wantCode(t, "decrypt with a certificate from a CA the operator appended", err, codes.Unauthenticated)
	if !strings.Contains(status.Convert(err).Message(), "officers") {
		t.Errorf("refusal %q does not say that the officers have not approved the CA", status.Convert(err).Message())
	}
	_, after := export(t, h, 1)
	for _, r := range after[len(recs):] {
		if r.Principal == "hr-app" {
			t.Fatalf("a record in hr-app's name after the refusal: %v", r)
		}
	}

	gc := custosv1.NewGovernanceServiceClient(h.Conn(t, "officer-desk"))
	add := func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_AddClientAuthority{AddClientAuthority: &custosv1.AddClientAuthority{Certificate: rogueCA}}
	}
	// One officer cannot add an authority.
	_, err = gc.Submit(ctx(t), h.Sign(t, add, 0))
	wantCode(t, "AddClientAuthority with one signature", err, codes.PermissionDenied)
	wantCode(t, "decrypt after a refused AddClientAuthority", decryptAsRogue(), codes.Unauthenticated)

	// The quorum can; then the record says which CA issued the caller's
	// certificate.
	if _, err := gc.Submit(ctx(t), h.Sign(t, add, 0, 1)); err != nil {
		t.Fatalf("AddClientAuthority with the quorum: %v", err)
	}
	g, err := gc.GetGovernance(ctx(t), &custosv1.GetGovernanceRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !g.ClientAuthoritiesPinned || len(g.ClientAuthorities) != 2 {
		t.Fatalf("governance: pinned %v, %d authorities; want pinned, 2", g.ClientAuthoritiesPinned, len(g.ClientAuthorities))
	}
	rdec, err := rkc.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: dk.WrappedDataKey, Justification: customer})
	if err != nil {
		t.Fatalf("decrypt once the officers trust the CA: %v", err)
	}
	_, recs = export(t, h, 1)
	rogueSum := sha256.Sum256(rogueCA)
	var seen bool
	for _, r := range recs {
		if r.Seq == rdec.DecisionSeq {
			seen = true
			if !bytes.Equal(r.PrincipalIssuerSha256, rogueSum[:]) {
				t.Fatalf("record %d names issuer %x, want the added CA %x", r.Seq, r.PrincipalIssuerSha256, rogueSum)
			}
		}
	}
	if !seen {
		t.Fatalf("no record %d", rdec.DecisionSeq)
	}

	// One officer removes it: its certificates identify nobody again.
	if _, err := gc.Submit(ctx(t), h.Sign(t, func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_RemoveClientAuthority{RemoveClientAuthority: &custosv1.RemoveClientAuthority{Sha256: g.ClientAuthorities[1].Sha256}}
	}, 2)); err != nil {
		t.Fatalf("RemoveClientAuthority by one officer: %v", err)
	}
	wantCode(t, "decrypt after the CA was removed", decryptAsRogue(), codes.Unauthenticated)
	if _, err := kc.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: dk.WrappedDataKey, Justification: customer}); err != nil {
		t.Fatalf("hr-app from the cluster CA after the removal: %v", err)
	}

	// One officer removes the last authority: nobody is identified, yet
	// the officers can still read governance and submit statements (their
	// signatures authorise them, not the caller's certificate), so the
	// quorum can trust a CA again.
	if _, err := gc.Submit(ctx(t), h.Sign(t, func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_RemoveClientAuthority{RemoveClientAuthority: &custosv1.RemoveClientAuthority{Sha256: g.ClientAuthorities[0].Sha256}}
	}, 0)); err != nil {
		t.Fatalf("removing the last authority: %v", err)
	}
	_, err = kc.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: dk.WrappedDataKey, Justification: customer})
	wantCode(t, "decrypt with no client authority left", err, codes.Unauthenticated)
	if g, err := gc.GetGovernance(ctx(t), &custosv1.GetGovernanceRequest{}); err != nil || !g.ClientAuthoritiesPinned || len(g.ClientAuthorities) != 0 {
		t.Fatalf("governance with no authority left: %v, %v", g, err)
	}
	if _, err := gc.Submit(ctx(t), h.Sign(t, func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_AddClientAuthority{AddClientAuthority: &custosv1.AddClientAuthority{Certificate: legitCA}}
	}, 0, 1)); err != nil {
		t.Fatalf("the quorum trusting the cluster CA again: %v", err)
	}
	if _, err := kc.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: dk.WrappedDataKey, Justification: customer}); err != nil {
		t.Fatalf("hr-app once the cluster CA is trusted again: %v", err)
	}

	// A restart keeps the officers' authorities, not the file's.
	h.Restart(t)
	rogue2, err := grpc.NewClient(h.Addr, grpc.WithTransportCredentials(credentials.NewTLS(rogueTLS)))
	if err != nil {
		t.Fatal(err)
	}
	defer rogue2.Close()
	_, err = custosv1.NewKeyServiceClient(rogue2).Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: dk.WrappedDataKey, Justification: customer})
	wantCode(t, "decrypt after a restart", err, codes.Unauthenticated)
}
