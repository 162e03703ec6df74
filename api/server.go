// Package api serves custos over gRPC with mutual TLS: NewServer builds the
// whole server (credentials, interceptors, health, reflection, the
// KeyService, the GovernanceService and the AuditService), and toStatus
// maps kms errors to gRPC status codes in one place.
package api

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// Defaults applied by NewServer to zero Options fields.
const (
	DefaultMaxRecvMsgSize = 1 << 20 // 1 MiB; Encrypt payloads are at most 64 KiB
	DefaultHealthInterval = 3 * time.Second
	// streamWorkers is the number of goroutines kept to run calls (gRPC's
	// NumStreamWorkers); a call that finds them all busy gets a goroutine of
	// its own, as without workers. A fresh goroutine per call grew its
	// stack on every call: runtime.newstack/copystack were ~5 % of a node's
	// CPU under Decrypt load from 64 callers, about half of that with
	// workers (the GC still shrinks idle workers' stacks). Decide calls hold
	// their worker while they wait for the log, so there are enough for
	// many concurrent callers; an idle worker costs its stack.
	streamWorkers = 128
	// healthTimeout bounds one call of Options.Health.
	healthTimeout = 2 * time.Second
)

// Options configure NewServer.
type Options struct {
	// Service performs the key operations. Required.
	Service *kms.Service
	// TLS is the server's TLS configuration (pki.ServerTLSConfig): TLS 1.3,
	// client certificates verified when given. Required.
	TLS *tls.Config
	// Logger receives one line per RPC (method, principal, code, duration)
	// and the details of internal errors. Default slog.Default().
	Logger *slog.Logger
	// Health reports whether this node can serve; the health service says
	// NOT_SERVING while it returns an error. It is called once by NewServer
	// and then every HealthInterval. Nil means always SERVING.
	Health func(ctx context.Context) error
	// HealthInterval is how often Health is polled. Default 3s.
	HealthInterval time.Duration
	// Context bounds the health poller: it stops, and the health service
	// reports NOT_SERVING, when Context is done. Pass a context that is
	// cancelled when the server stops. Default context.Background() (the
	// poller then runs for the life of the process).
	Context context.Context
	// MaxRecvMsgSize is the largest request accepted, in bytes. Default 1 MiB.
	MaxRecvMsgSize int
	// Replication, if set, serves raftlogv1.Replication (NewReplicationServer):
	// the endpoint followers forward their commands to. Cluster nodes set it.
	Replication ReplicationLeader
	// Cluster, if set, serves the ClusterService (membership, status,
	// snapshots) with these dependencies.
	Cluster *ClusterDeps
	// Metrics, if set (NewMetrics), times every call by method and code.
	Metrics *Metrics
}

// ErrNotAdmitted is the message a node that does not hold the cluster's
// domain key answers key crypto with (kms.ErrNotAdmitted, FailedPrecondition;
// checked in kms, so gRPC and XKS alike).
const ErrNotAdmitted = kms.NotAdmittedMessage

// HealthServices are the service names the health service reports on: the
// whole server ("") and each custos service.
var HealthServices = []string{"",
	custosv1.KeyService_ServiceDesc.ServiceName,
	custosv1.GovernanceService_ServiceDesc.ServiceName,
	custosv1.AuditService_ServiceDesc.ServiceName,
}

// NewServer builds the custos gRPC server: TLS credentials; chained unary
// and stream interceptors (request logging, panic recovery, authentication);
// the KeyService, the GovernanceService and the AuditService (whose
// streaming methods pass the same stream interceptors, authentication
// included); the standard health service, following opts.Health; and server
// reflection. The caller registers nothing else and calls Serve.
func NewServer(opts Options) (*grpc.Server, error) {
	if opts.Service == nil {
		return nil, errors.New("api: Options.Service is required")
	}
	if opts.TLS == nil {
		return nil, errors.New("api: Options.TLS is required")
	}
	if opts.TLS.ClientAuth < tls.VerifyClientCertIfGiven {
		return nil, errors.New("api: Options.TLS must verify client certificates (ClientAuth VerifyClientCertIfGiven or stricter)")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.HealthInterval <= 0 {
		opts.HealthInterval = DefaultHealthInterval
	}
	if opts.Context == nil {
		opts.Context = context.Background()
	}
	if opts.MaxRecvMsgSize <= 0 {
		opts.MaxRecvMsgSize = DefaultMaxRecvMsgSize
	}
	log := opts.Logger
	var trust TrustFunc
	if opts.Service != nil {
		trust = opts.Service.State().ClientTrust
	}

	unary := []grpc.UnaryServerInterceptor{
		unaryLogging(log),
		unaryRecover(log),
		unaryAuthn(trust),
	}
	stream := []grpc.StreamServerInterceptor{
		streamLogging(log),
		streamRecover(log),
		streamAuthn(trust),
	}
	if opts.Metrics != nil {
		// Outermost: the latency covers everything the server does.
		unary = append([]grpc.UnaryServerInterceptor{opts.Metrics.UnaryInterceptor()}, unary...)
		stream = append([]grpc.StreamServerInterceptor{opts.Metrics.StreamInterceptor()}, stream...)
	}
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(opts.TLS)),
		grpc.MaxRecvMsgSize(opts.MaxRecvMsgSize),
		grpc.NumStreamWorkers(streamWorkers),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
	)

	base := server{svc: opts.Service, log: log}
	custosv1.RegisterKeyServiceServer(srv, &keyServer{server: base})
	custosv1.RegisterGovernanceServiceServer(srv, &governServer{server: base})
	custosv1.RegisterAuditServiceServer(srv, &auditServer{server: base})
	if opts.Replication != nil {
		rs := NewReplicationServer(opts.Replication).(*replicationServer)
		rs.trust = trust
		raftlogv1.RegisterReplicationServer(srv, rs)
	}
	if opts.Cluster != nil {
		d := *opts.Cluster
		if d.Logger == nil {
			d.Logger = log
		}
		custosv1.RegisterClusterServiceServer(srv, NewClusterServer(d))
	}

	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	startHealth(opts, hs)

	reflection.Register(srv)
	return srv, nil
}

// startHealth sets the health status from one synchronous check, then keeps
// it following opts.Health until opts.Context ends.
func startHealth(opts Options, hs *health.Server) {
	set := func(st healthpb.HealthCheckResponse_ServingStatus) {
		for _, s := range HealthServices {
			hs.SetServingStatus(s, st)
		}
	}
	check := func() {
		if opts.Health == nil {
			set(healthpb.HealthCheckResponse_SERVING)
			return
		}
		ctx, cancel := context.WithTimeout(opts.Context, healthTimeout)
		defer cancel()
		if err := opts.Health(ctx); err != nil {
			if opts.Context.Err() == nil {
				opts.Logger.Warn("health check failed", "err", err)
			}
			set(healthpb.HealthCheckResponse_NOT_SERVING)
			return
		}
		set(healthpb.HealthCheckResponse_SERVING)
	}
	check()
	go func() {
		t := time.NewTicker(opts.HealthInterval)
		defer t.Stop()
		for {
			select {
			case <-opts.Context.Done():
				// Tell watchers we are going away.
				hs.Shutdown()
				return
			case <-t.C:
				check()
			}
		}
	}()
}
