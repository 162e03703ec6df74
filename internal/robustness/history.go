// Package robustness runs a three-node custos cluster under a mixed
// workload while a seeded fault injector kills, restarts, pauses and cuts
// off nodes, records every client operation in a History, and checks the
// history against the final ledgers (docs/robustness.md).
//
// The cluster, workload and fault injector live in the tests:
// robustness_test.go (TestRobustness, in-process nodes) and
// processes_test.go (TestRobustnessProcesses, custosd processes). This
// file and check.go hold the history and the checker, which need no
// cluster; proxy.go the link Proxy the process mode cuts links with.
package robustness

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
)

// OpKind is the kind of a client operation.
type OpKind string

// The operations the workload performs.
const (
	OpGenerateDataKey OpKind = "GenerateDataKey"
	OpDecrypt         OpKind = "Decrypt"
	OpRevoke          OpKind = "RevokeKey"
	OpDisable         OpKind = "DisableKey"
	OpEnable          OpKind = "EnableKey"
	OpSetPolicy       OpKind = "SetPolicy"
	OpApprove         OpKind = "ApproveRequest"
	OpDeny            OpKind = "DenyRequest"
)

// Governance reports whether k is an officer statement.
func (k OpKind) Governance() bool {
	switch k {
	case OpRevoke, OpDisable, OpEnable, OpSetPolicy, OpApprove, OpDeny:
		return true
	}
	return false
}

// FailoverNode is Op.Node for a call made through the clients/go client,
// which fails over across every node's address.
const FailoverNode = 3

// Op is one client call: what was asked, of which node, and what came back.
type Op struct {
	ID        int
	Client    string // workload goroutine, e.g. "client-2" or "officers"
	Kind      OpKind
	Node      int // member index the call went to, or FailoverNode
	Principal string
	Key       string
	Reason    string // Decrypt: justification reason
	Request   string // Approve/Deny: request id; SetPolicy: a summary
	Start     time.Time
	End       time.Time
	Code      codes.Code
	Err       string
	// DecisionSeq and RequestID: returned by Decrypt (ALLOW), or the
	// pending request id of a Decrypt held for approval.
	DecisionSeq uint64
	RequestID   string
	// DataKeyHash: SHA-256 (hex, shortened) of the data key returned by
	// GenerateDataKey or Decrypt; Wrapped names the GenerateDataKey op
	// whose wrapped key a Decrypt presented.
	DataKeyHash string
	Wrapped     int
	// Governance: the ledger position Submit returned and the SHA-256 of
	// the statement bytes (hex).
	LedgerSeq uint64
	StmtHash  string
}

// OK reports whether the call succeeded.
func (o *Op) OK() bool { return o.Code == codes.OK }

func (o *Op) String() string {
	var b strings.Builder
	node := fmt.Sprintf("node%d", o.Node+1)
	if o.Node == FailoverNode {
		node = "failover"
	}
	fmt.Fprintf(&b, "#%d %s %s %s %s key=%s", o.ID, o.Start.Format("15:04:05.000"), o.Kind, node, o.Principal, o.Key)
	if o.Reason != "" {
		fmt.Fprintf(&b, " reason=%s", o.Reason)
	}
	if o.Request != "" {
		fmt.Fprintf(&b, " req=%s", o.Request)
	}
	fmt.Fprintf(&b, " -> %s (%s)", o.Code, o.End.Sub(o.Start).Round(time.Millisecond))
	if o.DecisionSeq != 0 {
		fmt.Fprintf(&b, " decision_seq=%d", o.DecisionSeq)
	}
	if o.RequestID != "" {
		fmt.Fprintf(&b, " request_id=%s", o.RequestID)
	}
	if o.LedgerSeq != 0 {
		fmt.Fprintf(&b, " ledger_seq=%d", o.LedgerSeq)
	}
	if o.DataKeyHash != "" {
		fmt.Fprintf(&b, " dk=%s", o.DataKeyHash)
	}
	if o.Err != "" && o.Code != codes.OK {
		e := o.Err
		if len(e) > 120 {
			e = e[:120] + "…"
		}
		fmt.Fprintf(&b, " err=%q", e)
	}
	return b.String()
}

// Fault is one injected fault, as it happened.
type Fault struct {
	At   time.Time
	Kind string // kill, restart, isolate, heal, leader-kill
	Node int
	Note string
}

func (f Fault) String() string {
	s := fmt.Sprintf("%s %s node%d", f.At.Format("15:04:05.000"), f.Kind, f.Node+1)
	if f.Note != "" {
		s += " (" + f.Note + ")"
	}
	return s
}

// History is the record of a run: every client operation and every fault.
// It is safe for concurrent use.
type History struct {
	mu     sync.Mutex
	ops    []*Op
	faults []Fault
}

// Begin records the start of an operation and returns it; fill in the
// result and call Finish.
func (h *History) Begin(o *Op) *Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	o.ID = len(h.ops)
	o.Start = time.Now()
	h.ops = append(h.ops, o)
	return o
}

// Finish records the end of o with err's status.
func (h *History) Finish(o *Op, code codes.Code, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	o.End = time.Now()
	o.Code = code
	if err != nil {
		o.Err = err.Error()
	}
}

// AddFault records a fault.
func (h *History) AddFault(f Fault) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if f.At.IsZero() {
		f.At = time.Now()
	}
	h.faults = append(h.faults, f)
}

// Ops returns the operations in the order they began.
func (h *History) Ops() []*Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*Op(nil), h.ops...)
}

// Faults returns the faults in the order they were injected.
func (h *History) Faults() []Fault {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Fault(nil), h.faults...)
}

// Summary counts operations by kind and result code, and faults by kind.
func (h *History) Summary() string {
	ops, faults := h.Ops(), h.Faults()
	type row struct{ total, ok int }
	byKind := map[OpKind]*row{}
	codesBy := map[OpKind]map[codes.Code]int{}
	for _, o := range ops {
		r := byKind[o.Kind]
		if r == nil {
			r = &row{}
			byKind[o.Kind] = r
			codesBy[o.Kind] = map[codes.Code]int{}
		}
		r.total++
		if o.OK() {
			r.ok++
		}
		codesBy[o.Kind][o.Code]++
	}
	var kinds []string
	for k := range byKind {
		kinds = append(kinds, string(k))
	}
	sort.Strings(kinds)
	var b strings.Builder
	fmt.Fprintf(&b, "| operation | calls | ok | other results |\n|---|---:|---:|---|\n")
	total, ok := 0, 0
	for _, k := range kinds {
		r := byKind[OpKind(k)]
		total += r.total
		ok += r.ok
		var other []string
		for c, n := range codesBy[OpKind(k)] {
			if c != codes.OK {
				other = append(other, fmt.Sprintf("%s %d", c, n))
			}
		}
		sort.Strings(other)
		fmt.Fprintf(&b, "| %s | %d | %d | %s |\n", k, r.total, r.ok, strings.Join(other, ", "))
	}
	fmt.Fprintf(&b, "| **all** | %d | %d | |\n", total, ok)
	fc := map[string]int{}
	for _, f := range faults {
		fc[f.Kind]++
	}
	var fk []string
	for k, n := range fc {
		fk = append(fk, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(fk)
	fmt.Fprintf(&b, "\nfaults injected: %d (%s)\n", len(faults), strings.Join(fk, ", "))
	return b.String()
}

// keyCrypto reports whether k is a key-crypto call (one that needs the
// domain key on the node that serves it).
func keyCrypto(k OpKind) bool { return k == OpGenerateDataKey || k == OpDecrypt }

// NodeCrypto counts the key-crypto calls (GenerateDataKey, Decrypt) made
// to one node, or through the failover client.
type NodeCrypto struct {
	Calls, OK int
	// Generated and Released count the successful GenerateDataKey and
	// Decrypt calls.
	Generated, Released int
}

// CryptoByNode counts key-crypto calls per node (index FailoverNode: the
// failover client).
func CryptoByNode(ops []*Op) [FailoverNode + 1]NodeCrypto {
	var out [FailoverNode + 1]NodeCrypto
	for _, o := range ops {
		if !keyCrypto(o.Kind) || o.Node < 0 || o.Node > FailoverNode {
			continue
		}
		c := &out[o.Node]
		c.Calls++
		if o.OK() {
			c.OK++
			if o.Kind == OpGenerateDataKey {
				c.Generated++
			} else {
				c.Released++
			}
		}
	}
	return out
}

// Down is a time a node was down: from its kill (or crash) to its next
// restart (or rebuild).
type Down struct{ From, To time.Time }

// DownTimes returns node n's down times in faults; one still open at the
// end ends at end.
func DownTimes(faults []Fault, n int, end time.Time) []Down {
	var out []Down
	var from time.Time
	for _, f := range faults {
		if f.Node != n {
			continue
		}
		switch f.Kind {
		case "kill", "crashed", "start-failed":
			if from.IsZero() {
				from = f.At
			}
		case "restart", "rebuild":
			if !from.IsZero() {
				out = append(out, Down{from, f.At})
				from = time.Time{}
			}
		}
	}
	if !from.IsZero() {
		out = append(out, Down{from, end})
	}
	return out
}

// ServedWhileDown counts the successful key-crypto calls made directly to
// another node than n that began and ended while n was down.
func ServedWhileDown(ops []*Op, downs []Down, n int) (generated, released int) {
	for _, o := range ops {
		if !keyCrypto(o.Kind) || !o.OK() || o.Node == n || o.Node == FailoverNode {
			continue
		}
		for _, d := range downs {
			if !o.Start.Before(d.From) && !o.End.After(d.To) {
				if o.Kind == OpGenerateDataKey {
					generated++
				} else {
					released++
				}
				break
			}
		}
	}
	return generated, released
}

// CryptoSummary reports key crypto per node and what nodes 2 and 3 served
// while node 1 (index 0), which initialised the cluster, was down.
func (h *History) CryptoSummary() string {
	ops, faults := h.Ops(), h.Faults()
	var b strings.Builder
	b.WriteString("key crypto by node (GenerateDataKey + Decrypt: ok/calls, data keys generated, released):")
	for i, c := range CryptoByNode(ops) {
		name := fmt.Sprintf("node%d", i+1)
		if i == FailoverNode {
			name = "failover"
		}
		sep := ","
		if i == 0 {
			sep = ""
		}
		fmt.Fprintf(&b, "%s %s %d/%d, %d, %d", sep, name, c.OK, c.Calls, c.Generated, c.Released)
	}
	b.WriteString("\n")
	var end time.Time
	if len(ops) > 0 {
		end = ops[len(ops)-1].End
	}
	downs := DownTimes(faults, 0, end)
	var total time.Duration
	for _, d := range downs {
		total += d.To.Sub(d.From)
	}
	g, r := ServedWhileDown(ops, downs, 0)
	fmt.Fprintf(&b, "while node1 was down (%d times, %s in all): nodes 2 and 3 generated %d data keys and released %d\n",
		len(downs), total.Round(100*time.Millisecond), g, r)
	return b.String()
}
