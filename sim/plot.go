package sim

import (
	"fmt"
	"html"
	"math"
	"os"
	"strings"

	"github.com/zonelb/zonelb/zone"
)

// A small SVG writer: line charts of per-second series and a scatter of
// latency against cross-zone share. Hand-written to keep the module free
// of a plotting dependency.

var palette = map[Policy]string{
	PerConnection:  "#8c564b",
	RoundRobin:     "#9467bd",
	LeastRequest:   "#ff7f0e",
	PeakEWMA:       "#1f77b4",
	PreferSameZone: "#7f7f7f",
	HAZLLike:       "#d62728",
	EnvoyLoadAware: "#17becf",
	EnvoyZoneAware: "#bcbd22",
	Zonelb:         "#2ca02c",
}

const (
	plotW, plotH             = 720, 380
	marginL, marginR         = 70, 190
	marginT, marginB         = 40, 50
	innerW, innerH   float64 = plotW - marginL - marginR, plotH - marginT - marginB
)

type svg struct{ b strings.Builder }

func newSVG(title string) *svg {
	s := &svg{}
	fmt.Fprintf(&s.b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", plotW, plotH)
	fmt.Fprintf(&s.b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&s.b, `<text x="%d" y="22" font-size="14" font-weight="bold">%s</text>`+"\n", marginL, html.EscapeString(title))
	return s
}

// origin is the plot area's bottom left corner.
func origin() (x0, y0 float64) { return float64(marginL), float64(marginT) + innerH }

// legendAt is where the legend's i-th entry goes, right of the plot area:
// its text's baseline and its key's left edge.
func legendAt(i int) (x, y float64) {
	return float64(marginL) + innerW + 16, float64(marginT) + 14 + float64(i)*20
}

// frame draws the x and y axis lines and returns the origin.
func (s *svg) frame() (x0, y0 float64) {
	x0, y0 = origin()
	fmt.Fprintf(&s.b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n", x0, y0, x0+innerW, y0)
	fmt.Fprintf(&s.b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n", x0, y0, x0, float64(marginT))
	return x0, y0
}

// axisLabels writes the x axis's label below it and the y axis's turned
// along it.
func (s *svg) axisLabels(xLabel, yLabel string) {
	x0, y0 := origin()
	fmt.Fprintf(&s.b, `<text x="%g" y="%g" text-anchor="middle">%s</text>`+"\n", x0+innerW/2, y0+36, html.EscapeString(xLabel))
	fmt.Fprintf(&s.b, `<text x="16" y="%g" text-anchor="middle" transform="rotate(-90 16 %g)">%s</text>`+"\n",
		float64(marginT)+innerH/2, float64(marginT)+innerH/2, html.EscapeString(yLabel))
}

// axes draws linear axes: x from 0 to xMax, y from yMin to yMax labelled
// by yFmt.
func (s *svg) axes(xLabel, yLabel string, xMax, yMin, yMax float64, yFmt func(float64) string) {
	x0, y0 := s.frame()
	for i := 0; i <= 5; i++ {
		v := yMin + (yMax-yMin)*float64(i)/5
		y := y0 - innerH*float64(i)/5
		fmt.Fprintf(&s.b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="#ddd"/>`+"\n", x0, y, x0+innerW, y)
		fmt.Fprintf(&s.b, `<text x="%g" y="%g" text-anchor="end">%s</text>`+"\n", x0-6, y+4, yFmt(v))
		xv := xMax * float64(i) / 5
		x := x0 + innerW*float64(i)/5
		fmt.Fprintf(&s.b, `<text x="%g" y="%g" text-anchor="middle">%.3g</text>`+"\n", x, y0+16, xv)
	}
	s.axisLabels(xLabel, yLabel)
}

func (s *svg) legend(i int, p Policy, dashed bool) {
	x, y := legendAt(i)
	dash := ""
	if dashed {
		dash = ` stroke-dasharray="5 3"`
	}
	fmt.Fprintf(&s.b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="%s" stroke-width="3"%s/>`+"\n", x, y-4, x+22, y-4, palette[p], dash)
	fmt.Fprintf(&s.b, `<text x="%g" y="%g">%s</text>`+"\n", x+28, y, p)
}

func (s *svg) write(path string) error {
	s.b.WriteString("</svg>\n")
	if err := os.WriteFile(path, []byte(s.b.String()), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// lineChart plots one per-second series per policy.
func lineChart(path, title, yLabel string, rs []Result, series func(Result) []float64, yMin, yMax float64, yFmt func(float64) string) error {
	s := newSVG(title)
	n := 0
	for _, r := range rs {
		n = max(n, len(series(r)))
	}
	s.axes("time (s)", yLabel, float64(n), yMin, yMax, yFmt)
	for i, r := range rs {
		pts := series(r)
		var path strings.Builder
		for t, v := range pts {
			v = min(max(v, yMin), yMax)
			x := float64(marginL) + innerW*(float64(t)+0.5)/float64(n)
			y := float64(marginT) + innerH*(1-(v-yMin)/(yMax-yMin))
			cmd := "L"
			if t == 0 {
				cmd = "M"
			}
			fmt.Fprintf(&path, "%s%.1f %.1f ", cmd, x, y)
		}
		dash := ""
		if r.Policy == PreferSameZone {
			dash = ` stroke-dasharray="5 3"`
		}
		fmt.Fprintf(&s.b, `<path d="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", path.String(), palette[r.Policy], dash)
		s.legend(i, r.Policy, r.Policy == PreferSameZone)
	}
	return s.write(path)
}

// scatter plots p99 (log scale: a policy that fails sits at the timeout,
// far above the others) against the cross-zone share of requests.
func scatter(path, title string, rs []Result) error {
	s := newSVG(title)
	lo, hi := math.Inf(1), 0.0
	for _, r := range rs {
		v := float64(r.P99) / 1e6
		lo, hi = min(lo, v), max(hi, v)
	}
	yMin, yMax, yOf := logScale(lo, hi)
	s.logAxes(1, yMin, yMax, yOf, "requests crossing zones (%)")
	x0 := float64(marginL)
	for i, r := range rs {
		x := x0 + innerW*r.CrossRequests
		y := yOf(float64(r.P99) / 1e6)
		fmt.Fprintf(&s.b, `<circle cx="%.1f" cy="%.1f" r="7" fill="%s" fill-opacity="0.85"/>`+"\n", x, y, palette[r.Policy])
		lx, ly := legendAt(i)
		fmt.Fprintf(&s.b, `<circle cx="%g" cy="%g" r="6" fill="%s"/>`+"\n", lx+11, ly-4, palette[r.Policy])
		fmt.Fprintf(&s.b, `<text x="%g" y="%g">%s</text>`+"\n", lx+28, ly, r.Policy)
	}
	return s.write(path)
}

func percent(v float64) string { return fmt.Sprintf("%.0f%%", 100*v) }

// writePlots writes the plots a reader of this scenario would rather look
// at than read.
func writePlots(prefix string, sc *Scenario, rs []Result) error {
	if len(rs) == 0 {
		return nil
	}
	if sc.Watch != nil {
		if err := lineChart(prefix+"-moved.svg",
			fmt.Sprintf("%s: zone %s clients' requests sent to other zones", sc.Name, sc.Watch.Zone),
			"first attempts to other zones", rs, func(r Result) []float64 { return r.CrossSeries }, 0, 1, percent); err != nil {
			return err
		}
	}
	if sc.Watch != nil || sc.Events != nil {
		return lineChart(prefix+"-success.svg", sc.Name+": requests answered within the timeout",
			"success", rs, func(r Result) []float64 { return r.SuccessSeries }, 0.8, 1, percent)
	}
	if len(sc.Zones) > 1 {
		return scatter(prefix+"-p99.svg", sc.Name+": p99 against cross-zone share", rs)
	}
	return nil
}

// sweepChart plots p99 (log scale) against cross-zone bytes: zonelb's
// budgets as one curve, each baseline as a point, medians over the seeds
// with min-max bars.
func sweepChart(path string, sc *Scenario, pts []*sweepPoint, seeds int) error {
	s := newSVG(fmt.Sprintf("%s: p99 against cross-zone bytes (median of seeds 1..%d, min-max bars)", sc.Name, seeds))
	lo, hi, xMax := math.Inf(1), 0.0, 0.0
	for _, p := range pts {
		lo, hi = min(lo, p.P99.Min), max(hi, p.P99.Max)
		xMax = max(xMax, p.Cross.Max)
	}
	xMax = math.Ceil(xMax*10+1e-9) / 10 // a round tenth above the largest
	yMin, yMax, yOf := logScale(lo, hi)
	xOf := func(v float64) float64 { return float64(marginL) + innerW*v/xMax }
	s.logAxes(xMax, yMin, yMax, yOf, "cross-zone bytes (% of all)")
	var curve strings.Builder
	for _, p := range pts {
		if p.Policy != Zonelb || p.Budget < 0 && p.Budget != zone.LatencyBudget {
			continue // the parity rule is a point off the curve
		}
		cmd := "L"
		if curve.Len() == 0 {
			cmd = "M"
		}
		fmt.Fprintf(&curve, "%s%.1f %.1f ", cmd, xOf(p.Cross.Median), yOf(p.P99.Median))
	}
	fmt.Fprintf(&s.b, `<path d="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", curve.String(), palette[Zonelb])
	i := 0
	for _, p := range pts {
		x, y := xOf(p.Cross.Median), yOf(p.P99.Median)
		colour := palette[p.Policy]
		fmt.Fprintf(&s.b, `<path d="M%.1f %.1fL%.1f %.1fM%.1f %.1fL%.1f %.1f" stroke="%s" stroke-opacity="0.5"/>`+"\n",
			xOf(p.Cross.Min), y, xOf(p.Cross.Max), y, x, yOf(p.P99.Min), x, yOf(p.P99.Max), colour)
		if p.Policy == Zonelb {
			fmt.Fprintf(&s.b, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s"/>`+"\n", x, y, colour)
			fmt.Fprintf(&s.b, `<text x="%.1f" y="%.1f" font-size="10" fill="%s">%s</text>`+"\n",
				x+5, y-5, colour, html.EscapeString(zone.FormatSpillBudget(p.Budget)))
			continue
		}
		fmt.Fprintf(&s.b, `<rect x="%.1f" y="%.1f" width="10" height="10" fill="%s" fill-opacity="0.85"/>`+"\n", x-5, y-5, colour)
		lx, ly := legendAt(i + 1) // below zonelb's curve, the first entry
		fmt.Fprintf(&s.b, `<rect x="%g" y="%g" width="10" height="10" fill="%s"/>`+"\n", lx+6, ly-9, colour)
		fmt.Fprintf(&s.b, `<text x="%g" y="%g">%s</text>`+"\n", lx+28, ly, p.Policy)
		i++
	}
	lx, ly := legendAt(0)
	fmt.Fprintf(&s.b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="%s" stroke-width="3"/>`+"\n", lx, ly-4, lx+22, ly-4, palette[Zonelb])
	fmt.Fprintf(&s.b, `<text x="%g" y="%g">zonelb, by budget</text>`+"\n", lx+28, ly)
	return s.write(path)
}

// logScale is a log y axis in ms for values from lo to hi: from the
// power of ten at or below lo to the one at or above hi (doubled when a
// point would sit on the top edge, as the timeout does), and the y of a
// value on it (values below the axis sit on it).
func logScale(lo, hi float64) (yMin, yMax float64, yOf func(float64) float64) {
	yMin = math.Pow(10, math.Floor(math.Log10(max(lo, 0.1))))
	yMax = math.Pow(10, math.Ceil(math.Log10(max(hi, yMin*10))-1e-9))
	if yMax < hi*1.05 {
		yMax *= 2
	}
	yOf = func(ms float64) float64 {
		f := (math.Log10(max(ms, yMin)) - math.Log10(yMin)) / (math.Log10(yMax) - math.Log10(yMin))
		return float64(marginT) + innerH*(1-f)
	}
	return yMin, yMax, yOf
}

// logAxes draws a linear x axis from 0 to xMax (a share, labelled in %)
// and a log y axis in ms.
func (s *svg) logAxes(xMax, yMin, yMax float64, yOf func(float64) float64, xLabel string) {
	x0, y0 := s.frame()
	for d := yMin; d <= yMax*1.001; d *= 10 {
		for _, m := range []float64{1, 2, 5} {
			v := d * m
			if v > yMax*1.001 {
				break
			}
			y := yOf(v)
			fmt.Fprintf(&s.b, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#ddd"/>`+"\n", x0, y, x0+innerW, y)
			fmt.Fprintf(&s.b, `<text x="%g" y="%.1f" text-anchor="end">%g</text>`+"\n", x0-6, y+4, v)
		}
	}
	for i := 0; i <= 5; i++ {
		x := x0 + innerW*float64(i)/5
		fmt.Fprintf(&s.b, `<text x="%g" y="%g" text-anchor="middle">%.0f</text>`+"\n", x, y0+16, 100*xMax*float64(i)/5)
	}
	s.axisLabels(xLabel, "p99 (ms, log scale)")
}
