package main

import (
	"cmp"
	"fmt"
	"html"
	"math"
	"slices"
	"strings"
	"time"
)

// Plot layout, in SVG user units.
const (
	plotPanelW  = 440
	plotPanelH  = 300
	plotLeft    = 80 // room for the y tick labels
	plotTop     = 64
	plotGap     = 110 // between the panels
	plotBottom  = 60  // room for the x tick labels and title
	plotLegendH = 22  // per legend row
)

// plotColors are the operations' colours, in knownOps order.
var plotColors = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#ff7f0e"}

// plotLabels are the operations' names in the legend.
var plotLabels = map[string]string{
	"gdk":           "GenerateDataKey",
	"decrypt":       "Decrypt",
	"reencrypt":     "ReEncrypt",
	"batch-decrypt": "BatchDecrypt, 100 keys a call (data keys/s)",
	opEnvelope1MiB:  "Envelope 1 MiB encrypt+decrypt (clients/go)",
}

// plotSeries is one line: an operation on one cluster size, in one load
// mode.
type plotSeries struct {
	name  string
	nodes int
	load  string
	pts   []point // by concurrency
}

// plotSVG draws the custos operations' rate (data keys/s for BatchDecrypt)
// and p99 latency against concurrency, both on log scales, one line per
// operation, cluster size and load mode (solid: 1 node, dashed: more with
// the load spread, dotted: more with the load to node1), as a
// self-contained SVG document.
func plotSVG(r *report) string {
	var series []*plotSeries
	for _, p := range r.sortedScenarios() {
		if p.Ops == 0 {
			continue
		}
		if n := len(series); n > 0 && series[n-1].name == p.Name && series[n-1].nodes == p.Nodes && series[n-1].load == p.loadMode() {
			series[n-1].pts = append(series[n-1].pts, p)
			continue
		}
		series = append(series, &plotSeries{name: p.Name, nodes: p.Nodes, load: p.loadMode(), pts: []point{p}})
	}
	var concs []int
	var rates, p99s []float64
	for _, s := range series {
		for _, p := range s.pts {
			if !slices.Contains(concs, p.Concurrency) {
				concs = append(concs, p.Concurrency)
			}
			rates = append(rates, p.rate())
			p99s = append(p99s, float64(p.P99)/float64(time.Millisecond))
		}
	}
	slices.Sort(concs)

	legendRows := (len(series) + 1) / 2
	width := plotLeft + 2*plotPanelW + plotGap + 30
	height := plotTop + plotPanelH + plotBottom + legendRows*plotLegendH + 20
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		width, height, width, height)
	w(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	w(`<text x="%d" y="20" font-size="14" font-weight="bold">custos-bench, %s (%d vCPU); each point %s</text>`+"\n",
		plotLeft, html.EscapeString(r.Date), r.Machine.NumCPU, html.EscapeString(r.Settings.Duration))
	if len(series) == 0 {
		w(`<text x="%d" y="%d">no custos operation was measured</text>`+"\n", plotLeft, plotTop+20)
		w("</svg>\n")
		return b.String()
	}

	// The x axis spans the concurrencies measured, with a margin.
	xAxis := logAxis{lo: float64(concs[0]) / 1.25, hi: float64(concs[len(concs)-1]) * 1.25}
	panels := []struct {
		title string
		x0    int
		axis  logAxis
		value func(point) float64
		unit  func(float64) string
	}{
		{"ops/s (BatchDecrypt: data keys/s)", plotLeft, newLogAxis(slices.Min(rates), slices.Max(rates)), point.rate, fmtCount},
		{"p99 latency", plotLeft + plotPanelW + plotGap, newLogAxis(slices.Min(p99s), slices.Max(p99s)),
			func(p point) float64 { return float64(p.P99) / float64(time.Millisecond) },
			fmtMillis},
	}
	for _, pn := range panels {
		x := func(c float64) float64 { return float64(pn.x0) + xAxis.frac(c)*plotPanelW }
		y := func(v float64) float64 { return float64(plotTop) + (1-pn.axis.frac(v))*plotPanelH }
		w(`<text x="%d" y="%d" font-size="13" font-weight="bold">%s</text>`+"\n", pn.x0, plotTop-10, html.EscapeString(pn.title))
		w(`<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444"/>`+"\n", pn.x0, plotTop, plotPanelW, plotPanelH)
		for _, c := range concs {
			xc := x(float64(c))
			w(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", xc, plotTop, xc, plotTop+plotPanelH)
			w(`<text x="%.1f" y="%d" text-anchor="middle">%d</text>`+"\n", xc, plotTop+plotPanelH+16, c)
		}
		w(`<text x="%d" y="%d" text-anchor="middle">concurrent callers (C)</text>`+"\n", pn.x0+plotPanelW/2, plotTop+plotPanelH+36)
		for _, t := range pn.axis.ticks() {
			yt := y(t)
			w(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", pn.x0, yt, pn.x0+plotPanelW, yt)
			w(`<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", pn.x0-6, yt, html.EscapeString(pn.unit(t)))
		}
		for _, s := range series {
			var pts []string
			for _, p := range s.pts {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(float64(p.Concurrency)), y(pn.value(p))))
			}
			color, dash := s.style()
			w(`<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.Join(pts, " "), color, dash)
			for _, pt := range pts {
				xy := strings.Split(pt, ",")
				w(`<circle cx="%s" cy="%s" r="3" fill="%s"/>`+"\n", xy[0], xy[1], color)
			}
		}
	}
	// Legend, two columns.
	ly := plotTop + plotPanelH + plotBottom
	for i, s := range series {
		lx := plotLeft + (i%2)*(plotPanelW+plotGap)
		yy := ly + (i/2)*plotLegendH
		color, dash := s.style()
		w(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>`+"\n", lx, yy, lx+30, yy, color, dash)
		label := plotLabels[s.name]
		if label == "" {
			label = s.name
		}
		w(`<text x="%d" y="%d" dominant-baseline="middle">%s — %s</text>`+"\n", lx+38, yy, html.EscapeString(label), html.EscapeString(nodesLabel(s.nodes, s.load)))
	}
	w("</svg>\n")
	return b.String()
}

// style returns the series' colour (by operation) and dash attribute (by
// cluster size and load mode).
func (s *plotSeries) style() (color, dash string) {
	i := slices.Index(knownOps, s.name)
	if i < 0 {
		i = len(knownOps)
	}
	color = plotColors[i%len(plotColors)]
	switch {
	case s.load == loadNode1:
		dash = ` stroke-dasharray="2,3"`
	case s.nodes > 1 || s.load != "":
		dash = ` stroke-dasharray="7,4"`
	}
	return color, dash
}

func nodesLabel(n int, load string) string {
	var s string
	switch n {
	case 0:
		s = "external cluster"
	case 1:
		s = "1 node"
	default:
		s = fmt.Sprintf("%d nodes", n)
	}
	switch load {
	case loadSpread:
		s += ", load spread"
	case loadNode1:
		s += ", load to node1"
	}
	return s
}

// logAxis maps [lo, hi] (lo > 0) to [0, 1] logarithmically.
type logAxis struct{ lo, hi float64 }

// newLogAxis widens [min, max] to whole decades (or to one decade around a
// single value) so that lines keep clear of the frame.
func newLogAxis(minV, maxV float64) logAxis {
	minV = max(minV, 1e-9)
	maxV = max(maxV, minV)
	lo := math.Pow(10, math.Floor(math.Log10(minV)))
	hi := math.Pow(10, math.Ceil(math.Log10(maxV)))
	if hi <= lo {
		hi = lo * 10
	}
	return logAxis{lo: lo, hi: hi}
}

func (a logAxis) frac(v float64) float64 {
	v = min(max(v, a.lo), a.hi)
	return (math.Log10(v) - math.Log10(a.lo)) / (math.Log10(a.hi) - math.Log10(a.lo))
}

// ticks returns 1, 2 and 5 times each power of ten in the axis (only the
// powers of ten when it spans more than three decades).
func (a logAxis) ticks() []float64 {
	decades := math.Log10(a.hi) - math.Log10(a.lo)
	mults := []float64{1, 2, 5}
	if decades > 3 {
		mults = []float64{1}
	}
	var out []float64
	for d := a.lo; d <= a.hi*1.0001; d *= 10 {
		for _, m := range mults {
			if v := d * m; v <= a.hi*1.0001 {
				out = append(out, v)
			}
		}
	}
	return slices.CompactFunc(out, func(x, y float64) bool { return cmp.Compare(x, y) == 0 })
}

// fmtMillis formats a latency tick given in ms: 500 µs, 2 ms, 1.5 s.
func fmtMillis(ms float64) string {
	trim := func(v float64) string { return strings.TrimSuffix(fmt.Sprintf("%.1f", v), ".0") }
	switch {
	case ms >= 1000:
		return trim(ms/1000) + " s"
	case ms >= 1:
		return trim(ms) + " ms"
	default:
		return trim(ms*1000) + " µs"
	}
}

// fmtCount formats a rate: 500, 2k, 20k, 1.5M.
func fmtCount(v float64) string {
	switch {
	case v >= 1e6:
		return strings.TrimSuffix(fmt.Sprintf("%.1f", v/1e6), ".0") + "M"
	case v >= 1e3:
		return strings.TrimSuffix(fmt.Sprintf("%.1f", v/1e3), ".0") + "k"
	default:
		return fmt.Sprintf("%.0f", v)
	}
}
