package zone

import "errors"

// ErrNoEndpoint is returned by a picker that has no endpoint it may use.
var ErrNoEndpoint = errors.New("zone: no endpoint available")

// Picked is the endpoint chosen for one request. The caller must call Done
// exactly once when the request ends. The zero value's Done does nothing.
//
// Picked is a small value: Pick returns it without allocating.
type Picked struct {
	Endpoint *Endpoint
	state    *endpointState // nil for pickers that keep no state
	start    int64          // pick time on the balancer clock, ns
}

// Done reports how the request ended. Call it exactly once: a second call
// would count the request's completion twice.
func (p Picked) Done(r Result) {
	if p.state == nil {
		return
	}
	p.state.done(p.start, r)
}
