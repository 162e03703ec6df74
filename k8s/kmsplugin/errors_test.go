package kmsplugin

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"
	kmsservice "k8s.io/kms/pkg/service"
)

// mapCases are what custos answers and what the API server must get.
var mapCases = []struct {
	custos error
	want   codes.Code
}{
	{status.Error(codes.InvalidArgument, "invalid argument: decryption failed"), codes.InvalidArgument},
	{status.Error(codes.NotFound, `not found: key "k8s-secrets"`), codes.FailedPrecondition},
	{status.Error(codes.FailedPrecondition, `failed precondition: key "k8s-secrets" is revoked (decision 9: DENY by key-state:revoked)`), codes.FailedPrecondition},
	{status.Error(codes.FailedPrecondition, "approval required: request 7c1e is waiting for the security officers"), codes.FailedPrecondition},
	{status.Error(codes.PermissionDenied, `permission denied: principal "kube-apiserver" may not decrypt with key "k8s-secrets"`), codes.PermissionDenied},
	{status.Error(codes.Unauthenticated, "the security officers have not approved the CA that issued this certificate"), codes.FailedPrecondition},
	{status.Error(codes.ResourceExhausted, "quota: decisions per second"), codes.ResourceExhausted},
	{status.Error(codes.Unavailable, "no custos node answered"), codes.Unavailable},
	{status.Error(codes.DeadlineExceeded, "deadline exceeded"), codes.DeadlineExceeded},
	{status.Error(codes.Canceled, "canceled"), codes.Canceled},
	{status.Error(codes.Internal, "internal"), codes.Internal},
	{status.Error(codes.AlreadyExists, "exists"), codes.Internal},
	{status.Error(codes.Unimplemented, "old custos"), codes.Internal},
	{fmt.Errorf("call: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
	{errors.New("not a status"), codes.Internal},
}

func TestMapCodes(t *testing.T) {
	if Map("decrypt", nil) != nil {
		t.Error("Map(nil) is not nil")
	}
	for _, c := range mapCases {
		got := status.Convert(Map("decrypt", c.custos))
		if got.Code() != c.want {
			t.Errorf("custos %v: code %v, want %v", c.custos, got.Code(), c.want)
		}
		if msg := status.Convert(c.custos).Message(); !strings.HasPrefix(got.Message(), "custos decrypt: ") || !strings.Contains(got.Message(), msg) {
			t.Errorf("custos %v: message %q does not carry %q", c.custos, got.Message(), msg)
		}
	}
}

// TestErrorsReachTheAPIServer sends each custos refusal through the plugin's
// socket to the API server's own KMS v2 client, and checks the code it sees.
func TestErrorsReachTheAPIServer(t *testing.T) {
	f := newFake("k")
	p, _ := newPlugin(t, f, nil)
	svc := serveForTest(t, p)
	ctx := context.Background()
	good, err := svc.Encrypt(ctx, "uid", seed())
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	for _, c := range mapCases {
		f.mu.Lock()
		f.encryptErr, f.decryptErr = c.custos, c.custos
		f.mu.Unlock()
		_, err := svc.Decrypt(ctx, "uid", &kmsservice.DecryptRequest{Ciphertext: good.Ciphertext, KeyID: good.KeyID})
		if status.Code(err) != c.want {
			t.Errorf("custos %v: the API server's Decrypt got %v, want %v", c.custos, err, c.want)
		}
		_, err = svc.Encrypt(ctx, "uid", seed())
		if status.Code(err) != c.want {
			t.Errorf("custos %v: the API server's Encrypt got %v, want %v", c.custos, err, c.want)
		}
	}
}

// serveForTest serves p on a unix socket and returns the API server's KMS
// v2 client for it.
func serveForTest(t *testing.T, p *Plugin) kmsservice.Service {
	t.Helper()
	l, err := Listen(filepath.Join(shortDir(t), "kms.sock"), DefaultSocketMode)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(p)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	svc, err := kmsv2.NewGRPCService(ctx, "unix://"+l.Path(), "custos-unit", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return svc
}
