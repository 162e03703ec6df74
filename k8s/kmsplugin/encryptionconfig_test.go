package kmsplugin_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/server/options/encryptionconfig"
	"k8s.io/apiserver/pkg/storage/value"
)

// docEndpoint is the socket docs/kubernetes.md names.
const docEndpoint = "unix:///var/run/custos-kms/kms.sock"

// docEncryptionConfig returns the EncryptionConfiguration block of
// docs/kubernetes.md.
func docEncryptionConfig(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "kubernetes.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, block := range strings.Split(string(b), "```yaml\n")[1:] {
		y, _, _ := strings.Cut(block, "```")
		if strings.Contains(y, "kind: EncryptionConfiguration") {
			return y
		}
	}
	t.Fatal("docs/kubernetes.md has no EncryptionConfiguration block")
	return ""
}

// TestEncryptionConfigurationFromDocs loads the EncryptionConfiguration of
// docs/kubernetes.md, pointed at the test's socket, with the API server's
// own loader, which calls Status and Encrypt as the API server does at
// start; then writes and reads a Secret through the transformer it built.
func TestEncryptionConfigurationFromDocs(t *testing.T) {
	e := startEnv(t, nil)
	y := docEncryptionConfig(t)
	if !strings.Contains(y, docEndpoint) {
		t.Fatalf("the documented configuration does not name %s:\n%s", docEndpoint, y)
	}
	file := filepath.Join(t.TempDir(), "encryption.yaml")
	if err := os.WriteFile(file, []byte(strings.ReplaceAll(y, docEndpoint, "unix://"+e.socket)), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	ec, err := encryptionconfig.LoadEncryptionConfig(ctx, file, false, "apiserver-docs")
	if err != nil {
		t.Fatalf("LoadEncryptionConfig: %v", err)
	}
	tr, ok := ec.Transformers[schema.GroupResource{Resource: "secrets"}]
	if !ok {
		t.Fatalf("no transformer for secrets: %v", ec.Transformers)
	}
	for _, hc := range ec.HealthChecks {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "/healthz/"+hc.Name(), nil)
		if err := hc.Check(req); err != nil {
			t.Errorf("health check %s: %v", hc.Name(), err)
		}
	}
	secret := bytes.Repeat([]byte(`{"kind":"Secret","data":{"password":"aHVudGVyMg=="}}`), 1000)
	dctx := value.DefaultContext("/registry/secrets/default/app")
	out, err := tr.TransformToStorage(ctx, secret, dctx)
	if err != nil {
		t.Fatalf("TransformToStorage: %v", err)
	}
	if !bytes.HasPrefix(out, []byte("k8s:enc:kms:v2:custos:")) || bytes.Contains(out, []byte("aHVudGVyMg")) {
		t.Errorf("stored value starts %q", out[:min(len(out), 40)])
	}
	got, stale, err := tr.TransformFromStorage(ctx, out, dctx)
	if err != nil || stale || !bytes.Equal(got, secret) {
		t.Fatalf("TransformFromStorage: stale=%v equal=%v %v", stale, bytes.Equal(got, secret), err)
	}
	// The identity provider still reads values written before encryption.
	if got, stale, err := tr.TransformFromStorage(ctx, []byte("plain"), dctx); err != nil || !stale || string(got) != "plain" {
		t.Errorf("unencrypted value: %q stale=%v %v", got, stale, err)
	}
}
