package bench

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"io"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-kms/custos/clients/go/envelope"
)

// envelopeSize is the stream size of BenchmarkEnvelope1GiB; set
// CUSTOS_BENCH_ENVELOPE_MIB to change it (the figure is 1 GiB).
func envelopeSize() int64 {
	if v, err := strconv.Atoi(os.Getenv("CUSTOS_BENCH_ENVELOPE_MIB")); err == nil && v > 0 {
		return int64(v) << 20
	}
	return 1 << 30
}

// zeroReader is an endless source of zeros.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// peakHeap samples the live heap every millisecond until stop is closed
// and returns the highest value seen (runtime/metrics, no stop-the-world).
func peakHeap(stop <-chan struct{}) func() uint64 {
	var peak atomic.Uint64
	var wg sync.WaitGroup
	wg.Go(func() {
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			if v := s[0].Value.Uint64(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	})
	return func() uint64 { wg.Wait(); return peak.Load() }
}

// BenchmarkEnvelope1GiB streams 1 GiB through an envelope writer, an
// io.Pipe and an envelope reader (clients/go/envelope, default segment
// size, the way clients/go's EncryptStream/DecryptStream use it), and
// reports MB/s of plaintext and the peak live heap. BenchmarkAES256GCM1GiB
// is the comparison: Go's AES-256-GCM sealing the same bytes on one core.
func BenchmarkEnvelope1GiB(b *testing.B) {
	size := envelopeSize()
	key := make([]byte, 32)
	rand.Read(key)
	h := envelope.Header{Key: "bench", KeyVersion: 1, WrappedKey: make([]byte, 61), Context: encCtx}
	b.SetBytes(size)
	var peak uint64
	for b.Loop() {
		runtime.GC()
		stop := make(chan struct{})
		wait := peakHeap(stop)
		pr, pw := io.Pipe()
		errc := make(chan error, 1)
		go func() {
			w, err := envelope.NewWriter(pw, h, key, nil)
			if err == nil {
				_, err = io.CopyN(w, zeroReader{}, size)
				if cerr := w.Close(); err == nil {
					err = cerr
				}
			}
			pw.CloseWithError(err)
			errc <- err
		}()
		hdr, err := envelope.ReadHeader(pr)
		if err != nil {
			b.Fatal(err)
		}
		r, err := envelope.NewReader(pr, hdr, key)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(io.Discard, r, make([]byte, 64<<10))
		if err != nil || n != size {
			b.Fatalf("read %d bytes of %d: %v", n, size, err)
		}
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
		close(stop)
		peak = max(peak, wait())
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
}

func BenchmarkAES256GCM1GiB(b *testing.B) {
	size := envelopeSize()
	key := make([]byte, 32)
	rand.Read(key)
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	seg := envelope.DefaultSegmentSize
	buf := make([]byte, seg+aead.Overhead())
	nonce := make([]byte, aead.NonceSize())
	b.SetBytes(size)
	for b.Loop() {
		for done := int64(0); done < size; done += int64(seg) {
			aead.Seal(buf[:0], nonce, buf[:seg], nil)
		}
	}
}

func TestEnvelopeStreamSmall(t *testing.T) {
	t.Setenv("CUSTOS_BENCH_ENVELOPE_MIB", "8")
	res := testing.Benchmark(BenchmarkEnvelope1GiB)
	if res.N == 0 {
		t.Fatal("benchmark did not run")
	}
}
