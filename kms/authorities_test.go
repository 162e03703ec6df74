package kms_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// testCA is a CA certificate and key made for a test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T, name string) testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return testCA{cert: c, key: key}
}

// issue returns a leaf certificate for cn signed by the CA.
func (ca testCA) issue(t *testing.T, cn string) *x509.Certificate {
	t.Helper()
	c, _ := ca.issueWithKey(t, cn)
	return c
}

// issueWithKey is issue, with the leaf's private key.
func (ca testCA) issueWithKey(t *testing.T, cn string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

// principalOf is the principal the API layer makes of leaf issued by ca.
func principalOf(leaf *x509.Certificate, ca testCA) kms.Principal {
	iss, c := sha256.Sum256(ca.cert.Raw), sha256.Sum256(leaf.Raw)
	return kms.Principal{Name: leaf.Subject.CommonName, IssuerSHA256: iss[:], CertSHA256: c[:], Certificate: leaf.Raw}
}

func addAuthority(der []byte) func(*custosv1.Statement) {
	return func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_AddClientAuthority{AddClientAuthority: &custosv1.AddClientAuthority{Certificate: der}}
	}
}

// The state machine decides against the officers' client authorities at
// its log position, whatever the proposing node checked: once they are
// pinned, a decision or key administration for a principal whose
// certificate another CA issued is a DENY record, and every record names
// the issuer and the certificate.
func TestClientAuthoritiesInTheStateMachine(t *testing.T) {
	e := newEnv(t)
	good, other := newTestCA(t, "customer CA"), newTestCA(t, "operator CA")
	alice := principalOf(good.issue(t, "app-1"), good)
	mallory := principalOf(other.issue(t, "app-1"), other)

	// Not pinned (a cluster whose genesis named none): every issuer is
	// recorded, none refused.
	if e.state.ClientTrust().Pinned {
		t.Fatal("a genesis without client authorities is pinned")
	}
	if _, err := e.svc.CreateKey(bg, mallory, &custosv1.CreateKeyRequest{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	rec := lastRecord(t, e)
	if string(rec.PrincipalIssuerSha256) != string(mallory.IssuerSHA256) || string(rec.PrincipalCertSha256) != string(mallory.CertSHA256) {
		t.Fatalf("create-key record names issuer %x cert %x, want %x %x", rec.PrincipalIssuerSha256, rec.PrincipalCertSha256, mallory.IssuerSHA256, mallory.CertSHA256)
	}

	// One officer cannot add an authority; the quorum can, and that pins the authorities.
	if _, err := e.govern(addAuthority(good.cert.Raw), 0); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("AddClientAuthority by one officer: %v, want ErrPermissionDenied", err)
	}
	if _, err := e.govern(addAuthority(good.cert.Raw), 0, 1); err != nil {
		t.Fatalf("AddClientAuthority by the quorum: %v", err)
	}
	if _, err := e.govern(addAuthority(good.cert.Raw), 1, 2); !errors.Is(err, kms.ErrAlreadyExists) {
		t.Fatalf("the same authority again: %v, want ErrAlreadyExists", err)
	}
	if !e.state.ClientTrust().Pinned {
		t.Fatal("not pinned after AddClientAuthority")
	}

	dk := dataKey(t, e, "k", nil)
	// The operator's CA: its decision is a DENY record, its key
	// administration refused and recorded.
	_, err := e.svc.Decrypt(bg, mallory, &custosv1.DecryptRequest{Ciphertext: dk.WrappedDataKey,
		Justification: &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED}})
	if !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("decrypt by a principal of an untrusted CA: %v, want ErrPermissionDenied", err)
	}
	rec = lastRecord(t, e)
	if rec.Outcome != custosv1.Outcome_OUTCOME_DENY || rec.MatchedRule != "principal:issuer" || string(rec.PrincipalIssuerSha256) != string(mallory.IssuerSHA256) {
		t.Fatalf("record of the refused decrypt: %v", rec)
	}
	if _, err := e.svc.RotateKey(bg, mallory, &custosv1.RotateKeyRequest{Name: "k"}); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("rotate by a principal of an untrusted CA: %v, want ErrPermissionDenied", err)
	}
	if rec = lastRecord(t, e); rec.Outcome != custosv1.Outcome_OUTCOME_DENY || !strings.Contains(rec.Detail, "client authority") {
		t.Fatalf("record of the refused rotation: %v", rec)
	}
	// The customer's CA: served.
	if _, err := e.svc.Decrypt(bg, alice, &custosv1.DecryptRequest{Ciphertext: dk.WrappedDataKey,
		Justification: &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED}}); err != nil {
		t.Fatalf("decrypt by a principal of the trusted CA: %v", err)
	}
	// Principals without a certificate (XKS, the nodes) are not affected.
	if _, err := e.svc.Decrypt(bg, app, &custosv1.DecryptRequest{Ciphertext: dk.WrappedDataKey,
		Justification: &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED}}); err != nil {
		t.Fatalf("decrypt by a principal without a certificate: %v", err)
	}

	// One officer removes it; the cluster stays pinned, to none.
	sum := sha256.Sum256(good.cert.Raw)
	remove := func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_RemoveClientAuthority{RemoveClientAuthority: &custosv1.RemoveClientAuthority{Sha256: hexOf(sum[:])}}
	}
	if _, err := e.govern(remove, 2); err != nil {
		t.Fatalf("RemoveClientAuthority by one officer: %v", err)
	}
	tr := e.state.ClientTrust()
	if !tr.Pinned {
		t.Fatal("removing the last authority unpinned the cluster")
	}
	if _, _, err := tr.Identify([][]*x509.Certificate{{good.issue(t, "app-1"), good.cert}}); !errors.Is(err, kms.ErrUntrustedIssuer) {
		t.Fatalf("Identify after the removal: %v, want ErrUntrustedIssuer", err)
	}
	// And it survives a restart (snapshot or log replay).
	e.restart()
	if tr := e.state.ClientTrust(); !tr.Pinned || len(e.state.Governance().ClientAuthorities) != 0 {
		t.Fatalf("after a restart: pinned %v, %d authorities", tr.Pinned, len(e.state.Governance().ClientAuthorities))
	}
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// What the leader checks of a certificate a follower forwards with a
// command: that it is the one the command names, for the principal the
// command names, issued by the trusted authority the command names.
func TestVerifyForwardedCertificate(t *testing.T) {
	e := newEnv(t)
	good, other := newTestCA(t, "customer CA"), newTestCA(t, "operator CA")
	if _, err := e.govern(addAuthority(good.cert.Raw), 0, 1); err != nil {
		t.Fatal(err)
	}
	tr := e.state.ClientTrust()
	cn := func(c *x509.Certificate) string { return c.Subject.CommonName }
	cmdFor := func(p kms.Principal) *raftlogv1.Command {
		return &raftlogv1.Command{TimeUnixNano: time.Now().UnixNano(), Principal: p.Name, PrincipalIssuerSha256: p.IssuerSHA256,
			PrincipalCertSha256: p.CertSHA256, PrincipalCertificate: p.Certificate}
	}
	ok := principalOf(good.issue(t, "hr-app"), good)
	if err := tr.VerifyForwarded(cmdFor(ok), cn); err != nil {
		t.Fatalf("a good forwarded certificate: %v", err)
	}
	for name, mod := range map[string]func(*raftlogv1.Command){
		"another principal's name":      func(c *raftlogv1.Command) { c.Principal = "payroll" },
		"another certificate":           func(c *raftlogv1.Command) { c.PrincipalCertificate = good.issue(t, "hr-app").Raw },
		"garbage":                       func(c *raftlogv1.Command) { c.PrincipalCertificate = []byte("x") },
		"expired at the command's time": func(c *raftlogv1.Command) { c.TimeUnixNano = time.Now().Add(48 * time.Hour).UnixNano() },
		"the authority's own certificate": func(c *raftlogv1.Command) {
			p := principalOf(good.cert, good)
			c.Principal, c.PrincipalCertificate, c.PrincipalCertSha256 = p.Name, p.Certificate, p.CertSHA256
		},
		"issuer claimed, not trusted": func(c *raftlogv1.Command) { s := sha256.Sum256(other.cert.Raw); c.PrincipalIssuerSha256 = s[:] },
		"issued by the operator's CA, issuer claimed trusted": func(c *raftlogv1.Command) {
			p := principalOf(other.issue(t, "hr-app"), other)
			c.PrincipalCertificate, c.PrincipalCertSha256 = p.Certificate, p.CertSHA256
		},
	} {
		c := cmdFor(ok)
		mod(c)
		if err := tr.VerifyForwarded(c, cn); !errors.Is(err, kms.ErrPermissionDenied) {
			t.Errorf("%s: %v, want ErrPermissionDenied", name, err)
		}
	}
}
