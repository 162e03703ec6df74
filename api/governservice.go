package api

import (
	"context"

	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// governServer implements custosv1.GovernanceServiceServer over a
// kms.Service. Anyone authenticated may call it: statements are authorised
// by the officers' signatures, verified in the log, not by the caller.
type governServer struct {
	custosv1.UnimplementedGovernanceServiceServer
	server
}

var _ custosv1.GovernanceServiceServer = (*governServer)(nil)

func (s *governServer) Submit(ctx context.Context, req *custosv1.SignedStatement) (*custosv1.SubmitResponse, error) {
	return call(ctx, &s.server, "Submit", req, s.svc.Submit)
}

func (s *governServer) GetGovernance(ctx context.Context, req *custosv1.GetGovernanceRequest) (*custosv1.Governance, error) {
	return call(ctx, &s.server, "GetGovernance", req, s.svc.GetGovernance)
}

func (s *governServer) ListPending(ctx context.Context, req *custosv1.ListPendingRequest) (*custosv1.ListPendingResponse, error) {
	return call(ctx, &s.server, "ListPending", req, s.svc.ListPending)
}

func (s *governServer) GetRequest(ctx context.Context, req *custosv1.GetRequestRequest) (*custosv1.ApprovalRequest, error) {
	return call(ctx, &s.server, "GetRequest", req, s.svc.GetRequest)
}

func (s *governServer) ListGrants(ctx context.Context, req *custosv1.ListGrantsRequest) (*custosv1.ListGrantsResponse, error) {
	return call(ctx, &s.server, "ListGrants", req, s.svc.ListGrants)
}

func (s *governServer) GetPolicy(ctx context.Context, req *custosv1.GetPolicyRequest) (*custosv1.KeyPolicy, error) {
	return call(ctx, &s.server, "GetPolicy", req, s.svc.GetPolicy)
}

func (s *governServer) SubmitCosignature(ctx context.Context, req *custosv1.Cosignature) (*custosv1.SubmitCosignatureResponse, error) {
	return call(ctx, &s.server, "SubmitCosignature", req, func(ctx context.Context, p kms.Principal, cs *custosv1.Cosignature) (*custosv1.SubmitCosignatureResponse, error) {
		seq, err := s.svc.SubmitCosignature(ctx, p, cs)
		if err != nil {
			return nil, err
		}
		return &custosv1.SubmitCosignatureResponse{LedgerSeq: seq}, nil
	})
}

func (s *governServer) Propose(ctx context.Context, req *custosv1.ProposeRequest) (*custosv1.ProposeResponse, error) {
	return call(ctx, &s.server, "Propose", req, s.svc.Propose)
}

func (s *governServer) ListProposals(ctx context.Context, req *custosv1.ListProposalsRequest) (*custosv1.ListProposalsResponse, error) {
	return call(ctx, &s.server, "ListProposals", req, s.svc.ListProposals)
}
