package kms_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// TestAuditStreamsPerPrincipalBounded: one principal keeps at most
// DefaultMaxStreamsPerPrincipal audit streams open on a node; the next is
// ResourceExhausted, and closing one frees its slot. Streams a client opens
// and never reads cannot pile up.
func TestAuditStreamsPerPrincipalBounded(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type stream struct {
		cancel context.CancelFunc
		done   chan error
	}
	started := make(chan struct{}, kms.DefaultMaxStreamsPerPrincipal)
	open := func() stream {
		sctx, scancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		first := true
		go func() {
			done <- e.svc.WatchDecisions(sctx, auditor, &custosv1.WatchDecisionsRequest{}, func(*custosv1.DecisionRecord) error {
				if first {
					first = false
					started <- struct{}{}
				}
				return nil
			})
		}()
		return stream{scancel, done}
	}
	var streams []stream
	for range kms.DefaultMaxStreamsPerPrincipal {
		streams = append(streams, open())
		select {
		case <-started:
		case err := <-streams[len(streams)-1].done:
			t.Fatalf("stream %d ended: %v", len(streams), err)
		case <-time.After(30 * time.Second):
			t.Fatal("a stream did not start")
		}
	}
	err := e.svc.WatchDecisions(ctx, auditor, &custosv1.WatchDecisionsRequest{}, func(*custosv1.DecisionRecord) error { return nil })
	if !errors.Is(err, kms.ErrResourceExhausted) {
		t.Fatalf("one stream too many: %v, want ResourceExhausted", err)
	}
	if err := e.svc.Export(ctx, auditor, &custosv1.ExportRequest{}, func(*custosv1.ExportItem) error { return nil }); !errors.Is(err, kms.ErrResourceExhausted) {
		t.Fatalf("an export beyond the limit: %v, want ResourceExhausted", err)
	}
	streams[0].cancel()
	<-streams[0].done
	again := open()
	select {
	case <-started:
	case err := <-again.done:
		t.Fatalf("a stream after one closed: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("a stream after one closed did not start")
	}
	streams[0] = again
	for _, s := range streams {
		s.cancel()
		<-s.done
	}
}
