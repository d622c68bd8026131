package sim

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/zonelb/zonelb/zone"
)

// Model is the simulator with one client node whose balancer the caller
// builds, for the zone package's tests (package zone_test: sim imports
// zone): the node offers Poisson requests at the rate Run is given to
// endpoints that are queues as in a scenario, over per-zone round trips,
// while other clients add Poisson background load to the endpoints of
// chosen zones. Every run is deterministic for its seeds: the clock only
// moves from event to event.
//
// Set the fields before a Run; Run applies them to the endpoints.
type Model struct {
	ServiceTime time.Duration            // mean service time (lognormal, sigma 0.5)
	Workers     int                      // workers per endpoint
	ZoneWorkers map[string]int           // workers per endpoint of a zone, overriding Workers
	RTT         map[string]time.Duration // round trip to a zone's endpoints; 0 where absent
	Background  map[string]float64       // other clients' requests/s per endpoint, by zone
	// Failing lists the zones whose endpoints fail and how: zone.NotReached
	// (refused: retried once elsewhere) or zone.Failure (reset after the
	// request was sent: not retried), one outcome for every failing zone.
	Failing map[string]zone.Outcome
	// Pauses stalls the node (see Pause): the node proxy when PauseProxy
	// (requests and responses that reach it wait for the pause's end,
	// then come in PauseOrder), every endpoint of every zone when
	// PauseEndpoints (no service progresses). Both: the whole node, as on
	// a machine where the proxy and the backends share the CPUs.
	Pauses         []Pause
	PauseProxy     bool
	PauseEndpoints bool
	PauseOrder     PauseOrder

	e     *engine
	n     *node
	bg    *rand.Rand // background arrivals and demands
	tally modelTally

	hook     func()
	every    time.Duration
	nextHook time.Duration
}

// NewModel returns the simulator with the endpoints eps (ready as they
// say), 4 workers each, 10 ms mean service time, no round trips and no
// background load. Balance gives it its balancer.
func NewModel(eps []zone.Endpoint) *Model {
	sc := &Scenario{Name: "model", ServiceSigma: 0.5, RequestBytes: 100, ResponseBytes: 1000}
	m := &Model{
		ServiceTime: 10 * time.Millisecond,
		Workers:     4,
		ZoneWorkers: map[string]int{},
		RTT:         map[string]time.Duration{},
		Background:  map[string]float64{},
		Failing:     map[string]zone.Outcome{},
		e:           &engine{sc: sc},
		n:           &node{rnd: rand.New(rand.NewPCG(7, 8))},
		bg:          rand.New(rand.NewPCG(9, 10)),
	}
	for _, ep := range eps {
		m.e.eps = append(m.e.eps, &endpoint{idx: len(m.e.eps), addr: ep.Addr, zone: ep.Zone, ready: ep.Ready})
	}
	m.e.refreshReady()
	m.e.nodes = []*node{m.n}
	m.e.stats = &m.tally
	m.Reset()
	return m
}

// Now is the simulated clock, for the balancer's zone.Config.Now.
func (m *Model) Now() time.Time { return simEpoch.Add(time.Duration(m.e.now)) }

// Balance makes b the node's balancer and gives it the endpoints.
func (m *Model) Balance(b *zone.Balancer) {
	zp := &zonePicker{b: b, byAddr: m.e.byAddr()}
	zp.update(m.e)
	m.n.picker = zp
}

// Every calls hook every d of simulated time from now on, during runs.
func (m *Model) Every(d time.Duration, hook func()) {
	m.hook, m.every, m.nextHook = hook, d, time.Duration(m.e.now)+d
}

// Capacity is what one endpoint serves at full utilisation, requests/s.
func (m *Model) Capacity() float64 { return float64(m.Workers) / m.ServiceTime.Seconds() }

// Run offers the node's requests at rate per second for d of simulated
// time, with the background load alongside, then drains what is in
// flight.
func (m *Model) Run(d time.Duration, rate float64) {
	e := m.e
	m.apply()
	end := e.now + int64(d)
	m.n.rate = rate
	if rate > 0 {
		e.schedule(e.now+e.interarrival(m.n), evArrival, m.n, nil, nil)
	}
	for _, ep := range e.eps {
		if r := m.Background[ep.zone]; r > 0 {
			m.background(ep, r, end)
		}
	}
	for ; m.hook != nil && int64(m.nextHook) <= end; m.nextHook += m.every {
		e.at(m.nextHook, func(*engine) { m.hook() })
	}
	e.until(end)
	e.now = max(e.now, end)
}

// apply sets the endpoints' workers, failures and round trips from the
// fields.
func (m *Model) apply() {
	e := m.e
	e.sc.ServiceTime = m.ServiceTime
	e.zoneRTT = m.RTT
	if e.zoneRTT == nil {
		e.zoneRTT = map[string]time.Duration{}
	}
	if len(m.Pauses) > 0 && (m.PauseProxy || m.PauseEndpoints) {
		if e.pauses == nil {
			e.pauses = &pauses{rnd: rand.New(rand.NewPCG(11, 12))}
		}
		e.pauses.spans = slices.SortedFunc(slices.Values(m.Pauses), func(a, b Pause) int { return cmp.Compare(a.At, b.At) })
		e.pauses.proxy, e.pauses.endpoints, e.pauses.order = m.PauseProxy, m.PauseEndpoints, m.PauseOrder
	} else if e.pauses != nil && len(e.pauses.held) == 0 {
		e.pauses = nil
	}
	var modes []zone.Outcome
	for _, o := range m.Failing {
		modes = append(modes, o)
	}
	slices.Sort(modes)
	switch {
	case len(modes) == 0:
	case modes[0] != modes[len(modes)-1]:
		panic(fmt.Sprintf("sim: Model.Failing has outcomes %v: want one for every zone", modes))
	case modes[0] == zone.NotReached:
		e.sc.FailMode = FailRefuse
	case modes[0] == zone.Failure:
		e.sc.FailMode = FailReset
	default:
		panic(fmt.Sprintf("sim: Model.Failing outcome %v: want NotReached or Failure", modes[0]))
	}
	for _, ep := range e.eps {
		ep.workers = m.Workers
		if n, ok := m.ZoneWorkers[ep.zone]; ok {
			ep.workers = n
		}
		_, ep.failing = m.Failing[ep.zone]
	}
}

// background schedules ep's next background request before end.
func (m *Model) background(ep *endpoint, rate float64, end int64) {
	at := m.e.now + int64(m.bg.ExpFloat64()/rate*1e9)
	if at >= end {
		return
	}
	m.e.at(time.Duration(at), func(e *engine) {
		// A request of no node: served, and nothing answers it.
		e.enqueue(ep, &request{sent: e.now, demand: lognormal(m.bg, e.sc.ServiceSigma)})
		m.background(ep, rate, end)
	})
}

// Reset starts the tallies and utilisation anew.
func (m *Model) Reset() {
	m.tally = modelTally{since: m.e.now, picks: map[string]int{}, lat: m.tally.lat[:0]}
	for _, ep := range m.e.eps {
		ep.busyNs = 0
	}
}

// Share is the share of the node's requests since the last Reset whose
// first attempt went to zone z.
func (m *Model) Share(z string) float64 {
	if m.tally.total == 0 {
		return 0
	}
	return float64(m.tally.picks[z]) / float64(m.tally.total)
}

// Total is how many requests the node sent since the last Reset.
func (m *Model) Total() int { return m.tally.total }

// Failed is how many of the node's requests failed (after any retry)
// since the last Reset.
func (m *Model) Failed() int { return m.tally.failed }

// ZoneUtilisation is the mean utilisation of zone z's endpoints (service
// time started over Workers) since the last Reset.
func (m *Model) ZoneUtilisation(z string) float64 {
	var busy int64
	n := 0
	for _, ep := range m.e.eps {
		if ep.zone == z {
			busy += ep.busyNs
			n++
		}
	}
	return float64(busy) / (float64(n*m.Workers) * float64(m.e.now-m.tally.since))
}

// Percentile is the p-quantile (0..1) of the latencies of the node's
// requests served since the last Reset.
func (m *Model) Percentile(p float64) time.Duration {
	s := m.tally.lat
	if len(s) == 0 {
		return 0
	}
	s = slices.Clone(s)
	slices.Sort(s)
	return time.Duration(s[min(len(s)-1, int(p*float64(len(s))))])
}

func (m *Model) String() string {
	return fmt.Sprintf("total %d picks %v failed %d", m.tally.total, m.tally.picks, m.tally.failed)
}

// modelTally is the Model's recorder.
type modelTally struct {
	since  int64
	picks  map[string]int // first attempts, by zone
	total  int
	failed int
	lat    []int64 // of the requests served
}

func (t *modelTally) firstAttempt(_ *engine, _ *request, ep *endpoint) {
	t.picks[ep.zone]++
	t.total++
}

func (t *modelTally) transfer(*engine, *request, *endpoint) {}

func (t *modelTally) finish(e *engine, r *request, ok bool, _ *endpoint) {
	if !ok {
		t.failed++
		return
	}
	t.lat = append(t.lat, e.now-r.sent)
}
