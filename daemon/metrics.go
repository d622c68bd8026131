package daemon

import (
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/zonelb/zonelb/proxy"
	"github.com/zonelb/zonelb/zone"
)

// Metrics are the daemon's Prometheus metrics, on a registry it owns. The
// per-request counters are updated by the proxy (Metrics is its Observer);
// everything else is read from the balancers, the byte accounting and the
// BPF maps at scrape time.
type Metrics struct {
	Registry *prometheus.Registry

	localZone atomic.Pointer[string]
	px        atomic.Pointer[proxy.Proxy]
	shares    sync.Map // service -> *localShare
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	retries   *prometheus.CounterVec
}

// StateSource lists the balancers whose state is exported.
type StateSource interface {
	BalancerStates() []ServiceState
}

// ServiceState is one service's balancer state.
type ServiceState struct {
	Service string
	State   zone.State
}

// ProxyStats reads the proxy's counters.
type ProxyStats interface{ Stats() proxy.Stats }

// NewMetrics registers zonelb's metrics. extra collectors (such as the BPF
// counters) are registered alongside.
func NewMetrics(localZone, version string, states StateSource, acct *zone.Accounting, px ProxyStats, extra ...prometheus.Collector) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zonelb_requests_total",
			Help: "Requests and gRPC calls proxied, by service, source zone (this node's), destination zone and result code (gRPC status name, or HTTP status).",
		}, []string{"service", "src_zone", "dst_zone", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "zonelb_request_duration_seconds",
			Help:    "Time from receiving a request to its end, by service and destination zone.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"service", "dst_zone"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zonelb_retries_total",
			Help: "Requests retried transparently on another endpoint because they never reached the first.",
		}, []string{"service"}),
	}
	goVersion := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
	}
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "zonelb_build_info",
		Help: "Build information; always 1.",
	}, []string{"version", "goversion"})
	build.WithLabelValues(version, goVersion).Set(1)
	m.setLocalZone(localZone)
	if px == nil {
		px = proxyStatsFunc(func() proxy.Stats {
			if p := m.px.Load(); p != nil {
				return p.Stats()
			}
			return proxy.Stats{}
		})
	}

	m.Registry.MustRegister(m.requests, m.duration, m.retries, build,
		&stateCollector{states: states, acct: acct, px: px},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, c := range extra {
		m.Registry.MustRegister(c)
	}
	return m
}

// ObserveRequest implements proxy.Observer.
func (m *Metrics) ObserveRequest(info proxy.RequestInfo) {
	dst := "none"
	if info.Endpoint != nil {
		dst = zoneLabel(info.Endpoint.Zone)
	}
	code := strconv.Itoa(info.Status)
	if info.GRPC && info.GRPCStatus >= 0 {
		code = info.GRPCStatus.String()
	} else if info.Status == 0 {
		code = "canceled" // the client went away before an answer
	}
	local := *m.localZone.Load()
	m.requests.WithLabelValues(info.Service, zoneLabel(local), dst, code).Inc()
	if info.Endpoint != nil {
		v, ok := m.shares.Load(info.Service)
		if !ok {
			v, _ = m.shares.LoadOrStore(info.Service, new(localShare))
		}
		ls := v.(*localShare)
		ls.total.Add(1)
		if local != "" && info.Endpoint.Zone == local {
			ls.local.Add(1)
		}
	}
	m.duration.WithLabelValues(info.Service, dst).Observe(info.Duration.Seconds())
	if info.Retried {
		m.retries.WithLabelValues(info.Service).Inc()
	}
}

var _ proxy.Observer = (*Metrics)(nil)

// localShare counts a service's requests that reached an endpoint, and
// those that stayed in the node's zone.
type localShare struct{ local, total atomic.Uint64 }

// LocalShare returns how many of service's requests reached an endpoint
// and how many of those stayed in the local zone.
func (m *Metrics) LocalShare(service string) (local, total uint64) {
	v, ok := m.shares.Load(service)
	if !ok {
		return 0, 0
	}
	ls := v.(*localShare)
	return ls.local.Load(), ls.total.Load()
}

func zoneLabel(z string) string {
	if z == "" {
		return "unknown"
	}
	return z
}

func (m *Metrics) setLocalZone(z string) { m.localZone.Store(&z) }

// registerReady exports ready (what /readyz answers) as zonelb_ready.
func (m *Metrics) registerReady(ready func() bool) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "zonelb_ready",
		Help: "1 while the daemon is ready (/readyz): discovery synced, proxy listening and registered with the BPF hooks; 0 while starting or draining.",
	}, func() float64 {
		if ready() {
			return 1
		}
		return 0
	}))
}

func (m *Metrics) setProxy(p *proxy.Proxy) { m.px.Store(p) }

type proxyStatsFunc func() proxy.Stats

func (f proxyStatsFunc) Stats() proxy.Stats { return f() }

// stateCollector reads balancer state and byte accounting at scrape time.
type stateCollector struct {
	states StateSource
	acct   *zone.Accounting
	px     ProxyStats
}

var (
	descCrossBytes = prometheus.NewDesc("zonelb_cross_zone_bytes_total",
		"Bytes between this node's proxy and endpoints, by source zone, destination zone and direction (sent: requests; received: responses). Includes same-zone pairs; cross-zone ones are where src_zone != dst_zone.",
		[]string{"src_zone", "dst_zone", "direction"}, nil)
	descCrossCost = prometheus.NewDesc("zonelb_cross_zone_cost_dollars_total",
		"Estimated cost of the bytes that crossed zones, in US dollars, at the configured price per GB charged on each side of the crossing.",
		[]string{"src_zone", "dst_zone"}, nil)
	descEndpoints = prometheus.NewDesc("zonelb_endpoints",
		"Endpoints by service, zone and state (ready, ejected, slow_start, terminating).",
		[]string{"service", "zone", "state"}, nil)
	descSpill = prometheus.NewDesc("zonelb_spillover_active",
		"1 while a service spills traffic out of the local zone (per spill boundary, nearest first).",
		[]string{"service", "distance"}, nil)
	descSpillShare = prometheus.NewDesc("zonelb_spillover_share",
		"Share of a service's requests that spill across the boundary.",
		[]string{"service", "distance"}, nil)
	descSpillLevel = prometheus.NewDesc("zonelb_spill_local_level_seconds",
		"Latency level (smoothed mean time to first byte) of the tier before the spill boundary (the local zone, for distance 1), as the spill rule compared it at its last step.",
		[]string{"service", "distance"}, nil)
	descSpillBudgeted = prometheus.NewDesc("zonelb_spill_budgeted_level_seconds",
		"Latency level the service's spill budget allows the tier before the boundary (its unloaded level raised by the budget); absent under the parity rule or before the unloaded level is learnt. Requests spill so as to hold the local level here.",
		[]string{"service", "distance"}, nil)
	descSpillFlips = prometheus.NewDesc("zonelb_spillover_transitions_total",
		"Times spillover turned on or off.",
		[]string{"service", "distance"}, nil)
	descSpillReason = prometheus.NewDesc("zonelb_spill_reason",
		"1 for the reason of a service's split between zones: under_budget, spilling, local_failed, no_local_endpoints, local_only, parity, latency, zone_blind or no_endpoints (text in /debug/state).",
		[]string{"service", "reason"}, nil)
	descSpillBudget = prometheus.NewDesc("zonelb_spill_budget_ratio",
		"A service's spill budget: how far its local zone's latency may rise above its unloaded level (0.5 = 50%); -1 for the parity rule, -2 for the latency rule.",
		[]string{"service"}, nil)
	descActive = prometheus.NewDesc("zonelb_active_requests",
		"Requests in flight through the proxy.", nil, nil)
	descUpConns = prometheus.NewDesc("zonelb_upstream_connections_opened_total",
		"Upstream HTTP/2 connections opened.", nil, nil)
	descFloods = prometheus.NewDesc("zonelb_flood_connections_closed_total",
		"Client connections closed by the flood guard.", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCrossBytes, descCrossCost, descEndpoints, descSpill, descSpillShare,
		descSpillLevel, descSpillBudgeted, descSpillFlips, descSpillReason, descSpillBudget, descActive, descUpConns, descFloods} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	if c.acct != nil {
		for _, u := range c.acct.Usage() {
			src, dst := zoneLabel(u.From), zoneLabel(u.To)
			ch <- prometheus.MustNewConstMetric(descCrossBytes, prometheus.CounterValue, float64(u.BytesSent), src, dst, "sent")
			ch <- prometheus.MustNewConstMetric(descCrossBytes, prometheus.CounterValue, float64(u.BytesReceived), src, dst, "received")
			if u.CrossZone {
				ch <- prometheus.MustNewConstMetric(descCrossCost, prometheus.CounterValue, u.CostUSD, src, dst)
			}
		}
	}
	if c.states != nil {
		for _, s := range c.states.BalancerStates() {
			type key struct{ zone, state string }
			counts := map[key]int{}
			for _, e := range s.State.Endpoints {
				counts[key{zoneLabel(e.Endpoint.Zone), endpointStateName(e)}]++
			}
			for k, n := range counts {
				ch <- prometheus.MustNewConstMetric(descEndpoints, prometheus.GaugeValue, float64(n), s.Service, k.zone, k.state)
			}
			ch <- prometheus.MustNewConstMetric(descSpillReason, prometheus.GaugeValue, 1, s.Service, s.State.SplitReason)
			ch <- prometheus.MustNewConstMetric(descSpillBudget, prometheus.GaugeValue, max(s.State.SpillBudget, -1), s.Service)
			for _, sp := range s.State.Spill {
				d := strconv.Itoa(sp.Distance)
				active := 0.0
				if sp.Active {
					active = 1
				}
				ch <- prometheus.MustNewConstMetric(descSpill, prometheus.GaugeValue, active, s.Service, d)
				ch <- prometheus.MustNewConstMetric(descSpillShare, prometheus.GaugeValue, sp.Share, s.Service, d)
				ch <- prometheus.MustNewConstMetric(descSpillFlips, prometheus.CounterValue, float64(sp.Flips), s.Service, d)
				if sp.FromLevel > 0 {
					ch <- prometheus.MustNewConstMetric(descSpillLevel, prometheus.GaugeValue, sp.FromLevel.Seconds(), s.Service, d)
				}
				if sp.BudgetedLevel > 0 {
					ch <- prometheus.MustNewConstMetric(descSpillBudgeted, prometheus.GaugeValue, sp.BudgetedLevel.Seconds(), s.Service, d)
				}
			}
		}
	}
	if c.px != nil {
		st := c.px.Stats()
		ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(st.ActiveRequests))
		ch <- prometheus.MustNewConstMetric(descUpConns, prometheus.CounterValue, float64(st.UpstreamConns))
		ch <- prometheus.MustNewConstMetric(descFloods, prometheus.CounterValue, float64(st.FloodsClosed))
	}
}

func endpointStateName(e zone.EndpointState) string {
	switch {
	case e.Ejected:
		return "ejected"
	case e.Endpoint.Terminating || !e.Endpoint.Ready:
		return "terminating"
	case e.SlowStartWeight < 1:
		return "slow_start"
	}
	return "ready"
}
