package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-kms/custos/internal/pki"
)

func TestLoadConfigXKSAndMetrics(t *testing.T) {
	dir := t.TempDir()
	if err := pki.CreateDevPKI(filepath.Join(dir, "pki"), nil); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{
		"module.so": "", "pin": "1234\n",
		"xks-secret":    "ThisIsTheXKSSecretAccessKeyOfLength43To64xyz\n",
		"short":         "tooshort\n",
		"aws-roots.pem": "", // presence is all loadConfig checks
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	base := `{"id":"n1","data_dir":"data","listen":"127.0.0.1:7400",
		"pkcs11":{"module":"module.so","token_label":"t","pin_file":"pin"},
		"tls":{"ca":"pki/ca.pem","cert":"pki/server.pem","key":"pki/server-key.pem"}%s}`
	xksGood := `"xks":{"listen":":8443","cert":"pki/server.pem","key":"pki/server-key.pem",
		"client_ca":"aws-roots.pem","allowed_cns":["cks.kms.eu-west-1.amazonaws.com"],"ekm_id":"hsm-a","deadline":"150ms",
		"prefixes":[{"path":"/keystores/acme","region":"eu-west-1","default_reason":"CUSTOMER_WORKFLOW",
			"reason_map":{"kmsViaService=ebs":"REASON_CUSTOMER_INITIATED"},
			"credentials":[{"access_key_id":"AKIDONE0123456789ABCDEF","secret_file":"xks-secret","principal":"aws-kms-xks"},
				{"access_key_id":"AKIDTWO0123456789ABCDEF","secret_env":"XKS_SECRET_2","principal":"aws-kms-xks"}]}]}`
	write := func(s string) string {
		p := filepath.Join(dir, "custosd.json")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	env := func(k string) string {
		if k == "XKS_SECRET_2" {
			return "AnotherXKSSecretAccessKeyOfLength43To64abcdef"
		}
		return ""
	}

	cfg, err := loadConfig(write(strings.Replace(base, "%s", `,"metrics_listen":"127.0.0.1:7490",`+xksGood, 1)), env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MetricsListen != "127.0.0.1:7490" {
		t.Errorf("MetricsListen = %q", cfg.MetricsListen)
	}
	x := cfg.XKS
	if x == nil || x.Listen != ":8443" || x.CertFile != filepath.Join(dir, "pki/server.pem") || x.ClientCAFile != filepath.Join(dir, "aws-roots.pem") ||
		x.EKMID != "hsm-a" || len(x.AllowedCNs) != 1 || len(x.Prefixes) != 1 || x.Deadline != 150*time.Millisecond {
		t.Fatalf("XKS = %+v", x)
	}
	p := x.Prefixes[0]
	if p.Path != "/keystores/acme" || p.Region != "eu-west-1" || p.DefaultReason != "CUSTOMER_WORKFLOW" || len(p.ReasonMap) != 1 || len(p.Credentials) != 2 {
		t.Fatalf("prefix = %+v", p)
	}
	if p.Credentials[0].Secret != "ThisIsTheXKSSecretAccessKeyOfLength43To64xyz" || p.Credentials[1].Secret != env("XKS_SECRET_2") ||
		p.Credentials[0].Principal != "aws-kms-xks" {
		t.Fatalf("credentials not read: %q %q", p.Credentials[0].AccessKeyID, p.Credentials[1].AccessKeyID)
	}

	cred := func(s string) string {
		return `"xks":{"listen":":8443","cert":"pki/server.pem","key":"pki/server-key.pem",
			"prefixes":[{"region":"r","credentials":[` + s + `]}]}`
	}
	for _, tt := range []struct{ extra, field string }{
		{`"metrics_listen":"7490"`, `"metrics_listen"`},
		{`"xks":{}`, `"xks.listen"`},
		{`"xks":{"listen":":8443","cert":"pki/server.pem","key":"pki/server-key.pem","deadline":"soon"}`, `"xks.deadline"`},
		{`"xks":{"listen":":8443","key":"pki/server-key.pem"}`, `"xks.cert"`},
		{`"xks":{"listen":":8443","cert":"pki/server.pem","key":"missing.pem"}`, `"xks.key"`},
		{`"xks":{"listen":":8443","cert":"pki/server.pem","key":"pki/server-key.pem","client_ca":"aws-roots.pem"}`, `"xks.allowed_cns"`},
		{`"xks":{"listen":":8443","cert":"pki/server.pem","key":"pki/server-key.pem","allowed_cns":["x"]}`, `"xks.client_ca"`},
		{`"xks":{"listen":":8443","cert":"pki/server.pem","key":"pki/server-key.pem"}`, `"xks.prefixes"`},
		{`"xks":{"listen":":8443","cert":"pki/server.pem","key":"pki/server-key.pem","prefixes":[{"credentials":[]}]}`, `"xks.prefixes[0].region"`},
		{`"xks":{"listen":":8443","cert":"pki/server.pem","key":"pki/server-key.pem","prefixes":[{"region":"r","default_reason":"WHATEVER"}]}`, `"xks.prefixes[0].default_reason"`},
		{`"xks":{"listen":":8443","cert":"pki/server.pem","key":"pki/server-key.pem","prefixes":[{"region":"r"}]}`, `"xks.prefixes[0].credentials"`},
		{cred(`{"access_key_id":"A","secret":"inline-secret-is-refused","principal":"p"}`), `"xks.prefixes[0].credentials[0].secret" is not allowed`},
		{cred(`{"secret_file":"xks-secret","principal":"p"}`), `"xks.prefixes[0].credentials[0].access_key_id"`},
		{cred(`{"access_key_id":"A","secret_file":"xks-secret"}`), `"xks.prefixes[0].credentials[0].principal"`},
		{cred(`{"access_key_id":"A","principal":"p"}`), `"xks.prefixes[0].credentials[0].secret_file" or secret_env is required`},
		{cred(`{"access_key_id":"A","secret_file":"nope","principal":"p"}`), `"xks.prefixes[0].credentials[0].secret_file" cannot be read`},
		{cred(`{"access_key_id":"A","secret_file":"short","principal":"p"}`), `shorter than 43`},
		{cred(`{"access_key_id":"A","secret_env":"UNSET","principal":"p"}`), `"xks.prefixes[0].credentials[0].secret_env" names UNSET`},
		{cred(`{"access_key_id":"A","secret_file":"xks-secret","principal":"p"},{"access_key_id":"A","secret_file":"xks-secret","principal":"p"}`), `"xks.prefixes[0].credentials[1].access_key_id" repeats`},
	} {
		_, err := loadConfig(write(strings.Replace(base, "%s", ","+tt.extra, 1)), env)
		if err == nil || !strings.Contains(err.Error(), tt.field) {
			t.Errorf("%s: err = %v, want one naming %s", tt.extra, err, tt.field)
		}
		if err != nil && strings.Contains(err.Error(), "inline-secret") {
			t.Errorf("error repeats the secret: %v", err)
		}
	}
}

func TestServeLogFlags(t *testing.T) {
	var stderr bytes.Buffer
	if err := cmdServe(t.Context(), []string{"--config", "x.json", "--log-format", "xml"}, &stderr); err != errUsage ||
		!strings.Contains(stderr.String(), "--log-format") {
		t.Errorf("--log-format xml: %v %q", err, stderr.String())
	}
	stderr.Reset()
	if err := cmdServe(t.Context(), []string{"--config", "x.json", "--log-level", "loud"}, &stderr); err != errUsage ||
		!strings.Contains(stderr.String(), "--log-level") {
		t.Errorf("--log-level loud: %v %q", err, stderr.String())
	}

	dir := t.TempDir()
	if err := pki.CreateDevPKI(filepath.Join(dir, "pki"), nil); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "module.so"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "c.json")
	if err := os.WriteFile(p, []byte(`{"id":"n1","data_dir":"data","listen":"127.0.0.1:7400",
		"pkcs11":{"module":"module.so","token_label":"t"},"log":{"format":"text","level":"info"},
		"tls":{"ca":"pki/ca.pem","cert":"pki/server.pem","key":"pki/server-key.pem"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	pin := func(k string) string {
		if k == PINEnv {
			return "1234"
		}
		return ""
	}
	cfg, err := loadConfigLog(p, pin, "debug", "json")
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Logger.Enabled(t.Context(), slog.LevelDebug) {
		t.Error("--log-level debug did not override log.level info")
	}
	if _, ok := cfg.Logger.Handler().(*slog.JSONHandler); !ok {
		t.Errorf("--log-format json: handler %T", cfg.Logger.Handler())
	}
}
