package api

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// keyServer implements custosv1.KeyServiceServer over a kms.Service.
type keyServer struct {
	custosv1.UnimplementedKeyServiceServer

	svc *kms.Service
	log *slog.Logger
}

var _ custosv1.KeyServiceServer = (*keyServer)(nil)

// toStatus maps an error from package kms (or a context error) to the gRPC
// status the caller sees. It is the only place that does so.
//
// User errors carry err.Error(), which kms promises holds no secrets;
// ErrDecryptionFailed says "decryption failed" and nothing more; anything
// unexpected becomes Internal with a generic message (the caller logs the
// details, see keyServer.fail).
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "canceled")
	case errors.Is(err, kms.ErrDecryptionFailed):
		return status.Error(codes.InvalidArgument, "decryption failed")
	case errors.Is(err, kms.ErrInvalidArgument):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, kms.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, kms.ErrAlreadyExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, kms.ErrFailedPrecondition):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, kms.ErrPermissionDenied):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, kms.ErrUnavailable):
		return status.Error(codes.Unavailable, err.Error())
	default:
		return status.Error(codes.Internal, "internal error")
	}
}

// fail maps err with toStatus and logs what the caller is not told.
func (s *keyServer) fail(ctx context.Context, method string, err error) error {
	st := toStatus(err)
	switch status.Code(st) {
	case codes.Internal:
		s.log.ErrorContext(ctx, "internal error", "method", method, "err", err)
	case codes.Unavailable:
		s.log.WarnContext(ctx, "unavailable", "method", method, "err", err)
	}
	return st
}

// principal returns the caller the authentication interceptor recorded.
func principal(ctx context.Context) (kms.Principal, error) {
	p, ok := PrincipalFrom(ctx)
	if !ok {
		return kms.Principal{}, status.Error(codes.Unauthenticated, "a client certificate issued by the cluster CA is required")
	}
	return p, nil
}

// call runs one kms operation for the authenticated caller.
func call[Req, Resp any](ctx context.Context, s *keyServer, method string, req Req,
	op func(context.Context, kms.Principal, Req) (Resp, error)) (Resp, error) {
	var zero Resp
	p, err := principal(ctx)
	if err != nil {
		return zero, err
	}
	resp, err := op(ctx, p, req)
	if err != nil {
		return zero, s.fail(ctx, method, err)
	}
	return resp, nil
}

func (s *keyServer) CreateKey(ctx context.Context, req *custosv1.CreateKeyRequest) (*custosv1.Key, error) {
	return call(ctx, s, "CreateKey", req, s.svc.CreateKey)
}

func (s *keyServer) GetKey(ctx context.Context, req *custosv1.GetKeyRequest) (*custosv1.Key, error) {
	return call(ctx, s, "GetKey", req, s.svc.GetKey)
}

func (s *keyServer) ListKeys(ctx context.Context, req *custosv1.ListKeysRequest) (*custosv1.ListKeysResponse, error) {
	return call(ctx, s, "ListKeys", req, s.svc.ListKeys)
}

func (s *keyServer) RotateKey(ctx context.Context, req *custosv1.RotateKeyRequest) (*custosv1.Key, error) {
	return call(ctx, s, "RotateKey", req, s.svc.RotateKey)
}

func (s *keyServer) SetKeyState(ctx context.Context, req *custosv1.SetKeyStateRequest) (*custosv1.Key, error) {
	return call(ctx, s, "SetKeyState", req, s.svc.SetKeyState)
}

func (s *keyServer) SetMinDecryptionVersion(ctx context.Context, req *custosv1.SetMinDecryptionVersionRequest) (*custosv1.Key, error) {
	return call(ctx, s, "SetMinDecryptionVersion", req, s.svc.SetMinDecryptionVersion)
}

func (s *keyServer) GenerateDataKey(ctx context.Context, req *custosv1.GenerateDataKeyRequest) (*custosv1.GenerateDataKeyResponse, error) {
	return call(ctx, s, "GenerateDataKey", req, s.svc.GenerateDataKey)
}

func (s *keyServer) Encrypt(ctx context.Context, req *custosv1.EncryptRequest) (*custosv1.EncryptResponse, error) {
	return call(ctx, s, "Encrypt", req, s.svc.Encrypt)
}

func (s *keyServer) Decrypt(ctx context.Context, req *custosv1.DecryptRequest) (*custosv1.DecryptResponse, error) {
	return call(ctx, s, "Decrypt", req, s.svc.Decrypt)
}

func (s *keyServer) ReEncrypt(ctx context.Context, req *custosv1.ReEncryptRequest) (*custosv1.ReEncryptResponse, error) {
	return call(ctx, s, "ReEncrypt", req, s.svc.ReEncrypt)
}
