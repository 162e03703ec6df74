package kms_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// TestSealReadIndex: Encrypt and GenerateDataKey read the key's state only
// after the node has applied its read index, and issue nothing when the
// read index fails or is not reached (docs/robustness.md, KI-2).
func TestSealReadIndex(t *testing.T) {
	e := newEnv(t)
	createKey(t, e, "k")
	var fail atomic.Bool
	var ahead atomic.Uint64 // added to the applied index
	var calls atomic.Int64
	svc, err := kms.NewService(kms.Config{NodeID: "node-1", HSM: e.hsm, Log: e.log, State: e.state, Logger: quiet,
		ReadIndexTimeout: 200 * time.Millisecond,
		ReadIndex: func(ctx context.Context) (uint64, error) {
			calls.Add(1)
			if fail.Load() {
				return 0, errors.New("no leader")
			}
			return e.state.AppliedIndex() + ahead.Load(), nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	gen := func() (*custosv1.GenerateDataKeyResponse, error) {
		return svc.GenerateDataKey(bg, app, &custosv1.GenerateDataKeyRequest{Key: "k"})
	}
	enc := func() (*custosv1.EncryptResponse, error) {
		return svc.Encrypt(bg, app, &custosv1.EncryptRequest{Key: "k", Plaintext: []byte("x")})
	}
	if _, err := gen(); err != nil {
		t.Fatalf("GenerateDataKey: %v", err)
	}
	if _, err := enc(); err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	if calls.Load() != 2 {
		t.Fatalf("%d read indexes for 2 seals", calls.Load())
	}

	fail.Store(true)
	if dk, err := gen(); dk != nil || !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("GenerateDataKey without a read index: %v, %v", dk, err)
	}
	if ct, err := enc(); ct != nil || !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("Encrypt without a read index: %v, %v", ct, err)
	}
	fail.Store(false)

	// A read index this node has not applied (it lags): nothing issued.
	ahead.Store(1000)
	if dk, err := gen(); dk != nil || !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("GenerateDataKey behind the read index: %v, %v", dk, err)
	}
	ahead.Store(0)

	if _, err := e.govern(revokeKey("k"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := gen(); !errors.Is(err, kms.ErrFailedPrecondition) {
		t.Fatalf("GenerateDataKey after revoke: %v", err)
	}
}

// TestCoalesceReadIndex: a caller never gets the index of a round that
// started before it called, and concurrent callers share a round.
func TestCoalesceReadIndex(t *testing.T) {
	var rounds atomic.Uint64
	entered := make(chan struct{}, 10)
	release := make(chan struct{})
	ri := kms.CoalesceReadIndex(func(ctx context.Context) (uint64, error) {
		n := rounds.Add(1)
		entered <- struct{}{}
		if n == 1 {
			<-release
		}
		return n, nil
	}, time.Second)

	first := make(chan uint64, 1)
	go func() {
		idx, err := ri(bg)
		if err != nil {
			t.Error(err)
		}
		first <- idx
	}()
	<-entered // round 1 runs
	var wg sync.WaitGroup
	got := make([]uint64, 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			idx, err := ri(bg)
			if err != nil {
				t.Error(err)
			}
			got[i] = idx
		}()
	}
	close(release)
	wg.Wait()
	if idx := <-first; idx != 1 {
		t.Fatalf("first caller got round %d", idx)
	}
	for i, idx := range got {
		if idx < 2 {
			t.Fatalf("caller %d arrived during round 1 and got its index", i)
		}
	}
	if n := rounds.Load(); n > uint64(1+len(got)) {
		t.Fatalf("%d rounds", n)
	}

	// A caller whose context ends stops waiting.
	block := make(chan struct{})
	defer close(block)
	slow := kms.CoalesceReadIndex(func(ctx context.Context) (uint64, error) {
		select {
		case <-block:
		case <-ctx.Done():
		}
		return 0, ctx.Err()
	}, time.Minute)
	ctx, cancel := context.WithTimeout(bg, 20*time.Millisecond)
	defer cancel()
	if _, err := slow(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow read index: %v", err)
	}
}
