package kms

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	"github.com/custos-kms/custos/hsm"
)

// XKSProbe is the deep health check behind the XKS health API (docs/xks.md,
// "Health"): the specification asks that a healthy answer mean an encrypt or
// decrypt issued right after would succeed, and suggests test keys in the
// key manager. Each Check
//
//   - runs Health (the HSM answers, the ledger is sound) and checks that
//     this node may serve key crypto (admitted, not revoked);
//   - generates a fresh AES-256 key in the HSM and wraps it under the
//     domain key, the step every KEK depends on;
//   - encrypts a fixed block with AES-256-GCM under this process's health
//     key, with an IV from the HSM's RNG, decrypts it and compares.
//
// The health key is made on the first Check the way a KEK is loaded: its
// wrapped form from the step above is unwrapped under the domain key into a
// token object ("custos/xks-health/<32 hex digits>", label
// "custos xks health") whose key check value is verified. It encrypts only
// the probe's fixed block; Close destroys it. A key that stops verifying is
// dropped and made again at the next Check.
type XKSProbe struct {
	s   *Service
	mu  sync.Mutex
	key *hsm.KeyRef // nil until made
}

// XKSProbe returns a deep health check for the XKS front door of this node.
func (s *Service) XKSProbe() *XKSProbe { return &XKSProbe{s: s} }

// xksProbeBlock is what the probe encrypts; xksProbeAAD its additional data.
var (
	xksProbeBlock = []byte("custos xks health probe 00000000")
	xksProbeAAD   = []byte("custos/xks-health")
)

// Check runs the deep check once. It returns nil only when every step
// succeeded. Calls are serialised.
func (p *XKSProbe) Check(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.s
	if err := s.Health(ctx); err != nil {
		return err
	}
	if err := s.admitted(ctx); err != nil {
		return err
	}
	dk := s.state.DomainKey()
	if len(dk.ID) == 0 {
		return fmt.Errorf("%w: the cluster has no domain key yet", ErrUnavailable)
	}
	wrapped, kcv, err := s.hsm.GenerateWrappedKey(ctx, dk)
	if err != nil {
		return hsmError("health: wrap a fresh key under the domain key", err)
	}
	if p.key == nil {
		rnd, err := s.hsm.Random(ctx, 16)
		if err != nil {
			return hsmError("health: random", err)
		}
		ref := hsm.KeyRef{ID: []byte("custos/xks-health/" + hex.EncodeToString(rnd)), CheckValue: kcv}
		if err := s.hsm.UnwrapKey(ctx, dk, wrapped, hsm.KeySpec{ID: ref.ID, Label: "custos xks health",
			Usage: hsm.UsageEncrypt, CheckValue: kcv}); err != nil {
			return hsmError("health: unwrap the health key under the domain key", err)
		}
		p.key = &ref
	}
	iv, err := s.hsm.Random(ctx, hsm.GCMIVSize)
	if err != nil {
		return hsmError("health: random", err)
	}
	ct, err := s.hsm.EncryptGCM(ctx, *p.key, iv, xksProbeBlock, xksProbeAAD)
	if err == nil {
		var back []byte
		if back, err = s.hsm.DecryptGCM(ctx, *p.key, iv, ct, xksProbeAAD); err == nil && !bytes.Equal(back, xksProbeBlock) {
			err = fmt.Errorf("%w: the health key's round trip returned other bytes", hsm.ErrUnavailable)
		}
	}
	if err != nil {
		if errors.Is(err, hsm.ErrKeyNotFound) || errors.Is(err, hsm.ErrObjectMismatch) {
			p.drop(ctx)
		}
		return hsmError("health: AES-GCM round trip", err)
	}
	return nil
}

// drop forgets the health key, destroying its object (best effort).
func (p *XKSProbe) drop(ctx context.Context) {
	if p.key == nil {
		return
	}
	if err := p.s.hsm.DestroyKey(context.WithoutCancel(ctx), p.key.ID); err != nil {
		p.s.lg.Warn("could not destroy the XKS health key", "id", string(p.key.ID), "err", err)
	}
	p.key = nil
}

// Close destroys the health key, if one was made.
func (p *XKSProbe) Close(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.drop(ctx)
}

// KeyID returns the object id of the probe's health key, "" before
// the first successful Check (for tests and operators).
func (p *XKSProbe) KeyID() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.key == nil {
		return ""
	}
	return string(p.key.ID)
}
