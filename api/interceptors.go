package api

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/custos-kms/custos/internal/pki"
	"github.com/custos-kms/custos/kms"
)

// Methods under these prefixes may be called without a client certificate:
// the standard health service (load balancers, orchestrators) and server
// reflection (service discovery; it reveals the public API only).
var publicPrefixes = []string{
	"/grpc.health.v1.Health/",
	"/grpc.reflection.v1.ServerReflection/",
	"/grpc.reflection.v1alpha.ServerReflection/",
}

func isPublic(fullMethod string) bool {
	for _, p := range publicPrefixes {
		if strings.HasPrefix(fullMethod, p) {
			return true
		}
	}
	return false
}

type principalKey struct{}

// PrincipalFrom returns the authenticated caller that the authentication
// interceptor put in ctx; ok is false for an unauthenticated call (only the
// health and reflection services serve those).
func PrincipalFrom(ctx context.Context) (kms.Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(kms.Principal)
	return p, ok
}

// peerPrincipal returns the principal of the verified client certificate of
// the connection ctx belongs to, or an error saying why there is none.
func peerPrincipal(ctx context.Context) (kms.Principal, error) {
	p, _, err := peerCertificate(ctx)
	return p, err
}

// peerCertificate is peerPrincipal with the verified chains.
func peerCertificate(ctx context.Context) (kms.Principal, [][]*x509.Certificate, error) {
	pr, ok := peer.FromContext(ctx)
	if !ok || pr.AuthInfo == nil {
		return kms.Principal{}, nil, fmt.Errorf("no transport security information")
	}
	ti, ok := pr.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return kms.Principal{}, nil, fmt.Errorf("connection is not TLS")
	}
	if len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return kms.Principal{}, nil, fmt.Errorf("no verified client certificate")
	}
	name := pki.PrincipalFromCert(ti.State.VerifiedChains[0][0])
	if name == "" {
		return kms.Principal{}, nil, fmt.Errorf("client certificate has no subject common name")
	}
	return kms.Principal{Name: name}, ti.State.VerifiedChains, nil
}

// unpinnedMethods accept a certificate that the node's CA bundle verified
// whatever the officers' client authorities say (docs/identities.md):
// officer statements and witness cosignatures are authorised by their
// signatures, not by the caller, so that officers who removed every
// authority can still add one back, and can read the governance they
// act on; and node-to-node replication, whose callers are identified by
// node certificates the operator issues and by Raft membership, not by
// client authorities. The records these make still name the caller's
// issuer.
var unpinnedMethods = map[string]bool{
	"/custos.v1.GovernanceService/Submit":            true,
	"/custos.v1.GovernanceService/SubmitCosignature": true,
	"/custos.v1.GovernanceService/GetGovernance":     true,
	"/custos.v1.GovernanceService/Propose":           true,
	"/custos.v1.GovernanceService/ListProposals":     true,
}

// unpinned reports whether fullMethod accepts any verified certificate.
func unpinned(fullMethod string) bool {
	return unpinnedMethods[fullMethod] || strings.HasPrefix(fullMethod, "/raftlog.v1.Replication/")
}

// TrustFunc returns the officers' client authorities now (nil before the
// cluster is initialised: the node's CA bundle alone decides).
type TrustFunc func() *kms.ClientTrust

// authenticate returns ctx carrying the caller's principal, or an
// Unauthenticated status. Public methods pass with a principal when the
// caller has a certificate and without one otherwise. The principal's
// certificate must chain to a client authority the officers trust once
// they are pinned (docs/identities.md); the principal carries the digests
// of both, and its certificate, for the records.
func authenticate(ctx context.Context, fullMethod string, trust TrustFunc) (context.Context, error) {
	p, chains, err := peerCertificate(ctx)
	if err == nil {
		var t *kms.ClientTrust
		if trust != nil && !unpinned(fullMethod) {
			t = trust()
		}
		p.IssuerSHA256, p.CertSHA256, err = t.Identify(chains)
		p.Certificate = chains[0][0].Raw
	}
	if err != nil {
		if isPublic(fullMethod) {
			return ctx, nil
		}
		if errors.Is(err, kms.ErrUntrustedIssuer) {
			return nil, status.Errorf(codes.Unauthenticated, "%v: the security officers have not approved the CA that issued this certificate", err)
		}
		return nil, status.Errorf(codes.Unauthenticated, "a client certificate issued by the cluster CA is required: %v", err)
	}
	return context.WithValue(ctx, principalKey{}, p), nil
}

func unaryAuthn(trust TrustFunc) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := authenticate(ctx, info.FullMethod, trust)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

func streamAuthn(trust TrustFunc) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := authenticate(ss.Context(), info.FullMethod, trust)
		if err != nil {
			return err
		}
		return handler(srv, &ctxStream{ServerStream: ss, ctx: ctx})
	}
}

// ctxStream is a ServerStream with a replaced context.
type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }

// panicStatus logs a recovered panic with its stack and returns the status
// the caller sees, which says nothing of it.
func panicStatus(log *slog.Logger, method string, r any) error {
	log.Error("panic in RPC handler", "method", method, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	return status.Error(codes.Internal, "internal error")
}

func unaryRecover(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				resp, err = nil, panicStatus(log, info.FullMethod, r)
			}
		}()
		return handler(ctx, req)
	}
}

func streamRecover(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = panicStatus(log, info.FullMethod, r)
			}
		}()
		return handler(srv, ss)
	}
}

// decisionRef is what a response that a ledger decision authorised
// (DecryptResponse, ReEncryptResponse) tells about that decision.
type decisionRef interface {
	GetDecisionSeq() uint64
	GetRequestId() string
}

// decisionAttrs returns the ledger position and request id of the decision
// behind a call, from the response (ALLOW) or from the APPROVAL_REQUIRED
// error detail (PENDING), so that the log line matches the ledger record.
func decisionAttrs(resp any, err error) []slog.Attr {
	if d, ok := resp.(decisionRef); ok && err == nil && d.GetDecisionSeq() != 0 {
		return []slog.Attr{slog.Uint64("decision_seq", d.GetDecisionSeq()), slog.String("request_id", d.GetRequestId())}
	}
	if err == nil {
		return nil
	}
	for _, det := range status.Convert(err).Details() {
		if ei, ok := det.(*errdetails.ErrorInfo); ok && ei.GetReason() == ReasonApprovalRequired {
			return []slog.Attr{slog.String("decision_seq", ei.GetMetadata()["decision_seq"]), slog.String("request_id", ei.GetMetadata()["request_id"])}
		}
	}
	return nil
}

// dataPath are the high-volume KeyService calls. Their successes log at
// debug level: the ledger already records every decision, and an info line
// per call cost 15-30% of GenerateDataKey throughput (docs/performance.md).
// Their failures, and every other call, log at info.
var dataPath = map[string]bool{
	"/custos.v1.KeyService/GenerateDataKey": true,
	"/custos.v1.KeyService/Encrypt":         true,
	"/custos.v1.KeyService/Decrypt":         true,
	"/custos.v1.KeyService/ReEncrypt":       true,
	"/custos.v1.KeyService/BatchDecrypt":    true,
	// A follower forwards each decision it serves, and asks for a read
	// index before each data key it issues: one node-to-node call per
	// client call, which the ledger records already.
	"/raftlog.v1.Replication/Apply":     true,
	"/raftlog.v1.Replication/ReadIndex": true,
}

// logRPC writes one line per call: method, principal, code and duration,
// and for decisions the ledger position and request id (decisionAttrs).
// Never request or response payloads. Health checks and successful
// data-path calls log at debug level.
func logRPC(ctx context.Context, log *slog.Logger, method string, start time.Time, resp any, err error) {
	level := slog.LevelInfo
	if strings.HasPrefix(method, "/grpc.health.v1.Health/") || (err == nil && dataPath[method]) {
		level = slog.LevelDebug
	}
	if !log.Enabled(ctx, level) {
		return
	}
	principal := ""
	if p, err := peerPrincipal(ctx); err == nil {
		principal = p.Name
	}
	code := status.Code(err)
	attrs := []slog.Attr{
		slog.String("method", method),
		slog.String("principal", principal),
		slog.String("code", code.String()),
		slog.Duration("duration", time.Since(start)),
	}
	if pr, ok := peer.FromContext(ctx); ok && pr.Addr != nil {
		attrs = append(attrs, slog.String("peer", pr.Addr.String()))
	}
	attrs = append(attrs, decisionAttrs(resp, err)...)
	log.LogAttrs(ctx, level, "rpc", attrs...)
}

func unaryLogging(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		logRPC(ctx, log, info.FullMethod, start, resp, err)
		return resp, err
	}
}

func streamLogging(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		err := handler(srv, ss)
		logRPC(ss.Context(), log, info.FullMethod, start, nil, err)
		return err
	}
}
