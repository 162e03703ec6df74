// The in-process mode's faults: the seeded schedule, kills and restarts,
// isolation, and healing at the end.

package robustness

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
)

// plannedFault is one entry of the seeded fault schedule.
type plannedFault struct {
	at     time.Duration
	kind   string // kill, leader-kill, isolate, kill+isolate
	node   int
	second int
	dur    time.Duration
}

// schedule is the fault plan for a run of length d: a pure function of
// the seed.
func schedule(seed uint64, d time.Duration) []plannedFault {
	rng := mrand.New(mrand.NewPCG(seed, 7))
	var out []plannedFault
	at := 2 * time.Second
	for at < d-3*time.Second {
		f := plannedFault{at: at, node: rng.IntN(numNodes), dur: time.Duration(500+rng.IntN(2500)) * time.Millisecond}
		switch x := rng.IntN(100); {
		case x < 30:
			f.kind = "kill"
		case x < 50:
			f.kind = "leader-kill"
		case x < 85:
			f.kind = "isolate"
		default:
			f.kind = "kill+isolate"
			f.second = (f.node + 1 + rng.IntN(numNodes-1)) % numNodes
		}
		out = append(out, f)
		at += f.dur + time.Duration(300+rng.IntN(1200))*time.Millisecond
	}
	return out
}

func (r *run) leader() int {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for i, m := range r.c.Members {
			if m.Node != nil && !r.isolated[i] && m.Node.Raft().IsLeader() {
				return i
			}
		}
	}
	return -1
}

func (r *run) kill(i int, note string) {
	m := r.c.Members[i]
	if m.Node == nil {
		return
	}
	r.h.AddFault(Fault{Kind: "kill", Node: i, Note: note})
	if err := m.Node.Close(); err != nil {
		r.h.AddFault(Fault{Kind: "close-error", Node: i, Note: err.Error()})
	}
	m.Node = nil
	r.killed[i] = true
}

func (r *run) restart(i int) error {
	m := r.c.Members[i]
	if m.Node != nil {
		return nil
	}
	if r.lost[i] != "" {
		return errors.New(r.lost[i])
	}
	if werr := walUnreadable(m.Config.DataDir); werr != nil {
		// node.Start would panic in hashicorp/raft.NewRaft and leak the
		// node's Raft listener: record it and rebuild the node instead.
		msg := "node.Start would panic in raft.NewRaft: " + werr.Error()
		r.broken[i] = append(r.broken[i], msg)
		r.h.AddFault(Fault{Kind: "restart-panic", Node: i, Note: msg})
		nd, err := r.rebuild(i)
		if err != nil {
			r.lost[i] = err.Error()
			return err
		}
		m.Node = nd
		r.killed[i] = false
		return nil
	}
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		var nd *node.Node
		if err = m.Listen(); err == nil {
			nd, err = startNode(m.Config)
		}
		var p *startPanic
		if errors.As(err, &p) {
			// The node's stored state cannot be opened again (a violation,
			// reported by verifyLedgers). Do what an operator would: wipe
			// its Raft state and ledger and let it rejoin from the leader
			// (its HSM token, and so node 1's domain key, is kept).
			r.broken[i] = append(r.broken[i], err.Error())
			r.h.AddFault(Fault{Kind: "restart-panic", Node: i, Note: err.Error()})
			if nd, err = r.rebuild(i); err == nil {
				m.Node = nd
				r.killed[i] = false
				return nil
			}
			r.lost[i] = err.Error()
			return err
		}
		if err == nil {
			m.Node = nd
			r.killed[i] = false
			r.h.AddFault(Fault{Kind: "restart", Node: i})
			return nil
		}
		r.h.AddFault(Fault{Kind: "restart-failed", Node: i, Note: err.Error()})
		time.Sleep(time.Second)
	}
	return err
}

// rebuild wipes member i's Raft state and ledger and starts it as a
// joining node, which the leader (it is still a voter) brings up to date.
func (r *run) rebuild(i int) (*node.Node, error) {
	m := r.c.Members[i]
	for _, d := range []string{"raft", "ledger"} {
		if err := os.RemoveAll(filepath.Join(m.Config.DataDir, d)); err != nil {
			return nil, err
		}
	}
	m.Config.Join = true
	if err := m.Listen(); err != nil {
		return nil, err
	}
	nd, err := startNode(m.Config)
	if err != nil {
		r.h.AddFault(Fault{Kind: "rebuild-failed", Node: i, Note: err.Error()})
		return nil, fmt.Errorf("rebuild after %s: %w", r.broken[i][len(r.broken[i])-1], err)
	}
	r.h.AddFault(Fault{Kind: "rebuild", Node: i, Note: "raft state and ledger wiped, rejoined"})
	return nd, nil
}

// startPanic is a panic of node.Start (e.g. in hashicorp/raft's NewRaft
// on a log store it cannot read).
type startPanic struct{ v any }

func (p *startPanic) Error() string { return fmt.Sprintf("node.Start panicked: %v", p.v) }

func startNode(cfg node.Config) (nd *node.Node, err error) {
	defer func() {
		if v := recover(); v != nil {
			nd, err = nil, &startPanic{v}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), nodetest.StartTimeout)
	defer cancel()
	return node.Start(ctx, cfg)
}

func (r *run) isolate(i int, on bool) {
	r.c.Members[i].Isolated.Store(on)
	r.isolated[i] = on
	kind := "isolate"
	if !on {
		kind = "heal"
	}
	r.h.AddFault(Fault{Kind: kind, Node: i})
}

// faults runs the seeded schedule until ctx ends; it leaves healing to
// heal.
func (r *run) faults(ctx context.Context, d time.Duration) {
	start := time.Now()
	for _, f := range schedule(r.seed, d) {
		if !sleepCtx(ctx, time.Until(start.Add(f.at))) {
			return
		}
		switch f.kind {
		case "kill":
			r.kill(f.node, "")
		case "leader-kill":
			l := r.leader()
			if l < 0 {
				l = f.node
			}
			r.kill(l, "leader")
			f.node = l
		case "isolate":
			r.isolate(f.node, true)
		case "kill+isolate":
			r.kill(f.node, "with isolate of node"+strconv.Itoa(f.second+1))
			r.isolate(f.second, true)
		}
		sleepCtx(ctx, f.dur)
		switch f.kind {
		case "kill", "leader-kill":
			_ = r.restart(f.node)
		case "isolate":
			r.isolate(f.node, false)
		case "kill+isolate":
			r.isolate(f.second, false)
			_ = r.restart(f.node)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

func (r *run) heal() {
	for i := range numNodes {
		if r.isolated[i] {
			r.isolate(i, false)
		}
	}
	for i := range numNodes {
		if err := r.restart(i); err != nil {
			var p *startPanic
			if r.lost[i] == "" && !errors.As(err, &p) {
				r.t.Fatalf("seed %d: node%d does not restart after the run: %v", r.seed, i+1, err)
			}
		}
	}
	if r.live() < 2 {
		r.t.Fatalf("seed %d: fewer than two nodes could be restarted: %q", r.seed, r.lost)
	}
}

// live returns the number of nodes running after heal.
func (r *run) live() int {
	n := 0
	for _, m := range r.c.Members {
		if m.Node != nil {
			n++
		}
	}
	return n
}
