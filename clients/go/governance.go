package custos

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Governance: the customer's security officers control key use with signed
// statements (docs/governance.md, docs/governance-statements.md). These
// helpers sign and submit statements online; the offline file flow and key
// files live in the officer CLI (custos officer ...).

// DefaultStatementLifetime is the lifetime NewStatement uses when given 0.
const DefaultStatementLifetime = time.Hour

// MaxStatementLifetime is the longest lifetime the cluster accepts.
const MaxStatementLifetime = 7 * 24 * time.Hour

// DefaultPollInterval is how often WaitForApproval asks for a request's
// state unless WithPollInterval says otherwise.
const DefaultPollInterval = time.Second

// statementContext is prefixed to the statement bytes before hashing
// (docs/governance-statements.md, "Signature").
const statementContext = "custos-statement-v1\x00"

// ApprovalRequiredReason is the errdetails.ErrorInfo reason the cluster
// attaches to a decrypt that waits for the officers' approval.
const ApprovalRequiredReason = "APPROVAL_REQUIRED"

// ErrRequestDenied and ErrRequestExpired are returned by WaitForApproval
// when the officers denied the request or it expired undecided.
var (
	ErrRequestDenied  = errors.New("custos: approval request denied by a security officer")
	ErrRequestExpired = errors.New("custos: approval request expired without a decision")
)

// Officer is a security officer who signs statements online: the name the
// cluster knows the officer by and a signer holding the officer's ECDSA
// P-256 key (a key file's *ecdsa.PrivateKey, or a PKCS#11 token's signer).
type Officer struct {
	Name   string
	Signer crypto.Signer
}

// Governance returns the raw GovernanceService client, with the same
// failover as the convenience methods.
func (c *Client) Governance() custosv1.GovernanceServiceClient { return c.gov }

// GetGovernance returns the cluster id, its officers and the quorum.
func (c *Client) GetGovernance(ctx context.Context) (*custosv1.Governance, error) {
	g, err := c.gov.GetGovernance(ctx, &custosv1.GetGovernanceRequest{})
	if err != nil {
		return nil, fmt.Errorf("custos: get governance: %w", err)
	}
	return g, nil
}

// ListPending returns the decrypt requests waiting for the officers'
// approval, for one key or (key == "") all keys.
func (c *Client) ListPending(ctx context.Context, key string) ([]*custosv1.ApprovalRequest, error) {
	resp, err := c.gov.ListPending(ctx, &custosv1.ListPendingRequest{Key: key})
	if err != nil {
		return nil, fmt.Errorf("custos: list pending requests: %w", err)
	}
	return resp.GetRequests(), nil
}

// GetRequest returns one approval request.
func (c *Client) GetRequest(ctx context.Context, requestID string) (*custosv1.ApprovalRequest, error) {
	r, err := c.gov.GetRequest(ctx, &custosv1.GetRequestRequest{RequestId: requestID})
	if err != nil {
		return nil, fmt.Errorf("custos: get request %q: %w", requestID, err)
	}
	return r, nil
}

// ListGrants returns the grants in force, for one key or (key == "") all
// keys.
func (c *Client) ListGrants(ctx context.Context, key string) ([]*custosv1.Grant, error) {
	resp, err := c.gov.ListGrants(ctx, &custosv1.ListGrantsRequest{Key: key})
	if err != nil {
		return nil, fmt.Errorf("custos: list grants: %w", err)
	}
	return resp.GetGrants(), nil
}

// GetPolicy returns a key's policy.
func (c *Client) GetPolicy(ctx context.Context, key string) (*custosv1.KeyPolicy, error) {
	p, err := c.gov.GetPolicy(ctx, &custosv1.GetPolicyRequest{Key: key})
	if err != nil {
		return nil, fmt.Errorf("custos: get policy of key %q: %w", key, err)
	}
	return p, nil
}

// Submit sends a signed statement. Anyone may submit: the signatures, not
// the caller, authorise it. Too few or invalid signatures give
// codes.PermissionDenied. Submit is not repeated on another node after
// codes.Unavailable: the cluster refuses a statement applied twice.
func (c *Client) Submit(ctx context.Context, ss *custosv1.SignedStatement) (*custosv1.SubmitResponse, error) {
	resp, err := c.gov.Submit(ctx, ss)
	if err != nil {
		return nil, fmt.Errorf("custos: submit statement: %w", err)
	}
	return resp, nil
}

// NewStatement returns a statement for this cluster (its id read with
// GetGovernance) with a fresh random nonce, an expiry lifetime from now
// (DefaultStatementLifetime if 0, at most MaxStatementLifetime) and the
// comment. Set the operation, then call SignAndSubmit.
func (c *Client) NewStatement(ctx context.Context, comment string, lifetime time.Duration) (*custosv1.Statement, error) {
	if lifetime == 0 {
		lifetime = DefaultStatementLifetime
	}
	if lifetime < 0 || lifetime > MaxStatementLifetime {
		return nil, fmt.Errorf("custos: statement lifetime %s is not in (0, %s]", lifetime, MaxStatementLifetime)
	}
	g, err := c.GetGovernance(ctx)
	if err != nil {
		return nil, err
	}
	if g.GetClusterId() == "" {
		return nil, errors.New("custos: the cluster reported no cluster id")
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("custos: reading a nonce: %w", err)
	}
	return &custosv1.Statement{
		ClusterId:    g.GetClusterId(),
		Nonce:        nonce,
		NotAfterUnix: time.Now().Add(lifetime).Unix(),
		Comment:      comment,
		// A restored cluster takes only statements naming its restore.
		RestoreId: g.GetRestoreId(),
	}, nil
}

// MarshalStatement returns the statement's bytes, the deterministic protobuf
// encoding that officers sign and that is submitted verbatim.
func MarshalStatement(st *custosv1.Statement) ([]byte, error) {
	if st == nil {
		return nil, errors.New("custos: no statement")
	}
	if st.GetOperation() == nil {
		return nil, errors.New("custos: statement has no operation")
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("custos: encoding statement: %w", err)
	}
	return b, nil
}

// SignStatementBytes returns officer's signature over statement bytes:
// ECDSA P-256 over SHA-256("custos-statement-v1" 0x00 || statement), ASN.1
// DER, checked against the signer's public key before it is returned.
func SignStatementBytes(statement []byte, officer Officer) (*custosv1.OfficerSignature, error) {
	if officer.Name == "" {
		return nil, errors.New("custos: officer has no name")
	}
	if officer.Signer == nil {
		return nil, fmt.Errorf("custos: officer %q has no signer", officer.Name)
	}
	pub, ok := officer.Signer.Public().(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("custos: officer %q: signer is not an ECDSA P-256 key", officer.Name)
	}
	h := sha256.New()
	h.Write([]byte(statementContext))
	h.Write(statement)
	d := h.Sum(nil)
	sig, err := officer.Signer.Sign(rand.Reader, d, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("custos: officer %q: signing: %w", officer.Name, err)
	}
	if !ecdsa.VerifyASN1(pub, d, sig) {
		return nil, fmt.Errorf("custos: officer %q: the signer returned a signature that does not verify", officer.Name)
	}
	return &custosv1.OfficerSignature{Officer: officer.Name, Signature: sig}, nil
}

// SignStatement marshals st and signs it by each officer, in order.
func SignStatement(st *custosv1.Statement, signers ...Officer) (*custosv1.SignedStatement, error) {
	if len(signers) == 0 {
		return nil, errors.New("custos: a statement needs at least one officer signature")
	}
	b, err := MarshalStatement(st)
	if err != nil {
		return nil, err
	}
	ss := &custosv1.SignedStatement{Statement: b}
	for _, o := range signers {
		sig, err := SignStatementBytes(b, o)
		if err != nil {
			return nil, err
		}
		ss.Signatures = append(ss.Signatures, sig)
	}
	return ss, nil
}

// SignAndSubmit signs st by each officer and submits it. Loosening
// operations (enable_key, set_policy, approve_request, create_grant,
// set_officers) need the cluster's quorum of signers; with fewer, the
// cluster refuses with codes.PermissionDenied and nothing changes.
func (c *Client) SignAndSubmit(ctx context.Context, st *custosv1.Statement, signers ...Officer) (*custosv1.SubmitResponse, error) {
	ss, err := SignStatement(st, signers...)
	if err != nil {
		return nil, err
	}
	return c.Submit(ctx, ss)
}

// requestInMessage finds the request id in a pending decrypt's message,
// "approval required: request <id> is waiting ...".
var requestInMessage = regexp.MustCompile(`\brequest ([A-Za-z0-9][A-Za-z0-9._:-]*)`)

// PendingRequestID reports whether err is a decrypt refused because it
// waits for the officers' approval, and if so the approval request's id. It
// reads the status's errdetails.ErrorInfo (reason APPROVAL_REQUIRED,
// metadata request_id) and falls back to "request <id>" in the message of a
// FailedPrecondition status that says approval is required. err may be
// wrapped.
func PendingRequestID(err error) (string, bool) {
	if err == nil {
		return "", false
	}
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) || se.GRPCStatus() == nil {
		return "", false
	}
	st := se.GRPCStatus()
	if st.Code() != codes.FailedPrecondition {
		return "", false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == ApprovalRequiredReason {
			if id := info.GetMetadata()["request_id"]; id != "" {
				return id, true
			}
		}
	}
	msg := st.Message()
	if !strings.Contains(strings.ToLower(msg), "approval") {
		return "", false
	}
	if m := requestInMessage.FindStringSubmatch(msg); m != nil {
		return m[1], true
	}
	return "", false
}

// WithPollInterval sets how often WaitForApproval polls (default
// DefaultPollInterval).
func WithPollInterval(d time.Duration) Option { return func(o *options) { o.pollInterval = d } }

// WaitForApproval polls GetRequest until the request is decided or ctx is
// done. It returns the request when APPROVED (retry the decrypt then: the
// grant allows it), ErrRequestDenied or ErrRequestExpired (wrapped, with the
// request) otherwise. Bound the wait with ctx.
func (c *Client) WaitForApproval(ctx context.Context, requestID string, opts ...Option) (*custosv1.ApprovalRequest, error) {
	o := collect(opts)
	interval := o.pollInterval
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("custos: waiting for approval of request %s: %w", requestID, ctx.Err())
		case <-t.C:
		}
		r, err := c.GetRequest(ctx, requestID)
		if err != nil {
			if cerr := callerDeadline(ctx, err); cerr != nil {
				return nil, fmt.Errorf("custos: waiting for approval of request %s: %w", requestID, cerr)
			}
			// A node without a leader, or a failover in progress, is
			// retried; anything else ends the wait.
			if status.Code(err) != codes.Unavailable {
				return nil, err
			}
		} else {
			switch r.GetState() {
			case custosv1.RequestState_REQUEST_STATE_APPROVED:
				return r, nil
			case custosv1.RequestState_REQUEST_STATE_DENIED:
				return r, fmt.Errorf("%w: request %s", ErrRequestDenied, requestID)
			case custosv1.RequestState_REQUEST_STATE_EXPIRED:
				return r, fmt.Errorf("%w: request %s", ErrRequestExpired, requestID)
			}
		}
		t.Reset(interval)
	}
}

// callerDeadline returns the caller's context error if err ended a call
// because of it: ctx.Err(), or context.DeadlineExceeded for a
// DeadlineExceeded status once ctx's deadline is past. gRPC refuses a call
// whose deadline has passed before the context's own timer has fired, so
// under load ctx.Err() can still be nil then.
func callerDeadline(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) && status.Code(err) == codes.DeadlineExceeded {
		return context.DeadlineExceeded
	}
	return nil
}
