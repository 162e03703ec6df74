package raft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	hraft "github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// LogStore is the Raft log and stable store: one bbolt file (Dir/raft.db),
// fsynced on every commit. Log entries are keyed by their big-endian index;
// an entry is encoded as
//
//	version (1) | term (uvarint) | type (1) | appended-at Unix ns (varint) |
//	len(data) (uvarint) | data | len(extensions) (uvarint) | extensions
//
// raft-wal v0.4.0 was used first and dropped: after Raft truncated a log
// suffix (a leader that lost its uncommitted tail), it sealed a segment
// without its index, and the node could never start again ("sealed segment
// has no index block"; found by internal/robustness). bbolt deletes a range
// inside one transaction.
type LogStore struct {
	db *bolt.DB
}

var (
	logsBucket   = []byte("logs")
	stableBucket = []byte("stable")
	// errKeyNotFound: hashicorp/raft compares this error's text.
	errKeyNotFound = errors.New("not found")
)

var (
	_ hraft.LogStore    = (*LogStore)(nil)
	_ hraft.StableStore = (*LogStore)(nil)
)

// OpenLogStore opens (or creates) a LogStore at path.
func OpenLogStore(path string) (*LogStore, error) {
	// NoFreelistSync: bbolt does not write its freelist with every commit
	// but rebuilds it at open by walking the tree. Raft compacts this log
	// after each snapshot, which frees thousands of pages, and every later
	// commit then rewrote the whole freelist (~110 KB, fsynced, for a 1 KB
	// entry: BenchmarkLogStoreStoreLogs/compacted, ~35 % more CPU per
	// append). The walk at open is bounded because the log is: at most
	// SnapshotThreshold + TrailingLogs entries are live (unlike the ledger,
	// which keeps its freelist). etcd runs bbolt the same way.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second,
		FreelistType: bolt.FreelistMapType, NoFreelistSync: true})
	if err != nil {
		return nil, fmt.Errorf("raft: open log store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{logsBucket, stableBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("raft: open log store %s: %w", path, err)
	}
	return &LogStore{db: db}, nil
}

// Close closes the store.
func (s *LogStore) Close() error { return s.db.Close() }

func indexKey(i uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], i)
	return k[:]
}

// FirstIndex returns the first index written, 0 for an empty log.
func (s *LogStore) FirstIndex() (uint64, error) {
	var idx uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(logsBucket).Cursor().First(); k != nil {
			idx = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return idx, err
}

// LastIndex returns the last index written, 0 for an empty log.
func (s *LogStore) LastIndex() (uint64, error) {
	var idx uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(logsBucket).Cursor().Last(); k != nil {
			idx = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return idx, err
}

// GetLog reads the entry at index into log.
func (s *LogStore) GetLog(index uint64, log *hraft.Log) error {
	return s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(logsBucket).Get(indexKey(index))
		if v == nil {
			return hraft.ErrLogNotFound
		}
		return decodeLog(index, v, log)
	})
}

// StoreLog writes one entry.
func (s *LogStore) StoreLog(log *hraft.Log) error { return s.StoreLogs([]*hraft.Log{log}) }

// StoreLogs writes entries in one durable transaction.
func (s *LogStore) StoreLogs(logs []*hraft.Log) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(logsBucket)
		b.FillPercent = 0.95 // append-mostly
		for _, l := range logs {
			if err := b.Put(indexKey(l.Index), encodeLog(l)); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteRange deletes the entries min..max inclusive (a compacted prefix
// or a truncated suffix).
func (s *LogStore) DeleteRange(min, max uint64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(logsBucket).Cursor()
		for k, _ := c.Seek(indexKey(min)); k != nil && binary.BigEndian.Uint64(k) <= max; k, _ = c.Next() {
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
}

// Set stores a stable value.
func (s *LogStore) Set(key, val []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(stableBucket).Put(key, val) })
}

// Get reads a stable value; a missing key is an error whose text is
// "not found", as hashicorp/raft expects.
func (s *LogStore) Get(key []byte) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(stableBucket).Get(key)
		if v == nil {
			return errKeyNotFound
		}
		out = append([]byte(nil), v...)
		return nil
	})
	return out, err
}

// SetUint64 stores a stable integer.
func (s *LogStore) SetUint64(key []byte, val uint64) error { return s.Set(key, indexKey(val)) }

// GetUint64 reads a stable integer (0 and the "not found" error if unset).
func (s *LogStore) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("raft: stable value %q has %d bytes, want 8", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

const logFormat = 1

func encodeLog(l *hraft.Log) []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64*4+1+len(l.Data)+len(l.Extensions))
	b = append(b, logFormat)
	b = binary.AppendUvarint(b, l.Term)
	b = append(b, byte(l.Type))
	var at int64
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UnixNano()
	}
	b = binary.AppendVarint(b, at)
	b = binary.AppendUvarint(b, uint64(len(l.Data)))
	b = append(b, l.Data...)
	b = binary.AppendUvarint(b, uint64(len(l.Extensions)))
	return append(b, l.Extensions...)
}

func decodeLog(index uint64, v []byte, l *hraft.Log) error {
	bad := func(what string) error { return fmt.Errorf("raft: log entry %d: bad %s", index, what) }
	if len(v) < 1 || v[0] != logFormat {
		return bad("format version")
	}
	v = v[1:]
	term, n := binary.Uvarint(v)
	if n <= 0 {
		return bad("term")
	}
	v = v[n:]
	if len(v) < 1 {
		return bad("type")
	}
	typ := hraft.LogType(v[0])
	v = v[1:]
	at, n := binary.Varint(v)
	if n <= 0 {
		return bad("time")
	}
	v = v[n:]
	take := func(what string) ([]byte, error) {
		ln, n := binary.Uvarint(v)
		if n <= 0 || ln > uint64(len(v)-n) {
			return nil, bad(what)
		}
		out := append([]byte(nil), v[n:n+int(ln)]...)
		v = v[n+int(ln):]
		return out, nil
	}
	data, err := take("data")
	if err != nil {
		return err
	}
	ext, err := take("extensions")
	if err != nil {
		return err
	}
	if len(v) != 0 {
		return bad("length")
	}
	*l = hraft.Log{Index: index, Term: term, Type: typ, Data: data, Extensions: ext}
	if at != 0 {
		l.AppendedAt = time.Unix(0, at)
	}
	if len(l.Data) == 0 {
		l.Data = nil
	}
	if len(l.Extensions) == 0 {
		l.Extensions = nil
	}
	return nil
}
