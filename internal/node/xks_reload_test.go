package node_test

import (
	"bytes"
	"crypto/tls"
	"net/http"
	"testing"
	"time"

	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/xks"
)

// xksStatus is the HTTP status of a health call signed with ak and secret.
func xksStatus(t *testing.T, addr string, roots *tls.Config, ak, secret string) int {
	t.Helper()
	body := []byte(`{"requestMetadata":{"kmsOperation":"KmsHealthCheck","kmsRequestId":"reload-test"}}`)
	req, err := http.NewRequest("POST", "https://"+addr+xksPrefix+"/kms/xks/v1/health", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if err := xks.Sign(req, body, ak, secret, xksRegion, xks.Service, time.Now(), "content-type"); err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: roots}}
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestXKSReloadRotatesCredentials rotates the SigV4 credential of a running
// XKS listener as AWS documents a rotation (add the new one, switch AWS KMS
// to it, remove the old one) with node.ReloadXKS, no restart; changes that
// need a restart and invalid configurations are refused and leave the
// running configuration in force.
func TestXKSReloadRotatesCredentials(t *testing.T) {
	h := startXKSNode(t, false)
	addr := h.Node.XKSAddr()
	tc := &tls.Config{RootCAs: rootsOf(t, h.CAFile)}
	const newAK, newSecret = "ROTATEDACCESSKEYID234567AB", "RotatedSecretAccessKeyOfSufficientLength01234"
	base := *h.Config.XKS
	with := func(creds ...xks.Credential) *node.XKSConfig {
		c := base
		c.Prefixes = []xks.PrefixConfig{{Path: xksPrefix, Region: xksRegion, Credentials: creds}}
		return &c
	}
	oldCred := xks.Credential{AccessKeyID: xksAK, Secret: xksSecret, Principal: "aws-kms-xks"}
	newCred := xks.Credential{AccessKeyID: newAK, Secret: newSecret, Principal: "aws-kms-xks"}
	want := func(what string, oldCode, newCode int) {
		t.Helper()
		if got := xksStatus(t, addr, tc, xksAK, xksSecret); got != oldCode {
			t.Errorf("%s: old credential: status %d, want %d", what, got, oldCode)
		}
		if got := xksStatus(t, addr, tc, newAK, newSecret); got != newCode {
			t.Errorf("%s: new credential: status %d, want %d", what, got, newCode)
		}
	}

	want("before", 200, 401)
	if err := h.Node.ReloadXKS(with(oldCred, newCred)); err != nil {
		t.Fatal(err)
	}
	want("both configured", 200, 200)
	if err := h.Node.ReloadXKS(with(newCred)); err != nil {
		t.Fatal(err)
	}
	want("old removed", 401, 200)

	moved := with(oldCred)
	moved.Listen = "127.0.0.1:1"
	short := with(xks.Credential{AccessKeyID: xksAK, Secret: "short", Principal: "p"})
	for name, c := range map[string]*node.XKSConfig{"listen changed": moved, "short secret": short, "XKS turned off": nil} {
		if err := h.Node.ReloadXKS(c); err == nil {
			t.Errorf("%s: ReloadXKS accepted it", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
		want(name+" (refused)", 401, 200)
	}
}
