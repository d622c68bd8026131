// Package sim is a discrete-event simulation of request balancing across
// availability zones, at a scale no test machine has: client nodes in
// several zones send requests to endpoints (queues with a number of
// workers and a service-time distribution), over intra- and cross-zone
// round trips, and a policy picks each request's endpoint. It drives the
// real zone package for zonelb (and, with zone preference off, for
// zone-blind Peak-EWMA), and simple baselines for the other policies, on
// the same seeded workload, and reports cross-zone traffic and its cost,
// latency percentiles, success within a timeout and endpoint utilisation.
// Model is the same simulator with one client node whose balancer the
// caller builds: the zone package's tests pin its behaviours with it.
//
// It must not re-implement the zone package's algorithm, open sockets, or
// read the wall clock: simulated time is the only time, and every run is
// deterministic for its seed.
package sim

import (
	"container/heap"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/zonelb/zonelb/zone"
)

// endpoint is one simulated backend: a FIFO queue in front of workers.
type endpoint struct {
	idx     int
	addr    netip.AddrPort
	zone    string
	workers int
	busy    int
	queue   []*request
	head    int // queue[head:] is waiting

	ready   bool  // in the endpoint set the policies see
	failing bool  // refuses connections (or resets, per the scenario)
	stall   int64 // ns: service time while stalled; 0 when not

	busyNs int64 // service time started inside the measurement window
}

// node is one client node: a request source and the policy instance that
// balances its requests.
type node struct {
	idx    int
	zone   string
	rate   float64    // requests per second
	rnd    *rand.Rand // arrivals and request demands: the same for every policy
	picker picker
}

type request struct {
	node    *node
	sent    int64   // first attempt, ns
	demand  float64 // service-time factor, mean 1
	attempt int
	tried   *endpoint // the endpoint of the current attempt
	tok     zone.Picked
	at      int64 // current attempt's send time
	refused bool  // the current attempt was refused or reset
	served  bool  // the endpoint finished it (the response is on its way)
	over    bool  // completed, failed or timed out
	started bool
	stats   bool // counted in the measurement window
}

type evKind uint8

const (
	evArrival evKind = iota
	evReach
	evServed
	evResponse
	evTimeout
	evAction // a scenario change at this time
	evSend   // a request the node proxy reads late (after a pause) is sent
)

type event struct {
	at   int64
	seq  uint64
	kind evKind
	n    *node
	r    *request
	ep   *endpoint
	act  func(*engine)
}

type events []event

func (h events) Len() int { return len(h) }
func (h events) Less(i, j int) bool {
	return h[i].at < h[j].at || h[i].at == h[j].at && h[i].seq < h[j].seq
}
func (h events) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *events) Push(x any)   { *h = append(*h, x.(event)) }
func (h *events) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// engine runs one scenario under one policy.
type engine struct {
	sc     *Scenario
	now    int64
	events events
	seq    uint64
	eps    []*endpoint
	nodes  []*node
	stats  recorder // *runStats for a scenario, the Model's tallies in tests
	policy Policy

	zoneRTT     map[string]time.Duration // round trip to each zone's endpoints; nil: LocalRTT/CrossRTT
	pauses      *pauses                  // the node's stalls; nil for none
	log         *slog.Logger             // zone package events; nil for none
	budget      float64                  // zonelb's spill budget; 0: the default
	readyCache  []*endpoint              // ready endpoints, refreshed on change
	readyByZone map[string][]*endpoint   // the same by zone
}

// recorder tallies what the engine's requests do.
type recorder interface {
	// firstAttempt: r's first attempt goes to ep.
	firstAttempt(e *engine, r *request, ep *endpoint)
	// transfer: ep served r.
	transfer(e *engine, r *request, ep *endpoint)
	// finish: r is over, served (ok) or failed; ep is its last endpoint.
	finish(e *engine, r *request, ok bool, ep *endpoint)
}

func (e *engine) schedule(at int64, kind evKind, n *node, r *request, ep *endpoint) {
	e.seq++
	heap.Push(&e.events, event{at: at, seq: e.seq, kind: kind, n: n, r: r, ep: ep})
}

func (e *engine) at(t time.Duration, act func(*engine)) {
	e.seq++
	heap.Push(&e.events, event{at: int64(t), seq: e.seq, kind: evAction, act: act})
}

// rtt is the round trip between a client node and an endpoint.
func (e *engine) rtt(n *node, ep *endpoint) int64 {
	if e.zoneRTT != nil {
		return int64(e.zoneRTT[ep.zone])
	}
	if n.zone == ep.zone && n.zone != "" {
		return int64(e.sc.LocalRTT)
	}
	return int64(e.sc.CrossRTT)
}

func (e *engine) interarrival(n *node) int64 {
	rate := n.rate
	if e.sc.QuietShare > 0 && e.now < int64(e.sc.Warmup) {
		rate *= e.sc.QuietShare
	}
	return int64(n.rnd.ExpFloat64() / rate * 1e9)
}

// run simulates the scenario's duration and drains what is in flight.
func (e *engine) run() {
	for _, n := range e.nodes {
		if n.rate > 0 {
			e.schedule(e.interarrival(n), evArrival, n, nil, nil)
		}
	}
	e.until(int64(e.sc.Duration))
}

// until runs the events: arrivals up to end, then what is in flight.
func (e *engine) until(end int64) {
	for e.events.Len() > 0 {
		ev := heap.Pop(&e.events).(event)
		if ev.kind == evArrival && ev.at >= end {
			continue
		}
		e.now = ev.at
		switch ev.kind {
		case evArrival:
			e.arrive(ev.n)
			e.schedule(e.now+e.interarrival(ev.n), evArrival, ev.n, nil, nil)
		case evReach:
			e.reach(ev.r)
		case evServed:
			e.served(ev.ep, ev.r)
		case evResponse:
			if !e.hold(ev) {
				e.response(ev.r)
			}
		case evSend:
			e.send(ev.r, nil)
		case evTimeout:
			e.timeout(ev.r)
		case evAction:
			ev.act(e)
		}
	}
}

func (e *engine) arrive(n *node) {
	r := &request{
		node:   n,
		sent:   e.now,
		demand: lognormal(n.rnd, e.sc.ServiceSigma),
		stats:  e.now >= int64(e.sc.Warmup),
	}
	if e.sc.Timeout > 0 {
		e.schedule(e.now+int64(e.sc.Timeout), evTimeout, n, r, nil)
	}
	if e.hold(event{at: e.now, kind: evSend, n: n, r: r}) {
		return // the proxy reads it when its pause ends
	}
	e.send(r, nil)
}

// lognormal draws a service-time factor of mean 1.
func lognormal(rnd *rand.Rand, sigma float64) float64 {
	return math.Exp(sigma*rnd.NormFloat64() - sigma*sigma/2)
}

// send makes an attempt of r, avoiding the endpoint of a failed one.
func (e *engine) send(r *request, avoid *endpoint) {
	ep, tok, ok := r.node.picker.pick(e, avoid)
	if !ok {
		e.finish(r, false, nil)
		return
	}
	r.tried, r.tok, r.at, r.refused, r.served, r.started = ep, tok, e.now, false, false, false
	if r.attempt == 0 {
		e.stats.firstAttempt(e, r, ep)
	}
	if ep.failing {
		// Refused (or reset) without service: the answer takes a round trip.
		r.refused = true
		e.schedule(e.now+e.rtt(r.node, ep), evResponse, r.node, r, ep)
		return
	}
	e.schedule(e.now+e.rtt(r.node, ep)/2, evReach, r.node, r, ep)
}

func (e *engine) reach(r *request) {
	if r.over {
		return // the client gave up: its cancel arrives with the request
	}
	ep := r.tried
	if ep.failing {
		r.refused = true
		e.schedule(e.now+e.rtt(r.node, ep)/2, evResponse, r.node, r, ep)
		return
	}
	e.enqueue(ep, r)
}

// enqueue starts r on a free worker of ep, or queues it.
func (e *engine) enqueue(ep *endpoint, r *request) {
	if ep.busy < ep.workers {
		e.start(ep, r)
		return
	}
	ep.queue = append(ep.queue, r)
}

func (e *engine) start(ep *endpoint, r *request) {
	ep.busy++
	r.started = true
	d := int64(float64(e.sc.ServiceTime)*r.demand) + int64(e.sc.ServiceExtra)
	if ep.stall > 0 {
		d = ep.stall
	}
	if e.now >= int64(e.sc.Warmup) {
		ep.busyNs += d
	}
	e.schedule(e.pauses.served(e.now, d), evServed, r.node, r, ep)
}

func (e *engine) served(ep *endpoint, r *request) {
	ep.busy--
	for ep.head < len(ep.queue) && ep.busy < ep.workers {
		next := ep.queue[ep.head]
		ep.queue[ep.head] = nil
		ep.head++
		if !next.over { // cancelled while queued: the server drops it
			e.start(ep, next)
		}
	}
	if ep.head > 1024 && ep.head*2 > len(ep.queue) {
		ep.queue = append(ep.queue[:0], ep.queue[ep.head:]...)
		ep.head = 0
	}
	if r.over || r.node == nil { // a node-less request is background load
		return
	}
	r.served = true
	e.schedule(e.now+e.rtt(r.node, ep)/2, evResponse, r.node, r, ep)
}

func (e *engine) response(r *request) {
	if r.over {
		return
	}
	ep := r.tried
	bytes := zone.Result{BytesSent: e.sc.RequestBytes, BytesReceived: e.sc.ResponseBytes}
	if r.refused {
		if e.sc.FailMode == FailReset {
			// Reset after the request was sent: not safe to retry.
			bytes.Outcome, bytes.BytesReceived = zone.Failure, 0
			r.node.picker.done(e, r, bytes)
			e.finish(r, false, ep)
			return
		}
		r.node.picker.done(e, r, zone.Result{Outcome: zone.NotReached})
		if r.attempt == 0 {
			r.attempt++
			e.send(r, ep) // one transparent retry elsewhere
			return
		}
		e.finish(r, false, ep)
		return
	}
	bytes.Outcome, bytes.TTFB = zone.Success, time.Duration(e.now-r.at)
	r.node.picker.done(e, r, bytes)
	e.stats.transfer(e, r, ep)
	e.finish(r, true, ep)
}

func (e *engine) timeout(r *request) {
	if r.over {
		return
	}
	// The client's deadline: the proxy cancels the attempt in flight.
	r.node.picker.done(e, r, zone.Result{Outcome: zone.Canceled, BytesSent: e.sc.RequestBytes})
	e.finish(r, false, r.tried)
}

// finish ends a request: served (within the timeout, by construction) or
// failed.
func (e *engine) finish(r *request, ok bool, ep *endpoint) {
	r.over = true
	e.stats.finish(e, r, ok, ep)
}
