package custos_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	custos "github.com/custos-kms/custos/clients/go"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

func TestConfigFromEnv(t *testing.T) {
	t.Setenv(custos.EnvAddr, " 127.0.0.1:1 , 127.0.0.1:2,, ")
	t.Setenv(custos.EnvCA, "/ca.pem")
	t.Setenv(custos.EnvCert, "/app.pem")
	t.Setenv(custos.EnvKey, "/app-key.pem")
	cfg, err := custos.ConfigFromEnv()
	if err != nil {
		t.Fatalf("ConfigFromEnv: %v", err)
	}
	if want := []string{"127.0.0.1:1", "127.0.0.1:2"}; !slices.Equal(cfg.Addrs, want) {
		t.Errorf("Addrs = %q, want %q", cfg.Addrs, want)
	}
	if cfg.CAFile != "/ca.pem" || cfg.CertFile != "/app.pem" || cfg.KeyFile != "/app-key.pem" {
		t.Errorf("files = %q %q %q", cfg.CAFile, cfg.CertFile, cfg.KeyFile)
	}

	t.Setenv(custos.EnvCert, "")
	_, err = custos.ConfigFromEnv()
	if err == nil || !strings.Contains(err.Error(), "CUSTOS_CERT") {
		t.Errorf("ConfigFromEnv without CUSTOS_CERT: error %v, want one naming CUSTOS_CERT", err)
	}
	if err != nil && (strings.Contains(err.Error(), "CUSTOS_KEY") || strings.Contains(err.Error(), "CUSTOS_ADDR")) {
		t.Errorf("error %q names variables that are set", err)
	}

	t.Setenv(custos.EnvAddr, "")
	_, err = custos.ConfigFromEnv()
	if err == nil || !strings.Contains(err.Error(), "CUSTOS_ADDR") || !strings.Contains(err.Error(), "CUSTOS_CERT") {
		t.Errorf("ConfigFromEnv without two variables: error %v, want one naming both", err)
	}
}

func TestDialChecksConfig(t *testing.T) {
	ctx := context.Background()
	if _, err := custos.Dial(ctx, custos.Config{CAFile: "a", CertFile: "b", KeyFile: "c"}); err == nil {
		t.Error("Dial without an address succeeded")
	}
	_, err := custos.Dial(ctx, custos.Config{Addrs: []string{"127.0.0.1:1"}, CAFile: "/nonexistent/ca.pem", CertFile: "b", KeyFile: "c"})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/ca.pem") {
		t.Errorf("Dial with a missing CA file: error %v, want one naming the file", err)
	}
	_, err = custos.Dial(ctx, custos.Config{Addrs: []string{"127.0.0.1:1"}})
	if err == nil || !strings.Contains(err.Error(), "CAFile") {
		t.Errorf("Dial without TLS settings: error %v, want one naming CAFile", err)
	}
}

func TestParseReason(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want custosv1.Reason
	}{
		{"CUSTOMER_INITIATED", custosv1.Reason_REASON_CUSTOMER_INITIATED},
		{"customer_initiated", custosv1.Reason_REASON_CUSTOMER_INITIATED},
		{"REASON_EMERGENCY", custosv1.Reason_REASON_EMERGENCY},
		{"reason_third_party_data_request", custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST},
		{"customer-workflow", custosv1.Reason_REASON_CUSTOMER_WORKFLOW},
		{" Provider_Service ", custosv1.Reason_REASON_PROVIDER_SERVICE},
		{"PROVIDER_SUPPORT", custosv1.Reason_REASON_PROVIDER_SUPPORT},
	} {
		got, err := custos.ParseReason(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseReason(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "UNSPECIFIED", "REASON_UNSPECIFIED", "because", "REASON_"} {
		if got, err := custos.ParseReason(in); err == nil {
			t.Errorf("ParseReason(%q) = %v, want an error", in, got)
		}
	}
	if got := custos.ReasonNames(); len(got) != 6 || got[0] != "CUSTOMER_INITIATED" || got[5] != "EMERGENCY" {
		t.Errorf("ReasonNames() = %q", got)
	}
	// Policies, grants and ledger filters may name the missing reason.
	for _, in := range []string{"UNSPECIFIED", "reason-unspecified", " Unspecified "} {
		if got, err := custos.ParseReasonOrUnspecified(in); err != nil || got != custosv1.Reason_REASON_UNSPECIFIED {
			t.Errorf("ParseReasonOrUnspecified(%q) = %v, %v", in, got, err)
		}
	}
	if got, err := custos.ParseReasonOrUnspecified("emergency"); err != nil || got != custosv1.Reason_REASON_EMERGENCY {
		t.Errorf("ParseReasonOrUnspecified(emergency) = %v, %v", got, err)
	}
	for _, in := range []string{"", "because"} {
		if _, err := custos.ParseReasonOrUnspecified(in); err == nil || !strings.Contains(err.Error(), "or UNSPECIFIED") {
			t.Errorf("ParseReasonOrUnspecified(%q): %v, want an error naming UNSPECIFIED", in, err)
		}
	}
}

func TestDataKeyZero(t *testing.T) {
	p := []byte{1, 2, 3}
	dk := &custos.DataKey{Plaintext: p}
	dk.Zero()
	if dk.Plaintext != nil || !slices.Equal(p, []byte{0, 0, 0}) {
		t.Errorf("after Zero: Plaintext = %v, backing array = %v", dk.Plaintext, p)
	}
	var nilKey *custos.DataKey
	nilKey.Zero() // must not panic
}
