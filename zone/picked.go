package zone

import "errors"

// ErrNoEndpoint is returned by a picker that has no endpoint it may use.
var ErrNoEndpoint = errors.New("zone: no endpoint available")

// Picked is the endpoint chosen for one request. The caller must call Done
// exactly once when the request ends. The zero value's Done does nothing.
//
// Picked is a small value: Pick returns it without allocating.
type Picked struct {
	Endpoint  *Endpoint
	state     *endpointRecord // nil for pickers that keep no state
	start     int64           // pick time on the balancer clock, ns
	responded bool            // Responded was called: no longer in flight
	// load is how many other requests of this balancer were in flight on
	// the endpoint when it was picked: 0 (alone) means its latency holds
	// no queue of ours (see zoneStats.idle); by load, the latencies tell
	// how far ahead of this node's requests an endpoint starts to queue
	// (see zoneStats.byLoad).
	load int32
	// probe: P2C's loser, sent this request because it was left
	// unpicked too long (see Balancer.p2c).
	probe bool
}

// Responded tells the balancer that the response has started (its first
// byte arrived). From then on the request no longer counts as in flight
// toward the endpoint's load, so a long stream (a watch, a bidirectional
// call) does not make its endpoint look busy for its whole life: the
// in-flight count is then what is waiting for an endpoint to answer, the
// same window the latency estimate measures. Optional; call it at most
// once, before Done, on the same variable.
func (p *Picked) Responded() {
	if p.state == nil || p.responded {
		return
	}
	p.responded = true
	p.state.inflight.Add(-1)
	p.state.zone.live.Add(-1)
}

// Done reports how the request ended. Call it exactly once: a second call
// would count the request's completion twice.
func (p Picked) Done(r Result) {
	if p.state == nil {
		return
	}
	p.state.done(p.start, r, p.responded, p.load, p.probe)
}
