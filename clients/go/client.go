package custos

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Client talks to a custos cluster over gRPC with mutual TLS 1.3. It is safe
// for concurrent use. Create it with Dial and Close it when done.
//
// A Client keeps at most one connection per address and sends every call
// over the connection in use. When that address cannot be reached, a call
// moves on to the next address before anything is sent; a call that is safe
// to repeat (see retryable) is also repeated on the next address when the
// node answers codes.Unavailable. Addresses are tried in order, starting
// with the one that last worked.
type Client struct {
	addrs          []string
	creds          credentials.TransportCredentials
	connectTimeout time.Duration
	callTimeout    time.Duration

	current atomic.Int32 // index of the address that last worked

	mu     sync.Mutex
	conns  []*grpc.ClientConn // lazily created, one per address
	closed bool

	keys  custosv1.KeyServiceClient
	gov   custosv1.GovernanceServiceClient
	audit custosv1.AuditServiceClient

	// signer is the private key of the client certificate when it is an
	// ECDSA P-256 key: decrypt-type requests are signed with it
	// (docs/signed-requests.md). nil: requests go unsigned.
	signer crypto.Signer
}

// Dial checks cfg, loads its TLS material and returns a Client. It does not
// wait for a connection: the first call connects, so Dial succeeds while the
// cluster is down. ctx is only checked for cancellation.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("custos: dial: %w", err)
	}
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("custos: dial: no address (set Config.Addrs or CUSTOS_ADDR)")
	}
	for _, a := range cfg.Addrs {
		if strings.TrimSpace(a) == "" || strings.Contains(a, ",") {
			return nil, fmt.Errorf("custos: dial: bad address %q: want host:port", a)
		}
	}
	t, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	c := &Client{
		addrs:          append([]string(nil), cfg.Addrs...),
		creds:          credentials.NewTLS(t),
		connectTimeout: cfg.ConnectTimeout,
		callTimeout:    cfg.CallTimeout,
		conns:          make([]*grpc.ClientConn, len(cfg.Addrs)),
		signer:         requestSigner(t),
	}
	if c.connectTimeout <= 0 {
		c.connectTimeout = DefaultConnectTimeout
	}
	if c.callTimeout == 0 {
		c.callTimeout = DefaultCallTimeout
	}
	// Create the first connection now so that a bad address fails here.
	if _, err := c.conn(0); err != nil {
		return nil, err
	}
	c.keys = custosv1.NewKeyServiceClient(failoverConn{c})
	c.gov = custosv1.NewGovernanceServiceClient(failoverConn{c})
	c.audit = custosv1.NewAuditServiceClient(failoverConn{c})
	if want := strings.ToLower(strings.TrimSpace(cfg.Genesis)); want != "" {
		if err := c.checkGenesis(ctx, want); err != nil {
			_ = c.Close()
			return nil, err
		}
	}
	return c, nil
}

// ErrGenesisMismatch is returned by Dial when the cluster's genesis
// fingerprint is not Config.Genesis.
var ErrGenesisMismatch = errors.New("custos: the cluster's genesis is not the pinned one")

// checkGenesis compares the cluster's genesis fingerprint with want.
func (c *Client) checkGenesis(ctx context.Context, want string) error {
	g, err := c.GetGovernance(ctx)
	if err != nil {
		return fmt.Errorf("custos: dial: read the cluster's genesis: %w", err)
	}
	if got := g.GetGenesisSha256(); got != want {
		if got == "" {
			got = "none (initialised before genesis records)"
		}
		return fmt.Errorf("%w: cluster %s has genesis %s, pinned %s", ErrGenesisMismatch, g.GetClusterId(), got, want)
	}
	return nil
}

// Close closes every connection. Calls in flight fail.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	for _, cc := range c.conns {
		if cc != nil {
			errs = append(errs, cc.Close())
		}
	}
	return errors.Join(errs...)
}

// Keys returns the raw KeyService client, with the same failover as the
// convenience methods. Its errors are plain gRPC status errors.
func (c *Client) Keys() custosv1.KeyServiceClient { return c.keys }

// Conn returns a grpc.ClientConnInterface with failover across the
// configured addresses, for other custos services (for example
// custosv1.NewLedgerServiceClient(c.Conn())).
func (c *Client) Conn() grpc.ClientConnInterface { return failoverConn{c} }

// conn returns the connection to address i, creating it if needed.
func (c *Client) conn(i int) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, status.Error(codes.Canceled, "custos: client is closed")
	}
	if cc := c.conns[i]; cc != nil {
		return cc, nil
	}
	cc, err := grpc.NewClient(c.addrs[i],
		grpc.WithTransportCredentials(c.creds),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  100 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   3 * time.Second,
			},
			MinConnectTimeout: c.connectTimeout,
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("custos: dial %s: %w", c.addrs[i], err)
	}
	c.conns[i] = cc
	return cc, nil
}

// retryable lists the methods that may be repeated on another node after
// codes.Unavailable: reads, state-setting calls whose repetition has the
// same effect, and cryptographic calls that change no key state. Decrypt
// and ReEncrypt record a decision; a repeat after an unknown outcome records
// one more attempt, which the ledger shows honestly, and never releases a
// key that policy would not release. CreateKey, RotateKey and Submit are
// not repeated.
var retryable = map[string]bool{
	custosv1.KeyService_GetKey_FullMethodName:                  true,
	custosv1.KeyService_ListKeys_FullMethodName:                true,
	custosv1.KeyService_SetKeyState_FullMethodName:             true,
	custosv1.KeyService_SetMinDecryptionVersion_FullMethodName: true,
	custosv1.KeyService_GenerateDataKey_FullMethodName:         true,
	custosv1.KeyService_Encrypt_FullMethodName:                 true,
	custosv1.KeyService_Decrypt_FullMethodName:                 true,
	custosv1.KeyService_ReEncrypt_FullMethodName:               true,
	// Governance reads. Submit is not repeated: a statement is applied at
	// most once, so a repeat after an unknown outcome would only be refused
	// as a replay.
	custosv1.GovernanceService_GetGovernance_FullMethodName: true,
	custosv1.GovernanceService_ListPending_FullMethodName:   true,
	custosv1.GovernanceService_GetRequest_FullMethodName:    true,
	custosv1.GovernanceService_ListGrants_FullMethodName:    true,
	custosv1.GovernanceService_GetPolicy_FullMethodName:     true,
	// Audit reads (the streams reconnect in Watch).
	custosv1.AuditService_ListDecisions_FullMethodName: true,
	custosv1.AuditService_GetCheckpoint_FullMethodName: true,
}

// failoverConn implements grpc.ClientConnInterface over the Client's
// addresses.
type failoverConn struct{ c *Client }

// waitReady reports whether cc is, or becomes within the connect timeout,
// ready. A connection in TRANSIENT_FAILURE is not waited for: it is
// reconnecting in the background and the next address is tried instead.
func (c *Client) waitReady(ctx context.Context, cc *grpc.ClientConn) bool {
	s := cc.GetState()
	switch s {
	case connectivity.Ready:
		return true
	case connectivity.TransientFailure, connectivity.Shutdown:
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, c.connectTimeout)
	defer cancel()
	for {
		switch s {
		case connectivity.Ready:
			return true
		case connectivity.TransientFailure, connectivity.Shutdown:
			return false
		case connectivity.Idle:
			cc.Connect()
		}
		if !cc.WaitForStateChange(ctx, s) {
			return false
		}
		s = cc.GetState()
	}
}

// order returns the address indexes to try: from the current one, wrapping.
func (c *Client) order() []int {
	n := len(c.addrs)
	start := int(c.current.Load())
	idx := make([]int, n)
	for i := range idx {
		idx[i] = (start + i) % n
	}
	return idx
}

func (c *Client) attemptCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok || c.callTimeout < 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.callTimeout)
}

func (f failoverConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	c := f.c
	var (
		lastErr  error
		attempts int
	)
	invoke := func(i int, cc *grpc.ClientConn) error {
		if attempts > 0 {
			// A signed request is decided once: a repeat carries a
			// fresh signature, or the node that did decide the first
			// would make this one a replay.
			if err := c.resign(args); err != nil {
				return err
			}
		}
		actx, cancel := c.attemptCtx(ctx)
		defer cancel()
		attempts++
		err := cc.Invoke(actx, method, args, reply, opts...)
		if status.Code(err) != codes.Unavailable {
			c.current.Store(int32(i)) // this node answered
		}
		return err
	}
	order := c.order()
	for _, i := range order {
		if err := ctx.Err(); err != nil {
			return status.FromContextError(err).Err()
		}
		cc, err := c.conn(i)
		if err != nil {
			return err
		}
		if len(c.addrs) > 1 && !c.waitReady(ctx, cc) {
			continue // nothing sent: safe for every method
		}
		lastErr = invoke(i, cc)
		if lastErr == nil || status.Code(lastErr) != codes.Unavailable || !retryable[method] {
			return lastErr
		}
	}
	if attempts == 0 {
		// No address became ready: call the preferred one anyway so that
		// the caller sees the real connection error.
		cc, err := c.conn(order[0])
		if err != nil {
			return err
		}
		lastErr = invoke(order[0], cc)
	}
	if lastErr != nil && len(c.addrs) > 1 && status.Code(lastErr) == codes.Unavailable {
		st := status.Convert(lastErr)
		return status.Errorf(codes.Unavailable, "no custos node answered (tried %s): %s", strings.Join(c.addrs, ", "), st.Message())
	}
	return lastErr
}

func (f failoverConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	c := f.c
	order := c.order()
	pick := order[0]
	if len(c.addrs) > 1 {
		for _, i := range order {
			cc, err := c.conn(i)
			if err != nil {
				return nil, err
			}
			if c.waitReady(ctx, cc) {
				pick = i
				break
			}
		}
	}
	cc, err := c.conn(pick)
	if err != nil {
		return nil, err
	}
	s, err := cc.NewStream(ctx, desc, method, opts...)
	if err == nil {
		c.current.Store(int32(pick))
	}
	return s, err
}

var _ grpc.ClientConnInterface = failoverConn{}
