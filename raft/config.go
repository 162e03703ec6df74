package raft

import (
	"errors"
	"log/slog"
	"time"

	hraft "github.com/hashicorp/raft"
)

// Defaults applied by Open to zero Config fields.
const (
	DefaultAddr              = "127.0.0.1:0"
	DefaultSnapshotThreshold = 8192
	DefaultSnapshotInterval  = 15 * time.Second
	DefaultTrailingLogs      = 4096
	DefaultApplyTimeout      = 10 * time.Second
	DefaultMaxBatch          = 256
	DefaultMaxInFlight       = 4
)

// Config configures a Node.
type Config struct {
	// ID is this server's Raft id; it must be unique and stable. Required.
	ID string
	// Dir holds the Raft state: Dir/raft.db (log and stable store, bbolt) and
	// Dir/snapshots (file snapshots, two retained). Required.
	Dir string
	// Addr is the TCP bind address of the Raft transport, e.g.
	// "10.0.0.5:7000". Default "127.0.0.1:0" (loopback, ephemeral port),
	// which only suits tests and single-node development. Ignored when
	// Transport is set.
	Addr string
	// Advertise is the address other servers dial, if it differs from the
	// bound address (needed when Addr binds an unspecified IP). Optional.
	Advertise string
	// Transport, if set, is used instead of a plain TCP transport (e.g. an
	// mTLS stream layer). The caller owns it: Close does not close it.
	// Open never replicates over its AppendEntriesPipeline (nopipeline.go).
	Transport hraft.Transport
	// Bootstrap forms a single-voter cluster of this server when Dir has no
	// Raft state yet. It is ignored when state exists, so it is safe to leave
	// on across restarts.
	Bootstrap bool
	// Logger receives the node's own logs and hashicorp/raft's logs at WARN
	// and above. Default slog.Default().
	Logger *slog.Logger

	// SnapshotThreshold is how many applied entries trigger an automatic
	// snapshot (checked every SnapshotInterval). Default 8192.
	SnapshotThreshold uint64
	// SnapshotInterval is how often raft checks whether to snapshot. Default
	// 15s: custos snapshots are small (the state and the ledger's head and
	// tail, not every record: docs/raft-log.md), so checking often keeps the
	// log — and the Raft log store's file, which is mapped in memory — short
	// under load.
	SnapshotInterval time.Duration
	// TrailingLogs is how many entries are kept in the log after a snapshot
	// (so slow followers catch up without a snapshot). Default 4096; a
	// follower further behind installs a snapshot and backfills the ledger
	// records below it from its peers.
	TrailingLogs uint64
	// ApplyTimeout bounds how long a proposal may wait to be accepted by the
	// raft leader loop (hashicorp's enqueue timeout), and is the default
	// timeout for membership changes and barriers without a ctx deadline.
	// Default 10s.
	ApplyTimeout time.Duration
	// MaxBatch is the most commands packed into one log entry. Default 256.
	MaxBatch int
	// MaxInFlight is the most entries proposed and not yet resolved. While
	// all are in flight, new commands queue and are packed into the next
	// entry. Default 4.
	MaxInFlight int
	// LocalTimeouts selects short heartbeat/election timeouts suited to
	// loopback clusters in tests. Production keeps hashicorp's defaults (1s).
	LocalTimeouts bool
}

func (c Config) withDefaults() (Config, error) {
	if c.ID == "" {
		return c, errors.New("raft: Config.ID is required")
	}
	if c.Dir == "" {
		return c, errors.New("raft: Config.Dir is required")
	}
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = DefaultSnapshotThreshold
	}
	if c.SnapshotInterval <= 0 {
		c.SnapshotInterval = DefaultSnapshotInterval
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = DefaultTrailingLogs
	}
	if c.ApplyTimeout <= 0 {
		c.ApplyTimeout = DefaultApplyTimeout
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	return c, nil
}

func (c Config) raftConfig(logger *hclogAdapter) *hraft.Config {
	rc := hraft.DefaultConfig()
	rc.LocalID = hraft.ServerID(c.ID)
	rc.Logger = logger
	rc.SnapshotThreshold = c.SnapshotThreshold
	rc.SnapshotInterval = c.SnapshotInterval
	rc.TrailingLogs = c.TrailingLogs
	// Let the leader loop pack concurrently proposed entries into one
	// log-store write (up to MaxAppendEntries).
	rc.BatchApplyCh = true
	rc.NoLegacyTelemetry = true
	if c.LocalTimeouts {
		// Short enough for quick failover tests, long enough not to flap
		// on a loaded 2-core CI machine under the race detector.
		rc.HeartbeatTimeout = 500 * time.Millisecond
		rc.ElectionTimeout = 500 * time.Millisecond
		rc.LeaderLeaseTimeout = 250 * time.Millisecond
		rc.CommitTimeout = 10 * time.Millisecond
	}
	return rc
}
