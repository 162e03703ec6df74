package requestsig_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/big"
	"os"
	"testing"
	"time"

	"github.com/custos-kms/custos/kms/requestsig"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

type vector struct {
	Method        string            `json:"method"`
	Ciphertext    string            `json:"ciphertext"`
	Header        string            `json:"header"`
	DataDigest    string            `json:"data_digest"`
	Context       map[string]string `json:"context"`
	ContextDigest string            `json:"context_digest"`
	Reason        int32             `json:"reason"`
	Text          string            `json:"text"`
	Ticket        string            `json:"ticket"`
	Nonce         string            `json:"nonce"`
	Time          int64             `json:"time_unix_nano"`
	Message       string            `json:"message"`
	Signature     string            `json:"signature"`
	PublicKey     string            `json:"public_key_pkix"`
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The message format of docs/signed-requests.md, byte for byte (the
// Python client checks the same vector), and a signature over it.
func TestVector(t *testing.T) {
	data, err := os.ReadFile("testdata/vector.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vector
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	ct := unhex(t, v.Ciphertext)
	if hex.EncodeToString(requestsig.HeaderOf(ct)) != v.Header {
		t.Fatalf("HeaderOf = %x, want %s", requestsig.HeaderOf(ct), v.Header)
	}
	if d := sha256.Sum256(ct); hex.EncodeToString(d[:]) != v.DataDigest {
		t.Fatal("the vector's data digest is not SHA-256 of its ciphertext")
	}
	r := requestsig.Request{Method: v.Method, Header: unhex(t, v.Header), DataDigest: unhex(t, v.DataDigest), ContextDigest: unhex(t, v.ContextDigest),
		Reason: custosv1.Reason(v.Reason), Text: v.Text, Ticket: v.Ticket}
	if got := hex.EncodeToString(requestsig.Message(r, unhex(t, v.Nonce), v.Time)); got != v.Message {
		t.Fatalf("message\n got %s\nwant %s", got, v.Message)
	}
	pub, err := x509.ParsePKIXPublicKey(unhex(t, v.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	sig := &custosv1.RequestSignature{Nonce: unhex(t, v.Nonce), TimeUnixNano: v.Time, Signature: unhex(t, v.Signature)}
	if err := requestsig.Verify(pub, r, sig); err != nil {
		t.Fatalf("the vector's signature: %v", err)
	}
	// As a replica checks it: for a DECRYPT_DATA_KEY of version 3 of
	// payroll, and for nothing else.
	r.Header = nil
	if err := requestsig.VerifyDecision(pub, r, custosv1.Operation_OPERATION_DECRYPT_DATA_KEY, "payroll", 3, sig); err != nil {
		t.Fatalf("VerifyDecision: %v", err)
	}
	for _, d := range []struct {
		op      custosv1.Operation
		key     string
		version uint32
	}{
		{custosv1.Operation_OPERATION_DECRYPT, "payroll", 3},          // another kind
		{custosv1.Operation_OPERATION_DECRYPT_DATA_KEY, "hr", 3},      // another key
		{custosv1.Operation_OPERATION_DECRYPT_DATA_KEY, "payroll", 2}, // another version
		{custosv1.Operation_OPERATION_REENCRYPT, "payroll", 3},        // another method
		{custosv1.Operation_OPERATION_GOVERNANCE, "payroll", 3},
	} {
		if err := requestsig.VerifyDecision(pub, r, d.op, d.key, d.version, sig); !errors.Is(err, requestsig.ErrInvalid) {
			t.Errorf("a decision %s of %s version %d under the vector's signature: %v, want ErrInvalid", d.op, d.key, d.version, err)
		}
	}
}

// A signature covers every field: changing any one of them, or the nonce
// or the time, breaks it; malformed signatures and other key types are
// refused with ErrInvalid, never a panic.
func TestSignVerify(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dd, cd := sha256.Sum256([]byte("ct")), sha256.Sum256(nil)
	r := requestsig.Request{Method: requestsig.MethodDecrypt, Header: []byte{1, 1, 1, 'k', 0, 0, 0, 1}, DataDigest: dd[:], ContextDigest: cd[:],
		Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Text: "why", Ticket: "T"}
	sig, err := requestsig.Sign(key, r, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := requestsig.Verify(&key.PublicKey, r, sig); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	other := sha256.Sum256([]byte("other"))
	for name, mod := range map[string]func(*requestsig.Request, *custosv1.RequestSignature){
		"method":         func(r *requestsig.Request, _ *custosv1.RequestSignature) { r.Method = requestsig.MethodReEncrypt },
		"header":         func(r *requestsig.Request, _ *custosv1.RequestSignature) { r.Header = []byte{1, 2, 1, 'k', 0, 0, 0, 1} },
		"ciphertext":     func(r *requestsig.Request, _ *custosv1.RequestSignature) { r.DataDigest = other[:] },
		"context":        func(r *requestsig.Request, _ *custosv1.RequestSignature) { r.ContextDigest = other[:] },
		"reason":         func(r *requestsig.Request, _ *custosv1.RequestSignature) { r.Reason = custosv1.Reason_REASON_EMERGENCY },
		"text":           func(r *requestsig.Request, _ *custosv1.RequestSignature) { r.Text = "why not" },
		"ticket":         func(r *requestsig.Request, _ *custosv1.RequestSignature) { r.Ticket = "T2" },
		"text to ticket": func(r *requestsig.Request, _ *custosv1.RequestSignature) { r.Text, r.Ticket = "whyT", "" },
		"nonce":          func(_ *requestsig.Request, s *custosv1.RequestSignature) { s.Nonce = make([]byte, 16) },
		"time":           func(_ *requestsig.Request, s *custosv1.RequestSignature) { s.TimeUnixNano++ },
		"short nonce":    func(_ *requestsig.Request, s *custosv1.RequestSignature) { s.Nonce = s.Nonce[:8] },
		"no signature":   func(_ *requestsig.Request, s *custosv1.RequestSignature) { s.Signature = nil },
		"huge signature": func(_ *requestsig.Request, s *custosv1.RequestSignature) { s.Signature = make([]byte, 4096) },
		"no digest":      func(r *requestsig.Request, _ *custosv1.RequestSignature) { r.DataDigest = nil },
	} {
		r2, s2 := r, &custosv1.RequestSignature{Nonce: append([]byte(nil), sig.Nonce...), TimeUnixNano: sig.TimeUnixNano, Signature: sig.Signature}
		mod(&r2, s2)
		if err := requestsig.Verify(&key.PublicKey, r2, s2); !errors.Is(err, requestsig.ErrInvalid) {
			t.Errorf("%s changed: Verify = %v, want ErrInvalid", name, err)
		}
	}
	if err := requestsig.Verify(&key.PublicKey, r, nil); !errors.Is(err, requestsig.ErrInvalid) {
		t.Errorf("no signature at all: %v", err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	if err := requestsig.Verify(&rk.PublicKey, r, sig); !errors.Is(err, requestsig.ErrInvalid) {
		t.Errorf("an RSA certificate key: %v", err)
	}
	if _, err := requestsig.Sign(rk, r, time.Now()); err == nil {
		t.Error("Sign with an RSA key succeeded; requests are signed with P-256 keys only")
	}
}

// BenchmarkApplyCheck measures what every replica spends at apply on one
// signed request (kms.State.checkRequestSignature): parsing the caller's
// certificate, verifying it against its client authority at the command's
// time, and verifying the ECDSA P-256 signature. bench/RESULTS.md has the
// figure; the client's signing costs one ECDSA signature
// (BenchmarkSign).
func BenchmarkApplyCheck(b *testing.B) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "app"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	dd, cd := sha256.Sum256([]byte("ct")), sha256.Sum256(nil)
	r := requestsig.Request{Method: requestsig.MethodDecrypt, DataDigest: dd[:], ContextDigest: cd[:], Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED}
	sig, err := requestsig.Sign(key, r, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for range b.N {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			b.Fatal(err)
		}
		caCert, err := x509.ParseCertificate(caDER)
		if err != nil {
			b.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AddCert(caCert)
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: time.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			b.Fatal(err)
		}
		if err := requestsig.Verify(cert.PublicKey, r, sig); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSign measures the client's cost of signing one request.
func BenchmarkSign(b *testing.B) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	dd, cd := sha256.Sum256([]byte("ct")), sha256.Sum256(nil)
	r := requestsig.Request{Method: requestsig.MethodDecrypt, DataDigest: dd[:], ContextDigest: cd[:]}
	b.ReportAllocs()
	for range b.N {
		if _, err := requestsig.Sign(key, r, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}
