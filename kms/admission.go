package kms

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/custos-kms/custos/hsm"
)

// NotAdmittedMessage says why a node refuses key crypto: it joined a
// cluster, but the replicated state does not record it as a custodian of
// the domain key, or its HSM does not hold the key yet (docs/cluster.md).
const NotAdmittedMessage = "this node is not an admitted custodian of the cluster's domain key: the officers have not admitted it, or its HSM does not hold the key yet (custos cluster admission NODE)"

// ErrNotAdmitted is returned, matching ErrFailedPrecondition, by every
// path that would use a key in this node's HSM (CreateKey, RotateKey, every
// seal and every release after an ALLOW: gRPC and XKS alike) while the node
// is not admitted. A decrypt still records its decision first.
var ErrNotAdmitted = fmt.Errorf("%w: %s", ErrFailedPrecondition, NotAdmittedMessage)

// ErrAdmissionRevoked is returned, matching ErrFailedPrecondition, by every
// path that would use a key in this node's HSM once officers revoked the
// node's admission or it left the Raft configuration.
var ErrAdmissionRevoked = fmt.Errorf("%w (its admission as a custodian of the domain key was revoked)", ErrNotAdmitted)

// admissionRecheck is how often a node that is not admitted looks for the
// domain key in its HSM again.
const admissionRecheck = 2 * time.Second

// admission caches whether this node's HSM holds the cluster's domain key:
// once it does, it always will (the key is not destroyed).
type admission struct {
	ok      atomic.Bool
	mu      sync.Mutex
	checked time.Time
}

// admitted returns nil when this node may do key crypto, ErrNotAdmitted
// when its HSM does not (yet) hold the domain key. Without
// Config.RequireAdmission it is always nil.
func (s *Service) admitted(ctx context.Context) error {
	// The replicated state first: what its HSM holds does not make a node
	// a custodian the officers did not admit, or undo a revocation.
	if err := s.state.mayServe(s.node); err != nil {
		return err
	}
	a := s.admission
	if a == nil || a.ok.Load() {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if time.Since(a.checked) >= admissionRecheck {
		a.checked = time.Now()
		if dk := s.state.DomainKey(); len(dk.ID) > 0 {
			// Not the caller's context: a cancelled caller must not make
			// every other one wait for the next recheck.
			hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			err := s.hsm.VerifyKey(hctx, dk, hsm.UsageWrap)
			cancel()
			if err == nil {
				a.ok.Store(true)
				s.lg.Info("this node's HSM holds the cluster's domain key: admitted")
				return nil
			}
			if errors.Is(err, hsm.ErrObjectMismatch) {
				return s.rejectObject(ctx, "", 0, dk.ID, err)
			}
		}
	}
	return ErrNotAdmitted
}

// Admitted reports whether this node may do key crypto: always, unless
// Config.RequireAdmission is set and its HSM does not hold the cluster's
// domain key.
func (s *Service) Admitted(ctx context.Context) bool { return s.admitted(ctx) == nil }
