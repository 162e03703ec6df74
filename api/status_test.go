package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/custos-kms/custos/kms"
)

func TestToStatus(t *testing.T) {
	secret := "s3cr3t-detail"
	tests := []struct {
		err     error
		code    codes.Code
		message string // "" means err.Error()
	}{
		// The sentinel prefix only repeats the code: it is stripped.
		{fmt.Errorf("%w: name: must be 1-64 characters", kms.ErrInvalidArgument), codes.InvalidArgument, "name: must be 1-64 characters"},
		{fmt.Errorf("%w: key %q", kms.ErrNotFound, "payroll"), codes.NotFound, `key "payroll"`},
		{fmt.Errorf("%w: key %q", kms.ErrAlreadyExists, "payroll"), codes.AlreadyExists, `key "payroll"`},
		{fmt.Errorf("%w: key %q is disabled", kms.ErrFailedPrecondition, "payroll"), codes.FailedPrecondition, `key "payroll" is disabled`},
		{fmt.Errorf("%w: key %q is disabled (decision 7: DENY by key-state:disabled)", kms.ErrFailedPrecondition, "x"),
			codes.FailedPrecondition, `key "x" is disabled (decision 7: DENY by key-state:disabled)`},
		{fmt.Errorf("%w: policy denies", kms.ErrPermissionDenied), codes.PermissionDenied, "policy denies"},
		{fmt.Errorf("%w: principal %q reached 10 decrypts per hour with key %q", kms.ErrResourceExhausted, "app", "payroll"),
			codes.ResourceExhausted, `principal "app" reached 10 decrypts per hour with key "payroll"`},
		{fmt.Errorf("%w: raft: not the leader", kms.ErrUnavailable), codes.Unavailable, "raft: not the leader"},
		// A sentinel elsewhere in the message, or alone, is left as it is.
		{fmt.Errorf("key %q: %w", "payroll", kms.ErrNotFound), codes.NotFound, ""},
		{fmt.Errorf("key %q is disabled: %w", "payroll", kms.ErrFailedPrecondition), codes.FailedPrecondition, ""},
		{kms.ErrPermissionDenied, codes.PermissionDenied, ""},
		{fmt.Errorf("%w: tag mismatch %s", kms.ErrDecryptionFailed, secret), codes.InvalidArgument, "decryption failed"},
		{fmt.Errorf("%w: %s", kms.ErrInternal, secret), codes.Internal, "internal error"},
		// An HSM failure names no PKCS#11 function, return value or object.
		{fmt.Errorf("%w: hsm decrypt: pkcs11: DecryptGCM: C_Decrypt: CKR_DEVICE_ERROR %s", kms.ErrHSMFailed, secret), codes.Unavailable,
			"this node's HSM failed the request; another node may serve it (the node's log says why)"},
		{errors.New(secret), codes.Internal, "internal error"},
		{fmt.Errorf("apply: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "deadline exceeded"},
		{fmt.Errorf("apply: %w", context.Canceled), codes.Canceled, "canceled"},
	}
	for _, tt := range tests {
		st := status.Convert(toStatus(tt.err))
		want := tt.message
		if want == "" {
			want = tt.err.Error()
		}
		if st.Code() != tt.code || st.Message() != want {
			t.Errorf("toStatus(%q) = %v %q, want %v %q", tt.err, st.Code(), st.Message(), tt.code, want)
		}
		if st.Code() == codes.Unknown {
			t.Errorf("toStatus(%q) is Unknown", tt.err)
		}
		if strings.Contains(st.Message(), secret) {
			t.Errorf("toStatus(%q) leaks the detail", tt.err)
		}
		if len(st.Details()) != 0 {
			t.Errorf("toStatus(%q) has details %v", tt.err, st.Details())
		}
	}
	if toStatus(nil) != nil {
		t.Error("toStatus(nil) != nil")
	}
}

func TestToStatusPending(t *testing.T) {
	pe := &kms.PendingError{RequestID: "r-0123abcd", Seq: 42}
	for _, err := range []error{pe, fmt.Errorf("decrypt: %w", pe)} {
		st := status.Convert(toStatus(err))
		if st.Code() != codes.FailedPrecondition {
			t.Errorf("toStatus(%q) code = %v, want FailedPrecondition", err, st.Code())
		}
		if !strings.Contains(st.Message(), "r-0123abcd") || strings.HasPrefix(st.Message(), "failed precondition") {
			t.Errorf("toStatus(%q) message = %q", err, st.Message())
		}
		info := errorInfo(t, st)
		if info.GetReason() != ReasonApprovalRequired || info.GetDomain() != ErrorDomain {
			t.Errorf("ErrorInfo = %v", info)
		}
		if info.GetMetadata()["request_id"] != "r-0123abcd" || info.GetMetadata()["decision_seq"] != "42" {
			t.Errorf("ErrorInfo metadata = %v", info.GetMetadata())
		}
	}
	// The details survive the wire encoding of a status.
	st := status.FromProto(status.Convert(toStatus(pe)).Proto())
	if errorInfo(t, st).GetMetadata()["request_id"] != "r-0123abcd" {
		t.Error("ErrorInfo lost in the status proto")
	}
}

// errorInfo returns the single ErrorInfo detail of st.
func errorInfo(t *testing.T, st *status.Status) *errdetails.ErrorInfo {
	t.Helper()
	var infos []*errdetails.ErrorInfo
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			infos = append(infos, info)
		}
	}
	if len(infos) != 1 {
		t.Fatalf("status %v has %d ErrorInfo details, want 1 (details %v)", st, len(infos), st.Details())
	}
	return infos[0]
}

func TestFailLogsInternalDetails(t *testing.T) {
	var buf bytes.Buffer
	s := &server{log: slog.New(slog.NewTextHandler(&buf, nil))}
	err := s.fail(context.Background(), "Decrypt", errors.New("bolt: disk on fire"))
	if status.Code(err) != codes.Internal || strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("fail = %v", err)
	}
	if !strings.Contains(buf.String(), "disk on fire") {
		t.Errorf("internal error detail not logged: %q", buf.String())
	}
}

// TestFailLogsHSMDetails: what an HSM failure hides from the caller is in
// the node's log.
func TestFailLogsHSMDetails(t *testing.T) {
	var buf bytes.Buffer
	s := &server{log: slog.New(slog.NewTextHandler(&buf, nil))}
	err := s.fail(context.Background(), "Decrypt", fmt.Errorf("%w: hsm decrypt: C_Decrypt: CKR_DEVICE_ERROR", kms.ErrHSMFailed))
	if status.Code(err) != codes.Unavailable || strings.Contains(err.Error(), "C_Decrypt") {
		t.Errorf("fail = %v", err)
	}
	if !strings.Contains(buf.String(), "CKR_DEVICE_ERROR") {
		t.Errorf("HSM failure detail not logged: %q", buf.String())
	}
}

func TestRecoverInterceptor(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	ic := unaryRecover(log)
	_, err := ic(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/custos.v1.KeyService/GetKey"},
		func(context.Context, any) (any, error) { panic("boom") })
	if status.Code(err) != codes.Internal || strings.Contains(err.Error(), "boom") {
		t.Errorf("recovered panic = %v, want Internal without the panic value", err)
	}
	if !strings.Contains(buf.String(), "boom") {
		t.Errorf("panic not logged: %q", buf.String())
	}
}

func TestAuthnWithoutPeer(t *testing.T) {
	ic := unaryAuthn(nil)
	called := false
	h := func(ctx context.Context, _ any) (any, error) { called = true; return nil, nil }
	_, err := ic(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/custos.v1.KeyService/GetKey"}, h)
	if status.Code(err) != codes.Unauthenticated || called {
		t.Errorf("KeyService without a certificate: err=%v called=%v", err, called)
	}
	_, err = ic(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/grpc.health.v1.Health/Check"}, h)
	if err != nil || !called {
		t.Errorf("health without a certificate: err=%v called=%v", err, called)
	}
}

func TestHealthFollowsCheck(t *testing.T) {
	var mu sync.Mutex
	var healthErr error
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hs := health.NewServer()
	startHealth(Options{
		Logger:         slog.New(slog.DiscardHandler),
		HealthInterval: 10 * time.Millisecond,
		Context:        ctx,
		Health: func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			return healthErr
		},
	}, hs)
	check := func() healthpb.HealthCheckResponse_ServingStatus {
		resp, err := hs.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "custos.v1.KeyService"})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetStatus()
	}
	waitFor := func(want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for check() != want {
			if time.Now().After(deadline) {
				t.Fatalf("health = %v, want %v", check(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if got := check(); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("initial health = %v, want SERVING", got)
	}
	mu.Lock()
	healthErr = errors.New("hsm gone")
	mu.Unlock()
	waitFor(healthpb.HealthCheckResponse_NOT_SERVING)
	mu.Lock()
	healthErr = nil
	mu.Unlock()
	waitFor(healthpb.HealthCheckResponse_SERVING)
	cancel()
	waitFor(healthpb.HealthCheckResponse_NOT_SERVING)
}

func TestAuthnAndLoggingWithCertificate(t *testing.T) {
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: "app"}}
	pctx := peer.NewContext(context.Background(), &peer.Peer{
		Addr:     &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1234},
		AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}}},
	})
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	chain := func(ctx context.Context, req any, h grpc.UnaryHandler) (any, error) {
		info := &grpc.UnaryServerInfo{FullMethod: "/custos.v1.KeyService/Encrypt"}
		return unaryLogging(log)(ctx, req, info, func(ctx context.Context, req any) (any, error) {
			return unaryAuthn(nil)(ctx, req, info, h)
		})
	}
	var got kms.Principal
	_, err := chain(pctx, "PLAINTEXT-PAYLOAD", func(ctx context.Context, req any) (any, error) {
		got, _ = PrincipalFrom(ctx)
		return "CIPHERTEXT", toStatus(fmt.Errorf("key %q: %w", "payroll", kms.ErrNotFound))
	})
	if got.Name != "app" {
		t.Errorf("principal = %q, want app", got.Name)
	}
	line := buf.String()
	for _, want := range []string{"method=/custos.v1.KeyService/Encrypt", "principal=app", "code=NotFound", "duration="} {
		if !strings.Contains(line, want) {
			t.Errorf("log line %q lacks %q", line, want)
		}
	}
	if strings.Contains(line, "PLAINTEXT") || strings.Contains(line, "CIPHERTEXT") {
		t.Errorf("log line shows a payload: %q", line)
	}
	if status.Code(err) != codes.NotFound {
		t.Errorf("err = %v", err)
	}
}

// TestToStatusCoversEveryKind: every kind of the kms error table has its
// own gRPC status (never Unknown), with its ErrorInfo reason if it has one.
func TestToStatusCoversEveryKind(t *testing.T) {
	if kms.ErrorKindPending.Reason != ReasonApprovalRequired || kms.ErrorKindNotAdmitted.Reason != ReasonNotAdmitted ||
		kms.ErrorKindHSMObjectRejected.Reason != ReasonHSMObjectRejected {
		t.Fatal("api's reasons differ from the kms error table")
	}
	for _, k := range kms.ErrorKinds {
		err := fmt.Errorf("%w: key %q", k.Err, "k")
		if k == kms.ErrorKindPending {
			err = &kms.PendingError{RequestID: "r1", Seq: 3}
		}
		st := status.Convert(toStatus(err))
		if st.Code() != k.Code || st.Code() == codes.Unknown || st.Code() == codes.OK {
			t.Errorf("kind %q: %v, want %v", k.Name, st.Code(), k.Code)
		}
		if k.Reason == "" {
			if len(st.Details()) != 0 {
				t.Errorf("kind %q: details %v", k.Name, st.Details())
			}
			continue
		}
		if info := errorInfo(t, st); info.GetReason() != k.Reason || info.GetDomain() != ErrorDomain {
			t.Errorf("kind %q: ErrorInfo %v", k.Name, info)
		}
	}
	// A node that is not admitted says so, with the reason a client can
	// act on (try another node).
	st := status.Convert(toStatus(fmt.Errorf("decrypt: %w", kms.ErrNotAdmitted)))
	if st.Code() != codes.FailedPrecondition || !strings.HasPrefix(st.Message(), "decrypt: ") || !strings.Contains(st.Message(), ErrNotAdmitted) {
		t.Errorf("not admitted: %v", st)
	}
	st = status.Convert(toStatus(kms.ErrNotAdmitted))
	if st.Message() != ErrNotAdmitted {
		t.Errorf("not admitted message %q, want %q", st.Message(), ErrNotAdmitted)
	}
}
