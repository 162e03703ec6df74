package kms

import (
	"context"
	"fmt"

	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// maxSignatures bounds the signatures on one statement.
const maxSignatures = 64

// Submit puts an officer-signed statement through the log. The signatures,
// not the caller, authorise it: they are verified inside Apply against the
// officer set at that log position, and the outcome, applied or refused, is
// a ledger record.
func (s *Service) Submit(ctx context.Context, p Principal, ss *custosv1.SignedStatement) (*custosv1.SubmitResponse, error) {
	switch {
	case len(ss.GetStatement()) == 0:
		return nil, fmt.Errorf("%w: statement is empty", ErrInvalidArgument)
	case len(ss.GetStatement()) > governance.MaxStatementSize:
		return nil, fmt.Errorf("%w: statement is larger than %d bytes", ErrInvalidArgument, governance.MaxStatementSize)
	case len(ss.GetSignatures()) == 0:
		return nil, fmt.Errorf("%w: signatures: a statement needs at least one officer signature", ErrInvalidArgument)
	}
	if err := checkSignatureSizes(ss.GetSignatures(), nil); err != nil {
		return nil, err
	}
	if err := s.ready(); err != nil {
		return nil, err
	}
	cmd := &raftlogv1.Command{Op: &raftlogv1.Command_Govern{Govern: &raftlogv1.Govern{Statement: ss}}}
	// A statement that would be refused (malformed, unsigned, replayed)
	// is still a record: rate-limited like other refusals (quota.go).
	if err := s.throttle(p, "", cmd); err != nil {
		return nil, err
	}
	res, err := s.apply(ctx, p, cmd)
	if err != nil {
		return nil, err
	}
	d, ok := res.(*Decision)
	if !ok || d.Record == nil {
		return nil, fmt.Errorf("%w: unexpected governance result %T", ErrInternal, res)
	}
	if err := s.caughtUp(ctx, d); err != nil {
		return nil, err
	}
	if d.Err != nil {
		return nil, fmt.Errorf("%w (ledger %d)", d.Err, d.Record.Seq)
	}
	s.lg.Info("governance statement applied", "result", d.Result, "signers", d.Record.Signers, "seq", d.Record.Seq)
	return &custosv1.SubmitResponse{Result: d.Result, Signers: d.Record.Signers, LedgerSeq: d.Record.Seq, GrantId: d.GrantID}, nil
}

// GetGovernance returns the cluster id, officers and quorum.
func (s *Service) GetGovernance(ctx context.Context, p Principal, _ *custosv1.GetGovernanceRequest) (*custosv1.Governance, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	return s.state.Governance(), nil
}

// ListPending lists approval requests still waiting.
func (s *Service) ListPending(ctx context.Context, p Principal, req *custosv1.ListPendingRequest) (*custosv1.ListPendingResponse, error) {
	if k := req.GetKey(); k != "" {
		if err := validateName("key", k); err != nil {
			return nil, err
		}
	}
	return &custosv1.ListPendingResponse{Requests: s.state.PendingRequests(req.GetKey(), s.now())}, nil
}

// GetRequest returns one approval request.
func (s *Service) GetRequest(ctx context.Context, p Principal, req *custosv1.GetRequestRequest) (*custosv1.ApprovalRequest, error) {
	if req.GetRequestId() == "" || len(req.GetRequestId()) > 64 {
		return nil, fmt.Errorf("%w: request_id is empty or too long", ErrInvalidArgument)
	}
	return s.state.Request(req.GetRequestId(), s.now())
}

// ListGrants lists grants in force.
func (s *Service) ListGrants(ctx context.Context, p Principal, req *custosv1.ListGrantsRequest) (*custosv1.ListGrantsResponse, error) {
	if k := req.GetKey(); k != "" {
		if err := validateName("key", k); err != nil {
			return nil, err
		}
	}
	return &custosv1.ListGrantsResponse{Grants: s.state.Grants(req.GetKey(), s.now())}, nil
}

// GetPolicy returns a key's policy.
func (s *Service) GetPolicy(ctx context.Context, p Principal, req *custosv1.GetPolicyRequest) (*custosv1.KeyPolicy, error) {
	if err := validateName("key", req.GetKey()); err != nil {
		return nil, err
	}
	k, err := s.state.Key(req.GetKey())
	if err != nil {
		return nil, err
	}
	return k.Policy, nil
}
