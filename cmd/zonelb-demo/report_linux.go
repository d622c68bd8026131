package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/zonelb/zonelb/deploy"

	"github.com/zonelb/zonelb/internal/cluster"
	"github.com/zonelb/zonelb/internal/demoreport"
)

// sideBySide is the comparison table of the modes, as printed and as the
// report shows it.
func sideBySide(c *cluster.Cluster, phases []cluster.Phase, o options) demoreport.Table {
	var t demoreport.Table
	for _, p := range phases {
		t.Columns = append(t.Columns, p.Name)
	}
	row := func(label string, cell func(cluster.Phase) string) {
		r := demoreport.Row{Label: label}
		for _, p := range phases {
			r.Cells = append(r.Cells, cell(p))
		}
		t.Rows = append(t.Rows, r)
	}
	t.Rows = append(t.Rows, demoreport.Row{Label: "requests per backend pod"})
	for _, b := range c.Backends {
		row(fmt.Sprintf("  %s (%s)", b.Name, b.Zone), func(p cluster.Phase) string {
			n := p.Window.ByBackend[b.Name]
			if n == 0 {
				return "-"
			}
			return fmt.Sprintf("%d (%s)", n, pct(float64(n)/float64(max(p.Window.OK, 1))))
		})
	}
	row("in-zone share of requests", func(p cluster.Phase) string { return pct(p.Window.Share(cluster.ClientZone)) })
	row("in-zone share of bytes", func(p cluster.Phase) string { return pct(p.Window.ByteShare(cluster.ClientZone)) })
	row("cross-zone traffic (wire)", func(p cluster.Phase) string {
		return fmt.Sprintf("%.2f MB/s", p.CrossZoneBytesPerSecond()/1e6)
	})
	row("est. cross-zone cost per day", func(p cluster.Phase) string {
		return fmt.Sprintf("$%.2f", p.CostPerDay(o.pricePerGB))
	})
	row("calls per second", func(p cluster.Phase) string { return fmt.Sprintf("%.0f", p.Window.Rate()) })
	row("latency p50", func(p cluster.Phase) string { return ms(p.Window.Percentile(50)) })
	row("latency p99", func(p cluster.Phase) string { return ms(p.Window.Percentile(99)) })
	row("errors", func(p cluster.Phase) string { return fmt.Sprint(p.Window.Failed) })
	row("node proxy CPU per call", func(p cluster.Phase) string {
		if p.Window.ViaProxy == 0 {
			return "(in the kernel)"
		}
		return fmt.Sprintf("%.0f us", float64(p.CPUPerRequest().Nanoseconds())/1000)
	})
	return t
}

// liveTimeline is the live scenario second by second, as the report
// charts it: every whole second (the last window, the tail between the
// last snapshot and the clients' stop, is left out, as in the printed
// timeline).
func liveTimeline(ph cluster.Phase, title string) demoreport.Live {
	live := demoreport.Live{Title: title, Zones: cluster.Zones}
	for i, w := range ph.Windows[:max(len(ph.Windows)-1, 0)] {
		s := demoreport.Second{Start: float64(i), Rate: w.Rate(), Share: map[string]float64{},
			P99Ms: float64(w.Percentile(99).Microseconds()) / 1000, Failed: w.Failed}
		for _, z := range cluster.Zones {
			s.Share[z] = w.Share(z)
		}
		live.Seconds = append(live.Seconds, s)
	}
	for _, e := range ph.Events {
		live.Events = append(live.Events, demoreport.Event{At: e.At.Round(100 * time.Millisecond).Seconds(), Name: e.Name})
	}
	return live
}

// writeReport writes the run's results file and HTML report into
// o.reportDir and returns the report's path.
func writeReport(ctx context.Context, o options, c *cluster.Cluster, phases []cluster.Phase, live cluster.Phase, prom *cluster.Prometheus) (string, error) {
	r := demoreport.Results{
		Generated: time.Now(),
		Setup: []string{
			"nodes: node-a (zone-a), node-b (zone-b), node-c (zone-c), network namespaces on one bridge",
			fmt.Sprintf("backends: %d gRPC pods, 2 per zone; clients: %d pods in zone-a, one gRPC connection each to the ClusterIP %s, %.0f calls/s each", len(c.Backends), len(c.Clients), cluster.ServiceVIP, o.rate),
			fmt.Sprintf("cross-zone calls: +%v, emulated inside the backends", o.crossZone),
			"discovery: " + c.DiscoveryDetail,
		},
		Table: sideBySide(c, phases, o),
		Live:  liveTimeline(live, "Live, zonelb only: zone-a's pods overloaded, then killed"),
		Notes: []string{
			fmt.Sprintf("Cost: bytes on node-a's uplink (the only way out of zone-a: one node per zone) x 86400 s, at $%.2f/GB charged on each side of the crossing, at this run's call rate.", o.pricePerGB),
			"kube-proxy picks one endpoint per connection; PreferSameZone keeps connections in zone-a but still pins each to one pod; zonelb balances every call over the zone's pods.",
		},
	}
	if prom != nil {
		if err := addMetricShares(ctx, prom, live, &r.Live); err != nil {
			r.Notes = append(r.Notes, "zonelb's own metrics could not be read from Prometheus: "+err.Error())
		} else {
			r.Setup = append(r.Setup, "prometheus: Debian's prometheus scraped the daemon's /metrics every second; the chart's dashed line is the Grafana dashboard's \"Local share\" query over that data")
		}
	}
	return demoreport.Write(o.reportDir, r)
}

// startPrometheus starts the harness's Prometheus on node-a, scraping the
// daemon; the demo goes on without it (and says so) if it cannot.
func startPrometheus(ctx context.Context, c *cluster.Cluster, prog *progress, stdout io.Writer) *cluster.Prometheus {
	prog.step("starting Prometheus on node-a (it scrapes the zonelb daemon every second)")
	prom, err := c.StartPrometheus(ctx, cluster.PrometheusOptions{})
	if err != nil {
		fmt.Fprintf(stdout, "  prometheus  not running: %v\n", err)
		return nil
	}
	fmt.Fprintf(stdout, "  prometheus  scrapes the daemon's /metrics every second (in node-a's namespace, %s)\n", cluster.PrometheusAddr)
	return prom
}

// metricRange is the rate window of the dashboard query charted beside
// the clients' own count: two scrapes.
const metricRange = 2 * time.Second

// addMetricShares evaluates the dashboard's "Local share" panel at the end
// of every second of the live scenario and adds it to the timeline: what
// an operator's dashboard showed, beside what the clients counted.
func addMetricShares(ctx context.Context, prom *cluster.Prometheus, ph cluster.Phase, live *demoreport.Live) error {
	queries, err := deploy.DashboardQueries()
	if err != nil {
		return err
	}
	expr := ""
	for _, q := range queries {
		if q.PanelTitle == "Local share" {
			expr = q.Expand(metricRange)
		}
	}
	if expr == "" {
		return fmt.Errorf("no \"Local share\" panel in the dashboard")
	}
	if len(ph.Windows) > 0 {
		// The last second's end must have been scraped.
		if _, err := prom.WaitScraped(ctx, time.Unix(0, ph.Windows[len(ph.Windows)-1].End), 10*time.Second); err != nil {
			return err
		}
	}
	for i := range live.Seconds {
		v, err := prom.Query(ctx, expr, time.Unix(0, ph.Windows[i].End))
		if err != nil {
			return err
		}
		if len(v) == 1 {
			x := float64(v[0].Value)
			live.Seconds[i].MetricLocalShare = &x
		}
	}
	return nil
}
