package node_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/softhsm"
	"github.com/custos-kms/custos/xks"
)

const (
	xksPrefix = "/keystores/test"
	xksRegion = "eu-west-1"
	xksAK     = "TESTACCESSKEYID234567ABCDEF"
	xksSecret = "TestSecretAccessKeyOfSufficientLength0123456789"
	xksCN     = "cks.kms.eu-west-1.amazonaws.com"
)

// startXKSNode starts a node serving XKS on 127.0.0.1:0 with the harness's
// server certificate (dev PKI, SANs 127.0.0.1 and localhost), with mutual
// TLS when mtls is set.
func startXKSNode(t *testing.T, mtls bool) *nodetest.Harness {
	t.Helper()
	return nodetest.StartWith(t, func(cfg *node.Config) {
		cfg.XKS = &node.XKSConfig{
			Listen:   "127.0.0.1:0",
			CertFile: cfg.TLS.Cert,
			KeyFile:  cfg.TLS.Key,
			Prefixes: []xks.PrefixConfig{{Path: xksPrefix, Region: xksRegion,
				Credentials: []xks.Credential{{AccessKeyID: xksAK, Secret: xksSecret, Principal: "aws-kms-xks"}}}},
		}
		if mtls {
			cfg.XKS.ClientCAFile = cfg.TLS.CA
			cfg.XKS.AllowedCNs = []string{xksCN}
		}
	})
}

// xksHealth makes a SigV4-signed health call with the given client TLS
// configuration.
func xksHealth(t *testing.T, addr string, tc *tls.Config) (int, map[string]any, error) {
	t.Helper()
	body := []byte(`{"requestMetadata":{"kmsOperation":"KmsHealthCheck","kmsRequestId":"node-test-1"}}`)
	req, err := http.NewRequest("POST", "https://"+addr+xksPrefix+"/kms/xks/v1/health", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if err := xks.Sign(req, body, xksAK, xksSecret, xksRegion, xks.Service, time.Now(), "content-type"); err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}}
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("health response %d is not JSON: %q", resp.StatusCode, data)
	}
	return resp.StatusCode, out, nil
}

func rootsOf(t *testing.T, caFile string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatal("no CA certificate")
	}
	return pool
}

func wantActive(t *testing.T, status int, body map[string]any, id string) {
	t.Helper()
	if status != 200 {
		t.Fatalf("health = %d %v", status, body)
	}
	fleet, _ := body["ekmFleetDetails"].([]any)
	if len(fleet) != 1 {
		t.Fatalf("ekmFleetDetails = %v", body)
	}
	d := fleet[0].(map[string]any)
	if d["healthStatus"] != "ACTIVE" || d["id"] != id {
		t.Fatalf("ekmFleetDetails[0] = %v, want ACTIVE %s", d, id)
	}
}

func TestXKSListener(t *testing.T) {
	h := startXKSNode(t, false)
	addr := h.Node.XKSAddr()
	if addr == "" {
		t.Fatal("XKSAddr is empty")
	}
	roots := rootsOf(t, h.CAFile)

	// TLS 1.3, and TLS 1.2 with an ECDHE AES-GCM suite.
	st, body, err := xksHealth(t, addr, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	wantActive(t, st, body, "node1")
	st, body, err = xksHealth(t, addr, &tls.Config{RootCAs: roots, MaxVersion: tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}})
	if err != nil {
		t.Fatalf("TLS 1.2 ECDHE-ECDSA-AES256-GCM: %v", err)
	}
	wantActive(t, st, body, "node1")

	// Refused: CBC suites, ChaCha20 under TLS 1.2, TLS 1.1.
	for name, tc := range map[string]*tls.Config{
		"cbc":      {RootCAs: roots, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}},
		"chacha20": {RootCAs: roots, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}},
		"tls1.1":   {RootCAs: roots, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11},
	} {
		if _, _, err := xksHealth(t, addr, tc); err == nil {
			t.Errorf("%s: handshake succeeded", name)
		}
	}

	// A wrong signature is refused.
	body2 := []byte(`{"requestMetadata":{"kmsOperation":"KmsHealthCheck","kmsRequestId":"x"}}`)
	req, _ := http.NewRequest("POST", "https://"+addr+xksPrefix+"/kms/xks/v1/health", bytes.NewReader(body2))
	req.Header.Set("Content-Type", "application/json")
	if err := xks.Sign(req, body2, xksAK, xksSecret+"x", xksRegion, xks.Service, time.Now(), "content-type"); err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	c.CloseIdleConnections()
	if resp.StatusCode != 401 {
		t.Errorf("wrong secret: status %d, want 401", resp.StatusCode)
	}

	if err := h.Node.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := xksHealth(t, addr, &tls.Config{RootCAs: roots}); err == nil {
		t.Error("XKS still answers after Close")
	}
}

func TestXKSMutualTLS(t *testing.T) {
	h := startXKSNode(t, true)
	addr := h.Node.XKSAddr()
	roots := rootsOf(t, h.CAFile)

	aws := h.ClientTLS(t, xksCN)
	st, body, err := xksHealth(t, addr, &tls.Config{RootCAs: roots, Certificates: aws.Certificates})
	if err != nil {
		t.Fatal(err)
	}
	wantActive(t, st, body, "node1")

	other := h.ClientTLS(t, "someone-else")
	for name, tc := range map[string]*tls.Config{
		"no client certificate": {RootCAs: roots},
		"CN not allowed":        {RootCAs: roots, Certificates: other.Certificates},
	} {
		if _, _, err := xksHealth(t, addr, tc); err == nil {
			t.Errorf("%s: request succeeded", name)
		}
	}
}

func TestXKSConfigChecked(t *testing.T) {
	tok := softhsm.TestToken(t)
	dir := t.TempDir()
	cfg := nodetest.Config(t, dir, tok)
	nodetest.SetOfficers(t, &cfg, dir)
	for name, x := range map[string]*node.XKSConfig{
		"no listen":      {CertFile: cfg.TLS.Cert, KeyFile: cfg.TLS.Key, Prefixes: []xks.PrefixConfig{{}}},
		"no cert":        {Listen: "127.0.0.1:0", Prefixes: []xks.PrefixConfig{{}}},
		"ca without cns": {Listen: "127.0.0.1:0", CertFile: cfg.TLS.Cert, KeyFile: cfg.TLS.Key, ClientCAFile: cfg.TLS.CA, Prefixes: []xks.PrefixConfig{{}}},
		"no prefixes":    {Listen: "127.0.0.1:0", CertFile: cfg.TLS.Cert, KeyFile: cfg.TLS.Key},
		"short secret":   {Listen: "127.0.0.1:0", CertFile: cfg.TLS.Cert, KeyFile: cfg.TLS.Key, Prefixes: []xks.PrefixConfig{{Region: "r", Credentials: []xks.Credential{{AccessKeyID: xksAK, Secret: "short", Principal: "p"}}}}},
		"missing cert file": {Listen: "127.0.0.1:0", CertFile: cfg.TLS.Cert + ".missing", KeyFile: cfg.TLS.Key,
			Prefixes: []xks.PrefixConfig{{Region: "r", Credentials: []xks.Credential{{AccessKeyID: xksAK, Secret: xksSecret, Principal: "p"}}}}},
	} {
		c := cfg
		c.XKS = x
		n, err := node.Start(ctx(t), c)
		if err == nil {
			n.Close()
			t.Errorf("%s: node started", name)
			continue
		}
		t.Logf("%s: %v", name, err)
	}
}
