// Package bench holds custos's load generator (bench/loadgen), its command
// (bench/cmd/custos-bench, run by `make bench`) and these in-process
// benchmarks:
//
//	go test -run '^$' -bench . ./bench/
//	go test -run '^$' -bench BenchmarkDecrypt -cpuprofile cpu.out ./bench/ && go tool pprof -top cpu.out
//
// Without -bench the tests below run the same operations a few times and
// check their results, so `go test ./bench/...` proves the benchmarks work.
// Nothing here asserts a time.
package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/custos-kms/custos/bench/ceiling"
	"github.com/custos-kms/custos/bench/loadgen"
	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/hsm/pkcs11"
	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"github.com/custos-kms/custos/softhsm"
)

// parallelism is the b.SetParallelism factor of the parallel benchmarks:
// 8 × GOMAXPROCS callers (16 on a 2-vCPU machine).
const parallelism = 8

var encCtx = map[string]string{"bench": "go-test"}

var justification = &custosv1.Justification{
	Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED,
	Text:   "bench_test",
}

// fixture is a node with one key and one data key generated under it.
type fixture struct {
	kc      custosv1.KeyServiceClient
	key     string
	wrapped []byte
	plain   []byte
}

func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	h := nodetest.Start(tb)
	f := &fixture{kc: custosv1.NewKeyServiceClient(h.Conn(tb, "bench")), key: "bench"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := f.kc.CreateKey(ctx, &custosv1.CreateKeyRequest{Name: f.key}); err != nil {
		tb.Fatal(err)
	}
	dk, err := f.kc.GenerateDataKey(ctx, &custosv1.GenerateDataKeyRequest{Key: f.key, EncryptionContext: encCtx})
	if err != nil {
		tb.Fatal(err)
	}
	f.wrapped, f.plain = dk.GetWrappedDataKey(), dk.GetPlaintext()
	return f
}

func (f *fixture) generateDataKey(ctx context.Context) error {
	dk, err := f.kc.GenerateDataKey(ctx, &custosv1.GenerateDataKeyRequest{Key: f.key, EncryptionContext: encCtx})
	if err != nil {
		return err
	}
	if len(dk.GetPlaintext()) != hsm.AESKeySize || len(dk.GetWrappedDataKey()) == 0 {
		return fmt.Errorf("data key of %d bytes, wrapped %d bytes", len(dk.GetPlaintext()), len(dk.GetWrappedDataKey()))
	}
	return nil
}

func (f *fixture) decrypt(ctx context.Context) error {
	resp, err := f.kc.Decrypt(ctx, &custosv1.DecryptRequest{
		Ciphertext: f.wrapped, EncryptionContext: encCtx, Justification: justification,
	})
	if err != nil {
		return err
	}
	if !bytes.Equal(resp.GetPlaintext(), f.plain) {
		return errors.New("decrypted data key differs")
	}
	return nil
}

// batchSize is the number of wrapped data keys in one BatchDecrypt of the
// benchmarks (the figure of the targets in docs/performance.md).
const batchSize = 100

func (f *fixture) batchDecrypt(ctx context.Context) error {
	req := &custosv1.BatchDecryptRequest{Requests: make([]*custosv1.DecryptRequest, batchSize)}
	for i := range req.Requests {
		req.Requests[i] = &custosv1.DecryptRequest{Ciphertext: f.wrapped, EncryptionContext: encCtx, Justification: justification}
	}
	resp, err := f.kc.BatchDecrypt(ctx, req)
	if err != nil {
		return err
	}
	if len(resp.GetResults()) != batchSize {
		return fmt.Errorf("%d results for %d items", len(resp.GetResults()), batchSize)
	}
	for i, r := range resp.GetResults() {
		if !bytes.Equal(r.GetResponse().GetPlaintext(), f.plain) {
			return fmt.Errorf("item %d: %v", i, r.GetError())
		}
	}
	return nil
}

// hsmFixture is a raw SoftHSM AES-256 key and a 32-byte data key encrypted
// under it, on a fresh test token.
type hsmFixture struct {
	b               *pkcs11.Backend
	key             hsm.KeyRef
	iv, ct, aad, pt []byte
}

func newHSMFixture(tb testing.TB) *hsmFixture {
	tb.Helper()
	tok := softhsm.TestToken(tb)
	ctx := context.Background()
	b, err := pkcs11.Open(ctx, pkcs11.Config{Module: tok.Module, TokenLabel: tok.Label, PIN: tok.PIN})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = b.Close() })
	f := &hsmFixture{b: b, key: hsm.KeyRef{ID: []byte("kek")}, aad: []byte("aad"),
		iv: make([]byte, hsm.GCMIVSize), pt: make([]byte, hsm.AESKeySize)}
	rand.Read(f.iv)
	rand.Read(f.pt)
	if f.key.CheckValue, err = b.GenerateKey(ctx, hsm.KeySpec{ID: f.key.ID, Label: "kek", Usage: hsm.UsageEncrypt}); err != nil {
		tb.Fatal(err)
	}
	if f.ct, err = b.EncryptGCM(ctx, f.key, f.iv, f.pt, f.aad); err != nil {
		tb.Fatal(err)
	}
	return f
}

func (f *hsmFixture) decrypt(ctx context.Context) error {
	out, err := f.b.DecryptGCM(ctx, f.key, f.iv, f.ct, f.aad)
	if err != nil {
		return err
	}
	if !bytes.Equal(out, f.pt) {
		return errors.New("decrypted data key differs")
	}
	return nil
}

// runBench runs op serially and in parallel (parallelism × GOMAXPROCS
// callers) as sub-benchmarks, and with 64 callers as "c64" when c64 is set.
func runBench(b *testing.B, op func(context.Context) error, c64 ...bool) {
	ctx := context.Background()
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := op(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(parallelism)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := op(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	if len(c64) > 0 && c64[0] {
		b.Run("c64", func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := op(ctx); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// Each benchmark starts its own node once: the function itself runs a
// single time, only its sub-benchmarks are repeated with growing b.N.

func BenchmarkGenerateDataKey(b *testing.B) {
	f := newFixture(b)
	runBench(b, f.generateDataKey)
}

func BenchmarkDecrypt(b *testing.B) {
	f := newFixture(b)
	runBench(b, f.decrypt, true)
}

// BenchmarkBatchDecrypt: one op is a BatchDecrypt of batchSize wrapped data
// keys (each its own decision record); "keys/s" is the data-key rate.
func BenchmarkBatchDecrypt(b *testing.B) {
	f := newFixture(b)
	for _, name := range []string{"serial", "parallel"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			start := time.Now()
			ctx := context.Background()
			if name == "serial" {
				for b.Loop() {
					if err := f.batchDecrypt(ctx); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				b.SetParallelism(2) // 2 × GOMAXPROCS batches in flight
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := f.batchDecrypt(ctx); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			b.ReportMetric(float64(b.N*batchSize)/time.Since(start).Seconds(), "keys/s")
		})
	}
}

// BenchmarkRaftApply is the raw Raft ceiling: raft.Node.Apply of small
// commands on a single node (bbolt log store) and a state machine that does
// nothing.
func BenchmarkRaftApply(b *testing.B) {
	r, err := ceiling.OpenRaftApply(context.Background(), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	runBench(b, r.Apply, true)
}

func BenchmarkSoftHSMDecryptGCM(b *testing.B) {
	f := newHSMFixture(b)
	runBench(b, f.decrypt)
}

// The smoke tests: a handful of each operation, serially and through the
// load generator at concurrency 4, all results checked.

func TestGenerateDataKeyAndDecrypt(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for range 5 {
		if err := f.generateDataKey(ctx); err != nil {
			t.Fatal(err)
		}
		if err := f.decrypt(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for name, op := range map[string]loadgen.Op{"gdk": f.generateDataKey, "decrypt": f.decrypt, "batch": f.batchDecrypt} {
		res, err := loadgen.Run(ctx, loadgen.Config{Concurrency: 4, Ops: 40}, op)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if res.Ops != 40 || res.Errors != 0 {
			t.Errorf("%s: %d ops, %d errors (first: %s)", name, res.Ops, res.Errors, res.FirstError)
		}
	}
	// A decrypt under the wrong context is refused: the benchmark's
	// success is not vacuous.
	_, err := f.kc.Decrypt(ctx, &custosv1.DecryptRequest{
		Ciphertext: f.wrapped, EncryptionContext: map[string]string{"bench": "other"}, Justification: justification,
	})
	if err == nil {
		t.Error("decrypt under another encryption context succeeded")
	}
}

func TestSoftHSMDecryptGCM(t *testing.T) {
	f := newHSMFixture(t)
	ctx := context.Background()
	res, err := loadgen.Run(ctx, loadgen.Config{Concurrency: 4, Ops: 200}, f.decrypt)
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 200 || res.Errors != 0 {
		t.Errorf("%d ops, %d errors (first: %s)", res.Ops, res.Errors, res.FirstError)
	}
	if _, err := f.b.DecryptGCM(ctx, f.key, f.iv, f.ct, []byte("other aad")); !errors.Is(err, hsm.ErrDecrypt) {
		t.Errorf("decrypt with other AAD: %v, want hsm.ErrDecrypt", err)
	}
}

func TestRaftApplyCeiling(t *testing.T) {
	r, err := ceiling.OpenRaftApply(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	res, err := loadgen.Run(context.Background(), loadgen.Config{Concurrency: 8, Ops: 200}, r.Apply)
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 200 || res.Errors != 0 {
		t.Errorf("%d ops, %d errors (first: %s)", res.Ops, res.Errors, res.FirstError)
	}
}

// BenchmarkGenerateDataKeyLogged is BenchmarkGenerateDataKey with the node
// logging at info level to a file, as custosd does to stderr (one line per
// KeyService call): the difference is the cost of the RPC log line.
func BenchmarkGenerateDataKeyLogged(b *testing.B) {
	out, err := os.Create(filepath.Join(b.TempDir(), "node.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	h := nodetest.StartWith(b, func(cfg *node.Config) {
		cfg.Logger = slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	f := &fixture{kc: custosv1.NewKeyServiceClient(h.Conn(b, "bench")), key: "bench"}
	if _, err := f.kc.CreateKey(context.Background(), &custosv1.CreateKeyRequest{Name: f.key}); err != nil {
		b.Fatal(err)
	}
	runBench(b, f.generateDataKey)
}
