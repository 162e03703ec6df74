package xks

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/custos-kms/custos/internal/version"
)

type healthResponse struct {
	FleetSize  int          `json:"xksProxyFleetSize"`
	Vendor     string       `json:"xksProxyVendor"`
	Model      string       `json:"xksProxyModel"`
	EKMVendor  string       `json:"ekmVendor"`
	EKMDetails []ekmDetails `json:"ekmFleetDetails"`
}

type ekmDetails struct {
	ID           string `json:"id"`
	Model        string `json:"model"`
	HealthStatus string `json:"healthStatus"`
}

// The model strings name the product and its version, as the
// specification asks (internal/version: the release a build was stamped
// with, else its VCS revision, else "dev").
func proxyModel() string { return "custos XKS proxy " + version.Version() }
func ekmModel() string   { return "custos " + version.Version() + " over PKCS#11 HSM" }

// healthCache keeps the last health check's result for healthTTL, so that
// a flood of health calls costs the HSM one deep check a second; calls
// that arrive while a check runs wait for it rather than start another.
type healthCache struct {
	mu      sync.Mutex
	at      time.Time // when the cached result's check started
	err     error
	valid   bool
	running chan struct{} // closed when the running check ends
	checks  int           // checks started, for tests
}

// Health check timing.
const (
	// healthTTL is how long a result is reused.
	healthTTL = time.Second
	// healthStale is how old a result may be and still answer a call
	// whose deadline comes while a newer check runs (the specification
	// allows cached results up to one minute old).
	healthStale = time.Minute
	// healthTimeout bounds one check.
	healthTimeout = 5 * time.Second
)

// check returns the node's health: the node's readiness check and the
// deep check (kms.XKSProbe), reused while younger than healthTTL by
// c.now. A check runs in the background, bounded by healthTimeout, so that
// a caller that gives up does not fail it for the others; a caller whose
// ctx ends first gets the previous result if it is younger than
// healthStale, else an error.
func (h *Handler) check(ctx context.Context, c *compiled) error {
	hc := &h.cache
	hc.mu.Lock()
	now := c.now()
	if hc.valid && !now.Before(hc.at) && now.Sub(hc.at) < healthTTL {
		defer hc.mu.Unlock()
		return hc.err
	}
	prevAt, prevErr, prevValid := hc.at, hc.err, hc.valid
	if hc.running == nil {
		done := make(chan struct{})
		hc.running = done
		hc.checks++
		h.work.Add(1)
		go func() {
			defer h.work.Done()
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), healthTimeout)
			defer cancel()
			err := h.probe.Check(cctx)
			if err == nil && h.health != nil {
				err = h.health(cctx)
			}
			hc.mu.Lock()
			hc.at, hc.err, hc.valid, hc.running = now, err, true, nil
			hc.mu.Unlock()
			close(done)
		}()
	}
	wait := hc.running
	hc.mu.Unlock()
	select {
	case <-wait:
		hc.mu.Lock()
		defer hc.mu.Unlock()
		return hc.err
	case <-ctx.Done():
		if prevValid && !now.Before(prevAt) && now.Sub(prevAt) < healthStale {
			return prevErr
		}
		return fmt.Errorf("the health check did not end in time: %w", ctx.Err())
	}
}

// WarmUp runs a health check (making the deep check's HSM key) so that the
// first health call AWS KMS makes is answered from it.
func (h *Handler) WarmUp(ctx context.Context) error { return h.check(ctx, h.cfg.Load()) }

// healthResponse reports this node: ACTIVE when the deep check passes and
// the node's own check too; UNAVAILABLE otherwise.
func (h *Handler) healthResponse(ctx context.Context, c *compiled) healthResponse {
	status := "ACTIVE"
	if err := h.check(ctx, c); err != nil {
		status = "UNAVAILABLE"
		c.lg.Warn("xks health: unavailable", "err", err)
	}
	return healthResponse{FleetSize: 1, Vendor: "custos", Model: proxyModel(), EKMVendor: "custos",
		EKMDetails: []ekmDetails{{ID: c.ekmID, Model: ekmModel(), HealthStatus: status}}}
}

// HealthChecks returns how many deep health checks h has run (each one at
// most every second however many health calls come).
func (h *Handler) HealthChecks() int {
	h.cache.mu.Lock()
	defer h.cache.mu.Unlock()
	return h.cache.checks
}
