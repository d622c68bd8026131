package e2e

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/zonelb/zonelb/deploy"
	"github.com/zonelb/zonelb/internal/cluster"
	"github.com/zonelb/zonelb/zone"
)

// dashboardTolerance is how far a panel may be from what the clients
// measured, relative.
const dashboardTolerance = 0.10

// measured is what the test saw itself over one phase, in the terms of
// the dashboard's panels.
type measured struct {
	ph cluster.Phase
	// seconds is the time between the scrapes that bracket the phase:
	// the counters grew only inside it, so a panel's rate over the range
	// that holds both scrapes is the phase's count over seconds.
	seconds float64
	// crossBytes are the payload bytes exchanged with other zones.
	crossBytes float64
	// spillShare is the share of calls answered outside the clients'
	// zone.
	spillShare float64
	// dials are the clients' new connections (each one a redirected
	// connect).
	dials int
	// flips is how often spillover turned on or off during the phase, by
	// the daemon's /debug/state.
	flips uint64
}

// panelCheck checks one query's result: at is when it was evaluated
// (the scrape after the phase, or one in its middle for gauges).
type panelCheck struct {
	// gauge queries are evaluated in the middle of the phase, the others
	// over the whole phase.
	gauge bool
	check func(m measured, v model.Vector) error
}

// panelChecks holds one check per panel query of the dashboard, by
// "title/refId". A panel without a check fails the test: every panel is
// held to something the test measured or knows about the cluster.
var panelChecks = map[string]panelCheck{
	"Requests/s/A": {check: func(m measured, v model.Vector) error {
		return near(single(v), float64(m.ph.Window.OK+m.ph.Window.Failed)/m.seconds, "calls per second")
	}},
	"Local share/A": {check: func(m measured, v model.Vector) error {
		return near(single(v), m.ph.Window.Share(cluster.ClientZone), "in-zone share of calls")
	}},
	"Local share by service/A": {check: func(m measured, v model.Vector) error {
		return near(only(v, "service", serviceID), m.ph.Window.Share(cluster.ClientZone), "in-zone share of calls")
	}},
	"Cross-zone cost/day/A": {check: func(m measured, v model.Vector) error {
		return near(single(v), zone.CrossZoneCost(uint64(m.crossBytes/m.seconds*86400), zone.DefaultPricePerGB), "cost per day of the cross-zone payload")
	}},
	"Cross-zone bytes/day/A": {check: func(m measured, v model.Vector) error {
		return near(single(v), m.crossBytes/m.seconds*86400, "cross-zone payload bytes per day")
	}},
	"Services spilling/A": {gauge: true, check: func(m measured, v model.Vector) error {
		return exact(single(v), 1, "services spilling (the clients saw calls leave zone-a)")
	}},
	"Active requests/A": {gauge: true, check: func(m measured, v model.Vector) error {
		return between(single(v), 0, float64(dashboardWorkload.Concurrency), "requests in flight")
	}},
	"Request rate by destination zone/A": {check: func(m measured, v model.Vector) error {
		return byLabel(v, "dst_zone", func(z string) float64 { return float64(m.ph.Window.ByZone[z]) / m.seconds }, "calls per second answered in the zone")
	}},
	"Cross-zone bytes by zone pair/A": {check: func(m measured, v model.Vector) error {
		got := map[string]float64{}
		for _, s := range v {
			if s.Metric["src_zone"] != cluster.ClientZone || s.Metric["dst_zone"] == cluster.ClientZone {
				return fmt.Errorf("series %s is not a pair from %s to another zone", s.Metric, cluster.ClientZone)
			}
			got[string(s.Metric["dst_zone"])] += float64(s.Value)
		}
		return compareMaps(got, func(z string) float64 {
			if z == cluster.ClientZone {
				return 0
			}
			return float64(m.ph.Window.BytesByZone[z]) / m.seconds
		}, "payload bytes per second exchanged with the zone")
	}},
	"Cross-zone cost per day by zone pair/A": {check: func(m measured, v model.Vector) error {
		return byLabel(v, "dst_zone", func(z string) float64 {
			if z == cluster.ClientZone {
				return 0
			}
			return zone.CrossZoneCost(uint64(float64(m.ph.Window.BytesByZone[z])/m.seconds*86400), zone.DefaultPricePerGB)
		}, "cost per day of the payload exchanged with the zone")
	}},
	"Latency p50 / p99 by destination zone/A": {check: func(m measured, v model.Vector) error {
		return quantileWithin(v, m.ph.Window.Percentile(50), "p50")
	}},
	"Latency p50 / p99 by destination zone/B": {check: func(m measured, v model.Vector) error {
		return quantileWithin(v, m.ph.Window.Percentile(99), "p99")
	}},
	"Errors by code/A": {check: func(m measured, v model.Vector) error {
		return near(sum(v), float64(m.ph.Window.Failed)/m.seconds, "failed calls per second")
	}},
	"Retries by service/A": {check: func(m measured, v model.Vector) error {
		// No call failed and no pod went away: nothing to retry.
		return exact(sum(v), 0, "retries per second")
	}},
	"Active requests by node/A": {gauge: true, check: func(m measured, v model.Vector) error {
		return between(only(v, "instance", "node-a"), 0, float64(dashboardWorkload.Concurrency), "requests in flight on node-a")
	}},
	"Endpoints by zone and state/A": {gauge: true, check: func(m measured, v model.Vector) error {
		got := map[string]float64{}
		for _, s := range v {
			if s.Metric["state"] != "ready" && s.Value != 0 {
				return fmt.Errorf("%s: %v endpoints, want every endpoint ready", s.Metric, s.Value)
			}
			got[string(s.Metric["zone"])] += float64(s.Value)
		}
		return compareMaps(got, func(string) float64 { return 2 }, "ready endpoints in the zone")
	}},
	"Spillover active by service/A": {gauge: true, check: func(m measured, v model.Vector) error {
		return exact(only(v, "service", serviceID), 1, "spillover active")
	}},
	"Calls leaving the zone, by service/A": {check: func(m measured, v model.Vector) error {
		return near(only(v, "service", serviceID), 1-m.ph.Window.Share(cluster.ClientZone), "share of calls answered outside zone-a")
	}},
	"Local latency level vs spill budget/A": {gauge: true, check: func(m measured, v model.Vector) error {
		// A smoothed mean of the proxy's time to first byte: above 0, below
		// the clients' p99 of the whole call.
		return between(only(v, "service", serviceID), 1e-6, m.ph.Window.Percentile(99).Seconds(), "zone-a's latency level (s)")
	}},
	"Local latency level vs spill budget/B": {gauge: true, check: func(m measured, v model.Vector) error {
		return between(only(v, "service", serviceID), 1e-6, m.ph.Window.Percentile(99).Seconds(), "the level zone-a's budget allows (s)")
	}},
	"Why each service is split as it is/A": {gauge: true, check: func(m measured, v model.Vector) error {
		// Zone a overloaded, calls leaving it around the mid scrape: the
		// balancer says it spills.
		if len(v) != 1 || v[0].Metric["service"] != model.LabelValue(serviceID) || v[0].Metric["reason"] != "spilling" {
			return fmt.Errorf("want one row, %s spilling: %v", serviceID, v)
		}
		return nil
	}},
	"BPF programs attached/A": {gauge: true, check: func(m measured, v model.Vector) error {
		if len(v) != 5 {
			return fmt.Errorf("want the 5 cgroup hooks, got %v", v)
		}
		for _, s := range v {
			if err := exact(float64(s.Value), 1, "attached, "+string(s.Metric["program"])); err != nil {
				return err
			}
		}
		return nil
	}},
	"Daemon ready/A": {gauge: true, check: func(m measured, v model.Vector) error {
		return exact(only(v, "instance", "node-a"), 1, "node-a's daemon ready")
	}},
	"Spillover transitions/A": {check: func(m measured, v model.Vector) error {
		// The clients cannot see a flip: the daemon's own state (its admin
		// API, read at the scrapes around the phase) says how many there were.
		return exact(only(v, "service", serviceID), float64(m.flips), "spillover transitions during the phase (/debug/state)")
	}},
	"Daemons/A": {gauge: true, check: func(m measured, v model.Vector) error {
		if len(v) != 1 || v[0].Metric["instance"] != "node-a" || v[0].Metric["version"] == "" || !strings.HasPrefix(string(v[0].Metric["goversion"]), "go") {
			return fmt.Errorf("want one daemon, node-a, with its version and Go version: %v", v)
		}
		return nil
	}},
	"Connects by outcome/A": {check: func(m measured, v model.Vector) error {
		return near(only(v, "outcome", "redirected"), float64(m.dials)/m.seconds, "redirected connects per second (the clients' dials)")
	}},
	"Proxy listener registered/A": {gauge: true, check: func(m measured, v model.Vector) error {
		for _, s := range v {
			want := 0.0
			if s.Metric["family"] == "ipv4" {
				want = 1 // the lab's proxy listens on IPv4 only
			}
			if err := exact(float64(s.Value), want, "listener registered, "+string(s.Metric["family"])); err != nil {
				return err
			}
		}
		return exact(float64(len(v)), 2, "families")
	}},
	"Proxy listener registered/B": {check: func(m measured, v model.Vector) error {
		// The daemon ran throughout the phase.
		return exact(sum(v), 0, "proxy process exits during the phase")
	}},
	"Original destination bookkeeping/A": {check: func(m measured, v model.Vector) error {
		return near(single(v), float64(m.dials)/m.seconds, "original destinations recorded per second (the clients' dials)")
	}},
	"Original destination bookkeeping/B": {check: func(m measured, v model.Vector) error {
		return exact(single(v), 0, "original destinations not recorded")
	}},
	"getpeername rewrites and shortcut sockets/A": {check: func(m measured, v model.Vector) error {
		// Go's net package asks getpeername once per dial.
		return near(single(v), float64(m.dials)/m.seconds, "getpeername rewrites per second (the clients' dials)")
	}},
	"getpeername rewrites and shortcut sockets/B": {check: func(m measured, v model.Vector) error {
		return exact(single(v), 0, "sockets in the sk_msg shortcut (off by default)")
	}},
}

// serviceID is how the daemon names the lab's service in its metrics.
var serviceID = fmt.Sprintf("%s/%s:%s", cluster.ServiceNamespace, cluster.ServiceName, cluster.ServicePortName)

// dashboardWorkload is the phase the dashboard is checked against: zone
// a's two pods overloaded (as in the spillover subtest), so that every
// panel has something to show: calls in every zone, cross-zone bytes,
// spillover. Each client redials every 200 calls, so the BPF panels count
// connects too.
var dashboardWorkload = cluster.Workload{Concurrency: 64, Rate: 600, RequestBytes: 1024, ResponseBytes: 4096, RedialEvery: 200}

// checkDashboard runs the dashboard's phase with Prometheus scraping the
// daemon, then evaluates every panel query of deploy/grafana/zonelb.json
// on what Prometheus scraped and compares it with what the clients saw.
func checkDashboard(t *testing.T, ctx context.Context, c *cluster.Cluster, prom *cluster.Prometheus) {
	t.Helper()
	queries, err := deploy.DashboardQueries()
	if err != nil {
		t.Fatal(err)
	}
	cluster.SetLoads(t, ctx, c.Backends, cluster.BackendLoad{ServiceTime: cluster.Duration(5 * time.Millisecond)})
	defer cluster.SetLoads(t, ctx, c.Backends, cluster.BackendLoad{ServiceTime: cluster.Duration(time.Millisecond)})

	// A scrape after everything before the phase was counted...
	t0, err := prom.WaitScraped(ctx, time.Now().Add(300*time.Millisecond), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	flips0 := spillFlips(t, ctx, c)
	// ...one in the middle of the phase, for the gauges...
	var tm time.Time
	var mid cluster.Window
	overload := func(ctx context.Context) error {
		for _, b := range c.BackendsIn(cluster.ClientZone) {
			if err := b.SetLoad(ctx, cluster.BackendLoad{ServiceTime: cluster.Duration(5 * time.Millisecond), Capacity: 1}); err != nil {
				return err
			}
		}
		return nil
	}
	// Zone a is overloaded once the phase runs, so that spillover turns on
	// inside it (the transitions panel).
	events := []cluster.PhaseEvent{{At: time.Second, Name: "overload zone-a", Do: overload}, {At: 6 * time.Second, Name: "scrape for the gauges", Do: func(ctx context.Context) error {
		var err error
		tm, err = prom.WaitScraped(ctx, time.Now(), 10*time.Second)
		return err
	}}}
	ph, err := c.RunPhase(ctx, "dashboard", dashboardWorkload, 10*time.Second, 500*time.Millisecond, events, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ph.Windows {
		if w.End <= tm.UnixNano() && w.Start >= tm.Add(-3*time.Second).UnixNano() {
			mid = cluster.Merge(mid, w)
		}
	}
	// ...and one after the clients stopped.
	t1, err := prom.WaitScraped(ctx, time.Now().Add(300*time.Millisecond), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := measured{ph: ph, seconds: t1.Sub(t0).Seconds(), spillShare: 1 - mid.Share(cluster.ClientZone), flips: spillFlips(t, ctx, c) - flips0}
	for z, b := range ph.Window.BytesByZone {
		if z != cluster.ClientZone {
			m.crossBytes += float64(b)
		}
	}
	for _, w := range ph.Windows {
		m.dials += w.Dials
	}
	t.Logf("dashboard phase: scrapes at t0=%s, mid=%s, t1=%s (%.2fs): %s; spill share around the mid scrape %.3f",
		t0.Format(time.StampMilli), tm.Format(time.StampMilli), t1.Format(time.StampMilli), m.seconds, describe(ph.Window), m.spillShare)
	if ph.Window.Failed != 0 || m.spillShare < 0.05 || m.crossBytes == 0 || m.dials == 0 {
		t.Fatalf("the phase did not give every panel something to show (want no failure, calls spilled around the mid scrape, cross-zone bytes, dials): %s", describe(ph.Window))
	}

	// The range holds the scrape at t0 (just before the phase) and the
	// one at t1: a rate over it is the phase's count over t1-t0.
	rangeDur := t1.Sub(t0) + prom.Interval/2
	rangeDur = rangeDur.Round(time.Millisecond)
	seen := map[string]bool{}
	for _, q := range queries {
		key := q.PanelTitle + "/" + q.RefID
		seen[key] = true
		pc, ok := panelChecks[key]
		if !ok {
			t.Errorf("panel %q query %s: no check in the e2e test (add one to panelChecks)", q.PanelTitle, q.RefID)
			continue
		}
		at := t1
		if pc.gauge {
			at = tm
		}
		expr := q.Expand(rangeDur)
		v, err := prom.Query(ctx, expr, at)
		if err != nil {
			t.Errorf("panel %q %s: %v", q.PanelTitle, q.RefID, err)
			continue
		}
		t.Logf("panel %q %s at %s: %s", q.PanelTitle, q.RefID, at.Format(time.StampMilli), strings.ReplaceAll(v.String(), "\n", "; "))
		if err := pc.check(m, v); err != nil {
			t.Errorf("panel %q %s: %v\n  query: %s", q.PanelTitle, q.RefID, err, expr)
		}
	}
	for key := range panelChecks {
		if !seen[key] {
			t.Errorf("panelChecks has %q, which is no panel query of the dashboard", key)
		}
	}
}

// spillFlips reads the service's spillover transitions from the daemon's
// /debug/state.
func spillFlips(t *testing.T, ctx context.Context, c *cluster.Cluster) uint64 {
	t.Helper()
	st, err := c.Daemon().State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, s := range st.Services {
		for _, sp := range s.Balancer.Spill {
			n += sp.Flips
		}
	}
	return n
}

// near wants got within dashboardTolerance of want; a panel that shows
// nothing or 0 where the test measured something fails.
func near(got, want float64, what string) error {
	if want == 0 {
		return exact(got, 0, what)
	}
	if math.IsNaN(got) {
		return fmt.Errorf("%s: the panel shows nothing, the test measured %.6g", what, want)
	}
	if got == 0 {
		return fmt.Errorf("%s: the panel shows 0, the test measured %.6g", what, want)
	}
	if math.Abs(got-want) > dashboardTolerance*math.Abs(want) {
		return fmt.Errorf("%s: the panel shows %.6g, the test measured %.6g (off by %.1f%%, more than %.0f%%)", what, got, want, 100*math.Abs(got-want)/math.Abs(want), 100*dashboardTolerance)
	}
	return nil
}

// exact wants got == want, where a panel that shows nothing counts as 0
// when want is 0.
func exact(got, want float64, what string) error {
	if math.IsNaN(got) && want == 0 {
		return nil
	}
	if got != want {
		return fmt.Errorf("%s: the panel shows %v, want %v", what, got, want)
	}
	return nil
}

func between(got, lo, hi float64, what string) error {
	if math.IsNaN(got) || got < lo || got > hi {
		return fmt.Errorf("%s: the panel shows %v, want a value in [%v, %v]", what, got, lo, hi)
	}
	return nil
}

// single is the value of a one-series result (NaN if empty; several
// series are summed, as a stat panel would show them one by one).
func single(v model.Vector) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	return sum(v)
}

func sum(v model.Vector) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	var s float64
	for _, x := range v {
		s += float64(x.Value)
	}
	return s
}

// only is the value of the series whose label is value (NaN if none).
func only(v model.Vector, label, value string) float64 {
	for _, s := range v {
		if string(s.Metric[model.LabelName(label)]) == value {
			return float64(s.Value)
		}
	}
	return math.NaN()
}

// byLabel compares each series, keyed by label, with want; zones the test
// saw traffic in must have a series.
func byLabel(v model.Vector, label string, want func(string) float64, what string) error {
	got := map[string]float64{}
	for _, s := range v {
		got[string(s.Metric[model.LabelName(label)])] += float64(s.Value)
	}
	return compareMaps(got, want, what)
}

// compareMaps compares got, by zone, with want for every zone of the
// cluster.
func compareMaps(got map[string]float64, want func(string) float64, what string) error {
	var errs []string
	for _, z := range cluster.Zones {
		g, ok := got[z]
		if !ok {
			g = math.NaN()
		}
		if err := near(g, want(z), what+" "+z); err != nil {
			errs = append(errs, err.Error())
		}
		delete(got, z)
	}
	for k := range got {
		errs = append(errs, fmt.Sprintf("unexpected series for %q", k))
	}
	sort.Strings(errs)
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// durationBuckets are zonelb_request_duration_seconds's buckets
// (daemon/metrics.go).
var durationBuckets = []float64{0, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// quantileWithin checks a histogram_quantile panel (one series per
// destination zone) against the clients' own quantile over all calls.
// The quantile of a mixture lies between its parts' quantiles, and the
// proxy's latency is the client's minus the hop from client to proxy; the
// histogram only knows buckets. So the smallest zone's value must be at
// most the upper bound of the clients' bucket, and the largest zone's at
// least the lower bound of the bucket below it.
func quantileWithin(v model.Vector, client time.Duration, what string) error {
	if len(v) == 0 {
		return fmt.Errorf("%s: the panel shows nothing, the clients measured %v", what, client)
	}
	c := client.Seconds()
	i := sort.SearchFloat64s(durationBuckets, c) // durationBuckets[i-1] < c <= durationBuckets[i]
	i = min(max(i, 1), len(durationBuckets)-1)
	lo, hi := durationBuckets[max(i-2, 0)], durationBuckets[i]
	bottom, top := math.Inf(1), 0.0
	for _, s := range v {
		x := float64(s.Value)
		if math.IsNaN(x) || x <= 0 {
			return fmt.Errorf("%s %s: the panel shows %v s (the clients measured %v overall)", what, s.Metric, x, client)
		}
		bottom, top = min(bottom, x), max(top, x)
	}
	if bottom > hi || top < lo {
		return fmt.Errorf("%s: the panel's zones span [%v, %v] s, which does not reach into [%v, %v] around the clients' %v", what, bottom, top, lo, hi, client)
	}
	return nil
}
