package loadgen

import (
	"math"
	"math/bits"
	"time"
)

// subBits sets the histogram's precision: every power-of-two range of
// values is split into 2^subBits buckets, so a recorded value is known to
// within 1/2^subBits (0.8 %) of itself. Values below 2^(subBits+1) ns are
// exact.
const (
	subBits  = 7
	subCount = 1 << subBits // buckets per power of two (upper half)
	// nBuckets covers every non-negative int64: the largest has
	// bits.Len64 = 63, hence exponent 63-(subBits+1).
	nBuckets = (64 - subBits) * subCount
)

// Histogram records durations in log-linear buckets (like HdrHistogram):
// bounded memory (about 60 KiB) whatever the number of samples, and a
// relative error below 1/128 on every percentile. The zero value is not
// usable; call NewHistogram. A Histogram is not safe for concurrent use:
// give each goroutine its own and Merge them.
type Histogram struct {
	counts   []uint64
	n        uint64
	sum      float64 // nanoseconds
	min, max int64
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	return &Histogram{counts: make([]uint64, nBuckets), min: math.MaxInt64}
}

// bucketOf returns the index of the bucket holding v (v >= 0).
func bucketOf(v int64) int {
	if v < 2*subCount {
		return int(v)
	}
	e := bits.Len64(uint64(v)) - (subBits + 1) // >= 1
	return e*subCount + int(uint64(v)>>uint(e))
}

// bucketBounds returns the smallest and largest value of bucket i.
func bucketBounds(i int) (lo, hi int64) {
	if i < 2*subCount {
		return int64(i), int64(i)
	}
	e := i/subCount - 1
	m := int64(i - e*subCount) // in [subCount, 2*subCount)
	lo = m << uint(e)
	// (m+1)<<e - 1, saturating for the very last bucket.
	hi = lo + (int64(1)<<uint(e) - 1)
	return lo, hi
}

// Record adds one duration. Negative durations count as 0.
func (h *Histogram) Record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(v)]++
	h.n++
	h.sum += float64(v)
	if v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
}

// Merge adds every sample of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil || o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.min = min(h.min, o.min)
	h.max = max(h.max, o.max)
}

// Count returns the number of samples.
func (h *Histogram) Count() uint64 { return h.n }

// Min returns the smallest sample (exact), 0 when empty.
func (h *Histogram) Min() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.min)
}

// Max returns the largest sample (exact), 0 when empty.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean returns the mean of the samples (exact), 0 when empty.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}

// Quantile returns the q-quantile (0 <= q <= 1) by the nearest-rank
// definition: the smallest sample such that at least q of all samples are
// less than or equal to it (the ceil(q*n)-th smallest; the smallest sample
// for q = 0). The smallest and largest samples are exact; any other answer
// is the midpoint of the sample's bucket, clamped to [Min, Max], so it is
// within 1/256 of the true sample value. 0 when empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := uint64(math.Ceil(q * float64(h.n)))
	// Guard against q*n landing a hair above an integer through rounding
	// (0.99*100 = 99.00000000000001).
	if r := q * float64(h.n); rank > 1 && float64(rank-1) >= r-1e-9 {
		rank--
	}
	rank = max(rank, 1)
	switch rank {
	case 1:
		return time.Duration(h.min)
	case h.n:
		return time.Duration(h.max)
	}
	var seen uint64
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		seen += c
		if seen >= rank {
			lo, hi := bucketBounds(i)
			v := lo + (hi-lo)/2
			v = min(max(v, h.min), h.max)
			return time.Duration(v)
		}
	}
	return time.Duration(h.max)
}
