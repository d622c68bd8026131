package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// The pool uses x/net/http2's ClientConn, which x/net deprecates in favour
// of net/http's ClientConn (Go 1.26). It stays, on purpose, until net/http
// exposes what transparent retry needs: x/net's exported StreamError (to
// tell REFUSED_STREAM apart) and its errors for streams above a GOAWAY's
// last stream id (see neverReached). Both are pinned by tests.
//lint:file-ignore SA1019 x/net's ClientConn is kept for its exported errors; see above.

// upstreams holds the pooled HTTP/2 connections to every endpoint.
//
// Streams of different downstream clients share upstream connections. That
// is safe here because an upstream connection carries no client identity:
// there is no TLS client certificate, and the endpoint sees the node's
// address whichever pod sent the request. What one client sends cannot leak
// to another through the shared connection; HTTP/2 isolates streams, and
// per-stream flow control keeps one slow client from stalling the others
// (the connection window is left large, see newUpstreams). If zonelb ever
// presents per-pod identity upstream (mTLS), the pool must be keyed by that
// identity as well, as Istio's ztunnel does.
type upstreams struct {
	cfg       Config
	transport *http2.Transport
	dial      dialContext
	log       *slog.Logger
	opened    *atomic.Int64

	mu    sync.Mutex
	pools map[string]*endpointPool
}

func newUpstreams(cfg Config, opened *atomic.Int64) *upstreams {
	// The x/net transport takes its HTTP/2 settings from an http.Transport.
	// Only the per-stream window is lowered: the connection window keeps
	// x/net's large default so that slow streams on a shared connection
	// cannot use it up and stall their neighbours; memory stays bounded
	// by the per-stream windows.
	t1 := &http.Transport{HTTP2: &http.HTTP2Config{
		MaxReceiveBufferPerStream: cfg.StreamWindow,
		MaxReadFrameSize:          min(1<<20, cfg.StreamWindow),
	}}
	t2, err := http2.ConfigureTransports(t1)
	if err != nil {
		// Only fails when t1 was already configured for HTTP/2.
		panic(fmt.Sprintf("configure http2 transport: %v", err))
	}
	t2.AllowHTTP = true
	t2.ReadIdleTimeout = 30 * time.Second // ping a silent connection
	t2.PingTimeout = 10 * time.Second
	return &upstreams{
		cfg:       cfg,
		transport: t2,
		dial:      cfg.dialer().DialContext,
		log:       cfg.Logger,
		opened:    opened,
		pools:     make(map[string]*endpointPool),
	}
}

func (u *upstreams) pool(addr string) *endpointPool {
	u.mu.Lock()
	defer u.mu.Unlock()
	p := u.pools[addr]
	if p == nil {
		p = &endpointPool{u: u, addr: addr}
		u.pools[addr] = p
	}
	return p
}

// closeAll closes every upstream connection.
func (u *upstreams) closeAll() {
	u.mu.Lock()
	pools := u.pools
	u.pools = make(map[string]*endpointPool)
	u.mu.Unlock()
	for _, p := range pools {
		p.close()
	}
}

// endpointPool is the set of connections to one endpoint.
type endpointPool struct {
	u    *upstreams
	addr string

	mu      sync.Mutex
	conns   []*http2.ClientConn
	next    int           // round-robin start for spreading streams
	dialing chan struct{} // closed when the dial in progress ends; nil if none
	closed  bool
}

// errDial wraps a failure to connect: the request never left the proxy.
type errDial struct{ err error }

func (e errDial) Error() string { return e.err.Error() }
func (e errDial) Unwrap() error { return e.err }

// get returns a connection with a stream reserved for one request: the
// caller must call RoundTrip on it exactly once. It opens a connection
// when there are fewer than MinConnsPerEndpoint or every one is full, up to
// MaxConnsPerEndpoint; at the cap it returns the least busy connection
// without a reservation, where the request waits for a free stream.
func (p *endpointPool) get(ctx context.Context) (*http2.ClientConn, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, errDial{fmt.Errorf("pool for %s closed", p.addr)}
		}
		p.pruneLocked()
		if len(p.conns) >= p.u.cfg.MinConnsPerEndpoint {
			n := len(p.conns)
			for i := 0; i < n; i++ {
				cc := p.conns[(p.next+i)%n]
				if cc.ReserveNewRequest() {
					p.next = (p.next + i + 1) % n
					p.mu.Unlock()
					return cc, nil
				}
			}
		}
		if len(p.conns) >= p.u.cfg.MaxConnsPerEndpoint {
			cc := p.leastBusyLocked()
			p.mu.Unlock()
			return cc, nil
		}
		if wait := p.dialing; wait != nil {
			// One dial at a time per endpoint: a burst of requests to a
			// cold endpoint shares the connection it opens.
			p.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, errDial{ctx.Err()}
			}
		}
		done := make(chan struct{})
		p.dialing = done
		p.mu.Unlock()

		cc, err := p.dial(ctx)

		p.mu.Lock()
		p.dialing = nil
		close(done)
		if err != nil {
			p.mu.Unlock()
			return nil, errDial{err}
		}
		if p.closed {
			p.mu.Unlock()
			cc.Close()
			return nil, errDial{fmt.Errorf("pool for %s closed", p.addr)}
		}
		p.conns = append(p.conns, cc)
		p.mu.Unlock()
		if cc.ReserveNewRequest() {
			return cc, nil
		}
		// A new connection that cannot take a stream (the server sent
		// GOAWAY or SETTINGS_MAX_CONCURRENT_STREAMS=0 at once): loop,
		// and prune will drop it.
	}
}

func (p *endpointPool) dial(ctx context.Context) (*http2.ClientConn, error) {
	c, err := p.u.dial(ctx, "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	cc, err := p.u.transport.NewClientConn(c)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("start HTTP/2 with %s: %w", p.addr, err)
	}
	p.u.opened.Add(1)
	p.u.log.Debug("upstream connection opened", "endpoint", p.addr, "local", c.LocalAddr().String())
	return cc, nil
}

// pruneLocked drops connections that can never take a new stream again
// (closed, or told to go away) and closes idle surplus connections.
func (p *endpointPool) pruneLocked() {
	kept := p.conns[:0]
	for _, cc := range p.conns {
		st := cc.State()
		switch {
		case st.Closed || st.Closing:
			// Closing: a GOAWAY arrived; its streams finish on their own.
		case len(kept) >= p.u.cfg.MinConnsPerEndpoint && st.StreamsActive == 0 && st.StreamsReserved == 0 &&
			!st.LastIdle.IsZero() && p.u.cfg.Now().Sub(st.LastIdle) > p.u.cfg.UpstreamIdleTimeout:
			cc.Shutdown(context.Background())
		default:
			kept = append(kept, cc)
		}
	}
	for i := len(kept); i < len(p.conns); i++ {
		p.conns[i] = nil
	}
	p.conns = kept
}

func (p *endpointPool) leastBusyLocked() *http2.ClientConn {
	var best *http2.ClientConn
	bestN := int(^uint(0) >> 1)
	for _, cc := range p.conns {
		st := cc.State()
		if n := st.StreamsActive + st.StreamsPending + st.StreamsReserved; n < bestN {
			best, bestN = cc, n
		}
	}
	return best
}

func (p *endpointPool) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, cc := range conns {
		cc.Close()
	}
}
