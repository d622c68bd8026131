package proxy

import (
	"github.com/zonelb/zonelb/internal/grpccode"

	"sync/atomic"
	"time"

	"github.com/zonelb/zonelb/zone"
)

// Stats are the proxy's counters since it started.
//
// BufferedBytes and BufferedPeak account the bytes the proxy holds between
// reading them from one side and writing them to the other: HTTP/2 payload
// waiting for the destination's window (at most StreamWindow per stream
// direction, because window is returned only for bytes passed on), and the
// opaque TCP relay's copy buffers in flight. The memory bound per stream
// documented in docs/proxy.md:
//
//	2 x StreamWindow + ReplayLimit (while uncommitted)
type Stats struct {
	Requests       int64 // HTTP requests and gRPC calls handled
	Retries        int64 // transparent retries on another endpoint
	UpstreamConns  int64 // upstream HTTP/2 connections opened
	TCPConns       int64 // connections relayed as opaque TCP
	BufferedBytes  int64 // bytes held right now
	BufferedPeak   int64 // highest BufferedBytes seen
	ActiveRequests int64 // requests in flight
	FloodsClosed   int64 // client connections closed by the flood guard
	// UpstreamFloodsClosed counts endpoint connections closed for abuse
	// (floods of control frames, CONTINUATION floods, over 16 MiB of
	// frames left unread).
	UpstreamFloodsClosed int64
}

type stats struct {
	requests, retries, upstreamConns, tcpConns atomic.Int64
	buffered, peak, active, floods             atomic.Int64
	upstreamFloods                             atomic.Int64
}

func (s *stats) hold(n int) {
	v := s.buffered.Add(int64(n))
	for {
		p := s.peak.Load()
		if v <= p || s.peak.CompareAndSwap(p, v) {
			return
		}
	}
}

func (s *stats) release(n int) { s.buffered.Add(-int64(n)) }

func (s *stats) snapshot() Stats {
	return Stats{
		Requests:       s.requests.Load(),
		Retries:        s.retries.Load(),
		UpstreamConns:  s.upstreamConns.Load(),
		TCPConns:       s.tcpConns.Load(),
		BufferedBytes:  s.buffered.Load(),
		BufferedPeak:   s.peak.Load(),
		ActiveRequests: s.active.Load(),
		FloodsClosed:   s.floods.Load(),

		UpstreamFloodsClosed: s.upstreamFloods.Load(),
	}
}

// RequestInfo describes one finished request, for an [Observer].
type RequestInfo struct {
	Service  string
	Endpoint *zone.Endpoint // nil if none was reached
	GRPC     bool
	// Status is the HTTP status sent to the client, and GRPCStatus the
	// gRPC status code (-1 when not gRPC or none was seen).
	Status     int
	GRPCStatus grpccode.Code
	Outcome    zone.Outcome
	Retried    bool
	TTFB       time.Duration
	Duration   time.Duration
	BytesSent  int64 // request body bytes sent upstream
	BytesRecv  int64 // response body bytes received from upstream
}
