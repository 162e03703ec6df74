package api

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// server holds what every custos gRPC service needs: the kms service and
// the logger for what callers are not told.
type server struct {
	svc *kms.Service
	log *slog.Logger
}

// keyServer implements custosv1.KeyServiceServer over a kms.Service.
type keyServer struct {
	custosv1.UnimplementedKeyServiceServer
	server
}

var _ custosv1.KeyServiceServer = (*keyServer)(nil)

// Reasons and domain of the google.rpc.ErrorInfo details custos attaches.
// The reasons of domain errors come from kms.ErrorKinds.
const (
	ErrorDomain = "custos"
	// ReasonApprovalRequired: the decrypt was recorded as PENDING; metadata
	// "request_id" names the approval request and "decision_seq" the
	// ledger position of the PENDING decision.
	ReasonApprovalRequired = "APPROVAL_REQUIRED"
	// ReasonNotAdmitted: this node's HSM does not hold the cluster's domain
	// key (FailedPrecondition); another node may serve the request.
	ReasonNotAdmitted = "NOT_ADMITTED"
	// ReasonHSMObjectRejected: an HSM object is not the one the log records
	// and nothing was done with it (Unavailable); another node may serve
	// the request.
	ReasonHSMObjectRejected = "HSM_OBJECT_REJECTED"
)

// toStatus maps an error from package kms (or a context error) to the gRPC
// status the caller sees, by its kind (kms.ErrorKinds). It is the only
// place that does so.
//
// Errors of a public kind carry err.Error(), which kms promises holds no
// secrets, less a leading sentinel text ("failed precondition: ") that only
// repeats the code; a kind with a reason adds an ErrorInfo detail (a
// *kms.PendingError's names the request); the others (ErrDecryptionFailed,
// ErrInternal, any unexpected error, context errors) say only their fixed
// text (the caller logs the details, see server.fail).
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	k := kms.ErrorKindOf(err)
	msg := k.Text
	if k.Public {
		msg = userMessage(err, k.Err)
	}
	if k.Reason == "" {
		return status.Error(k.Code, msg)
	}
	md := map[string]string{}
	var pending *kms.PendingError
	if errors.As(err, &pending) {
		md["request_id"], md["decision_seq"] = pending.RequestID, strconv.FormatUint(pending.Seq, 10)
	}
	return withErrorInfo(status.New(k.Code, msg), k.Reason, md)
}

// withErrorInfo adds an ErrorInfo detail (domain "custos") to st.
func withErrorInfo(st *status.Status, reason string, md map[string]string) error {
	withInfo, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain, Metadata: md})
	if derr != nil {
		return st.Err()
	}
	return withInfo.Err()
}

// userMessage is err's message without a leading "<sentinel>: ", for the
// kind's sentinel or any sentinel it wraps.
func userMessage(err, sentinel error) string {
	msg := err.Error()
	for s := sentinel; s != nil; s = errors.Unwrap(s) {
		if rest, ok := strings.CutPrefix(msg, s.Error()+": "); ok && rest != "" {
			return rest
		}
	}
	return msg
}

// fail maps err with toStatus and logs what the caller is not told.
func (s *server) fail(ctx context.Context, method string, err error) error {
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
func call[Req, Resp any](ctx context.Context, s *server, method string, req Req,
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
	return call(ctx, &s.server, "CreateKey", req, s.svc.CreateKey)
}

func (s *keyServer) GetKey(ctx context.Context, req *custosv1.GetKeyRequest) (*custosv1.Key, error) {
	return call(ctx, &s.server, "GetKey", req, s.svc.GetKey)
}

func (s *keyServer) ListKeys(ctx context.Context, req *custosv1.ListKeysRequest) (*custosv1.ListKeysResponse, error) {
	return call(ctx, &s.server, "ListKeys", req, s.svc.ListKeys)
}

func (s *keyServer) RotateKey(ctx context.Context, req *custosv1.RotateKeyRequest) (*custosv1.Key, error) {
	return call(ctx, &s.server, "RotateKey", req, s.svc.RotateKey)
}

func (s *keyServer) GetParametersForImport(ctx context.Context, req *custosv1.GetParametersForImportRequest) (*custosv1.ImportParameters, error) {
	return call(ctx, &s.server, "GetParametersForImport", req, s.svc.GetParametersForImport)
}

func (s *keyServer) ImportKeyMaterial(ctx context.Context, req *custosv1.ImportKeyMaterialRequest) (*custosv1.Key, error) {
	return call(ctx, &s.server, "ImportKeyMaterial", req, s.svc.ImportKeyMaterial)
}

func (s *keyServer) SetKeyState(ctx context.Context, req *custosv1.SetKeyStateRequest) (*custosv1.Key, error) {
	return call(ctx, &s.server, "SetKeyState", req, s.svc.SetKeyState)
}

func (s *keyServer) SetMinDecryptionVersion(ctx context.Context, req *custosv1.SetMinDecryptionVersionRequest) (*custosv1.Key, error) {
	return call(ctx, &s.server, "SetMinDecryptionVersion", req, s.svc.SetMinDecryptionVersion)
}

func (s *keyServer) GenerateDataKey(ctx context.Context, req *custosv1.GenerateDataKeyRequest) (*custosv1.GenerateDataKeyResponse, error) {
	return call(ctx, &s.server, "GenerateDataKey", req, s.svc.GenerateDataKey)
}

func (s *keyServer) Encrypt(ctx context.Context, req *custosv1.EncryptRequest) (*custosv1.EncryptResponse, error) {
	return call(ctx, &s.server, "Encrypt", req, s.svc.Encrypt)
}

func (s *keyServer) Decrypt(ctx context.Context, req *custosv1.DecryptRequest) (*custosv1.DecryptResponse, error) {
	return call(ctx, &s.server, "Decrypt", req, s.svc.Decrypt)
}

func (s *keyServer) ReEncrypt(ctx context.Context, req *custosv1.ReEncryptRequest) (*custosv1.ReEncryptResponse, error) {
	return call(ctx, &s.server, "ReEncrypt", req, s.svc.ReEncrypt)
}

// BatchDecrypt runs kms.BatchDecrypt and reports each item's error as the
// status a Decrypt of that item alone would have returned (toStatus).
func (s *keyServer) BatchDecrypt(ctx context.Context, req *custosv1.BatchDecryptRequest) (*custosv1.BatchDecryptResponse, error) {
	return call(ctx, &s.server, "BatchDecrypt", req, func(ctx context.Context, p kms.Principal, req *custosv1.BatchDecryptRequest) (*custosv1.BatchDecryptResponse, error) {
		items, err := s.svc.BatchDecrypt(ctx, p, req)
		if err != nil {
			return nil, err
		}
		resp := &custosv1.BatchDecryptResponse{Results: make([]*custosv1.BatchDecryptResult, len(items))}
		for i, it := range items {
			if it.Err == nil {
				resp.Results[i] = &custosv1.BatchDecryptResult{Result: &custosv1.BatchDecryptResult_Response{Response: it.Response}}
				continue
			}
			st := status.Convert(s.fail(ctx, "BatchDecrypt", it.Err))
			ie := &custosv1.ItemError{Code: int32(st.Code()), Message: st.Message()}
			if it.Decision != nil {
				ie.DecisionSeq, ie.RequestId = it.Decision.GetSeq(), it.Decision.GetRequestId()
			}
			resp.Results[i] = &custosv1.BatchDecryptResult{Result: &custosv1.BatchDecryptResult_Error{Error: ie}}
		}
		return resp, nil
	})
}
