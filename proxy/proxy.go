package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy is a per-request HTTP/2 proxy. Create it with [New], run it with
// [Proxy.Serve], stop it with [Proxy.Shutdown].
type Proxy struct {
	cfg      Config
	log      *slog.Logger
	srv      *http.Server  // HTTP/1.1 clients
	h1conns  *connListener // connections handed to srv
	up       *upstreams
	stats    stats
	shutdown atomic.Bool
	replays  bytesPool // streams' replay copies of request bodies
	streams  sync.Pool // stream records to reuse (see stream.recycle)

	mu         sync.Mutex
	listeners  map[net.Listener]struct{}
	tcpConns   map[net.Conn]struct{}
	h2conns    map[*serverConn]struct{}
	tcpWG      sync.WaitGroup
	h2WG       sync.WaitGroup
	serveDone  chan struct{}
	stopPinger chan struct{}
	stopOnce   sync.Once
}

// New returns a proxy configured by cfg, or an error naming the first
// invalid setting.
func New(cfg Config) (*Proxy, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		cfg:       cfg,
		log:       cfg.Logger,
		listeners: make(map[net.Listener]struct{}),
		tcpConns:  make(map[net.Conn]struct{}),
		h2conns:   make(map[*serverConn]struct{}),
		serveDone: make(chan struct{}),
	}
	p.h1conns = newConnListener()
	p.up = newUpstreams(p, &p.stats.upstreamConns)
	p.stopPinger = make(chan struct{})
	if cfg.UpstreamPingInterval > 0 {
		go p.up.runPinger(p.stopPinger)
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	p.srv = &http.Server{
		Handler:           p,
		Protocols:         &protocols,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if sc, ok := c.(*sniffedConn); ok {
				return context.WithValue(ctx, routeKey{}, sc.route)
			}
			return ctx
		},
	}
	go func() {
		defer close(p.serveDone)
		err := p.srv.Serve(p.h1conns)
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.log.Error("http server stopped", "err", err)
		}
	}()
	return p, nil
}

type routeKey struct{}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() Stats { return p.stats.snapshot() }

// Serve accepts connections on l until l is closed or the proxy shuts
// down. It always returns a non-nil error; after Shutdown, ErrClosed.
func (p *Proxy) Serve(l net.Listener) error {
	p.mu.Lock()
	if p.shutdown.Load() {
		p.mu.Unlock()
		return ErrClosed
	}
	p.listeners[l] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.listeners, l)
		p.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if p.shutdown.Load() {
				return ErrClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Temporary (e.g. out of file descriptors): back off
				// instead of spinning, like net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				p.log.Warn("accept failed; retrying", "err", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("accept on %s: %w", l.Addr(), err)
		}
		backoff = 0
		go p.handleConn(c)
	}
}

// ErrClosed is returned by Serve after Shutdown.
var ErrClosed = errors.New("proxy: closed")

// handleConn routes a new connection and sorts it by protocol.
func (p *Proxy) handleConn(c net.Conn) {
	route, err := p.cfg.Router.Route(c)
	if err != nil {
		p.log.Warn("connection has no route; closing", "remote", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	src := newSockReader(c)
	if route.Protocol == ProtocolHTTP2 {
		// HTTP/2 only: whatever the first bytes are, they must be the
		// preface (RFC 9113 section 3.4); serveH2 checks.
		p.serveH2(c, nil, src, route)
		return
	}
	br := bufio.NewReaderSize(src, readBufferSize)
	switch sniff(c, br, p.cfg.DetectTimeout) {
	case protoHTTP:
		if isH2Preface(br) {
			p.serveH2(c, br, src, route)
			return
		}
		if err := p.h1conns.deliver(&sniffedConn{Conn: c, r: br, route: route}); err != nil {
			c.Close()
		}
	default:
		p.stats.tcpConns.Add(1)
		p.relayTCP(&sniffedConn{Conn: c, r: br, route: route})
	}
}

// addConn registers a downstream HTTP/2 connection for Shutdown; false
// after Shutdown began.
func (p *Proxy) addConn(sc *serverConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shutdown.Load() {
		return false
	}
	p.h2conns[sc] = struct{}{}
	p.h2WG.Add(1)
	return true
}

func (p *Proxy) removeConn(sc *serverConn) {
	p.mu.Lock()
	delete(p.h2conns, sc)
	p.mu.Unlock()
	p.h2WG.Done()
}

type protocol int

const (
	protoHTTP   protocol = iota // HTTP/2 prior knowledge or HTTP/1.x
	protoOpaque                 // anything else
)

var h2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// http1Methods are the request-line starts treated as HTTP/1.x.
var http1Methods = [][]byte{
	[]byte("GET "), []byte("POST "), []byte("PUT "), []byte("HEAD "), []byte("DELETE "),
	[]byte("OPTIONS "), []byte("PATCH "), []byte("CONNECT "), []byte("TRACE "),
}

// sniff reads (without consuming) the first bytes of c and classifies the
// connection. It waits at most timeout for bytes that decide; a client that
// sends nothing, or bytes that cannot start HTTP, is opaque TCP.
func sniff(c net.Conn, br *bufio.Reader, timeout time.Duration) protocol {
	c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	for n := 1; n <= len(h2Preface); n++ {
		got, err := br.Peek(n)
		if err != nil {
			return protoOpaque
		}
		// Use everything that has already arrived, not just n bytes.
		if b := br.Buffered(); b > n {
			got, _ = br.Peek(min(b, len(h2Preface)))
			n = len(got)
		}
		if bytes.HasPrefix(h2Preface, got) {
			if len(got) == len(h2Preface) {
				return protoHTTP
			}
			continue
		}
		undecided := false
		for _, m := range http1Methods {
			if bytes.HasPrefix(got, m) {
				return protoHTTP
			}
			if bytes.HasPrefix(m, got) {
				undecided = true
			}
		}
		if !undecided {
			return protoOpaque
		}
	}
	return protoOpaque
}

func isH2Preface(br *bufio.Reader) bool {
	b, err := br.Peek(len(h2Preface))
	return err == nil && bytes.Equal(b, h2Preface)
}

// sniffedConn is a downstream connection whose first bytes were peeked.
type sniffedConn struct {
	net.Conn
	r     *bufio.Reader
	route Route
}

func (c *sniffedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// connListener hands HTTP/1.1 connections to the HTTP server.
type connListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
	addr net.Addr
}

func newConnListener() *connListener {
	return &connListener{ch: make(chan net.Conn), done: make(chan struct{}), addr: &net.TCPAddr{}}
}

func (l *connListener) deliver(c net.Conn) error {
	select {
	case l.ch <- c:
		return nil
	case <-l.done:
		return ErrClosed
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }

// Shutdown stops accepting connections, sends GOAWAY to HTTP/2 clients,
// and waits for in-flight requests and TCP relays to finish until ctx is
// done; then it closes everything that is left. It returns ctx's error if
// the drain was cut short.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.shutdown.Store(true)
	for l := range p.listeners {
		l.Close()
	}
	conns := make([]*serverConn, 0, len(p.h2conns))
	for sc := range p.h2conns {
		conns = append(conns, sc)
	}
	p.mu.Unlock()
	for _, sc := range conns {
		sc.startDrain()
	}

	h1Done := make(chan error, 1)
	go func() { h1Done <- p.srv.Shutdown(ctx) }() // closes p.h1conns
	allDone := make(chan struct{})
	go func() { p.tcpWG.Wait(); p.h2WG.Wait(); close(allDone) }()
	var err error
	select {
	case <-allDone:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if herr := <-h1Done; herr != nil && err == nil {
		err = herr
	}
	// Whatever is left after the drain is cut off.
	p.srv.Close()
	p.mu.Lock()
	for c := range p.tcpConns {
		c.Close()
	}
	for sc := range p.h2conns {
		closeSocket(sc.conn)
	}
	p.mu.Unlock()
	<-allDone
	<-p.serveDone
	p.stopOnce.Do(func() { close(p.stopPinger) })
	p.up.closeAll()
	return err
}

// copyBuffer copies src to dst through a pooled buffer, accounting the
// bytes held between read and write: the opaque TCP relay, and response
// bodies (through a lazyFlusher on both ends).
func (p *Proxy) copyBuffer(dst io.Writer, src io.Reader) (int64, error) {
	bufp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bufp)
	buf := *bufp
	var written int64
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			p.stats.hold(n)
			w, werr := dst.Write(buf[:n])
			p.stats.release(n)
			written += int64(w)
			if werr != nil {
				return written, errWrite{werr}
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return written, nil
			}
			return written, rerr
		}
	}
}

// errWrite marks a failure to write to the destination of a copy.
type errWrite struct{ err error }

func (e errWrite) Error() string { return e.err.Error() }
func (e errWrite) Unwrap() error { return e.err }

var bufPool = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}
