package proxy

import (
	"github.com/zonelb/zonelb/internal/sockopt"

	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Config configures a [Proxy]. The zero value of every field but Router
// means its documented default.
type Config struct {
	// Router maps each downstream connection to the service it is for.
	// Required.
	Router Router

	// Logger receives the proxy's logs. Default: discard.
	Logger *slog.Logger

	// Now returns the current time; tests replace it. Default: time.Now.
	Now func() time.Time

	// DetectTimeout bounds the wait for a connection's first bytes, which
	// tell HTTP/2, HTTP/1.1 and opaque TCP apart. A connection that sends
	// nothing in that time (a server-speaks-first protocol) is relayed as
	// opaque TCP. Default 500ms.
	DetectTimeout time.Duration

	// MaxConcurrentStreams is the HTTP/2 stream limit advertised to each
	// downstream client. Default 1000.
	MaxConcurrentStreams int

	// StreamWindow is the HTTP/2 flow-control window per stream, in bytes,
	// both towards clients and towards endpoints. The proxy returns window
	// to one hop only as the other hop takes the bytes, so it bounds what
	// the proxy holds for one stream in each direction (and what a client
	// that does not read can pull from an endpoint). Default 64 KiB; at
	// most 4 MiB - 1.
	StreamWindow int

	// ConnWindow is the HTTP/2 flow-control window per downstream
	// connection: it bounds the request bytes the proxy holds for one
	// client connection. Default 1 MiB; at most 4 MiB - 1.
	ConnWindow int

	// MinConnsPerEndpoint is how many upstream connections the proxy keeps
	// open to each endpoint and spreads streams over, even when fewer
	// would do: for servers that balance by connection, such as
	// multi-process servers behind SO_REUSEPORT. Default 1.
	MinConnsPerEndpoint int

	// MaxConnsPerEndpoint caps upstream connections per endpoint. New
	// connections open when every existing one is at the endpoint's
	// MAX_CONCURRENT_STREAMS; at the cap, requests wait for a free stream.
	// Default 16.
	MaxConnsPerEndpoint int

	// DialTimeout bounds connecting to an endpoint. Default 1s.
	DialTimeout time.Duration

	// UpstreamIdleTimeout closes upstream connections above
	// MinConnsPerEndpoint that carried no stream for this long.
	// Default 90s.
	UpstreamIdleTimeout time.Duration

	// UpstreamPingInterval is how often upstream connections are checked
	// for silence: one that received nothing for two intervals is sent a
	// PING, and closed (failing its streams) when nothing arrives for one
	// more. It finds endpoints that vanished without a FIN or RST.
	// Default 15s; negative disables.
	UpstreamPingInterval time.Duration

	// ReplayLimit is how many request-body bytes are kept per request so
	// it can be retried on another endpoint when it provably never reached
	// the first one. A request that sent more is not retried. Default
	// 64 KiB.
	ReplayLimit int

	// SocketMark, when non-zero, is set as SO_MARK on every upstream
	// socket so that the node's redirection hooks skip the proxy's own
	// connections. Needs CAP_NET_ADMIN.
	SocketMark uint32

	// StalledWriteTimeout resets a stream whose response has been held
	// this long because the client does not read (its window stays shut).
	// A quiet stream is not stalled: only held response bytes count.
	// Default 5m; negative disables.
	StalledWriteTimeout time.Duration

	// DisableFloodGuard turns off the guard that closes HTTP/2 client
	// connections sending floods of control or empty frames, or resetting
	// most of their streams (rapid reset). See docs/proxy.md.
	DisableFloodGuard bool

	// Observer, if set, is told about every finished request.
	Observer Observer
}

// Observer receives a record of every finished request, for metrics.
// ObserveRequest must be cheap and must not block. It is called once the
// request no longer counts in Proxy.Stats: not in ActiveRequests, and on
// HTTP/2 not in BufferedBytes (an HTTP/1.1 response body still on its way
// to the client stays held, and counted, until written).
type Observer interface {
	ObserveRequest(RequestInfo)
}

// Defaults, exported so documentation and flags can name them.
const (
	DefaultDetectTimeout        = 500 * time.Millisecond
	DefaultMaxConcurrentStreams = 1000
	DefaultStreamWindow         = 64 << 10
	DefaultConnWindow           = 1 << 20
	DefaultMinConnsPerEndpoint  = 1
	DefaultMaxConnsPerEndpoint  = 16
	DefaultDialTimeout          = time.Second
	DefaultUpstreamIdleTimeout  = 90 * time.Second
	DefaultReplayLimit          = 64 << 10
	DefaultStalledWriteTimeout  = 5 * time.Minute
	DefaultUpstreamPingInterval = 15 * time.Second
	maxWindow                   = 4<<20 - 1
	copyBufferSize              = 32 << 10 // opaque TCP relay
)

// withDefaults returns c with zero fields set to their defaults, or an
// error naming the first invalid field.
func (c Config) withDefaults() (Config, error) {
	if c.Router == nil {
		return c, errors.New("proxy: Config.Router is required")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	setDur := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	setInt := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	setDur(&c.DetectTimeout, DefaultDetectTimeout)
	setDur(&c.DialTimeout, DefaultDialTimeout)
	setDur(&c.UpstreamIdleTimeout, DefaultUpstreamIdleTimeout)
	setDur(&c.StalledWriteTimeout, DefaultStalledWriteTimeout)
	setDur(&c.UpstreamPingInterval, DefaultUpstreamPingInterval)
	setInt(&c.MaxConcurrentStreams, DefaultMaxConcurrentStreams)
	setInt(&c.StreamWindow, DefaultStreamWindow)
	setInt(&c.ConnWindow, DefaultConnWindow)
	setInt(&c.MinConnsPerEndpoint, DefaultMinConnsPerEndpoint)
	setInt(&c.MaxConnsPerEndpoint, DefaultMaxConnsPerEndpoint)
	setInt(&c.ReplayLimit, DefaultReplayLimit)

	switch {
	case c.DetectTimeout < 0, c.DialTimeout < 0, c.UpstreamIdleTimeout < 0:
		return c, errors.New("proxy: timeouts must not be negative")
	case c.MaxConcurrentStreams < 1:
		return c, fmt.Errorf("proxy: MaxConcurrentStreams %d: must be at least 1", c.MaxConcurrentStreams)
	case c.StreamWindow < 16<<10 || c.StreamWindow > maxWindow:
		return c, fmt.Errorf("proxy: StreamWindow %d: must be between 16 KiB and 4 MiB - 1", c.StreamWindow)
	case c.ConnWindow < 64<<10 || c.ConnWindow > maxWindow:
		return c, fmt.Errorf("proxy: ConnWindow %d: must be between 64 KiB and 4 MiB - 1", c.ConnWindow)
	case c.MinConnsPerEndpoint < 1:
		return c, fmt.Errorf("proxy: MinConnsPerEndpoint %d: must be at least 1", c.MinConnsPerEndpoint)
	case c.MaxConnsPerEndpoint < c.MinConnsPerEndpoint:
		return c, fmt.Errorf("proxy: MaxConnsPerEndpoint %d: must be at least MinConnsPerEndpoint (%d)", c.MaxConnsPerEndpoint, c.MinConnsPerEndpoint)
	case c.ReplayLimit < 0:
		return c, fmt.Errorf("proxy: ReplayLimit %d: must not be negative", c.ReplayLimit)
	}
	return c, nil
}

// dialer returns the dialer for upstream connections: bounded in time,
// marked when configured, and with Nagle off (gRPC frames are small and
// latency-sensitive; Go disables Nagle by default, kept explicit here).
func (c Config) dialer() *net.Dialer {
	d := &net.Dialer{Timeout: c.DialTimeout, KeepAlive: 30 * time.Second}
	if c.SocketMark != 0 {
		d.Control = sockopt.MarkControl(c.SocketMark)
	}
	return d
}

// dialContext is the signature of the upstream dial function.
type dialContext func(ctx context.Context, network, addr string) (net.Conn, error)

// Validate reports the first invalid setting, as New would.
func (c Config) Validate() error {
	_, err := c.withDefaults()
	return err
}
