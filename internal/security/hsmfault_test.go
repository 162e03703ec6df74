package security

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// waitHealth polls the node's gRPC health service until it reports want.
// The node polls its HSM every api.DefaultHealthInterval (3 s); the bound
// here is generous and is not a timing assertion.
func waitHealth(t *testing.T, hc healthpb.HealthClient, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last healthpb.HealthCheckResponse_ServingStatus
	for time.Now().Before(deadline) {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := hc.Check(c, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil {
			last = r.GetStatus()
			if last == want {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("health stayed %v, want %v", last, want)
}

// TestHSMFault takes the node's SoftHSM token away under it and checks that
// custos fails closed and reports NOT_SERVING, that it recovers from a lost
// session by itself, and that it serves again, with no restart, once the
// token is back.
//
// Measured with SoftHSM 2.6.1 (docs/security.md, "What is tested"):
//   - C_CloseAllSessions from another handle on the module: the backend
//     replaces the sessions (CKR_SESSION_HANDLE_INVALID) and serves on.
//   - Moving the token's directory away: SoftHSM marks the token invalid
//     for the life of the process. C_GetSessionInfo still answers from
//     memory, C_FindObjects finds nothing, C_GetTokenInfo and C_Login fail
//     with CKR_GENERAL_ERROR; moving the directory back does not revive it:
//     only C_Finalize + C_Initialize does, which the backend now does at
//     health checks (hsm/pkcs11 reinitialize) when it is the module's only
//     user in the process.
//   - chmod 000 was not tried: these tests run as root, which ignores it.
func TestHSMFault(t *testing.T) {
	h, _ := startLogged(t, nil)
	kc := custosv1.NewKeyServiceClient(h.Conn(t, "app"))
	hc := healthpb.NewHealthClient(h.Conn(t, "app"))
	if _, err := kc.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: "fault"}); err != nil {
		t.Fatal(err)
	}
	dk, err := kc.GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: "fault"})
	if err != nil {
		t.Fatal(err)
	}
	decrypt := func() (*custosv1.DecryptResponse, error) {
		return kc.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: dk.GetWrappedDataKey(), Justification: customer})
	}
	mustDecrypt := func(what string) {
		t.Helper()
		r, err := decrypt()
		if err != nil {
			t.Fatalf("%s: Decrypt: %v", what, err)
		}
		if !bytes.Equal(r.GetPlaintext(), dk.GetPlaintext()) {
			t.Fatalf("%s: Decrypt returned another data key", what)
		}
	}
	mustDecrypt("before")
	waitHealth(t, hc, healthpb.HealthCheckResponse_SERVING)

	t.Run("sessions closed behind the backend's back", func(t *testing.T) {
		withModule(t, h.Token.Module, h.Token.Label, func(c *p11.Ctx, slot uint) {
			if err := c.CloseAllSessions(slot); err != nil {
				t.Fatal(err)
			}
		})
		for i := 0; i < 8; i++ { // more than once through the session pool
			mustDecrypt("after C_CloseAllSessions")
		}
		waitHealth(t, hc, healthpb.HealthCheckResponse_SERVING)
	})

	dir := tokenDir(t, h.Token)
	// Out of SoftHSM's token directory: a renamed directory inside it is
	// still a token (the module scans every subdirectory at C_Initialize).
	away := filepath.Join(h.Token.Dir.Path, "away-"+filepath.Base(dir))
	if err := os.Rename(dir, away); err != nil {
		t.Fatal(err)
	}
	moved := true
	t.Cleanup(func() {
		if moved {
			_ = os.Rename(away, dir)
		}
	})

	t.Run("token gone: NOT_SERVING, then fail closed", func(t *testing.T) {
		// Until the next health poll, session copies of the KEK (in the
		// module's memory) may still serve: the decision is recorded all
		// the same. Log what happens, never a wrong key.
		if r, err := decrypt(); err == nil {
			if !bytes.Equal(r.GetPlaintext(), dk.GetPlaintext()) {
				t.Fatal("Decrypt with the token gone returned another data key")
			}
			t.Logf("before the health poll noticed, a session copy served a decrypt (ALLOW recorded at seq %d)", r.GetDecisionSeq())
		} else {
			t.Logf("before the health poll: %v", err)
		}
		waitHealth(t, hc, healthpb.HealthCheckResponse_NOT_SERVING)
		for i := 0; i < 8; i++ {
			r, err := decrypt()
			if err == nil || len(r.GetPlaintext()) != 0 {
				t.Fatalf("Decrypt with the token gone = %v, %v; want an error and no data key", r, err)
			}
			if c := status.Code(err); c == codes.Unknown || c == codes.Internal {
				t.Errorf("Decrypt with the token gone: %v, want a retryable code", err)
			}
			if i == 0 {
				t.Logf("Decrypt with the token gone: %v", err)
			}
		}
		if _, err := kc.GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: "fault"}); err == nil {
			t.Error("GenerateDataKey with the token gone succeeded")
		}
		if _, err := kc.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: "fault2"}); err == nil {
			t.Error("CreateKey with the token gone succeeded")
		}
	})

	if err := os.Rename(away, dir); err != nil {
		t.Fatal(err)
	}
	moved = false

	t.Run("token back: the running node recovers", func(t *testing.T) {
		// The backend re-initialises the module at health checks while the
		// token does not answer (SoftHSM serves a lost token again only
		// after C_Finalize + C_Initialize), so the node serves again with
		// no restart.
		waitHealth(t, hc, healthpb.HealthCheckResponse_SERVING)
		mustDecrypt("after the token came back")
		if _, err := kc.GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: "fault"}); err != nil {
			t.Fatalf("GenerateDataKey after the token came back: %v", err)
		}
		if _, err := kc.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: "fault2"}); err != nil {
			t.Fatalf("CreateKey after the token came back: %v", err)
		}
	})
	t.Run("restart after recovery", func(t *testing.T) {
		h.Restart(t)
		waitHealth(t, hc, healthpb.HealthCheckResponse_SERVING)
		mustDecrypt("after restart")
	})
}
