package main

import (
	"fmt"
	"strings"
)

// The cost model of a multi-node cluster. On the benchmark's machine the
// nodes and the load generator share the same cores, so N nodes cannot
// out-run one there; what the run can show is what each node spends per
// operation, and from that the rate N separate machines of the same size
// would reach.

// The goals of the cost model for a spread load on targetNodes nodes, at the
// concurrency of targetDecryptConc (figures to compare, not assertions).
const (
	// goalSumOverSingle: the nodes' summed CPU per operation at most this
	// many times one node's.
	goalSumOverSingle = 1.5
	// goalProjectedOverSingle: the throughput projected to one machine per
	// node at least this many times one node's measured rate.
	goalProjectedOverSingle = 2.0
)

// nodeCPU is one node's CPU time per operation of the whole cluster, µs.
type nodeCPU struct {
	ID       string  `json:"id"`
	CPUPerOp float64 `json:"cpu_us_per_op"`
}

// costRow is the cost model of one multi-node point.
type costRow struct {
	Name        string `json:"name"`
	Nodes       int    `json:"nodes"`
	Load        string `json:"load"`
	Concurrency int    `json:"concurrency"`
	// Leader is the Raft leader after the point (empty if unknown).
	Leader string `json:"leader,omitempty"`
	// ItemsPerOp is the data keys of one operation (BatchDecrypt: 100);
	// the rates below count them, the CPU figures are per operation.
	ItemsPerOp int `json:"items_per_op,omitempty"`
	// PerNode is each node's CPU time over the point divided by all the
	// cluster's operations in it (whichever node received them), in node
	// order; SumCPUPerOp their sum. The custosd dev supervisor is not a
	// node: SupervisorCPUPerOp is shown apart and counted nowhere.
	PerNode            []nodeCPU `json:"per_node"`
	SumCPUPerOp        float64   `json:"sum_cpu_us_per_op"`
	SupervisorCPUPerOp *float64  `json:"supervisor_cpu_us_per_op,omitempty"`
	// MeasuredRate is what the cluster did on this machine (ops/s, data
	// keys/s for BatchDecrypt).
	MeasuredRate float64 `json:"measured_rate"`
	// Cores is the cores of one machine (this one's); ProjectedOpsPerSec
	// the operations a second N machines of Cores cores each would serve,
	// min over nodes of Cores × 10^6 / the node's CPU µs per op, and
	// BoundBy the node that sets it; ProjectedRate is ProjectedOpsPerSec
	// in data keys/s.
	Cores              int     `json:"cores_per_machine"`
	ProjectedOpsPerSec float64 `json:"projected_ops_per_sec"`
	ProjectedRate      float64 `json:"projected_rate"`
	BoundBy            string  `json:"bound_by"`
	// The single node at the same operation and concurrency, in the same
	// run: its CPU per op and measured rate, the sum over it and the
	// projection over it (nil without such a point).
	SingleCPUPerOp      *float64 `json:"single_node_cpu_us_per_op,omitempty"`
	SingleRate          *float64 `json:"single_node_rate,omitempty"`
	SumOverSingle       *float64 `json:"sum_over_single_cpu,omitempty"`
	ProjectedOverSingle *float64 `json:"projected_over_single_rate,omitempty"`
	// SingleProjectedRate is the same projection for the single node, on
	// one machine of Cores cores to itself (Cores × 10^6 / its CPU per
	// op, in data keys/s); ProjectedOverSingleProjected compares the two
	// projections, like with like (the measured single-node rate shares
	// its cores with the load generator).
	SingleProjectedRate          *float64 `json:"single_node_projected_rate,omitempty"`
	ProjectedOverSingleProjected *float64 `json:"projected_over_single_projected,omitempty"`
}

// projectThroughput returns the operations a second a cluster reaches when
// every node has a machine of cores cores to itself and spends cpuPerOp[i]
// µs of CPU per operation of the cluster: the smallest of cores × 10^6 /
// cpuPerOp[i], and the index of that node. A node with no measured CPU (≤ 0)
// bounds nothing; with none left it returns 0, -1.
func projectThroughput(cores int, cpuPerOp []float64) (opsPerSec float64, bound int) {
	bound = -1
	if cores <= 0 {
		return 0, -1
	}
	for i, us := range cpuPerOp {
		if us <= 0 {
			continue
		}
		if x := float64(cores) * 1e6 / us; bound < 0 || x < opsPerSec {
			opsPerSec, bound = x, i
		}
	}
	return opsPerSec, bound
}

// costModel derives a costRow from every multi-node scenario with every
// node's CPU measured, in sortedScenarios order.
func (r *report) costModel() []costRow {
	cores := r.Machine.NumCPU
	if cores <= 0 {
		return nil
	}
	type at struct {
		name string
		conc int
	}
	single := map[at]point{}
	for _, p := range r.Scenarios {
		if p.Nodes == 1 && p.Ops > 0 && p.NodeCPUPerOp != nil {
			single[at{p.Name, p.Concurrency}] = p
		}
	}
	ratio := func(a, b float64) *float64 {
		if b <= 0 {
			return nil
		}
		x := a / b
		return &x
	}
	var rows []costRow
	for _, p := range r.sortedScenarios() {
		if p.Nodes < 2 || p.Ops == 0 || len(p.PerNode) != p.Nodes {
			continue
		}
		row := costRow{Name: p.Name, Nodes: p.Nodes, Load: p.loadMode(), Concurrency: p.Concurrency, Leader: p.Leader,
			ItemsPerOp: p.ItemsPerOp, SupervisorCPUPerOp: p.SupervisorCPUPerOp, MeasuredRate: p.rate(), Cores: cores}
		cpus := make([]float64, 0, len(p.PerNode))
		for _, s := range p.PerNode {
			if s.CPUPerOp == nil {
				break
			}
			cpus = append(cpus, *s.CPUPerOp)
			row.PerNode = append(row.PerNode, nodeCPU{ID: s.ID, CPUPerOp: *s.CPUPerOp})
			row.SumCPUPerOp += *s.CPUPerOp
		}
		if len(cpus) != len(p.PerNode) {
			continue
		}
		ops, bound := projectThroughput(cores, cpus)
		if bound < 0 {
			continue
		}
		row.ProjectedOpsPerSec, row.BoundBy = ops, p.PerNode[bound].ID
		row.ProjectedRate = ops * float64(max(p.ItemsPerOp, 1))
		if q, ok := single[at{p.Name, p.Concurrency}]; ok {
			cpu, rate := *q.NodeCPUPerOp, q.rate()
			row.SingleCPUPerOp, row.SingleRate = &cpu, &rate
			row.SumOverSingle = ratio(row.SumCPUPerOp, cpu)
			row.ProjectedOverSingle = ratio(row.ProjectedRate, rate)
			if ops1, _ := projectThroughput(cores, []float64{cpu}); ops1 > 0 {
				rate1 := ops1 * float64(max(p.ItemsPerOp, 1))
				row.SingleProjectedRate = &rate1
				row.ProjectedOverSingleProjected = ratio(row.ProjectedRate, rate1)
			}
		}
		rows = append(rows, row)
	}
	return rows
}

// perNodeCPU lists the row's per-node CPU, node1 · node2 · …, the leader
// marked with *.
func (c costRow) perNodeCPU() string {
	parts := make([]string, len(c.PerNode))
	for i, n := range c.PerNode {
		parts[i] = fmtCPU(n.CPUPerOp)
		if n.ID == c.Leader {
			parts[i] += "*"
		}
	}
	return strings.Join(parts, " · ")
}

func fmtRatio(v *float64) string {
	if v == nil {
		return "–"
	}
	return fmt.Sprintf("%.2f×", *v)
}

func optRate(v *float64) string {
	if v == nil {
		return "–"
	}
	return fmt.Sprintf("%.0f", *v)
}

// costBlock writes the cost model table, when there is a row.
func (r *report) costBlock(w func(string, ...any)) {
	if len(r.CostModel) == 0 {
		return
	}
	cores := r.CostModel[0].Cores
	w("\n### Cost model: CPU per operation on each node, projected to one machine per node\n\n")
	w("Each node's CPU time over the point divided by all the cluster's operations in it, whichever node received them (µs; the leader marked *), their sum against one node's at the same C, and the rate that N separate machines of this one's size (%d cores each) would reach: every node's cores ÷ its CPU per op, the smallest wins (\"bound by\"). ", cores)
	w("On this machine the nodes and the load generator share the same cores, so the N-node rate measured here is not that projection; the projection assumes each node has its machine to itself (the load generator and the `custosd dev` supervisor elsewhere: the supervisor, which relays the nodes' output, is shown apart and counted nowhere), that the CPU per op stays as measured, and that the network and the disks add latency but no bound of their own. ")
	w("\"projected ÷ 1 node\" divides by the single node's rate measured here, where the load generator takes part of the same cores; the last two columns compare like with like: the single node alone on one machine of the same size (its cores ÷ its CPU per op) against the N machines. ")
	w("BatchDecrypt: CPU per call of %d data keys, rates in data keys/s.\n\n", batchItems)
	w("| operation | nodes | load | C | node CPU µs/op per node | sum | 1 node | sum ÷ 1 node | supervisor µs/op (not counted) | measured here, N nodes | projected, N machines (bound by) | measured, 1 node | projected ÷ 1 node | projected, 1 machine | N machines ÷ 1 machine |\n")
	w("|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, c := range r.CostModel {
		w("| %s | %d | %s | %d | %s | %s | %s | %s | %s | %.0f | %.0f (%s) | %s | %s | %s | %s |\n",
			opTitles[c.Name], c.Nodes, c.Load, c.Concurrency, c.perNodeCPU(), fmtCPU(c.SumCPUPerOp), optCPU(c.SingleCPUPerOp),
			fmtRatio(c.SumOverSingle), optCPU(c.SupervisorCPUPerOp), c.MeasuredRate, c.ProjectedRate, c.BoundBy,
			optRate(c.SingleRate), fmtRatio(c.ProjectedOverSingle), optRate(c.SingleProjectedRate), fmtRatio(c.ProjectedOverSingleProjected))
	}
	w("\nGoals on %d nodes with the load spread (at C=%d, else the highest C measured): the summed node CPU per operation within %.1f× of one node's, and the projected rate at least %.0f× one node's measured rate; see the targets below.\n",
		targetNodes, targetDecryptConc, goalSumOverSingle, goalProjectedOverSingle)
}

// costGoalRow picks the cost-model row the goals are judged on for an
// operation: spread load on targetNodes nodes with a single-node figure, at
// targetDecryptConc if there is one, else the highest concurrency.
func (r *report) costGoalRow(name string) *costRow {
	var best *costRow
	for i := range r.CostModel {
		c := &r.CostModel[i]
		if c.Name != name || c.Nodes != targetNodes || c.Load != loadSpread || c.SumOverSingle == nil {
			continue
		}
		switch {
		case best == nil:
			best = c
		case best.Concurrency == targetDecryptConc:
		case c.Concurrency == targetDecryptConc || c.Concurrency > best.Concurrency:
			best = c
		}
	}
	return best
}

// costTargets writes the goals of the cost model into the targets table,
// for Decrypt and BatchDecrypt when they were measured with a spread load.
func (r *report) costTargets(w func(string, ...any), met func(bool) string) {
	for _, name := range []string{"decrypt", "batch-decrypt"} {
		c := r.costGoalRow(name)
		if c == nil {
			continue
		}
		label := strings.SplitN(opTitles[name], " (", 2)[0]
		label = strings.SplitN(label, ",", 2)[0]
		unit := "ops/s"
		if c.ItemsPerOp > 1 {
			unit = "data keys/s"
		}
		w("| %d nodes, load spread: summed node CPU per %s ≤ %.1f× one node's | %s µs (%s) vs %s µs at C=%d: %s | %s |\n",
			c.Nodes, label, goalSumOverSingle, fmtCPU(c.SumCPUPerOp), c.perNodeCPU(), optCPU(c.SingleCPUPerOp), c.Concurrency,
			fmtRatio(c.SumOverSingle), met(*c.SumOverSingle <= goalSumOverSingle))
		if c.ProjectedOverSingle != nil {
			like := ""
			if c.ProjectedOverSingleProjected != nil {
				like = fmt.Sprintf(" (one node on a machine of its own: %.0f %s, %s)", *c.SingleProjectedRate, unit, fmtRatio(c.ProjectedOverSingleProjected))
			}
			w("| %d nodes, load spread: %s rate projected to %d machines of %d cores ≥ %.0f× one node's measured | %.0f %s (bound by %s) vs %.0f %s at C=%d: %s%s | %s |\n",
				c.Nodes, label, c.Nodes, c.Cores, goalProjectedOverSingle, c.ProjectedRate, unit, c.BoundBy, *c.SingleRate, unit, c.Concurrency,
				fmtRatio(c.ProjectedOverSingle), like, met(*c.ProjectedOverSingle >= goalProjectedOverSingle))
		}
	}
}
