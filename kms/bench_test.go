package kms_test

import (
	"bytes"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/governance"
	"github.com/custos-kms/custos/kms/ledger"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"github.com/custos-kms/custos/raft"
)

// The benchmarks below measure the decide → record → release path below
// gRPC (docs/performance.md):
//
//	go test -run '^$' -bench . -benchmem ./kms/
//
// Besides ns/op they report cpu-µs/op, the CPU time of the whole process
// (every goroutine: Raft, the state machine, the ledger, SoftHSM) per
// operation, which a shared, noisy machine disturbs far less than the wall
// clock.

// processCPU is the user+system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports cpu-µs/op since start.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64((processCPU()-start).Microseconds())/float64(b.N), "cpu-µs/op")
}

// BenchmarkServiceDecrypt is kms.Service.Decrypt of a data key on a single
// node: the decision through Raft (bbolt log, fsync) into the ledger, then
// SoftHSM. c64 has 64 concurrent callers, so group commit packs decisions.
func BenchmarkServiceDecrypt(b *testing.B) {
	e := newEnv(b)
	if _, err := e.svc.CreateKey(bg, app, &custosv1.CreateKeyRequest{Name: "bench"}); err != nil {
		b.Fatal(err)
	}
	encCtx := map[string]string{"bench": "kms"}
	dk, err := e.svc.GenerateDataKey(bg, app, &custosv1.GenerateDataKeyRequest{Key: "bench", EncryptionContext: encCtx})
	if err != nil {
		b.Fatal(err)
	}
	req := &custosv1.DecryptRequest{Ciphertext: dk.WrappedDataKey, EncryptionContext: encCtx,
		Justification: &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Text: "benchmark"}}
	op := func() error {
		resp, err := e.svc.Decrypt(bg, app, req)
		if err == nil && !bytes.Equal(resp.Plaintext, dk.Plaintext) {
			b.Fatal("decrypted data key differs")
		}
		return err
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		start := processCPU()
		for b.Loop() {
			if err := op(); err != nil {
				b.Fatal(err)
			}
		}
		reportCPU(b, start)
	})
	b.Run("c64", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
		start := processCPU()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := op(); err != nil {
					b.Error(err)
					return
				}
			}
		})
		reportCPU(b, start)
	})
}

// BenchmarkStateApplyBatch is the state machine alone: ApplyBatch of one
// entry of 16 Decide commands (the size group commit makes at 64 callers)
// against a key, the ledger written without fsync as on a node. Per op is
// per decision.
func BenchmarkStateApplyBatch(b *testing.B) {
	led, err := ledger.Open(filepath.Join(b.TempDir(), "ledger.db"), ledger.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = led.Close() })
	st := kms.NewState(led)
	now := time.Now().UnixNano()
	index := uint64(0)
	apply := func(cmds ...*raftlogv1.Command) [][]any {
		index++
		return st.ApplyBatch([]raft.AppliedEntry{{Index: index, Commands: cmds}})
	}
	// The cluster and the key, as the log would carry them.
	ok, err := governance.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	officers := []*custosv1.Officer{{Name: "officer-1", PublicKey: governance.MarshalPublicKey(&ok.PublicKey)}}
	res := apply(&raftlogv1.Command{TimeUnixNano: now, Node: "n1", Principal: "custosd",
		Op: &raftlogv1.Command_InitCluster{InitCluster: &raftlogv1.InitCluster{
			ClusterId: "bench", DomainKeyId: []byte("d"), Officers: officers, Quorum: 1,
			DomainKeyCheckValue: make([]byte, 16)}}})
	if err, ok := res[0][0].(error); ok {
		b.Fatal(err)
	}
	res = apply(&raftlogv1.Command{TimeUnixNano: now, Node: "n1", Principal: app.Name,
		Op: &raftlogv1.Command_CreateKey{CreateKey: &raftlogv1.CreateKey{Name: "bench", WrappedKek: []byte("kek"),
			KekId: []byte("kek-id"), KekCheckValue: make([]byte, 16)}}})
	if err, ok := res[0][0].(error); ok {
		b.Fatal(err)
	}
	const perEntry = 16
	digest := kms.ContextDigest(map[string]string{"bench": "kms"})
	cmds := make([]*raftlogv1.Command, perEntry)
	for i := range cmds {
		cmds[i] = &raftlogv1.Command{TimeUnixNano: now, Node: "n1", Principal: app.Name,
			Op: &raftlogv1.Command_Decide{Decide: &raftlogv1.Decide{
				Key: "bench", KeyVersion: 1, Operation: custosv1.Operation_OPERATION_DECRYPT_DATA_KEY,
				Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, JustificationText: "benchmark",
				ContextDigest: digest[:], RequestId: "0123456789abcdef0123456789abcdef"}}}
	}
	b.ReportAllocs()
	start := processCPU()
	for n := 0; n < b.N; n += perEntry {
		res := apply(cmds...)
		if d, ok := res[0][0].(*kms.Decision); !ok || d.Err != nil {
			b.Fatalf("decision: %#v", res[0][0])
		}
	}
	reportCPU(b, start)
}
