// Package scale measures a node with a large decision ledger (docs/performance.md's target:
// "10 million decision records in the ledger: node RSS ≤ 300 MiB, restart
// to serving ≤ 10 s, disk ≤ 400 bytes per record").
//
// TestScale is skipped unless CUSTOS_SCALE_RECORDS is set to a
// comma-separated list of ledger sizes, e.g.
//
//	CUSTOS_SCALE_RECORDS=100000,1000000 go test -run TestScale -v -timeout 0 ./bench/scale/
//
// It starts one real node (nodetest: SoftHSM token, mTLS gRPC, Raft,
// bbolt ledger), creates a key, and fills the ledger with real decrypt
// decisions: Decide commands proposed through the node's own Raft node
// (raft.Node.ApplyAll, 256 commands an entry, as under load), applied by
// kms.State exactly as a Decrypt's are. At each size it reports, on
// stdout and in CUSTOS_SCALE_OUT (a file, if set):
//
//   - bytes on disk per record: the ledger file, the Raft log store and
//     the snapshots directory, separately (allocated blocks, du-style);
//   - the process's VmRSS / VmHWM / RssAnon / RssFile and Go heap, while
//     serving after the fill and after a restart;
//   - the time of an explicit Raft snapshot and its size;
//   - restart to serving: node.Close, then node.Start on the same data dir
//     and token, until the first Decrypt over gRPC succeeds.
//
// CUSTOS_SCALE_BACKFILL=1 also measures, at each size, a node without
// the records: the node's snapshot restored into an empty ledger, then the
// gap filled from the node's records (kms.State.PeerRecords and
// FillLedgerGap in windows of 512, in process: no gRPC, no TLS), with its
// time and the backfilled ledger's size.
//
// CUSTOS_SCALE_TRAILING_LOGS, if set, changes the node's Raft TrailingLogs
// (default 10240 entries; raft.Node.SetSnapshotPolicy) after every start,
// to see how much of the Raft log store stays live and mapped.
package scale

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/ledger"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

const (
	keyName   = "scale"
	principal = "app"
	// fillWorkers callers each propose fillBatch commands at a time.
	fillWorkers = 4
	fillBatch   = 256
)

func sizes(t *testing.T) []int {
	v := os.Getenv("CUSTOS_SCALE_RECORDS")
	if v == "" {
		t.Skip("set CUSTOS_SCALE_RECORDS=100000,1000000 to run the ledger scale measurement")
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			t.Fatalf("CUSTOS_SCALE_RECORDS: bad size %q", f)
		}
		out = append(out, n)
	}
	return out
}

// TestScale fills one node's ledger and measures it at each requested size.
func TestScale(t *testing.T) {
	want := sizes(t)
	h := nodetest.StartWith(t, func(c *node.Config) {
		// Production checkpoint cadence (nodetest's is every 20 records).
		c.CheckpointEvery = node.DefaultCheckpointEvery
		c.CheckpointInterval = node.DefaultCheckpointInterval
	})
	kc := custosv1.NewKeyServiceClient(h.Conn(t, principal))
	ctx := context.Background()
	if _, err := kc.CreateKey(ctx, &custosv1.CreateKeyRequest{Name: keyName}); err != nil {
		t.Fatal(err)
	}
	encCtx := map[string]string{"tenant": "acme"}
	enc, err := kc.Encrypt(ctx, &custosv1.EncryptRequest{Key: keyName, Plaintext: []byte("scale"), EncryptionContext: encCtx})
	if err != nil {
		t.Fatal(err)
	}
	decrypt := func(ctx context.Context) error {
		_, err := kc.Decrypt(ctx, &custosv1.DecryptRequest{Ciphertext: enc.GetCiphertext(), EncryptionContext: encCtx,
			Justification: &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED}})
		return err
	}
	if err := decrypt(ctx); err != nil {
		t.Fatal(err)
	}
	digest := kms.ContextDigest(encCtx)
	trailing, _ := strconv.ParseUint(os.Getenv("CUSTOS_SCALE_TRAILING_LOGS"), 10, 64)
	policy := func() {
		if trailing > 0 {
			if err := h.Node.Raft().SetSnapshotPolicy(0, trailing); err != nil {
				t.Fatal(err)
			}
		}
	}
	policy()
	report := newReport(t)
	report.printf("# ledger scale: %s, GOMAXPROCS %d, %d fill callers × %d commands, trailing logs %d (0: default)",
		time.Now().UTC().Format(time.RFC3339), runtime.GOMAXPROCS(0), fillWorkers, fillBatch, trailing)

	var filled int64
	for _, n := range want {
		seq, _ := h.Node.Service().State().LedgerHead()
		t0 := time.Now()
		fill(t, h.Node, int64(n)-int64(seq), digest)
		fillDur := time.Since(t0)
		seq, _ = h.Node.Service().State().LedgerHead()
		rate := float64(int64(seq)-filled) / fillDur.Seconds()
		filled = int64(seq)
		report.printf("\n## %d records (ledger head %d), filled at %.0f records/s", n, seq, rate)

		// Serving memory after the fill (as a long-running node has).
		report.mem("after fill")

		// An explicit snapshot: its time and size.
		t0 = time.Now()
		if err := h.Node.Raft().Snapshot(); err != nil {
			t.Fatalf("snapshot: %v", err)
		}
		report.printf("snapshot: %v", time.Since(t0).Round(time.Millisecond))
		report.mem("after snapshot")
		report.disk(h.Config.DataDir, seq)
		if os.Getenv("CUSTOS_SCALE_BACKFILL") == "1" {
			backfill(t, report, h.Node.Service().State())
		}

		// Restart to serving.
		t0 = time.Now()
		if err := h.Node.Close(); err != nil {
			t.Fatal(err)
		}
		closeDur := time.Since(t0)
		runtime.GC()
		debug.FreeOSMemory()
		resetHWM()
		t0 = time.Now()
		h.Restart(t) // Close is idempotent; this starts the node again
		started := time.Since(t0)
		policy()
		for {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := decrypt(cctx)
			cancel()
			if err == nil {
				break
			}
			if time.Since(t0) > 5*time.Minute {
				t.Fatalf("no decrypt 5 min after restart: %v", err)
			}
			time.Sleep(5 * time.Millisecond)
		}
		report.printf("restart: close %v, node.Start %v, first Decrypt after %v", closeDur.Round(time.Millisecond),
			started.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
		report.mem("after restart (HWM since restart)")
	}
}

// fill proposes n Decide commands through the node's Raft node.
func fill(t *testing.T, nd *node.Node, n int64, digest [32]byte) {
	if n <= 0 {
		return
	}
	var left atomic.Int64
	left.Store(n)
	var wg sync.WaitGroup
	errc := make(chan error, fillWorkers)
	for w := 0; w < fillWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := min(int64(fillBatch), left.Add(-fillBatch)+fillBatch)
				if k <= 0 {
					return
				}
				cmds := make([]*raftlogv1.Command, k)
				now := time.Now().UnixNano()
				for i := range cmds {
					var id [16]byte
					_, _ = rand.Read(id[:])
					cmds[i] = &raftlogv1.Command{TimeUnixNano: now, Node: nd.Raft().ID(), Principal: principal,
						Op: &raftlogv1.Command_Decide{Decide: &raftlogv1.Decide{
							Key: keyName, KeyVersion: 1, Operation: custosv1.Operation_OPERATION_DECRYPT,
							Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, ContextDigest: digest[:],
							RequestId: hex.EncodeToString(id[:]),
						}}}
				}
				vals, errs := nd.Raft().ApplyAll(context.Background(), cmds)
				for i := range cmds {
					if errs[i] != nil {
						errc <- errs[i]
						return
					}
					if d, ok := vals[i].(*kms.Decision); !ok || d.Err != nil {
						errc <- fmt.Errorf("decision %T: %v", vals[i], d)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		t.Fatalf("fill: %v", err)
	}
}

type report struct {
	t   *testing.T
	out *os.File
}

func newReport(t *testing.T) *report {
	r := &report{t: t}
	if p := os.Getenv("CUSTOS_SCALE_OUT"); p != "" {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = f.Close() })
		r.out = f
	}
	return r
}

func (r *report) printf(format string, a ...any) {
	s := fmt.Sprintf(format, a...)
	fmt.Println(s)
	if r.out != nil {
		fmt.Fprintln(r.out, s)
	}
}

// mem reports the process's memory (/proc/self/status) and the Go heap.
func (r *report) mem(when string) {
	st := procStatus()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.printf("memory %s: VmRSS %s (anon %s, file %s), VmHWM %s, Go heap in use %s, Go sys %s", when,
		mib(st["VmRSS"]), mib(st["RssAnon"]), mib(st["RssFile"]), mib(st["VmHWM"]),
		mib(int64(ms.HeapInuse)), mib(int64(ms.Sys)))
}

// disk reports the allocated size of the ledger, the Raft log store and
// the snapshots, in total and per record.
func (r *report) disk(dataDir string, records uint64) {
	parts := []struct{ name, path string }{
		{"ledger", filepath.Join(dataDir, "ledger")},
		{"raft log", filepath.Join(dataDir, "raft", "raft.db")},
		{"snapshots", filepath.Join(dataDir, "raft", "snapshots")},
	}
	var total int64
	var b strings.Builder
	for _, p := range parts {
		n := du(p.path)
		total += n
		fmt.Fprintf(&b, "%s %s (%.0f B/record), ", p.name, mib(n), float64(n)/float64(records))
	}
	fmt.Fprintf(&b, "total %s (%.0f B/record)", mib(total), float64(total)/float64(records))
	r.printf("disk: %s", b.String())
}

// du returns the bytes allocated to the files under path.
func du(path string) int64 {
	var n int64
	_ = filepath.WalkDir(path, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return n
}

// procStatus returns the kB fields of /proc/self/status, in bytes.
func procStatus() map[string]int64 {
	out := map[string]int64{}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) == 2 && fs[1] == "kB" {
			if n, err := strconv.ParseInt(fs[0], 10, 64); err == nil {
				out[k] = n << 10
			}
		}
	}
	return out
}

// resetHWM resets VmHWM to the current RSS (Linux ≥ 4.0).
func resetHWM() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// backfill restores st's snapshot into an empty ledger and fills the gap
// from st, reporting the time and the resulting ledger size.
func backfill(t *testing.T, r *report, st *kms.State) {
	snap, err := st.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := snap.Persist(&buf); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	dir := t.TempDir()
	l, err := ledger.Open(filepath.Join(dir, "ledger.db"), ledger.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fresh := kms.NewState(l)
	t0 := time.Now()
	if err := fresh.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	restored := time.Since(t0)
	g := fresh.LedgerGap()
	if g == nil {
		r.printf("backfill: nothing missing after restoring the snapshot")
		return
	}
	t0 = time.Now()
	for g != nil {
		from := g.Hi - min(512, g.Hi-g.Lo+1) + 1
		recs, err := st.PeerRecords(from, g.Hi)
		if err != nil {
			t.Fatalf("PeerRecords: %v", err)
		}
		if g, err = fresh.FillLedgerGap(from, recs); err != nil {
			t.Fatalf("FillLedgerGap: %v", err)
		}
	}
	took := time.Since(t0)
	head, _ := fresh.LedgerHead()
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	n := du(dir)
	r.printf("backfill (in process): restore of the snapshot %v, then %d records in %v (%.0f records/s); backfilled ledger %s (%.0f B/record)",
		restored.Round(time.Millisecond), head, took.Round(time.Millisecond), float64(head)/took.Seconds(), mib(n), float64(n)/float64(head))
}
