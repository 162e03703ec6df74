package api_test

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/internal/pki"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func wantCode(t *testing.T, what string, err error, code codes.Code) {
	t.Helper()
	if got := status.Code(err); got != code {
		t.Errorf("%s: code = %v (%v), want %v", what, got, err, code)
	}
}

// One node serves every subtest: starting a node costs a SoftHSM token and
// a Raft election.
func TestAPI(t *testing.T) {
	h := nodetest.Start(t)
	kc := custosv1.NewKeyServiceClient(h.Conn(t, "app"))

	t.Run("no client certificate is Unauthenticated", func(t *testing.T) {
		anon := custosv1.NewKeyServiceClient(h.Conn(t, ""))
		_, err := anon.GetKey(ctx(t), &custosv1.GetKeyRequest{Name: "x"})
		wantCode(t, "GetKey without a certificate", err, codes.Unauthenticated)
		_, err = anon.ListKeys(ctx(t), &custosv1.ListKeysRequest{})
		wantCode(t, "ListKeys without a certificate", err, codes.Unauthenticated)
	})

	t.Run("certificate from another CA is refused", func(t *testing.T) {
		other := t.TempDir()
		if err := pki.CreateDevPKI(other, nil, "mallory"); err != nil {
			t.Fatal(err)
		}
		mc, mk := pki.ClientFiles(other, "mallory")
		// Trusts the real server CA, presents a foreign client certificate.
		cfg, err := pki.ClientTLSConfig(h.CAFile, mc, mk)
		if err != nil {
			t.Fatal(err)
		}
		cc, err := grpc.NewClient(h.Addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		_, err = custosv1.NewKeyServiceClient(cc).GetKey(ctx(t), &custosv1.GetKeyRequest{Name: "x"})
		if c := status.Code(err); c != codes.Unavailable && c != codes.Unauthenticated {
			t.Errorf("foreign certificate: code = %v (%v), want Unavailable (handshake refused) or Unauthenticated", c, err)
		}
	})

	t.Run("server from another CA is refused by the client", func(t *testing.T) {
		other := t.TempDir()
		if err := pki.CreateDevPKI(other, nil, "app"); err != nil {
			t.Fatal(err)
		}
		ac, ak := pki.ClientFiles(other, "app")
		cfg, err := pki.ClientTLSConfig(filepath.Join(other, pki.CAFile), ac, ak)
		if err != nil {
			t.Fatal(err)
		}
		cc, err := grpc.NewClient(h.Addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		_, err = custosv1.NewKeyServiceClient(cc).GetKey(ctx(t), &custosv1.GetKeyRequest{Name: "x"})
		wantCode(t, "unknown server CA", err, codes.Unavailable)
	})

	t.Run("health without a certificate", func(t *testing.T) {
		hc := healthpb.NewHealthClient(h.Conn(t, ""))
		for _, svc := range []string{"", "custos.v1.KeyService", "custos.v1.GovernanceService", "custos.v1.AuditService"} {
			resp, err := hc.Check(ctx(t), &healthpb.HealthCheckRequest{Service: svc})
			if err != nil {
				t.Fatalf("Check(%q): %v", svc, err)
			}
			if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("Check(%q) = %v, want SERVING", svc, resp.GetStatus())
			}
		}
	})

	t.Run("reflection without a certificate", func(t *testing.T) {
		rc := reflectionpb.NewServerReflectionClient(h.Conn(t, ""))
		stream, err := rc.ServerReflectionInfo(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&reflectionpb.ServerReflectionRequest{
			MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range resp.GetListServicesResponse().GetService() {
			names = append(names, s.GetName())
		}
		for _, want := range []string{"custos.v1.KeyService", "custos.v1.GovernanceService", "custos.v1.AuditService"} {
			if !slices.Contains(names, want) {
				t.Errorf("reflection lists %v, want %s", names, want)
			}
		}
	})

	t.Run("unknown key is NotFound", func(t *testing.T) {
		_, err := kc.GetKey(ctx(t), &custosv1.GetKeyRequest{Name: "no-such-key"})
		wantCode(t, "GetKey(no-such-key)", err, codes.NotFound)
		_, err = kc.GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: "no-such-key"})
		wantCode(t, "GenerateDataKey(no-such-key)", err, codes.NotFound)
	})

	t.Run("bad name is InvalidArgument naming the field", func(t *testing.T) {
		_, err := kc.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: "bad name/../"})
		wantCode(t, "CreateKey(bad name)", err, codes.InvalidArgument)
		if !strings.Contains(status.Convert(err).Message(), "name") {
			t.Errorf("message %q does not name the field", status.Convert(err).Message())
		}
	})

	t.Run("duplicate key is AlreadyExists", func(t *testing.T) {
		if _, err := kc.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: "dup"}); err != nil {
			t.Fatal(err)
		}
		_, err := kc.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: "dup"})
		wantCode(t, "CreateKey(dup) again", err, codes.AlreadyExists)
	})

	t.Run("round trip, tamper, disable", func(t *testing.T) {
		if _, err := kc.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: "payroll"}); err != nil {
			t.Fatal(err)
		}
		ec := map[string]string{"dept": "hr"}
		just := &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Text: "test"}
		dk, err := kc.GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: "payroll", EncryptionContext: ec})
		if err != nil {
			t.Fatal(err)
		}
		dec, err := kc.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: dk.GetWrappedDataKey(), EncryptionContext: ec, Justification: just})
		if err != nil {
			t.Fatal(err)
		}
		if string(dec.GetPlaintext()) != string(dk.GetPlaintext()) {
			t.Error("Decrypt returned a different data key")
		}

		_, err = kc.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: dk.GetWrappedDataKey(),
			EncryptionContext: map[string]string{"dept": "sales"}, Justification: just})
		wantCode(t, "Decrypt with the wrong context", err, codes.InvalidArgument)
		if msg := status.Convert(err).Message(); msg != "decryption failed" {
			t.Errorf("wrong context: message = %q, want %q", msg, "decryption failed")
		}

		if _, err := kc.SetKeyState(ctx(t), &custosv1.SetKeyStateRequest{Name: "payroll", State: custosv1.KeyState_KEY_STATE_DISABLED}); err != nil {
			t.Fatal(err)
		}
		_, err = kc.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: dk.GetWrappedDataKey(), EncryptionContext: ec, Justification: just})
		wantCode(t, "Decrypt on a disabled key", err, codes.FailedPrecondition)
	})
}
