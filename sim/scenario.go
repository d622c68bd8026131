package sim

import (
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/netip"
	"strings"
	"time"
)

// ZoneSpec is one zone's share of a scenario.
type ZoneSpec struct {
	Name      string
	Nodes     int // client nodes
	Endpoints int
}

// FailMode is how failing endpoints fail.
type FailMode int

const (
	// FailRefuse: connections are refused (NotReached): safe to retry.
	FailRefuse FailMode = iota
	// FailReset: requests are reset after being sent (Failure): not safe
	// to retry.
	FailReset
)

// Scenario describes one simulated situation.
type Scenario struct {
	Name, Description string

	Zones        []ZoneSpec
	ZoneDistance map[string]int // for zonelb; nil: other zones equal

	Workers      int           // concurrent requests per endpoint
	ServiceTime  time.Duration // mean service time
	ServiceSigma float64       // lognormal sigma of service times
	// Load is the offered rate as a share of the total capacity
	// (endpoints x Workers / ServiceTime), spread evenly over the nodes:
	// a zone with more nodes offers more.
	Load float64
	// Rate, when set, is the total offered rate in requests/s instead.
	Rate float64
	// QuietShare, when set, scales the offered rate during the warm-up
	// (a quiet start, as the loopback benchmark has).
	QuietShare float64

	LocalRTT, CrossRTT time.Duration
	// ServiceExtra is added to every service time: what the sleeps of
	// real queueing backends add on a busy machine (calibration against
	// cmd/zonelb-bench-spill, which measures it; 0 in every scenario).
	ServiceExtra  time.Duration
	RequestBytes  int64
	ResponseBytes int64
	Conns         int // connections per node, for PerConnection

	Duration, Warmup time.Duration
	Timeout          time.Duration // the client's deadline; 0: none (the Model's)
	FailMode         FailMode

	// Events schedules the scenario's changes (failures, stalls).
	Events func(e *engine)
	// Baseline names a scenario to run alongside, whose p99 this one's is
	// compared with (the stall replay against the same run without it).
	Baseline string
	// Watch, when set, is the failure window whose "moved" time and
	// failures are reported: from, to, and the zone whose clients to watch.
	Watch *Window
	// Step, when set, is a capacity step at Step.From in Step.Zone, whose
	// overshoot and first-second p99 are reported (Result.StepDip,
	// StepP99); Step.To ends the measured phase.
	Step *Window
}

// Window is a time span and the zone of interest.
type Window struct {
	From, To time.Duration
	Zone     string
}

func (s *Scenario) capacity() float64 {
	n := 0
	for _, z := range s.Zones {
		n += z.Endpoints
	}
	return float64(n*s.Workers) / s.ServiceTime.Seconds()
}

func (s *Scenario) totalRate() float64 {
	if s.Rate > 0 {
		return s.Rate
	}
	return s.Load * s.capacity()
}

// base returns the defaults every scenario starts from.
func base() Scenario {
	return Scenario{
		Workers:       2,
		ServiceTime:   10 * time.Millisecond,
		ServiceSigma:  0.5,
		LocalRTT:      100 * time.Microsecond,
		CrossRTT:      time.Millisecond,
		RequestBytes:  1024,
		ResponseBytes: 4096,
		Conns:         4,
		Duration:      60 * time.Second,
		Warmup:        10 * time.Second,
		Timeout:       time.Second,
	}
}

// failZone makes zone z's endpoints fail at from, be marked not ready by
// Kubernetes readiness probes `lag` later, and recover at to.
func failZone(z string, from, lag, to time.Duration) func(*engine) {
	return func(e *engine) {
		e.at(from, func(e *engine) { e.setFailing(z, true) })
		e.at(from+lag, func(e *engine) { e.setReady(z, false) })
		e.at(to, func(e *engine) {
			e.setFailing(z, false)
			e.setReady(z, true)
		})
	}
}

// Scenarios returns every scenario, in report order.
func Scenarios() []*Scenario {
	balanced := base()
	balanced.Name = "balanced"
	balanced.Description = "3 zones x (3 nodes, 10 endpoints), 50% load"
	balanced.Zones = []ZoneSpec{{"a", 3, 10}, {"b", 3, 10}, {"c", 3, 10}}
	balanced.Load = 0.5

	overload := base()
	overload.Name = "overload"
	overload.Description = "zone a has 6 of 10 nodes: offered 126% of its capacity, b and c 42%; 70% overall"
	overload.Zones = []ZoneSpec{{"a", 6, 10}, {"b", 2, 10}, {"c", 2, 10}}
	overload.Load = 0.7

	failure := base()
	failure.Name = "zone-failure"
	failure.Description = "balanced at 50%; zone a's endpoints refuse connections from 20s, " +
		"readiness marks them not ready at 30s, they recover at 40s"
	failure.Zones = balanced.Zones
	failure.Load = 0.5
	failure.Warmup = 5 * time.Second
	failure.Events = failZone("a", 20*time.Second, 10*time.Second, 40*time.Second)
	failure.Watch = &Window{From: 20 * time.Second, To: 40 * time.Second, Zone: "a"}

	reset := failure
	reset.Name = "zone-failure-reset"
	reset.Description = "as zone-failure, but requests are reset after being sent (not safe to retry)"
	reset.FailMode = FailReset

	uneven := base()
	uneven.Name = "uneven"
	uneven.Description = "endpoints spread 6/4/2 over zones with 3 nodes each, 60% load: " +
		"zone c is offered 120% of its capacity"
	uneven.Zones = []ZoneSpec{{"a", 3, 6}, {"b", 3, 4}, {"c", 3, 2}}
	uneven.Load = 0.6

	stall := base()
	stall.Name = "linkerd-2016"
	stall.Description = "Linkerd's 2016 test: 11 endpoints, 1000 req/s, one endpoint answers in 2s " +
		"from 15s to 45s of 60s; one zone"
	stall.Zones = []ZoneSpec{{"a", 1, 11}}
	stall.Workers = 100 // latency, not capacity, is the problem
	stall.Rate = 1000
	stall.Warmup = 0
	stall.Baseline = "linkerd-2016-no-stall"
	stall.Events = func(e *engine) {
		e.at(15*time.Second, func(e *engine) { e.eps[0].stall = int64(2 * time.Second) })
		e.at(45*time.Second, func(e *engine) { e.eps[0].stall = 0 })
	}
	noStall := stall
	noStall.Name = "linkerd-2016-no-stall"
	noStall.Description = "linkerd-2016 without the stall: the baseline for its p99"
	noStall.Baseline = ""
	noStall.Events = nil

	scale := base()
	scale.Name = "scale"
	scale.Description = "100 nodes x 1,000 endpoints x 3 zones (2 workers, 100ms each), 50% load, 30s"
	scale.Zones = []ZoneSpec{{"a", 34, 334}, {"b", 33, 333}, {"c", 33, 333}}
	scale.ServiceTime = 100 * time.Millisecond
	scale.Load = 0.5
	scale.Duration = 30 * time.Second

	return []*Scenario{&balanced, &overload, &failure, &reset, &uneven, capacityStep(), loopback(), &stall, &noStall, &scale}
}

// loopback is the real-process benchmark's scenario (cmd/zonelb-bench-spill):
// one client node in zone a, three zones of three endpoints serving 2 calls
// at once (lognormal, median 10 ms: mean 11.3 ms), 30% of zone a's
// capacity for 10s, then 1.5x for 30s; 1 ms across zones, loopback within.
func loopback() *Scenario {
	sc := base()
	sc.Name = "loopback-overload"
	sc.Description = "cmd/zonelb-bench-spill's: 1 client node in zone a; 3 zones x 3 endpoints of 2 slots (median 10 ms); " +
		"30% of zone a's capacity for 10s, then 1.5x for 30s"
	sc.Zones = []ZoneSpec{{"a", 1, 3}, {"b", 0, 3}, {"c", 0, 3}}
	sc.Workers = 2
	sc.ServiceTime = time.Duration(float64(10*time.Millisecond) * math.Exp(0.5*0.5/2))
	sc.Rate = 1.5 * 6 / sc.ServiceTime.Seconds()
	sc.QuietShare = 0.3 / 1.5
	sc.LocalRTT = 50 * time.Microsecond
	sc.Duration, sc.Warmup = 40*time.Second, 10*time.Second
	return &sc
}

// capacityStep is make demo's live overload: one client node in zone a
// offers 600 calls/s to two endpoints per zone (5 ms calls, 8 at once);
// at 10s zone a's endpoints drop to one call at a time (400 calls/s
// together) for 15s.
func capacityStep() *Scenario {
	sc := base()
	sc.Name = "capacity-step"
	sc.Description = "make demo's step: 600 calls/s from zone a's node to 2 endpoints per zone (5 ms, 8 at once); " +
		"at 10s zone a's drop to 1 at a time (400 calls/s together) for 15s"
	sc.Zones = []ZoneSpec{{"a", 1, 2}, {"b", 0, 2}, {"c", 0, 2}}
	sc.Workers = 8
	sc.ServiceTime = 5 * time.Millisecond
	sc.Rate = 600
	sc.Duration = 25 * time.Second
	sc.Warmup = 10 * time.Second
	sc.Step = &Window{From: 10 * time.Second, To: 25 * time.Second, Zone: "a"}
	sc.Events = func(e *engine) {
		e.at(10*time.Second, func(e *engine) {
			for _, ep := range e.eps {
				if ep.zone == "a" {
					ep.workers = 1
				}
			}
		})
	}
	return &sc
}

func findScenario(name string) (*Scenario, error) {
	var names []string
	for _, s := range Scenarios() {
		if s.Name == name {
			return s, nil
		}
		names = append(names, s.Name)
	}
	return nil, fmt.Errorf("unknown scenario %q (known: %s)", name, strings.Join(names, ", "))
}

// newEngine builds the scenario's endpoints and nodes for policy p.
func newEngine(sc *Scenario, p Policy, seed uint64, log *slog.Logger) (*engine, error) {
	return newEngineBudget(sc, p, seed, log, 0)
}

// newEngineBudget is newEngine with zonelb's spill budget (a
// zone.SpillConfig.Budget value; 0: the default).
func newEngineBudget(sc *Scenario, p Policy, seed uint64, log *slog.Logger, budget float64) (*engine, error) {
	e := &engine{sc: sc, policy: p, log: log, budget: budget}
	for zi, z := range sc.Zones {
		for i := range z.Endpoints {
			// Addresses are identifiers only: nothing connects to them.
			addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, byte(zi + 1), byte(i >> 8), byte(i)}), 8080)
			e.eps = append(e.eps, &endpoint{idx: len(e.eps), addr: addr, zone: z.Name, workers: sc.Workers, ready: true})
		}
	}
	e.refreshReady()
	nodes := 0
	for _, z := range sc.Zones {
		nodes += z.Nodes
	}
	perNode := sc.totalRate() / float64(nodes)
	for _, z := range sc.Zones {
		for range z.Nodes {
			n := &node{idx: len(e.nodes), zone: z.Name, rate: perNode,
				// The workload depends on the seed and the node only, so
				// every policy sees the same arrivals and demands.
				rnd: rand.New(rand.NewPCG(seed, uint64(len(e.nodes))))}
			e.nodes = append(e.nodes, n)
		}
	}
	policySeed := seed ^ hashString(string(p))
	for _, n := range e.nodes {
		pk, err := newPicker(e, p, n, policySeed)
		if err != nil {
			return nil, err
		}
		n.picker = pk
	}
	e.stats = newRunStats(sc)
	if sc.Events != nil {
		sc.Events(e)
	}
	return e, nil
}

func hashString(s string) uint64 {
	h := uint64(14695981039346656037) // FNV-1a
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

func (e *engine) setFailing(z string, failing bool) {
	for _, ep := range e.eps {
		if ep.zone == z {
			ep.failing = failing
		}
	}
}

// setReady changes readiness, as EndpointSlices would, and tells every
// node's policy.
func (e *engine) setReady(z string, ready bool) {
	for _, ep := range e.eps {
		if ep.zone == z {
			ep.ready = ready
		}
	}
	e.refreshReady()
	for _, n := range e.nodes {
		n.picker.update(e)
	}
}

func (e *engine) refreshReady() {
	e.readyCache = e.ready()
	e.readyByZone = map[string][]*endpoint{}
	for _, ep := range e.readyCache {
		e.readyByZone[ep.zone] = append(e.readyByZone[ep.zone], ep)
	}
}
