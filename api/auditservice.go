package api

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// auditServer implements custosv1.AuditServiceServer over a kms.Service.
// Only the principals configured as auditors (kms.Config.Auditors) may call
// it; everyone else gets PermissionDenied. It changes nothing.
type auditServer struct {
	custosv1.UnimplementedAuditServiceServer
	server
}

var _ custosv1.AuditServiceServer = (*auditServer)(nil)

func (s *auditServer) ListDecisions(ctx context.Context, req *custosv1.ListDecisionsRequest) (*custosv1.ListDecisionsResponse, error) {
	return call(ctx, &s.server, "ListDecisions", req, s.svc.ListDecisions)
}

func (s *auditServer) GetCheckpoint(ctx context.Context, req *custosv1.GetCheckpointRequest) (*custosv1.GetCheckpointResponse, error) {
	return call(ctx, &s.server, "GetCheckpoint", req, s.svc.GetCheckpoint)
}

func (s *auditServer) Export(req *custosv1.ExportRequest, stream grpc.ServerStreamingServer[custosv1.ExportItem]) error {
	ctx := stream.Context()
	p, err := principal(ctx)
	if err != nil {
		return err
	}
	if err := s.svc.Export(ctx, p, req, stream.Send); err != nil {
		return s.streamFail(ctx, "Export", err)
	}
	return nil
}

func (s *auditServer) WatchDecisions(req *custosv1.WatchDecisionsRequest, stream grpc.ServerStreamingServer[custosv1.DecisionRecord]) error {
	ctx := stream.Context()
	p, err := principal(ctx)
	if err != nil {
		return err
	}
	// WatchDecisions follows the ledger until the stream's context ends, so
	// it always returns an error (the context's, at the least).
	return s.streamFail(ctx, "WatchDecisions", s.svc.WatchDecisions(ctx, p, req, stream.Send))
}

// streamFail is fail for a streaming method, whose error may come from
// Send: a status error (the client went away, the transport broke) is
// passed on as it is rather than turned into Internal.
func (s *server) streamFail(ctx context.Context, method string, err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	return s.fail(ctx, method, err)
}
