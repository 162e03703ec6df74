package api

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// Metrics observes the latency of every gRPC call, by full method name and
// status code, as the histogram custos_grpc_server_handling_seconds. Set
// Options.Metrics to a Metrics from NewMetrics to turn it on. Label values
// are bounded: methods are the server's registered methods (unknown
// methods are never dispatched to interceptors) and codes the 17 gRPC
// codes.
type Metrics struct {
	latency *prometheus.HistogramVec
}

// Buckets of custos_grpc_server_handling_seconds: from 1 ms (a read) to
// 10 s (a decrypt waiting for notify-before-release or a slow HSM).
var grpcBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// NewMetrics creates the gRPC metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "custos_grpc_server_handling_seconds",
		Help:    "Duration of gRPC calls served, by full method and status code (streams: until the stream ends).",
		Buckets: grpcBuckets,
	}, []string{"method", "code"})}
	if err := reg.Register(m.latency); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Metrics) observe(method string, start time.Time, err error) {
	m.latency.WithLabelValues(method, status.Code(err).String()).Observe(time.Since(start).Seconds())
}

// UnaryInterceptor times unary calls.
func (m *Metrics) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		m.observe(info.FullMethod, start, err)
		return resp, err
	}
}

// StreamInterceptor times streaming calls, from start to end.
func (m *Metrics) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		err := handler(srv, ss)
		m.observe(info.FullMethod, start, err)
		return err
	}
}
