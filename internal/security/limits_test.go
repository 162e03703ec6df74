package security

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custos-kms/custos/internal/node/nodetest"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// TestLimits checks the request limits of a real node over mTLS.
func TestLimits(t *testing.T) {
	h := nodetest.Start(t)
	kc := custosv1.NewKeyServiceClient(h.Conn(t, "app"))
	gc := custosv1.NewGovernanceServiceClient(h.Conn(t, "app"))
	if _, err := kc.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: "lim"}); err != nil {
		t.Fatal(err)
	}
	dk, err := kc.GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: "lim"})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("request over the max message size", func(t *testing.T) {
		_, err := kc.Encrypt(ctx(t), &custosv1.EncryptRequest{Key: "lim", Plaintext: make([]byte, 2<<20)})
		wantCode(t, "Encrypt(2 MiB)", err, codes.ResourceExhausted)
		// The connection survives it.
		if _, err := kc.GetKey(ctx(t), &custosv1.GetKeyRequest{Name: "lim"}); err != nil {
			t.Errorf("GetKey after the refused request: %v", err)
		}
	})

	t.Run("encryption context over the limits", func(t *testing.T) {
		many := map[string]string{}
		for i := 0; i < 65; i++ {
			many[fmt.Sprintf("k%d", i)] = "v"
		}
		big := map[string]string{"k": strings.Repeat("x", 9<<10)}
		for name, ec := range map[string]map[string]string{"65 entries": many, "9 KiB": big} {
			_, err := kc.GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: "lim", EncryptionContext: ec})
			wantCode(t, "GenerateDataKey("+name+")", err, codes.InvalidArgument)
			if !strings.Contains(status.Convert(err).Message(), "encryption_context") {
				t.Errorf("GenerateDataKey(%s): %q does not name encryption_context", name, status.Convert(err).Message())
			}
			_, err = kc.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: dk.GetWrappedDataKey(), EncryptionContext: ec, Justification: customer})
			wantCode(t, "Decrypt("+name+")", err, codes.InvalidArgument)
			if !strings.Contains(status.Convert(err).Message(), "encryption_context") {
				t.Errorf("Decrypt(%s): %q does not name encryption_context", name, status.Convert(err).Message())
			}
		}
	})

	t.Run("at most 16 pending approvals per principal", func(t *testing.T) {
		pc := custosv1.NewKeyServiceClient(h.Conn(t, "pender"))
		if _, err := pc.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: "pend"}); err != nil {
			t.Fatal(err)
		}
		pdk, err := pc.GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: "pend"})
		if err != nil {
			t.Fatal(err)
		}
		req := &custosv1.DecryptRequest{Ciphertext: pdk.GetWrappedDataKey(), Justification: provider}
		for i := 1; i <= 16; i++ {
			_, err := pc.Decrypt(ctx(t), req)
			if status.Code(err) != codes.FailedPrecondition {
				t.Fatalf("pending decrypt %d: %v, want FailedPrecondition (approval required)", i, err)
			}
		}
		_, err = pc.Decrypt(ctx(t), req)
		wantCode(t, "17th pending decrypt", err, codes.ResourceExhausted)
		// Another principal is not affected.
		if _, err := kc.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: dk.GetWrappedDataKey(), Justification: provider}); status.Code(err) != codes.FailedPrecondition {
			t.Errorf("another principal's pending decrypt: %v, want FailedPrecondition", err)
		}
	})

	t.Run("hourly limit", func(t *testing.T) {
		setPolicy(t, h, gc, "lim", func(p *custosv1.KeyPolicy) { p.MaxDecryptsPerPrincipalPerHour = 2 })
		req := &custosv1.DecryptRequest{Ciphertext: dk.GetWrappedDataKey(), Justification: customer}
		for i := 1; i <= 2; i++ {
			if _, err := kc.Decrypt(ctx(t), req); err != nil {
				t.Fatalf("decrypt %d under the limit: %v", i, err)
			}
		}
		r, err := kc.Decrypt(ctx(t), req)
		wantCode(t, "3rd decrypt in the hour", err, codes.ResourceExhausted)
		if len(r.GetPlaintext()) != 0 {
			t.Error("the refused decrypt returned a data key")
		}
	})

	t.Run("expired deadline releases nothing", func(t *testing.T) {
		_, before := export(t, h, 0)
		head := before[len(before)-1].GetSeq()
		c, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		defer cancel()
		r, err := kc.Decrypt(c, &custosv1.DecryptRequest{Ciphertext: dk.GetWrappedDataKey(), Justification: customer})
		wantCode(t, "Decrypt with an expired deadline", err, codes.DeadlineExceeded)
		if len(r.GetPlaintext()) != 0 {
			t.Error("Decrypt with an expired deadline returned a data key")
		}
		// A later call proves the ledger moved on; nothing in between may
		// be an ALLOW.
		setPolicy(t, h, gc, "lim", func(p *custosv1.KeyPolicy) { p.MaxDecryptsPerPrincipalPerHour = 0 })
		_, after := export(t, h, head+1)
		for _, rec := range after {
			if rec.GetOutcome() == custosv1.Outcome_OUTCOME_ALLOW && rec.GetOperation() != custosv1.Operation_OPERATION_GOVERNANCE &&
				rec.GetOperation() != custosv1.Operation_OPERATION_CHECKPOINT {
				t.Errorf("ledger has %v after the expired-deadline Decrypt: %v", rec.GetOutcome(), rec)
			}
		}
	})
}
