// The process mode's faults: the seeded schedule (SIGKILL, SIGSTOP/SIGCONT,
// link faults through the proxies), their injection, and healing.

package robustness

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"syscall"
	"time"
)

// procFault is one entry of the process mode's fault schedule.
type procFault struct {
	at     time.Duration
	kind   string // kill, leader-kill, pause, leader-pause, partition, link-cut, blackhole, delay, kill+partition
	node   int
	second int // link-cut: the other end; kill+partition: the node cut off
	dur    time.Duration
	delay  time.Duration // delay: the added latency each way
}

// procSchedule is the process mode's fault plan for a run of length d: a
// pure function of the seed. From 2 s in until 3 s before the end, one
// fault at a time, each lasting 0.5–3 s, 0.3–1.5 s apart.
func procSchedule(seed uint64, d time.Duration) []procFault {
	rng := mrand.New(mrand.NewPCG(seed, 11))
	var out []procFault
	at := 2 * time.Second
	for at < d-3*time.Second {
		f := procFault{at: at, node: rng.IntN(numNodes), dur: time.Duration(500+rng.IntN(2500)) * time.Millisecond}
		switch x := rng.IntN(100); {
		case x < 15:
			f.kind = "kill"
		case x < 25:
			f.kind = "leader-kill"
		case x < 37:
			f.kind = "pause"
		case x < 47:
			f.kind = "leader-pause"
		case x < 62:
			f.kind = "partition"
		case x < 72:
			f.kind = "link-cut"
			f.second = (f.node + 1 + rng.IntN(numNodes-1)) % numNodes
		case x < 82:
			f.kind = "blackhole"
		case x < 94:
			f.kind = "delay"
			f.delay = time.Duration(20+rng.IntN(280)) * time.Millisecond
		default:
			f.kind = "kill+partition"
			f.second = (f.node + 1 + rng.IntN(numNodes-1)) % numNodes
		}
		out = append(out, f)
		at += f.dur + time.Duration(300+rng.IntN(1200))*time.Millisecond
	}
	return out
}

// procLeader returns the index of the node the running, unpaused nodes
// name as leader, or -1.
func (r *run) procLeader() int {
	for i, n := range r.pc.nodes {
		n.mu.Lock()
		paused := n.paused
		n.mu.Unlock()
		if paused || !n.running() {
			continue
		}
		st, err := r.status(i, time.Second)
		if err != nil || st.GetLeaderId() == "" {
			continue
		}
		for j, m := range r.pc.nodes {
			if m.id == st.GetLeaderId() {
				return j
			}
		}
	}
	return -1
}

func (r *run) procKill(i int, note string) {
	if r.pc.kill(i) {
		r.h.AddFault(Fault{Kind: "kill", Node: i, Note: note})
	}
}

func (r *run) procRestart(i int) {
	if r.pc.nodes[i].running() {
		return
	}
	if err := r.pc.start(i); err != nil {
		r.h.AddFault(Fault{Kind: "restart-failed", Node: i, Note: err.Error()})
		return
	}
	r.h.AddFault(Fault{Kind: "restart", Node: i})
}

// procFaults runs the seeded schedule until ctx ends. A node whose
// process exited by itself (e.g. its start found no leader within 30 s)
// is restarted before the next fault, as a supervisor would.
func (r *run) procFaults(ctx context.Context, d time.Duration) {
	pc := r.pc
	start := time.Now()
	for _, f := range procSchedule(r.seed, d) {
		if !sleepCtx(ctx, time.Until(start.Add(f.at))) {
			return
		}
		for i := range numNodes {
			r.procRestart(i)
		}
		switch f.kind {
		case "leader-kill", "leader-pause":
			if l := r.procLeader(); l >= 0 {
				f.node = l
			}
		}
		switch f.kind {
		case "kill", "leader-kill":
			r.procKill(f.node, strings.TrimSuffix(f.kind, "kill"))
		case "pause", "leader-pause":
			if pc.signal(f.node, syscall.SIGSTOP) {
				r.h.AddFault(Fault{Kind: "pause", Node: f.node, Note: fmt.Sprintf("SIGSTOP %s %s", strings.TrimSuffix(f.kind, "pause"), f.dur.Round(time.Millisecond))})
			}
		case "partition":
			pc.cut(f.node, Rule{Mode: Drop})
			r.h.AddFault(Fault{Kind: "partition", Node: f.node, Note: "links to both other nodes dropped"})
		case "link-cut":
			pc.link(f.node, f.second, Rule{Mode: Drop})
			r.h.AddFault(Fault{Kind: "link-cut", Node: f.node, Note: fmt.Sprintf("link to node%d dropped", f.second+1)})
		case "blackhole":
			pc.cut(f.node, Rule{Mode: Blackhole})
			r.h.AddFault(Fault{Kind: "blackhole", Node: f.node, Note: "links to both other nodes stalled"})
		case "delay":
			pc.cut(f.node, Rule{Mode: Delay, Delay: f.delay})
			r.h.AddFault(Fault{Kind: "delay", Node: f.node, Note: fmt.Sprintf("links delayed %s each way", f.delay)})
		case "kill+partition":
			r.procKill(f.node, fmt.Sprintf("with partition of node%d", f.second+1))
			pc.cut(f.second, Rule{Mode: Drop})
			r.h.AddFault(Fault{Kind: "partition", Node: f.second, Note: "links to both other nodes dropped"})
		}
		sleepCtx(ctx, f.dur)
		switch f.kind {
		case "kill", "leader-kill":
			r.procRestart(f.node)
		case "pause", "leader-pause":
			if pc.signal(f.node, syscall.SIGCONT) {
				r.h.AddFault(Fault{Kind: "resume", Node: f.node, Note: "SIGCONT"})
			}
		case "partition", "link-cut", "blackhole", "delay":
			pc.clearLinks()
			r.h.AddFault(Fault{Kind: "heal", Node: f.node})
		case "kill+partition":
			pc.clearLinks()
			r.h.AddFault(Fault{Kind: "heal", Node: f.second})
			r.procRestart(f.node)
		}
	}
}

// healProcs resumes paused nodes, lifts every link fault, restarts dead
// nodes and waits until every node answers. A node that cannot be
// started again is recorded (lost) and left out of the checks that need
// it; check (c) reports it.
func (r *run) healProcs() {
	pc := r.pc
	for i := range numNodes {
		if pc.signal(i, syscall.SIGCONT) {
			r.h.AddFault(Fault{Kind: "resume", Node: i, Note: "SIGCONT (heal)"})
		}
	}
	pc.clearLinks()
	deadline := time.Now().Add(procServeTimeout)
	for i := range numNodes {
		for {
			r.procRestart(i)
			if _, err := r.status(i, 2*time.Second); err == nil {
				break
			}
			if time.Now().After(deadline) {
				r.lost[i] = fmt.Sprintf("does not answer %s after the run: %s", procServeTimeout, lastLine(pc.nodes[i].logPath))
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	// A process that ended by itself other than by a start error
	// (node.Start failed: custosd exits 1 saying why, and is restarted, as
	// the in-process mode retries a failed start) is a violation of (c):
	// a crash, a panic, a signal.
	for _, f := range r.h.Faults() {
		if f.Kind == "crashed" {
			r.broken[f.Node] = append(r.broken[f.Node], "process crashed: "+f.Note)
		}
	}
	live := 0
	for i := range numNodes {
		if r.lost[i] == "" {
			live++
		}
	}
	if live < 2 {
		r.t.Fatalf("seed %d: fewer than two nodes answer after the run: %q", r.seed, r.lost)
	}
}

// sameHeadProcs waits until every answering node reports the same ledger
// sequence, up to d (check (c) later compares the exported records byte
// for byte).
func (r *run) sameHeadProcs(d time.Duration) (uint64, bool) {
	deadline := time.Now().Add(d)
	for {
		var seqs []uint64
		for i := range numNodes {
			if r.lost[i] != "" {
				continue
			}
			st, err := r.status(i, 2*time.Second)
			if err != nil {
				seqs = append(seqs, 0)
				continue
			}
			seqs = append(seqs, st.GetLedgerSeq())
		}
		same := len(seqs) > 0 && seqs[0] != 0
		for i := 1; i < len(seqs); i++ {
			if seqs[i] != seqs[0] {
				same = false
			}
		}
		if same {
			return seqs[0], true
		}
		if time.Now().After(deadline) {
			r.t.Logf("ledger heads differ: %v", seqs)
			if len(seqs) == 0 {
				return 0, false
			}
			return seqs[0], false
		}
		time.Sleep(100 * time.Millisecond)
	}
}
