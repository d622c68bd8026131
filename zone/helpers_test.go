package zone

import (
	"container/heap"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// testClock is an injected clock that moves only when told.
type testClock struct{ t time.Time }

func newTestClock() *testClock { return &testClock{t: time.Unix(1_700_000_000, 0)} }

func (c *testClock) Now() time.Time          { return c.t }
func (c *testClock) Advance(d time.Duration) { c.t = c.t.Add(d) }

// newTestBalancer returns a balancer on a test clock and a seeded source.
func newTestBalancer(tb testing.TB, cfg Config) (*Balancer, *testClock) {
	tb.Helper()
	clk := newTestClock()
	cfg.Now = clk.Now
	if cfg.Rand == nil {
		cfg.Rand = rand.NewPCG(1, 2)
	}
	b, err := NewBalancer(cfg)
	if err != nil {
		tb.Fatalf("NewBalancer: %v", err)
	}
	return b, clk
}

// zoneSpec is a zone name and how many ready endpoints it has.
type zoneSpec struct {
	zone string
	n    int
}

// makeEndpoints returns ready endpoints, addressed 127.0.<zone#>.<i>:8080
// (addresses are data only: nothing connects to them).
func makeEndpoints(spec ...zoneSpec) []Endpoint {
	var eps []Endpoint
	for zi, s := range spec {
		for i := range s.n {
			eps = append(eps, Endpoint{
				Addr:    netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, byte(zi + 1), byte(i + 1)}), 8080),
				Zone:    s.zone,
				Ready:   true,
				Serving: true,
			})
		}
	}
	return eps
}

func mustPick(tb testing.TB, b *Balancer, avoid netip.AddrPort) Picked {
	tb.Helper()
	p, err := b.Pick(avoid)
	if err != nil {
		tb.Fatalf("Pick(%v): %v", avoid, err)
	}
	return p
}

// queueModel is a small discrete-event simulation that drives one balancer
// (one client node) against endpoints modelled as queues: each endpoint
// has `servers` workers with lognormal service times around `base` and a
// FIFO queue; requests travel half the zone's round trip each way; other
// clients add Poisson background load to chosen zones. Every run is
// deterministic for its seed: the clock only moves from event to event.
// The sim package does the same at scale; this one is small enough to pin
// behaviours in unit tests.
type queueModel struct {
	tb  testing.TB
	b   *Balancer
	clk *testClock
	t0  time.Time
	now time.Duration
	rnd *rand.Rand

	sigma       float64                  // lognormal sigma of service times
	base        time.Duration            // mean service time
	servers     int                      // workers per endpoint
	zoneServers map[string]int           // workers per endpoint of a zone, overriding servers
	rtt         map[string]time.Duration // round trip from the local zone
	external    map[string]float64       // background requests/s per endpoint, by zone
	failing     map[string]Outcome       // zones whose endpoints fail, and how
	retries     bool                     // retry NotReached once on another endpoint
	every       time.Duration            // call hook every this much simulated time
	hook        func()
	nextHook    time.Duration

	eps    map[netip.AddrPort]*modelEndpoint
	order  []*modelEndpoint // eps in Update order: map order is random
	events eventHeap
	seq    uint64

	// Tallies since the last reset.
	since     time.Duration
	picks     map[string]int // first attempts, by zone
	total     int
	failed    int // requests that failed after any retry
	latencies []time.Duration
}

type modelEndpoint struct {
	addr  netip.AddrPort
	zone  string
	busy  int
	queue []*modelJob
	work  time.Duration // service time started since the last reset
}

type modelJob struct {
	picked  Picked
	ours    bool
	sentAt  time.Duration
	attempt int
	ep      *modelEndpoint
	service time.Duration
}

type eventKind int

const (
	evArrival    eventKind = iota // one of our requests is issued
	evBackground                  // a background request reaches ep
	evReach                       // our request reaches its endpoint
	evServed                      // a worker finishes a job
	evResponse                    // our response reaches the client
)

type modelEvent struct {
	at   time.Duration
	seq  uint64
	kind eventKind
	ep   *modelEndpoint
	job  *modelJob
}

type eventHeap []modelEvent

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	return h[i].at < h[j].at || h[i].at == h[j].at && h[i].seq < h[j].seq
}
func (h eventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)   { *h = append(*h, x.(modelEvent)) }
func (h *eventHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

func newQueueModel(tb testing.TB, b *Balancer, clk *testClock, eps []Endpoint) *queueModel {
	m := &queueModel{
		tb: tb, b: b, clk: clk, t0: clk.Now(),
		rnd:         rand.New(rand.NewPCG(7, 8)),
		sigma:       0.5,
		base:        10 * time.Millisecond,
		servers:     4,
		rtt:         map[string]time.Duration{},
		external:    map[string]float64{},
		zoneServers: map[string]int{},
		failing:     map[string]Outcome{},
		retries:     true,
		eps:         map[netip.AddrPort]*modelEndpoint{},
		picks:       map[string]int{},
	}
	for _, e := range eps {
		me := &modelEndpoint{addr: e.Addr, zone: e.Zone}
		m.eps[e.Addr] = me
		m.order = append(m.order, me)
	}
	b.Update(eps)
	return m
}

// capacity is what one endpoint serves at 100% utilisation, requests/s.
func (m *queueModel) capacity() float64 { return float64(m.servers) / m.base.Seconds() }

func (m *queueModel) schedule(at time.Duration, kind eventKind, ep *modelEndpoint, job *modelJob) {
	m.seq++
	heap.Push(&m.events, modelEvent{at: at, seq: m.seq, kind: kind, ep: ep, job: job})
}

func (m *queueModel) exp(rate float64) time.Duration {
	return time.Duration(m.rnd.ExpFloat64() / rate * float64(time.Second))
}

func (m *queueModel) serviceTime() time.Duration {
	f := 1.0
	if m.sigma > 0 {
		f = math.Exp(m.sigma*m.rnd.NormFloat64() - m.sigma*m.sigma/2) // mean 1
	}
	return time.Duration(float64(m.base) * f)
}

// run offers our requests at rate per second (Poisson) for d of simulated
// time, with the background load running alongside.
func (m *queueModel) run(d time.Duration, rate float64) {
	end := m.now + d
	m.schedule(m.now+m.exp(rate), evArrival, nil, nil)
	for _, ep := range m.order {
		if r := m.external[ep.zone]; r > 0 {
			m.schedule(m.now+m.exp(r), evBackground, ep, nil)
		}
	}
	for m.events.Len() > 0 {
		ev := heap.Pop(&m.events).(modelEvent)
		if ev.at > end && (ev.kind == evArrival || ev.kind == evBackground) {
			continue // no new arrivals past the end; drain the rest
		}
		m.now = ev.at
		m.clk.t = m.t0.Add(m.now)
		if m.hook != nil && m.now >= m.nextHook {
			m.hook()
			m.nextHook = m.now + m.every
		}
		switch ev.kind {
		case evArrival:
			m.send(&modelJob{ours: true, sentAt: m.now}, netip.AddrPort{})
			m.schedule(m.now+m.exp(rate), evArrival, nil, nil)
		case evBackground:
			m.enqueue(ev.ep, &modelJob{ep: ev.ep})
			m.schedule(m.now+m.exp(m.external[ev.ep.zone]), evBackground, ev.ep, nil)
		case evReach:
			m.enqueue(ev.job.ep, ev.job)
		case evServed:
			ep := ev.ep
			ep.busy--
			for len(ep.queue) > 0 && ep.busy < m.workers(ep) {
				next := ep.queue[0]
				ep.queue = ep.queue[1:]
				m.start(ep, next)
			}
			if ev.job.ours {
				m.schedule(m.now+m.rtt[ep.zone]/2, evResponse, ep, ev.job)
			}
		case evResponse:
			m.respond(ev.job)
		}
	}
	m.now = max(m.now, end)
	m.clk.t = m.t0.Add(m.now)
}

// send picks an endpoint for job (a first attempt, or a retry avoiding).
func (m *queueModel) send(job *modelJob, avoid netip.AddrPort) {
	job.picked = mustPick(m.tb, m.b, avoid)
	job.ep = m.eps[job.picked.Endpoint.Addr]
	if job.attempt == 0 {
		m.picks[job.ep.zone]++
		m.total++
	}
	if _, bad := m.failing[job.ep.zone]; bad {
		// Refused or failed without service: the answer takes a round trip.
		m.schedule(m.now+m.rtt[job.ep.zone], evResponse, job.ep, job)
		return
	}
	m.schedule(m.now+m.rtt[job.ep.zone]/2, evReach, job.ep, job)
}

// workers is how many jobs ep serves at once.
func (m *queueModel) workers(ep *modelEndpoint) int {
	if n, ok := m.zoneServers[ep.zone]; ok {
		return n
	}
	return m.servers
}

func (m *queueModel) enqueue(ep *modelEndpoint, job *modelJob) {
	if ep.busy < m.workers(ep) {
		m.start(ep, job)
		return
	}
	ep.queue = append(ep.queue, job)
}

func (m *queueModel) start(ep *modelEndpoint, job *modelJob) {
	ep.busy++
	job.service = m.serviceTime()
	ep.work += job.service
	m.schedule(m.now+job.service, evServed, ep, job)
}

func (m *queueModel) respond(job *modelJob) {
	if o, bad := m.failing[job.ep.zone]; bad && job.service == 0 {
		job.picked.Done(Result{Outcome: o})
		if o == NotReached && m.retries && job.attempt == 0 {
			job.attempt++
			m.send(job, job.ep.addr)
			return
		}
		m.failed++
		return
	}
	lat := m.now - job.sentAt
	job.picked.Done(Result{Outcome: Success, TTFB: lat, BytesSent: 100, BytesReceived: 1000})
	m.latencies = append(m.latencies, lat)
}

func (m *queueModel) reset() {
	m.since = m.now
	m.picks = map[string]int{}
	m.total, m.failed = 0, 0
	m.latencies = m.latencies[:0]
	for _, ep := range m.eps {
		ep.work = 0
	}
}

func (m *queueModel) share(zone string) float64 {
	if m.total == 0 {
		return 0
	}
	return float64(m.picks[zone]) / float64(m.total)
}

// zoneUtilisation is the mean utilisation of a zone's endpoints since the
// last reset.
func (m *queueModel) zoneUtilisation(zone string) float64 {
	var work time.Duration
	n := 0
	for _, ep := range m.eps {
		if ep.zone == zone {
			work += ep.work
			n++
		}
	}
	return work.Seconds() / (float64(n*m.servers) * (m.now - m.since).Seconds())
}

func (m *queueModel) String() string {
	return fmt.Sprintf("total %d picks %v failed %d", m.total, m.picks, m.failed)
}

// percentile of the latencies recorded since the last reset.
func (m *queueModel) percentile(p float64) time.Duration {
	if len(m.latencies) == 0 {
		return 0
	}
	s := slices.Clone(m.latencies)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}
