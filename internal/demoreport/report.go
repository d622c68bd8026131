// Package demoreport is `make demo`'s report: the run's results as a JSON
// file (Results) and as one self-contained HTML page with SVG charts of
// the live scenario (per-second zone shares, p99 latency, failed calls)
// and the side-by-side table. The page fetches nothing (no script, style
// sheet, font or image from anywhere) and carries every charted value in
// data-* attributes, so a test can hold what a browser renders to the
// results file.
//
// It knows nothing of the mini cluster: the demo fills Results.
package demoreport

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Results is what one demo run measured.
type Results struct {
	Generated time.Time `json:"generated"`
	// Setup lines describe the cluster (nodes, clients, discovery...).
	Setup []string `json:"setup"`
	// Table is the side-by-side comparison.
	Table Table `json:"table"`
	// Live is the live scenario's timeline.
	Live Live `json:"live"`
	// Notes are sentences printed under the table.
	Notes []string `json:"notes,omitempty"`
}

// Table is a table of text cells: one column per mode.
type Table struct {
	Columns []string `json:"columns"`
	Rows    []Row    `json:"rows"`
}

// Row is one labelled row of a Table.
type Row struct {
	Label string   `json:"label"`
	Cells []string `json:"cells"`
}

// Live is the live scenario: one Second per second, and its events.
type Live struct {
	Title   string   `json:"title"`
	Zones   []string `json:"zones"`
	Seconds []Second `json:"seconds"`
	Events  []Event  `json:"events"`
}

// Second is one second of the live scenario.
type Second struct {
	// Start is the second's offset from the scenario's start, in seconds.
	Start float64 `json:"start"`
	// Rate is successful calls per second.
	Rate float64 `json:"rate"`
	// Share is the share of successful calls answered in each zone (0-1).
	Share map[string]float64 `json:"share"`
	// P99Ms is the 99th percentile latency in milliseconds.
	P99Ms float64 `json:"p99Ms"`
	// Failed counts failed calls.
	Failed int `json:"failed"`
	// MetricLocalShare is the local zone's share as zonelb's own metrics
	// gave it (the dashboard's "Local share" query on what Prometheus
	// scraped), when Prometheus ran.
	MetricLocalShare *float64 `json:"metricLocalShare,omitempty"`
}

// Event is something done to the cluster during the live scenario.
type Event struct {
	At   float64 `json:"at"` // seconds from the start
	Name string  `json:"name"`
}

// Write writes results.json and report.html into dir and returns the
// report's path.
func Write(dir string, r Results) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("demoreport: %w", err)
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", fmt.Errorf("demoreport: encode results: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(js, '\n'), 0o644); err != nil {
		return "", fmt.Errorf("demoreport: %w", err)
	}
	page, err := Render(r)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "report.html")
	if err := os.WriteFile(path, page, 0o644); err != nil {
		return "", fmt.Errorf("demoreport: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return path, nil
	}
	return abs, nil
}

// Read reads a results.json.
func Read(path string) (Results, error) {
	var r Results
	raw, err := os.ReadFile(path)
	if err != nil {
		return r, fmt.Errorf("demoreport: %w", err)
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return r, fmt.Errorf("demoreport: %s: %w", path, err)
	}
	return r, nil
}

// Value formats a number as the report's data-value attributes carry it:
// the shortest text that reads back as the same float64.
func Value(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }

// Render returns the HTML page.
func Render(r Results) ([]byte, error) {
	zoneColors := []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"}
	var shares []series
	for i, z := range r.Live.Zones {
		s := series{Name: z, Color: zoneColors[i%len(zoneColors)]}
		for _, sec := range r.Live.Seconds {
			s.Points = append(s.Points, point{X: sec.Start, Y: sec.Share[z] * 100, Raw: sec.Share[z]})
		}
		shares = append(shares, s)
	}
	if len(r.Live.Zones) > 0 {
		m := series{Name: r.Live.Zones[0] + " (zonelb's metrics)", Color: zoneColors[0], Dashed: true}
		for _, sec := range r.Live.Seconds {
			if sec.MetricLocalShare != nil {
				m.Points = append(m.Points, point{X: sec.Start, Y: *sec.MetricLocalShare * 100, Raw: *sec.MetricLocalShare})
			}
		}
		if len(m.Points) > 0 {
			shares = append(shares, m)
		}
	}
	p99 := series{Name: "p99", Color: "#d62728"}
	fails := series{Name: "failed", Color: "#7f7f7f"}
	for _, sec := range r.Live.Seconds {
		p99.Points = append(p99.Points, point{X: sec.Start, Y: sec.P99Ms, Raw: sec.P99Ms})
		fails.Points = append(fails.Points, point{X: sec.Start, Y: float64(sec.Failed), Raw: float64(sec.Failed)})
	}
	span := 0.0
	if n := len(r.Live.Seconds); n > 0 {
		span = r.Live.Seconds[n-1].Start + 1
	}
	charts := []chart{
		newChart("shares", "Share of calls answered, by zone (%)", "%", span, 100, r.Live.Events, shares, false),
		newChart("p99", "Latency p99 (ms)", "ms", span, 0, r.Live.Events, []series{p99}, false),
		newChart("failures", "Failed calls", "", span, 0, r.Live.Events, []series{fails}, true),
	}
	var buf bytes.Buffer
	err := page.Execute(&buf, struct {
		R      Results
		Charts []chart
	}{r, charts})
	if err != nil {
		return nil, fmt.Errorf("demoreport: render: %w", err)
	}
	return buf.Bytes(), nil
}

type point struct {
	X, Y float64
	Raw  float64 // the value as in the results file (a share as 0-1)
}

type series struct {
	Name   string
	Color  string
	Dashed bool
	Points []point
}

// Plot geometry, in SVG user units.
const (
	plotW, plotH           = 720.0, 200.0
	marginL, marginR       = 56.0, 16.0
	marginTop, marginBelow = 12.0, 36.0
)

type chart struct {
	ID, Title string
	W, H      float64
	Series    []drawnSeries
	Bars      bool
	XTicks    []tick
	YTicks    []tick
	Events    []drawnEvent
	// Plot area.
	Left, Top, Right, Bottom float64
}

type drawnSeries struct {
	Name, Color string
	Dashed      bool
	Path        string
	Points      []drawnPoint
}

type drawnPoint struct {
	X, Y, Raw float64
	Second    float64
	Label     string
	BarY      float64
	BarH      float64
}

type tick struct {
	Pos   float64
	Label string
}

type drawnEvent struct {
	X    float64
	Name string
}

func newChart(id, title, unit string, span, yMax float64, events []Event, ss []series, bars bool) chart {
	c := chart{ID: id, Title: title, W: plotW, H: plotH + marginTop + marginBelow, Bars: bars,
		Left: marginL, Top: marginTop, Right: plotW - marginR, Bottom: marginTop + plotH}
	if yMax == 0 {
		for _, s := range ss {
			for _, p := range s.Points {
				yMax = math.Max(yMax, p.Y)
			}
		}
		yMax = niceCeil(yMax)
	}
	if span <= 0 {
		span = 1
	}
	x := func(v float64) float64 { return c.Left + (c.Right-c.Left)*v/span }
	y := func(v float64) float64 { return c.Bottom - (c.Bottom-c.Top)*v/yMax }
	for s := 0.0; s <= span; s++ {
		c.XTicks = append(c.XTicks, tick{Pos: x(s), Label: fmt.Sprintf("%gs", s)})
	}
	for i := 0; i <= 4; i++ {
		v := yMax * float64(i) / 4
		c.YTicks = append(c.YTicks, tick{Pos: y(v), Label: strconv.FormatFloat(v, 'g', 4, 64) + unit})
	}
	for _, e := range events {
		c.Events = append(c.Events, drawnEvent{X: x(e.At), Name: e.Name})
	}
	barW := (c.Right - c.Left) / span
	for _, s := range ss {
		ds := drawnSeries{Name: s.Name, Color: s.Color, Dashed: s.Dashed}
		var path strings.Builder
		for i, p := range s.Points {
			// A second's value is drawn at its middle.
			px, py := x(p.X+0.5), y(p.Y)
			if i == 0 {
				fmt.Fprintf(&path, "M%.1f %.1f", px, py)
			} else {
				fmt.Fprintf(&path, " L%.1f %.1f", px, py)
			}
			dp := drawnPoint{X: px, Y: py, Raw: p.Raw, Second: p.X,
				Label: fmt.Sprintf("%g-%gs %s: %s", p.X, p.X+1, s.Name, strconv.FormatFloat(p.Y, 'f', 2, 64)+unit)}
			if bars {
				dp.X = x(p.X) + barW*0.15
				dp.BarY, dp.BarH = py, c.Bottom-py
			}
			ds.Points = append(ds.Points, dp)
		}
		ds.Path = path.String()
		c.Series = append(c.Series, ds)
	}
	return c
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (at least 1).
func niceCeil(v float64) float64 {
	if v <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

var page = template.Must(template.New("report").Funcs(template.FuncMap{
	"value":     Value,
	"hasPrefix": strings.HasPrefix,
	"barw":      func(c chart) float64 { return (c.Right - c.Left) / float64(max(len(c.XTicks)-1, 1)) * 0.7 },
	"rfc3339":   func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>zonelb demo report</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 980px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; }
table.side { border-collapse: collapse; }
table.side th, table.side td { padding: 3px 10px; border-bottom: 1px solid #ddd; text-align: right; }
table.side td.label, table.side th.label { text-align: left; }
table.side tr.sub td.label { padding-left: 24px; color: #555; }
svg text { font: 11px system-ui, sans-serif; fill: #444; }
.legend span { display: inline-block; margin-right: 16px; }
.legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: -1px; }
.setup { color: #444; }
</style>
</head>
<body>
<h1>zonelb demo: kube-proxy, PreferSameZone and zonelb side by side</h1>
<p class="setup" id="generated" data-generated="{{rfc3339 .R.Generated}}">Run at {{rfc3339 .R.Generated}} on this machine (network namespaces, real eBPF, real zonelb daemon).</p>
<ul class="setup">{{range .R.Setup}}<li>{{.}}</li>{{end}}</ul>

<h2>{{.R.Live.Title}}</h2>
{{range $c := .Charts}}
<figure id="chart-{{$c.ID}}">
<figcaption>{{$c.Title}}</figcaption>
<div class="legend">{{range $c.Series}}<span><i style="background:{{.Color}}{{if .Dashed}};opacity:0.5{{end}}"></i>{{.Name}}</span>{{end}}</div>
<svg xmlns="http://www.w3.org/2000/svg" width="{{$c.W}}" height="{{$c.H}}" viewBox="0 0 {{$c.W}} {{$c.H}}" role="img" aria-label="{{$c.Title}}">
{{range $c.YTicks}}<line x1="{{$c.Left}}" x2="{{$c.Right}}" y1="{{.Pos}}" y2="{{.Pos}}" stroke="#eee"/><text x="{{$c.Left}}" dx="-6" y="{{.Pos}}" dy="4" text-anchor="end">{{.Label}}</text>
{{end}}{{range $c.XTicks}}<text x="{{.Pos}}" y="{{$c.Bottom}}" dy="16" text-anchor="middle">{{.Label}}</text>
{{end}}<line x1="{{$c.Left}}" x2="{{$c.Right}}" y1="{{$c.Bottom}}" y2="{{$c.Bottom}}" stroke="#999"/>
{{range $c.Events}}<line class="event" x1="{{.X}}" x2="{{.X}}" y1="{{$c.Top}}" y2="{{$c.Bottom}}" stroke="#000" stroke-dasharray="4 3"/><text x="{{.X}}" dx="4" y="{{$c.Top}}" dy="10">{{.Name}}</text>
{{end}}{{range $s := $c.Series}}{{if not $c.Bars}}<path d="{{$s.Path}}" fill="none" stroke="{{$s.Color}}" stroke-width="2"{{if $s.Dashed}} stroke-dasharray="6 4"{{end}}/>
{{end}}{{range $s.Points}}{{if $c.Bars}}<rect class="pt" data-chart="{{$c.ID}}" data-series="{{$s.Name}}" data-second="{{value .Second}}" data-value="{{value .Raw}}" x="{{.X}}" y="{{.BarY}}" width="{{barw $c}}" height="{{.BarH}}" fill="{{$s.Color}}"><title>{{.Label}}</title></rect>{{else}}<circle class="pt" data-chart="{{$c.ID}}" data-series="{{$s.Name}}" data-second="{{value .Second}}" data-value="{{value .Raw}}" cx="{{.X}}" cy="{{.Y}}" r="3" fill="{{$s.Color}}"><title>{{.Label}}</title></circle>{{end}}
{{end}}{{end}}</svg>
</figure>
{{end}}
<h2>Side by side: the same clients under each</h2>
<table class="side" id="side-by-side">
<tr><th class="label"></th>{{range .R.Table.Columns}}<th>{{.}}</th>{{end}}</tr>
{{range .R.Table.Rows}}<tr{{if hasPrefix .Label "  "}} class="sub"{{end}}><td class="label">{{.Label}}</td>{{range .Cells}}<td>{{.}}</td>{{end}}</tr>
{{end}}</table>
{{range .R.Notes}}<p>{{.}}</p>{{end}}
</body>
</html>
`))
