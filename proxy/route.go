package proxy

import (
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/zonelb/zonelb/zone"
)

// Picker chooses an endpoint for each request. The proxy calls Done on the
// returned value exactly once, when the request ends.
//
// avoid names an endpoint to skip when another is available: the proxy sets
// it when it retries a request that never reached the first endpoint. The
// zero AddrPort avoids nothing.
type Picker interface {
	Pick(avoid netip.AddrPort) (zone.Picked, error)
}

// Route is what a downstream connection is balanced over.
type Route struct {
	Service string // name used in logs and metrics
	Picker  Picker
	// Protocol is what the connection speaks. The zero value detects it
	// from the first bytes.
	Protocol Protocol
}

// Protocol says what a route's connections speak.
type Protocol int

const (
	// ProtocolAuto tells HTTP/2, HTTP/1.1 and opaque TCP apart by the
	// connection's first bytes.
	ProtocolAuto Protocol = iota
	// ProtocolHTTP2 is cleartext HTTP/2 with prior knowledge only (gRPC,
	// h2c): a connection that does not start with the HTTP/2 preface is
	// answered with GOAWAY and closed, as RFC 9113 asks.
	ProtocolHTTP2
)

// Router maps an accepted downstream connection to its route, typically by
// the connection's original destination. It is called once per connection.
type Router interface {
	Route(conn net.Conn) (Route, error)
}

// StaticRouter sends every connection to the same route: the standalone
// mode, where the proxy fronts one service.
type StaticRouter Route

// Route implements [Router].
func (r StaticRouter) Route(net.Conn) (Route, error) { return Route(r), nil }

// RoundRobin is the simplest [Picker]: it cycles through a fixed list of
// endpoints and keeps no state about them. It exists for tests and as a
// reference; the zone package's balancer is the real one.
type RoundRobin struct {
	endpoints []zone.Endpoint
	next      atomic.Uint64
}

// NewRoundRobin returns a round-robin picker over endpoints.
func NewRoundRobin(endpoints []zone.Endpoint) *RoundRobin {
	return &RoundRobin{endpoints: append([]zone.Endpoint(nil), endpoints...)}
}

// Pick implements [Picker].
func (rr *RoundRobin) Pick(avoid netip.AddrPort) (zone.Picked, error) {
	n := uint64(len(rr.endpoints))
	if n == 0 {
		return zone.Picked{}, zone.ErrNoEndpoint
	}
	i := rr.next.Add(1) - 1
	ep := &rr.endpoints[i%n]
	if avoid.IsValid() && ep.Addr == avoid && n > 1 {
		ep = &rr.endpoints[(i+1)%n]
	}
	return zone.Picked{Endpoint: ep}, nil
}
