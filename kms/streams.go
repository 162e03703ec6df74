package kms

import (
	"fmt"
	"sync"
)

// DefaultMaxStreamsPerPrincipal is how many audit streams (WatchDecisions,
// Export) one principal may keep open on a node at once: a client that
// opens streams and never reads them holds memory and goroutines
// (docs/security.md, *Limits*).
const DefaultMaxStreamsPerPrincipal = 8

// streamSlots counts each principal's open audit streams.
type streamSlots struct {
	mu   sync.Mutex
	max  int
	open map[string]int
}

// acquire takes a stream slot for principal, or fails with
// ErrResourceExhausted; release gives it back.
func (s *streamSlots) acquire(principal string) (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open[principal] >= s.max {
		return nil, fmt.Errorf("%w: principal %q has %d audit streams open on this node (at most %d): close one first",
			ErrResourceExhausted, principal, s.open[principal], s.max)
	}
	s.open[principal]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.open[principal]--; s.open[principal] <= 0 {
				delete(s.open, principal)
			}
		})
	}, nil
}
