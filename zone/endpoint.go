// Package zone chooses an upstream endpoint for each request: Peak-EWMA
// latency with power-of-two choices, a preference for endpoints in the
// caller's own zone that gives way only to load or failure, passive health
// (ejection), and accounting of the bytes that cross zones.
//
// It imports nothing else of zonelb's and knows nothing of Kubernetes,
// sockets or HTTP: callers describe endpoints with plain values and report
// each request's outcome back. Time and randomness are injected so that the
// algorithms are tested exactly.
package zone

import (
	"net/netip"
	"time"
)

// Endpoint is one upstream address of a service, as discovery describes it.
// The conditions mirror Kubernetes EndpointSlice conditions.
type Endpoint struct {
	Addr   netip.AddrPort // where to connect
	Zone   string         // topology zone; "" when unknown
	Node   string         // node name; "" when unknown
	Weight uint32         // relative capacity; 0 means 1

	Ready       bool // receiving new traffic is fine
	Serving     bool // can serve, even if terminating
	Terminating bool // shutting down: a last resort only
}

// Outcome classifies how one request to an endpoint ended, as far as the
// endpoint's health and load are concerned.
type Outcome uint8

const (
	// Success: the endpoint answered (any status that is not a failure
	// or overload signal below, including application errors).
	Success Outcome = iota
	// NotReached: the request provably never reached the application
	// (connect refused, REFUSED_STREAM, a stream above GOAWAY's last
	// stream id). Counts as a failure of the endpoint; safe to retry.
	NotReached
	// Failure: the endpoint failed after it may have seen the request
	// (reset, HTTP 5xx, gRPC UNAVAILABLE).
	Failure
	// Overloaded: the endpoint shed load (HTTP 429, gRPC
	// RESOURCE_EXHAUSTED). A latency penalty, not ill health.
	Overloaded
	// Canceled: the caller gave up (client cancel or its own deadline);
	// says nothing about the endpoint.
	Canceled
)

func (o Outcome) String() string {
	switch o {
	case Success:
		return "success"
	case NotReached:
		return "not_reached"
	case Failure:
		return "failure"
	case Overloaded:
		return "overloaded"
	case Canceled:
		return "canceled"
	}
	return "unknown"
}

// Result is what the caller reports when a request picked by Pick ends.
type Result struct {
	Outcome Outcome
	// TTFB is the time from sending the request to the first byte of the
	// response (its headers): the latency signal Peak-EWMA uses. Zero
	// when no response arrived.
	TTFB time.Duration
	// BytesSent and BytesReceived count request bytes sent to the
	// endpoint and response bytes received from it (bodies and headers as
	// the caller measures them), for cross-zone accounting.
	BytesSent, BytesReceived int64
}
