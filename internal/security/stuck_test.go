package security

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// TestStuckClientsCannotStarveOthers puts a node under clients that hold
// on to what they opened — TCP connections that never send a TLS
// handshake, audit streams that are never read while the ledger grows,
// decrypts whose callers give up at once — and checks that a well-behaved
// application is still served correctly throughout: nothing those clients
// hold pins one of the HSM sessions (the pool has 2×CPUs of them) or the
// state, and abandoned calls release what they took.
func TestStuckClientsCannotStarveOthers(t *testing.T) {
	// Room for all 16 stuck streams of one auditor (the default is 8:
	// TestAuditStreamsPerPrincipalBounded).
	h := nodetest.StartWith(t, func(cfg *node.Config) { cfg.MaxStreamsPerPrincipal = 16 })
	app := custosv1.NewKeyServiceClient(h.Conn(t, "app"))
	if _, err := app.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: "stuck"}); err != nil {
		t.Fatal(err)
	}
	dk, err := app.GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: "stuck"})
	if err != nil {
		t.Fatal(err)
	}
	decrypt := func(c context.Context) error {
		r, err := app.Decrypt(c, &custosv1.DecryptRequest{Ciphertext: dk.GetWrappedDataKey(), Justification: customer})
		if err == nil && !bytes.Equal(r.GetPlaintext(), dk.GetPlaintext()) {
			t.Error("Decrypt returned another data key")
		}
		return err
	}

	// 1. 64 connections that never start TLS.
	for range 64 {
		c, err := net.Dial("tcp", h.Addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
	}
	// 2. 16 audit streams, each on its own connection, never read.
	streamCtx, stopStreams := context.WithCancel(context.Background())
	defer stopStreams()
	for range 16 {
		cc := h.Conn(t, nodetest.Auditor)
		if _, err := custosv1.NewAuditServiceClient(cc).WatchDecisions(streamCtx, &custosv1.WatchDecisionsRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	// 3. Callers that give up early: 4 goroutines of decrypts whose
	// deadline ends about when the call reaches the HSM, for the whole test.
	var wg sync.WaitGroup
	impatient, stopImpatient := context.WithCancel(context.Background())
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for impatient.Err() == nil {
				c, cancel := context.WithTimeout(impatient, time.Millisecond)
				_ = decrypt(c)
				cancel()
				time.Sleep(time.Millisecond)
			}
		}()
	}

	// The well-behaved application: every call succeeds with the right
	// key (each is also a record the unread streams would have to carry).
	for i := range 300 {
		if err := decrypt(ctx(t)); err != nil {
			t.Fatalf("decrypt %d with stuck clients around: %v", i, err)
		}
	}
	stopImpatient()
	wg.Wait()
	// And after the impatient callers are gone, still.
	if err := decrypt(ctx(t)); err != nil {
		t.Fatalf("decrypt after the impatient callers left: %v", err)
	}
}
