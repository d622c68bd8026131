package zone

import "errors"

// ErrNoEndpoint is returned by a picker that has no endpoint it may use.
var ErrNoEndpoint = errors.New("zone: no endpoint available")

// Picked is the endpoint chosen for one request. The caller must call Done
// exactly once when the request ends. The zero value's Done does nothing.
type Picked struct {
	Endpoint *Endpoint
	state    *endpointState // nil for pickers that keep no state
}

// Done reports how the request ended.
func (p Picked) Done(r Result) {
	if p.state == nil {
		return
	}
	p.state.done(r)
}

// endpointState is the per-endpoint state the balancer keeps across
// requests and set updates. (Placeholder: the balancer fills it in.)
type endpointState struct{}

func (s *endpointState) done(Result) {}
