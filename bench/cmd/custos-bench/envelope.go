package main

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/custos-kms/custos/bench/loadgen"
	custos "github.com/custos-kms/custos/clients/go"
)

// Envelope operations, measured through clients/go (EncryptStream and
// DecryptStream) against the running cluster.
const (
	// opEnvelope1MiB is one loadgen operation: 1 MiB encrypted to memory
	// and decrypted back (a GenerateDataKey and a Decrypt call).
	opEnvelope1MiB = "envelope-1mib"
	// opEnvelopeStream is one long stream per run and cluster (1 GiB by
	// default, --envelope-size), not a loadgen point.
	opEnvelopeStream = "envelope-1gib"
	// gcmCeilingName is the ceiling row of Go's single-goroutine
	// AES-256-GCM Seal of gcmCeilingBytes.
	gcmCeilingName = "go-aes256gcm-seal"
)

// envelopeMsgSize is the plaintext of one envelope-1mib operation.
const envelopeMsgSize = 1 << 20

// gcmCeilingBytes is the buffer one Seal of the AES-GCM ceiling covers: the
// envelope's default segment size.
const gcmCeilingBytes = 64 << 10

// Short-run defaults of the envelope flags.
const (
	shortEnvelopeSize = 64 << 20
	longEnvelopeSize  = 1 << 30
)

// The envelope targets of docs/performance.md: a 1 GiB stream through clients/go at no
// less than this share of Go's single-core AES-256-GCM, in at most this
// much memory.
const (
	targetEnvelopePct = 70
	targetEnvelopeMem = 32 << 20
)

// gcmCeiling is Go's own AES-256-GCM on one goroutine: Seal of a 64 KiB
// buffer in place, repeatedly, with a 32-byte AAD like the envelope's.
type gcmCeiling struct {
	aead       cipher.AEAD
	buf        []byte
	nonce, aad []byte
}

// newGCMCeiling returns the ceiling under a random key.
func newGCMCeiling() (*gcmCeiling, error) {
	key := make([]byte, 32)
	if _, err := crand.Read(key); err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("gcm: %w", err)
	}
	return &gcmCeiling{aead: aead, buf: make([]byte, gcmCeilingBytes+aead.Overhead()),
		nonce: make([]byte, aead.NonceSize()), aad: make([]byte, 32)}, nil
}

// seal is the ceiling operation. It must run on one goroutine (C=1): the
// buffer is shared.
func (g *gcmCeiling) seal(context.Context) error {
	g.aead.Seal(g.buf[:0], g.nonce, g.buf[:gcmCeilingBytes], g.aad)
	return nil
}

// patternBlock is the repeating unit of the generated plaintext: fixed
// pseudo-random bytes (ChaCha8 with a fixed seed), each block stamped with
// its index so that reordered or repeated segments do not compare equal.
const patternBlock = 64 << 10

var patternBase = func() []byte {
	b := make([]byte, patternBlock)
	var seed [32]byte
	copy(seed[:], "custos-bench envelope plaintext")
	r := rand.NewChaCha8(seed)
	_, _ = r.Read(b)
	return b
}()

// fillPattern writes the plaintext bytes [off, off+len(p)) into p.
func fillPattern(p []byte, off int64) {
	for len(p) > 0 {
		blk, i := off/patternBlock, int(off%patternBlock)
		n := copy(p, patternBase[i:])
		for j := i; j < 8 && j < i+n; j++ {
			p[j-i] ^= byte(blk >> (8 * j))
		}
		p, off = p[n:], off+int64(n)
	}
}

// patternReader generates size bytes of plaintext (fillPattern); nothing is
// stored.
type patternReader struct{ off, size int64 }

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	if rem := r.size - r.off; int64(len(p)) > rem {
		p = p[:rem]
	}
	fillPattern(p, r.off)
	r.off += int64(len(p))
	return len(p), nil
}

// patternChecker is a writer that compares what it is given with the
// generated plaintext, from offset 0.
type patternChecker struct {
	off     int64
	scratch []byte
}

func (c *patternChecker) Write(p []byte) (int, error) {
	if c.scratch == nil {
		c.scratch = make([]byte, patternBlock)
	}
	done := 0
	for done < len(p) {
		n := min(len(p)-done, len(c.scratch))
		fillPattern(c.scratch[:n], c.off)
		if !bytes.Equal(p[done:done+n], c.scratch[:n]) {
			return done, fmt.Errorf("plaintext differs in the %d bytes at offset %d", n, c.off)
		}
		done += n
		c.off += int64(n)
	}
	return done, nil
}

// countingWriter discards what it is given and counts it.
type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	return len(p), nil
}

// envelopeState is one worker's buffers for envelope-1mib.
type envelopeState struct {
	ct, out  bytes.Buffer
	verified bool
}

// envelopeOp returns the envelope-1mib operation: 1 MiB of generated
// plaintext encrypted with c.EncryptStream under keyName into memory, then
// decrypted with c.DecryptStream (justification just) into memory. Each
// operation checks the length of the plaintext it got back; the first one
// with a fresh set of buffers (one per worker, held in a sync.Pool) also
// compares its content.
func envelopeOp(c *custos.Client, keyName string, encCtx map[string]string, just custos.Justification) loadgen.Op {
	plain := make([]byte, envelopeMsgSize)
	fillPattern(plain, 0)
	pool := sync.Pool{New: func() any { return new(envelopeState) }}
	return func(ctx context.Context) error {
		st := pool.Get().(*envelopeState)
		defer pool.Put(st)
		st.ct.Reset()
		w, err := c.EncryptStream(ctx, &st.ct, keyName, encCtx)
		if err != nil {
			return fmt.Errorf("encrypt: %w", err)
		}
		if _, err := w.Write(plain); err != nil {
			w.Close()
			return fmt.Errorf("encrypt: %w", err)
		}
		if err := w.Close(); err != nil {
			return fmt.Errorf("encrypt: %w", err)
		}
		r, _, err := c.DecryptStream(ctx, bytes.NewReader(st.ct.Bytes()), just)
		if err != nil {
			return fmt.Errorf("decrypt: %w", err)
		}
		st.out.Reset()
		if _, err := io.Copy(&st.out, r); err != nil {
			return fmt.Errorf("decrypt: %w", err)
		}
		if st.out.Len() != len(plain) {
			return fmt.Errorf("decrypted %d bytes of %d", st.out.Len(), len(plain))
		}
		if !st.verified {
			if !bytes.Equal(st.out.Bytes(), plain) {
				return errors.New("decrypted plaintext differs")
			}
			st.verified = true
		}
		return nil
	}
}

// streamResult is one run of envelope-1gib against one cluster.
type streamResult struct {
	Name  string `json:"name"`
	Nodes int    `json:"nodes"`
	Run   int    `json:"run"`
	// Bytes is the plaintext size of the stream; CiphertextBytes the size
	// of its envelope.
	Bytes           int64 `json:"bytes"`
	CiphertextBytes int64 `json:"ciphertext_bytes,omitempty"`
	// Encrypt is EncryptStream of the generated plaintext to a counting
	// io.Discard (one GenerateDataKey call, then client-side AES-GCM).
	Encrypt streamPhase `json:"encrypt"`
	// RoundTrip is EncryptStream into an io.Pipe read by DecryptStream (a
	// GenerateDataKey and a Decrypt call) whose plaintext is compared with
	// the generated one: every byte sealed and opened, concurrently.
	RoundTrip streamPhase `json:"round_trip"`
	// DecryptMBps is the decryption rate derived from the two phases:
	// Bytes / (RoundTrip wall time − Encrypt wall time), which holds when
	// each phase keeps the CPUs busy; 0 when that difference is too small
	// (under 5 % of the round trip) to mean anything.
	DecryptMBps float64 `json:"decrypt_mb_per_sec,omitempty"`
	// CeilingMBps is the Go AES-256-GCM ceiling of the run; the Pct fields
	// divide the encrypt and decrypt rates by it.
	CeilingMBps float64  `json:"ceiling_mb_per_sec,omitempty"`
	PctEncrypt  *float64 `json:"pct_encrypt_of_gcm_ceiling,omitempty"`
	PctDecrypt  *float64 `json:"pct_decrypt_of_gcm_ceiling,omitempty"`
	// Error is the first failure, if any.
	Error string `json:"error,omitempty"`
}

// streamPhase is one timed pass over the stream and the bench process's
// memory during it.
type streamPhase struct {
	Elapsed time.Duration `json:"elapsed_ns"`
	MBps    float64       `json:"mb_per_sec"`
	// CPU is this process's user+system CPU time over the phase.
	CPU time.Duration `json:"cpu_ns"`
	memPeak
}

// memPeak is the bench process's memory during a phase. Heap in use is
// runtime.MemStats.HeapInuse (runtime/metrics: heap objects + heap unused)
// and Sys is MemStats.Sys (/memory/classes/total:bytes), sampled every
// millisecond; RSS comes from /proc/self/status.
type memPeak struct {
	HeapInuseBefore uint64 `json:"heap_inuse_before"`
	HeapInusePeak   uint64 `json:"heap_inuse_peak"`
	SysPeak         uint64 `json:"sys_peak"`
	// RSSBeforeKiB is VmRSS at the start; HWMKiB is VmHWM at the end,
	// after VmHWM was reset to VmRSS at the start (/proc/self/clear_refs)
	// when HWMReset, so that HWMKiB − RSSBeforeKiB is the phase's peak
	// growth of resident memory. Without the reset it is the peak since
	// the process started and says nothing about the phase unless it
	// grew.
	RSSBeforeKiB int64 `json:"rss_before_kib"`
	HWMKiB       int64 `json:"hwm_kib"`
	HWMReset     bool  `json:"hwm_reset"`
}

// heapGrowth is the peak heap in use over the phase's starting value.
func (m memPeak) heapGrowth() uint64 {
	if m.HeapInusePeak < m.HeapInuseBefore {
		return 0
	}
	return m.HeapInusePeak - m.HeapInuseBefore
}

// rssGrowth is the peak resident memory over the starting value, in bytes;
// -1 when it is unknown (VmHWM not reset and not above its old peak).
func (m memPeak) rssGrowth() int64 {
	if m.RSSBeforeKiB == 0 || m.HWMKiB == 0 || !m.HWMReset {
		return -1
	}
	return max(0, m.HWMKiB-m.RSSBeforeKiB) << 10
}

// memSampler samples the heap and Sys every millisecond until stopped.
type memSampler struct {
	peak memPeak
	stop chan struct{}
	wg   sync.WaitGroup
	heap atomic.Uint64
	sys  atomic.Uint64
}

var memSamples = []string{
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/total:bytes",
}

func readHeap(s []metrics.Sample) (heapInuse, sys uint64) {
	metrics.Read(s)
	return s[0].Value.Uint64() + s[1].Value.Uint64(), s[2].Value.Uint64()
}

// startMemSampler returns memory to the OS, resets VmHWM and starts
// sampling.
func startMemSampler() *memSampler {
	debug.FreeOSMemory()
	m := &memSampler{stop: make(chan struct{})}
	s := make([]metrics.Sample, len(memSamples))
	for i, n := range memSamples {
		s[i].Name = n
	}
	h, _ := readHeap(s)
	m.peak.HeapInuseBefore = h
	m.peak.HWMReset = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
	if pm, err := procMem(os.Getpid()); err == nil {
		m.peak.RSSBeforeKiB = pm.RSSKiB
	}
	m.wg.Go(func() {
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			h, sys := readHeap(s)
			if h > m.heap.Load() {
				m.heap.Store(h)
			}
			if sys > m.sys.Load() {
				m.sys.Store(sys)
			}
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
		}
	})
	return m
}

// done stops sampling and returns the peaks.
func (m *memSampler) done() memPeak {
	close(m.stop)
	m.wg.Wait()
	m.peak.HeapInusePeak, m.peak.SysPeak = m.heap.Load(), m.sys.Load()
	if pm, err := procMem(os.Getpid()); err == nil {
		m.peak.HWMKiB = pm.HWMKiB
	}
	return m.peak
}

// mbps is bytes per second in MB/s (10^6 bytes).
func mbps(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds() / 1e6
}

// runStream is one run of envelope-1gib: size bytes of generated plaintext
// encrypted with EncryptStream to a counting io.Discard, then again through
// an io.Pipe into DecryptStream, checked against the generator.
func runStream(ctx context.Context, c *custos.Client, keyName string, encCtx map[string]string, just custos.Justification, size int64) streamResult {
	res := streamResult{Name: opEnvelopeStream, Bytes: size}
	fail := func(err error) streamResult {
		res.Error = err.Error()
		return res
	}

	// Encrypt only.
	sink := &countingWriter{}
	m := startMemSampler()
	t0, cpu0 := time.Now(), selfCPU()
	w, err := c.EncryptStream(ctx, sink, keyName, encCtx)
	if err == nil {
		if _, err = io.Copy(w, &patternReader{size: size}); err != nil {
			w.Close()
		} else {
			err = w.Close()
		}
	}
	res.Encrypt = streamPhase{Elapsed: time.Since(t0), CPU: selfCPU() - cpu0, memPeak: m.done()}
	if err != nil {
		return fail(fmt.Errorf("encrypt: %w", err))
	}
	res.Encrypt.MBps = mbps(size, res.Encrypt.Elapsed)
	res.CiphertextBytes = sink.n

	// Encrypt into a pipe, decrypt from it.
	m = startMemSampler()
	t0, cpu0 = time.Now(), selfCPU()
	pr, pw := io.Pipe()
	encErr := make(chan error, 1)
	go func() {
		w, err := c.EncryptStream(ctx, pw, keyName, encCtx)
		if err == nil {
			if _, err = io.Copy(w, &patternReader{size: size}); err != nil {
				w.Close()
			} else {
				err = w.Close()
			}
		}
		pw.CloseWithError(err)
		encErr <- err
	}()
	var n int64
	r, _, err := c.DecryptStream(ctx, pr, just)
	if err == nil {
		n, err = io.Copy(&patternChecker{}, r)
	}
	pr.CloseWithError(errors.New("custos-bench: decryption ended"))
	eerr := <-encErr
	res.RoundTrip = streamPhase{Elapsed: time.Since(t0), CPU: selfCPU() - cpu0, memPeak: m.done()}
	switch {
	case err != nil:
		return fail(fmt.Errorf("round trip: decrypt: %w", err))
	case eerr != nil:
		return fail(fmt.Errorf("round trip: encrypt: %w", eerr))
	case n != size:
		return fail(fmt.Errorf("round trip: decrypted %d bytes of %d", n, size))
	}
	res.RoundTrip.MBps = mbps(size, res.RoundTrip.Elapsed)
	if d := res.RoundTrip.Elapsed - res.Encrypt.Elapsed; d > res.RoundTrip.Elapsed/20 {
		res.DecryptMBps = mbps(size, d)
	}
	return res
}

// streamRatios fills the streams' ceiling ratios from the GCM ceiling.
func (r *report) streamRatios() {
	var ceil float64
	for _, c := range r.Ceilings {
		if c.Name == gcmCeilingName {
			ceil = max(ceil, c.OpsPerSec*float64(c.BytesPerOp)/1e6)
		}
	}
	for i := range r.Streams {
		s := &r.Streams[i]
		s.CeilingMBps, s.PctEncrypt, s.PctDecrypt = 0, nil, nil
		if ceil <= 0 || s.Error != "" {
			continue
		}
		s.CeilingMBps = ceil
		pe := 100 * s.Encrypt.MBps / ceil
		s.PctEncrypt = &pe
		if s.DecryptMBps > 0 {
			pd := 100 * s.DecryptMBps / ceil
			s.PctDecrypt = &pd
		}
	}
}

// parseSize parses a byte count: a number with an optional suffix KiB,
// MiB, GiB (or K, M, G, powers of 1024).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 1 || n > (1<<50)/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

// fmtBytes formats a byte count in MiB or GiB.
func fmtBytes(n int64) string {
	if n >= 1<<30 && n%(1<<30) == 0 {
		return fmt.Sprintf("%d GiB", n>>30)
	}
	return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
}

// fmtMiBBytes formats bytes in MiB with one decimal.
func fmtMiBBytes(n uint64) string { return fmt.Sprintf("%.1f", float64(n)/(1<<20)) }

// line is the stream's log line.
func (s streamResult) line() string {
	if s.Error != "" {
		return fmt.Sprintf("%-20s n=%d %s run %d: failed: %s", s.Name, s.Nodes, fmtBytes(s.Bytes), s.Run, s.Error)
	}
	dec := "–"
	if s.DecryptMBps > 0 {
		dec = fmt.Sprintf("%.0f", s.DecryptMBps)
	}
	return fmt.Sprintf("%-20s n=%d %s run %d: encrypt %.0f MB/s, decrypt %s MB/s (derived), round trip %.0f MB/s; peak heap in use +%s MiB, RSS +%s MiB",
		s.Name, s.Nodes, fmtBytes(s.Bytes), s.Run, s.Encrypt.MBps, dec, s.RoundTrip.MBps,
		fmtMiBBytes(max(s.Encrypt.heapGrowth(), s.RoundTrip.heapGrowth())), fmtRSSGrowth(s))
}

// maxRSSGrowth is the larger RSS growth of the two phases; -1 if unknown.
func (s streamResult) maxRSSGrowth() int64 {
	return max(s.Encrypt.rssGrowth(), s.RoundTrip.rssGrowth())
}

func fmtRSSGrowth(s streamResult) string {
	g := s.maxRSSGrowth()
	if g < 0 {
		return "?"
	}
	return fmtMiBBytes(uint64(g))
}

// streamMem is the memory a stream is judged by against the target: the
// peak RSS growth when known, else the peak heap growth.
func (s streamResult) streamMem() uint64 {
	if g := s.maxRSSGrowth(); g >= 0 {
		return uint64(g)
	}
	return max(s.Encrypt.heapGrowth(), s.RoundTrip.heapGrowth())
}

// envelopeBlock writes the envelope section of the Markdown: MB/s of the
// envelope-1mib points and the envelope-1gib streams against the Go
// AES-256-GCM ceiling.
func (r *report) envelopeBlock(w func(string, ...any)) {
	var small []point
	for _, p := range r.sortedScenarios() {
		if p.Name == opEnvelope1MiB {
			small = append(small, p)
		}
	}
	if len(small) == 0 && len(r.Streams) == 0 {
		return
	}
	w("\n### Envelope encryption through clients/go\n\n")
	var ceil *point
	for i := range r.Ceilings {
		if c := &r.Ceilings[i]; c.Name == gcmCeilingName && (ceil == nil || c.OpsPerSec > ceil.OpsPerSec) {
			ceil = c
		}
	}
	if ceil != nil {
		w("Ceiling: Go's crypto/cipher AES-256-GCM on one goroutine, Seal of a %d KiB buffer in place, %.0f MB/s (in this process, same run).\n\n",
			gcmCeilingBytes>>10, ceil.mbps())
	}
	if len(small) > 0 {
		w("`%s`: one operation is EncryptStream of 1 MiB into memory (a GenerateDataKey call) and DecryptStream of it back into memory (a Decrypt call, CUSTOMER_INITIATED, decision recorded); MB/s counts plaintext bytes of whole operations (each byte encrypted and decrypted), 1 MB = 10^6 bytes.\n\n", opEnvelope1MiB)
		w("| nodes | C | ops/s | MB/s | p50 | p99 | p99.9 | errors | bench CPU µs/op |\n|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, p := range small {
			w("| %s | %d | %.0f | %.0f | %s | %s | %s | %d | %s |\n", fmtNodes(p.Nodes)+loadTag(p), p.Concurrency, p.OpsPerSec, p.mbps(),
				fmtDur(p.P50), fmtDur(p.P99), fmtDur(p.P999), p.Errors, fmtCPU(p.BenchCPUPerOp))
		}
		w("\n")
	}
	if len(r.Streams) > 0 {
		w("`%s`: one stream of generated plaintext (not stored), encrypted with EncryptStream to a counting io.Discard (\"encrypt\", its GenerateDataKey call included), then encrypted again into an io.Pipe read by DecryptStream whose output is compared with the generator (\"round trip\": a GenerateDataKey and a Decrypt call, every byte sealed and opened, both sides at once). \"decrypt\" is derived: size / (round-trip time − encrypt time). Memory is the bench process's: peak heap in use (runtime.MemStats.HeapInuse, sampled every ms) and peak Sys, over its value before the phase; RSS is VmHWM after a reset (/proc/self/clear_refs) over VmRSS before. Both phases counted, the larger figure shown.\n\n", opEnvelopeStream)
		w("| nodes | run | size | encrypt MB/s | decrypt MB/s | round trip MB/s | encrypt %% of GCM | decrypt %% of GCM | peak heap in use +MiB | peak Sys MiB | peak RSS +MiB | bench CPU s (encrypt · round trip) |\n")
		w("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, s := range r.Streams {
			if s.Error != "" {
				w("| %s | %d | %s | failed: %s | | | | | | | | |\n", fmtNodes(s.Nodes), s.Run, fmtBytes(s.Bytes), s.Error)
				continue
			}
			dec := "–"
			if s.DecryptMBps > 0 {
				dec = fmt.Sprintf("%.0f", s.DecryptMBps)
			}
			w("| %s | %d | %s | %.0f | %s | %.0f | %s | %s | %s | %s | %s | %.2f · %.2f |\n",
				fmtNodes(s.Nodes), s.Run, fmtBytes(s.Bytes), s.Encrypt.MBps, dec, s.RoundTrip.MBps,
				fmtPct(s.PctEncrypt), fmtPct(s.PctDecrypt),
				fmtMiBBytes(max(s.Encrypt.heapGrowth(), s.RoundTrip.heapGrowth())),
				fmtMiBBytes(max(s.Encrypt.SysPeak, s.RoundTrip.SysPeak)), fmtRSSGrowth(s),
				s.Encrypt.CPU.Seconds(), s.RoundTrip.CPU.Seconds())
		}
		w("\nThe envelope seals and opens a batch's segments on up to GOMAXPROCS goroutines (%d here), so it can exceed a single-core ceiling.\n", runtime.GOMAXPROCS(0))
	}
}

// envelopeTarget writes the envelope row of the targets table: the best
// stream on targetNodes nodes (or any, when there is none there).
func (r *report) envelopeTarget(w func(string, ...any), met func(bool) string) {
	title := fmt.Sprintf("Envelope encryption/decryption of 1 GiB through clients/go ≥ %d %% of Go's single-core AES-256-GCM, memory ≤ %d MiB",
		targetEnvelopePct, targetEnvelopeMem>>20)
	var best *streamResult
	score := func(s *streamResult) float64 {
		if s.PctEncrypt == nil || s.PctDecrypt == nil {
			return -1
		}
		return min(*s.PctEncrypt, *s.PctDecrypt)
	}
	for _, nodesWanted := range []int{targetNodes, -1} {
		for i := range r.Streams {
			s := &r.Streams[i]
			if s.Error != "" || (nodesWanted >= 0 && s.Nodes != nodesWanted) {
				continue
			}
			if best == nil || score(s) > score(best) {
				best = s
			}
		}
		if best != nil {
			break
		}
	}
	if best == nil {
		if !slices.Contains(r.Settings.Ops, opEnvelopeStream) {
			return
		}
		w("| %s | not measured | |\n", title)
		return
	}
	size := ""
	if best.Bytes != longEnvelopeSize {
		size = fmt.Sprintf(" (a %s stream)", fmtBytes(best.Bytes))
	}
	verdict := ""
	if best.PctEncrypt != nil && best.PctDecrypt != nil {
		verdict = met(*best.PctEncrypt >= targetEnvelopePct && *best.PctDecrypt >= targetEnvelopePct && best.streamMem() <= targetEnvelopeMem)
	}
	w("| %s | encrypt %s, decrypt %s of the ceiling; peak memory +%s MiB%s, %d nodes | %s |\n", title,
		fmtPct(best.PctEncrypt), fmtPct(best.PctDecrypt), fmtMiBBytes(best.streamMem()), size, best.Nodes, verdict)
}
