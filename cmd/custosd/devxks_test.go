package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-kms/custos/internal/pki"
	"github.com/custos-kms/custos/xks"
)

// TestDevXKS: custosd dev --xks serves the XKS proxy API and writes the
// AWS test client's variables to DIR/xks.env, with which a SigV4-signed
// health call over TLS (verified against the dev CA) answers ACTIVE; the
// credential is kept (0600) across restarts.
func TestDevXKS(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	start := func() (map[string]string, func()) {
		envFile := filepath.Join(dir, "client.env")
		_ = os.Remove(envFile)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		var out, errb syncBuffer
		go func() {
			done <- cmdDev(ctx, []string{"--data-dir", dir, "--listen", "127.0.0.1:0", "--xks", "127.0.0.1:0"}, &out, &errb)
		}()
		deadline := time.Now().Add(60 * time.Second)
		for {
			if _, err := os.Stat(envFile); err == nil {
				break
			}
			select {
			case err := <-done:
				cancel()
				t.Fatalf("custosd dev exited: %v\n%s", err, errb.String())
			default:
			}
			if time.Now().After(deadline) {
				cancel()
				t.Fatalf("custosd dev did not write client.env\n%s", errb.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		return readEnv(t, filepath.Join(dir, "xks.env")), func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("custosd dev: %v", err)
			}
		}
	}
	env, stop := start()
	for _, k := range []string{"XKS_PROXY_HOST", "URI_PREFIX", "REGION", "SIGV4_ACCESS_KEY_ID", "SIGV4_SECRET_ACCESS_KEY", "SECURE"} {
		if env[k] == "" {
			t.Fatalf("xks.env: %s is empty (%v)", k, env)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "xks", "credential.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credential.json: %v", err)
	}
	caFile := strings.TrimPrefix(env["SECURE"], "--cacert ")
	tc, err := pki.ClientTLSConfig(caFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"requestMetadata":{"kmsOperation":"KmsHealthCheck","kmsRequestId":"dev-1"}}`)
	req, err := http.NewRequest("POST", "https://"+env["XKS_PROXY_HOST"]+"/"+env["URI_PREFIX"]+"/kms/xks/v1/health", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if err := xks.Sign(req, body, env["SIGV4_ACCESS_KEY_ID"], env["SIGV4_SECRET_ACCESS_KEY"], env["REGION"], xks.Service, time.Now(), "content-type"); err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tc.RootCAs}}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		Fleet []struct {
			HealthStatus string `json:"healthStatus"`
		} `json:"ekmFleetDetails"`
	}
	err = json.NewDecoder(resp.Body).Decode(&h)
	resp.Body.Close()
	c.CloseIdleConnections()
	if err != nil || resp.StatusCode != 200 || len(h.Fleet) != 1 || h.Fleet[0].HealthStatus != "ACTIVE" {
		t.Fatalf("health = %d %+v, %v", resp.StatusCode, h, err)
	}
	stop()
	env2, stop := start()
	defer stop()
	if env2["SIGV4_ACCESS_KEY_ID"] != env["SIGV4_ACCESS_KEY_ID"] || env2["SIGV4_SECRET_ACCESS_KEY"] != env["SIGV4_SECRET_ACCESS_KEY"] {
		t.Fatal("the XKS credential changed across a restart")
	}
}
