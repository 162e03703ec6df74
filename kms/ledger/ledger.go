// Package ledger is the durable, append-only store of decision records.
//
// Records are opaque bytes (the kms state machine builds and hash-chains
// them) stored in a bbolt file: one bucket, key = the record's sequence
// number as 8 bytes big-endian, value = the record bytes. Keys only ever
// grow, so the bucket is filled to 100% (FillPercent 1.0) and pages never
// split half-empty.
//
// The ledger is fed by the Raft state machine: each applied batch of log
// entries becomes one PutBatch (one bbolt transaction). This keeps the
// state machine's memory bounded (records live on disk, not in RAM) and
// keeps them after Raft compacts its log.
//
// # Durability and NoSync
//
// With Options.NoSync the store does not fsync each transaction. That is
// safe here because the ledger is not the source of truth, the Raft log is:
//
//   - every record is derived deterministically from a committed log entry,
//     which the Raft log store fsynced before the entry counted as committed;
//   - on restart Raft replays the log entries after the last snapshot into
//     the state machine, which writes their records again. Rewriting a
//     sequence number with identical bytes is accepted, so replay is
//     idempotent; different bytes are reported as ErrConflict (divergence is
//     never silent);
//   - before Raft compacts its log (at snapshot time) the state machine calls
//     Sync, so every record whose log entry may be deleted is on disk first.
//
// A process crash loses nothing (the kernel holds the written pages). A
// machine crash or power loss in NoSync mode may lose the transactions since
// the last Sync and, because bbolt then cannot order its page writes, may
// leave the file inconsistent. The recovery route is: discard the file
// (or Reset) and restart; the node restores the latest snapshot, which
// carries the ledger head and its newest records (the tail), records the
// range below the tail as missing (Gap, kept in the file's meta bucket)
// and copies it from the other nodes, checking every record against the
// hash chain; Raft replays the log after the snapshot.
//
// # Missing ranges
//
// A store may lack the records [Gap.Lo, Gap.Hi] (Missing): a new or wiped
// node restored a snapshot without them (Replace), or a node far behind
// kept its own records [1, Lo-1] and the snapshot's tail above the range
// (Extend). FillGap stores verified records at the top of the range and
// shrinks it in one transaction, so it only ever shrinks from the top and
// a crash leaves no hole.
package ledger

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

var (
	// ErrNotFound is returned by Get for a sequence number not in the store.
	ErrNotFound = errors.New("ledger: record not found")
	// ErrConflict is returned by PutBatch when a sequence number already
	// holds different bytes.
	ErrConflict = errors.New("ledger: sequence number already holds a different record")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("ledger: store closed")
)

var (
	bucketName = []byte("records")
	// metaBucket holds the store's own state: metaMissing.
	metaBucket = []byte("meta")
	// metaMissing records a range of sequence numbers [lo, hi] that the
	// store does not hold yet (a snapshot without records was restored):
	// 8 bytes lo || 8 bytes hi (big-endian) || 32 bytes anchor, the hash
	// of record hi.
	metaMissing = []byte("missing")
)

// Record is one decision record at its sequence number.
type Record struct {
	Seq  uint64
	Data []byte
}

// Options configures a Store.
type Options struct {
	// NoSync skips the fsync of each transaction (see the package doc for
	// why that is safe when the Raft log is the durable source). Call Sync
	// before the Raft log is compacted.
	NoSync bool
}

// Store is an open ledger. It is safe for concurrent use.
type Store struct {
	db *bolt.DB
	// missing caches the metaMissing entry (nil: nothing missing).
	missing atomic.Pointer[Gap]
	// gapMu orders the transactions that change the missing range with
	// the updates of its cache, so the cache never goes back to a range
	// the file no longer has.
	gapMu sync.Mutex
}

// Gap is a range of records [Lo, Hi] that the store does not hold: a node
// restored a snapshot that carries only the ledger head and its newest
// records, and fills the range in from its peers (backfill). Anchor is the
// hash record Hi must have; it is known from the chain (the prev_hash of
// record Hi+1), so every record fetched into the gap is checked against
// it. Records below Lo, if any, are the node's own.
type Gap struct {
	Lo, Hi uint64
	Anchor [32]byte
}

// Open opens or creates the ledger file at path.
func Open(path string, opts Options) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: 5 * time.Second, // another process holds the file lock
		NoSync:  opts.NoSync,
		// The freelist is written with each transaction: without it bbolt
		// rebuilds it at open by walking every page of the file, which
		// makes a restart read (and map into the process) the whole
		// ledger, O(records). An append-only tree frees only the few pages
		// its copy-on-write path replaces, so the freelist stays small.
		FreelistType: bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: open %s: %w", path, err)
	}
	s := &Store{db: db}
	if err := db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketName); err != nil {
			return err
		}
		m, err := tx.CreateBucketIfNotExists(metaBucket)
		if err != nil {
			return err
		}
		g, err := decodeGap(m.Get(metaMissing))
		s.missing.Store(g)
		return err
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("ledger: init %s: %w", path, err)
	}
	return s, nil
}

func decodeGap(v []byte) (*Gap, error) {
	if v == nil {
		return nil, nil
	}
	if len(v) != 8+8+32 {
		return nil, fmt.Errorf("bad %q entry of %d bytes", metaMissing, len(v))
	}
	g := &Gap{Lo: binary.BigEndian.Uint64(v), Hi: binary.BigEndian.Uint64(v[8:])}
	copy(g.Anchor[:], v[16:])
	if g.Lo == 0 || g.Hi < g.Lo {
		return nil, fmt.Errorf("bad %q entry: range %d..%d", metaMissing, g.Lo, g.Hi)
	}
	return g, nil
}

// normGap returns nil for an empty range, and Lo at least 1.
func normGap(g *Gap) *Gap {
	if g == nil || g.Hi == 0 {
		return nil
	}
	c := *g
	c.Lo = max(c.Lo, 1)
	if c.Hi < c.Lo {
		return nil
	}
	return &c
}

func putGap(tx *bolt.Tx, g *Gap) error {
	m := tx.Bucket(metaBucket)
	if g == nil {
		return m.Delete(metaMissing)
	}
	v := binary.BigEndian.AppendUint64(make([]byte, 0, 48), g.Lo)
	v = binary.BigEndian.AppendUint64(v, g.Hi)
	return m.Put(metaMissing, append(v, g.Anchor[:]...))
}

// Missing returns the range of records the store does not hold yet, or
// nil when it holds every record up to its highest one.
func (s *Store) Missing() *Gap {
	if g := s.missing.Load(); g != nil {
		c := *g
		return &c
	}
	return nil
}

// Replace deletes every record, stores recs and records gap (nil:
// nothing missing) as the range the store does not hold, in one
// transaction: a node installing a snapshot's tail.
func (s *Store) Replace(recs []Record, gap *Gap) error {
	gap = normGap(gap)
	s.gapMu.Lock()
	defer s.gapMu.Unlock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketName); err != nil {
			return err
		}
		b, err := tx.CreateBucket(bucketName)
		if err != nil {
			return err
		}
		return putRange(tx, b, recs, gap)
	})
	if err == nil {
		s.missing.Store(gap)
	}
	return wrap("replace", err)
}

// Extend keeps the records, stores recs above them and records gap as the
// range between, in one transaction: a node far behind installing a
// snapshot's tail. It fails if a range is already missing.
func (s *Store) Extend(recs []Record, gap *Gap) error {
	gap = normGap(gap)
	s.gapMu.Lock()
	defer s.gapMu.Unlock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		if cur, err := decodeGap(tx.Bucket(metaBucket).Get(metaMissing)); err != nil || cur != nil {
			return errors.Join(err, ErrGapChanged)
		}
		return putRange(tx, tx.Bucket(bucketName), recs, gap)
	})
	if err == nil {
		s.missing.Store(gap)
	}
	return wrap("extend", err)
}

// putRange puts recs, none of which may lie in gap, and records gap.
func putRange(tx *bolt.Tx, b *bolt.Bucket, recs []Record, gap *Gap) error {
	b.FillPercent = 1.0
	for _, r := range recs {
		if r.Seq == 0 || (gap != nil && r.Seq >= gap.Lo && r.Seq <= gap.Hi) {
			return fmt.Errorf("record %d is inside the missing range", r.Seq)
		}
		if err := b.Put(key(r.Seq), r.Data); err != nil {
			return fmt.Errorf("seq %d: %w", r.Seq, err)
		}
	}
	return putGap(tx, gap)
}

// ErrGapChanged is returned by FillGap when the missing range is no longer
// the one the records were checked against (a snapshot was restored
// meanwhile).
var ErrGapChanged = errors.New("ledger: the missing range changed")

// FillGap stores recs, which the caller has verified against expect (the
// missing range as Missing returned it), and shrinks the missing range to
// next, in one transaction. If the range is no longer expect it fails with
// ErrGapChanged. Every record must lie in expect, and next must be expect
// with a lower Hi below every record (nil: the range is filled). The range
// only shrinks from the top, so a crash never leaves a hole.
//
// With dropBelow, the records below expect.Lo are deleted too and next
// must be [1, expect.Lo-1]: the caller found that they do not link to the
// record at expect.Lo (they are not this chain's), so they become missing.
func (s *Store) FillGap(expect *Gap, recs []Record, next *Gap, dropBelow bool) error {
	next = normGap(next)
	s.gapMu.Lock()
	defer s.gapMu.Unlock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		cur, err := decodeGap(tx.Bucket(metaBucket).Get(metaMissing))
		if err != nil {
			return err
		}
		if cur == nil || expect == nil || *cur != *expect {
			return ErrGapChanged
		}
		low := cur.Hi + 1
		for _, r := range recs {
			if r.Seq < cur.Lo || r.Seq > cur.Hi {
				return fmt.Errorf("record %d is outside the range being filled", r.Seq)
			}
			low = min(low, r.Seq)
		}
		switch {
		case dropBelow && (next == nil || next.Lo != 1 || next.Hi != cur.Lo-1 || low != cur.Lo):
			return fmt.Errorf("dropping the records below %d needs the range filled to there and the next range [1, %d]", cur.Lo, cur.Lo-1)
		case !dropBelow && next == nil && low != cur.Lo:
			return fmt.Errorf("the range %d..%d is not filled", cur.Lo, cur.Hi)
		case !dropBelow && next != nil && (next.Lo != cur.Lo || next.Hi >= low):
			return fmt.Errorf("missing range %d..%d does not shrink from the top to %d..%d", cur.Lo, cur.Hi, next.Lo, next.Hi)
		}
		b := tx.Bucket(bucketName)
		// Each fill inserts a run of keys below all the ones above it:
		// full pages, as for appends (the default half-full split would
		// double a backfilled ledger's size).
		b.FillPercent = 1.0
		if dropBelow {
			c := b.Cursor()
			for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) < cur.Lo; k, _ = c.First() {
				if err := c.Delete(); err != nil {
					return err
				}
			}
		}
		for _, r := range recs {
			if err := b.Put(key(r.Seq), r.Data); err != nil {
				return fmt.Errorf("seq %d: %w", r.Seq, err)
			}
		}
		return putGap(tx, next)
	})
	if err == nil {
		s.missing.Store(next)
	}
	return wrap("fill gap", err)
}

func key(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	if errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrGapChanged) {
		return err
	}
	return fmt.Errorf("ledger: %s: %w", op, err)
}

// PutBatch writes recs in one transaction. A sequence number that already
// holds identical bytes is left as is (log replay after a restart); one that
// holds different bytes fails the whole batch with ErrConflict. Sequence
// number 0 is invalid.
func (s *Store) PutBatch(recs []Record) error {
	if len(recs) == 0 {
		return nil
	}
	return wrap("put", s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketName)
		b.FillPercent = 1.0
		// Records normally extend the ledger: a sequence number above the
		// highest one stored cannot be there yet, so only the others (log
		// replay) are looked up.
		var last uint64
		if k, _ := b.Cursor().Last(); k != nil {
			last = binary.BigEndian.Uint64(k)
		}
		for _, r := range recs {
			if r.Seq == 0 {
				return errors.New("sequence number 0 is invalid")
			}
			k := key(r.Seq)
			if r.Seq > last {
				last = r.Seq
			} else if old := b.Get(k); old != nil {
				if !bytes.Equal(old, r.Data) {
					return fmt.Errorf("%w: seq %d", ErrConflict, r.Seq)
				}
				continue
			}
			data := r.Data
			if data == nil {
				data = []byte{} // bbolt stores nil as empty; keep Get non-nil
			}
			if err := b.Put(k, data); err != nil {
				return fmt.Errorf("seq %d: %w", r.Seq, err)
			}
		}
		return nil
	}))
}

// Get returns a copy of the record at seq, or ErrNotFound.
func (s *Store) Get(seq uint64) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketName).Get(key(seq))
		if v == nil {
			return fmt.Errorf("%w: seq %d", ErrNotFound, seq)
		}
		out = bytes.Clone(v)
		if out == nil {
			out = []byte{}
		}
		return nil
	})
	return out, wrap("get", err)
}

// Last returns the highest sequence number and a copy of its record, or
// (0, nil, nil) when the store is empty.
func (s *Store) Last() (seq uint64, data []byte, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(bucketName).Cursor().Last()
		if k == nil {
			return nil
		}
		seq = binary.BigEndian.Uint64(k)
		data = append([]byte{}, v...)
		return nil
	})
	return seq, data, wrap("last", err)
}

// Scan calls fn for each record with seq >= from, in order, inside one read
// transaction. It stops at the first error fn returns and returns it. data
// is bbolt's memory-mapped page: it is valid only during fn and must not be
// modified; copy it to keep it. A long Scan holds a read transaction, which
// keeps the pages it sees from being reused (the file may grow meanwhile).
func (s *Store) Scan(from uint64, fn func(seq uint64, data []byte) error) error {
	var fnErr error
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketName).Cursor()
		for k, v := c.Seek(key(from)); k != nil; k, v = c.Next() {
			if err := fn(binary.BigEndian.Uint64(k), v); err != nil {
				fnErr = err
				return err
			}
		}
		return nil
	})
	if fnErr != nil {
		return fnErr // the caller's error, unwrapped
	}
	return wrap("scan", err)
}

// Count returns the number of records. It walks the bucket's pages: O(n).
func (s *Store) Count() (int, error) {
	var n int
	err := s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketName).Stats().KeyN
		return nil
	})
	return n, wrap("count", err)
}

// Reset deletes every record (e.g. before restoring a snapshot) and
// forgets any missing range.
func (s *Store) Reset() error {
	return s.Replace(nil, nil)
}

// Sync fsyncs the file. With NoSync, call it before the Raft log entries
// that produced the records are compacted away.
func (s *Store) Sync() error {
	return wrap("sync", s.db.Sync())
}

// Close closes the store. Further calls return ErrClosed.
func (s *Store) Close() error {
	return wrap("close", s.db.Close())
}

// ZeroHash is the previous-record link of the first record (seq 1).
var ZeroHash [32]byte

// Hash returns the SHA-256 of a record's stored bytes, exactly as stored:
// the chain link that the next record carries. Hashing the bytes themselves
// (rather than a re-encoding of decoded fields) means any verifier, in any
// language, hashes precisely what it read from the store or an export, and
// a change of encoder can never change or break the chain.
func Hash(record []byte) [32]byte {
	return sha256.Sum256(record)
}

// checkpointLabel separates checkpoint signatures from every other use of
// the signing key.
const checkpointLabel = "custos-checkpoint-v1\x00"

// CheckpointMessage returns the bytes a checkpoint signs (ECDSA P-256 over
// their SHA-256): "custos-checkpoint-v1\x00" || cluster id || 0x00 ||
// uint64 seq (big-endian) || head (32 bytes).
func CheckpointMessage(clusterID string, seq uint64, head []byte) []byte {
	b := make([]byte, 0, len(checkpointLabel)+len(clusterID)+1+8+len(head))
	b = append(b, checkpointLabel...)
	b = append(b, clusterID...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint64(b, seq)
	return append(b, head...)
}

// cosignatureLabel separates witness cosignatures from every other use of
// the witness's key.
const cosignatureLabel = "custos-witness-cosignature-v1\x00"

// CosignatureMessage returns the bytes a witness cosignature signs (ECDSA
// P-256 over their SHA-256, docs/witness.md):
// "custos-witness-cosignature-v1\x00" || cluster id || 0x00 || witness name
// || 0x00 || uint64 seq || head (32 bytes) || int64 time (Unix nanoseconds),
// integers big-endian.
func CosignatureMessage(clusterID, witness string, seq uint64, head []byte, timeUnixNano int64) []byte {
	b := make([]byte, 0, len(cosignatureLabel)+len(clusterID)+1+len(witness)+1+8+len(head)+8)
	b = append(b, cosignatureLabel...)
	b = append(b, clusterID...)
	b = append(b, 0)
	b = append(b, witness...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = append(b, head...)
	return binary.BigEndian.AppendUint64(b, uint64(timeUnixNano))
}
