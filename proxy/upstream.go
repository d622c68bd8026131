package proxy

import (
	"github.com/zonelb/zonelb/internal/grpccode"

	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/zonelb/zonelb/zone"
)

// upstreams holds the pooled HTTP/2 connections to every endpoint.
//
// Streams of different downstream clients share upstream connections. That
// is safe here because an upstream connection carries no client identity:
// there is no TLS client certificate, and the endpoint sees the node's
// address whichever pod sent the request. What one client sends cannot leak
// to another through the shared connection; HTTP/2 isolates streams, and
// per-stream flow control keeps one slow client from stalling the others
// (the connection window is left large and returned as data arrives). If
// zonelb ever presents per-pod identity upstream (mTLS), the pool must be
// keyed by that identity as well, as Istio's ztunnel does.
type upstreams struct {
	p      *Proxy
	cfg    Config
	dial   dialContext
	log    *slog.Logger
	opened *atomic.Int64

	pools  sync.Map // netip.AddrPort -> *endpointPool
	closed atomic.Bool
}

// upstreamConnWindow is the connection-level receive window given to each
// endpoint. Per-stream windows bound what the proxy holds; the connection
// window is only there because HTTP/2 has one, and is kept out of the way
// so that a stalled stream never starves its neighbours.
const upstreamConnWindow = 1 << 30

// initialPeerMaxStreams is assumed for an endpoint until its SETTINGS
// arrive (x/net's choice too).
const initialPeerMaxStreams = 100

func newUpstreams(p *Proxy, opened *atomic.Int64) *upstreams {
	return &upstreams{p: p, cfg: p.cfg, dial: p.cfg.dialer().DialContext, log: p.cfg.Logger, opened: opened}
}

// pool returns the pool for addr, creating it on first use. Lock-free once
// the pool exists.
func (u *upstreams) pool(addr netip.AddrPort) *endpointPool {
	if v, ok := u.pools.Load(addr); ok {
		return v.(*endpointPool)
	}
	v, _ := u.pools.LoadOrStore(addr, &endpointPool{u: u, addr: addr, addrStr: addr.String()})
	return v.(*endpointPool)
}

func (u *upstreams) closeAll() {
	u.closed.Store(true)
	u.pools.Range(func(k, v any) bool {
		v.(*endpointPool).close()
		return true
	})
}

// endpointPool is the set of connections to one endpoint, and the streams
// waiting for one.
type endpointPool struct {
	u       *upstreams
	addr    netip.AddrPort
	addrStr string

	mu      sync.Mutex
	conns   []*clientConn
	next    int
	dialing bool
	waiting []streamGen // streams waiting, with their gen then (records are reused)
	closed  bool
}

// dispatch picks an endpoint for s and sends it there, or queues it for a
// connection. Call with s.mu held.
func (p *Proxy) dispatch(b *batch, s *stream) {
	if s.route.Picker == nil {
		s.fail(b, http.StatusServiceUnavailable, grpccode.Unavailable, "zonelb: connection has no service route", zone.NotReached)
		return
	}
	picked, err := s.route.Picker.Pick(s.avoid)
	if err != nil {
		s.fail(b, http.StatusServiceUnavailable, grpccode.Unavailable, "zonelb: no endpoint available for "+s.route.Service, zone.NotReached)
		return
	}
	s.picked, s.hasPick = picked, true
	s.info.Endpoint = picked.Endpoint
	if !s.deadline.IsZero() && !s.deadline.After(b.now(p.cfg.Now)) {
		s.hasPick = false
		picked.Done(zone.Result{Outcome: zone.Canceled})
		s.fail(b, http.StatusGatewayTimeout, grpccode.DeadlineExceeded, "zonelb: deadline exceeded before the call was sent", zone.Canceled)
		return
	}
	pool := p.up.pool(picked.Endpoint.Addr)
	if cc := pool.acquire(s); cc != nil {
		s.open(b, cc)
	}
}

// acquire returns a connection with a stream slot reserved for s, or nil
// after queueing s (starting a dial when the pool may grow). Call with
// s.mu held.
func (ep *endpointPool) acquire(s *stream) *clientConn {
	u := ep.u
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if ep.closed {
		ep.queueLocked(s) // answered by the failing dial below
		ep.startDialLocked()
		return nil
	}
	ep.pruneLocked()
	if len(ep.conns) >= u.cfg.MinConnsPerEndpoint {
		if cc := ep.reserveLocked(); cc != nil {
			return cc
		}
	}
	ep.queueLocked(s)
	if len(ep.conns) < u.cfg.MaxConnsPerEndpoint {
		ep.startDialLocked()
	}
	return nil
}

func (ep *endpointPool) queueLocked(s *stream) {
	s.waiting = true
	s.waitPool = ep
	ep.waiting = append(ep.waiting, streamGen{s, s.gen})
}

// reserveLocked reserves a stream slot on the next connection, round robin,
// that has one.
func (ep *endpointPool) reserveLocked() *clientConn {
	n := len(ep.conns)
	for i := 0; i < n; i++ {
		cc := ep.conns[(ep.next+i)%n]
		if cc.reserve() {
			ep.next = (ep.next + i + 1) % n
			return cc
		}
	}
	return nil
}

func (ep *endpointPool) startDialLocked() {
	if ep.dialing {
		return
	}
	ep.dialing = true
	go ep.dial()
}

// unwait takes s off its pool's queue. Call with s.mu held.
func (p *Proxy) unwait(s *stream) {
	ep := s.waitPool
	s.waiting = false
	s.waitPool = nil
	if ep == nil {
		return
	}
	ep.mu.Lock()
	for i, w := range ep.waiting {
		if w.s == s {
			ep.waiting = append(ep.waiting[:i], ep.waiting[i+1:]...)
			break
		}
	}
	ep.mu.Unlock()
}

// pruneLocked drops connections that can take no new stream (closed, or
// told to go away) and shuts idle surplus ones.
func (ep *endpointPool) pruneLocked() {
	u := ep.u
	kept := ep.conns[:0]
	var now time.Time
	for _, cc := range ep.conns {
		cc.wmu.Lock()
		gone := cc.closed || cc.goingAway
		idle := cc.active == 0 && cc.reserved == 0
		idleSince := cc.idleSince
		cc.wmu.Unlock()
		switch {
		case gone:
		case idle && len(kept) >= u.cfg.MinConnsPerEndpoint && !idleSince.IsZero():
			if now.IsZero() {
				now = u.cfg.Now()
			}
			if now.Sub(idleSince) > u.cfg.UpstreamIdleTimeout {
				cc.shutdownIdle()
				continue
			}
			kept = append(kept, cc)
		default:
			kept = append(kept, cc)
		}
	}
	for i := len(kept); i < len(ep.conns); i++ {
		ep.conns[i] = nil
	}
	ep.conns = kept
}

// dial opens a connection and hands it the waiting streams; a failed dial
// sends them elsewhere (they never left the proxy).
func (ep *endpointPool) dial() {
	u := ep.u
	var cc *clientConn
	var err error
	if u.closed.Load() {
		err = fmt.Errorf("pool for %s closed", ep.addrStr)
	} else {
		cc, err = u.connect(ep)
	}
	var b batch
	ep.mu.Lock()
	ep.dialing = false
	if err == nil && (ep.closed || u.closed.Load()) {
		cc.close(errors.New("pool closed"))
		cc, err = nil, fmt.Errorf("pool for %s closed", ep.addrStr)
	}
	if err != nil {
		waiting := ep.waiting
		ep.waiting = nil
		ep.mu.Unlock()
		u.log.Debug("upstream connect failed", "endpoint", ep.addrStr, "err", err)
		for _, w := range waiting {
			s := w.s
			s.mu.Lock()
			if s.gen == w.gen && s.waiting && s.waitPool == ep {
				s.waiting, s.waitPool = false, nil
				s.notAnswered(&b, true, "connect: "+err.Error())
			}
			s.mu.Unlock()
			b.flush()
		}
		return
	}
	ep.conns = append(ep.conns, cc)
	ep.mu.Unlock()
	go cc.readLoop()
	ep.serveWaiting(&b)
	b.flush()
}

// serveWaiting gives waiting streams the stream slots free now, and dials
// when more connections are wanted. Call with no stream lock held.
func (ep *endpointPool) serveWaiting(b *batch) {
	for {
		ep.mu.Lock()
		if len(ep.waiting) == 0 {
			ep.mu.Unlock()
			return
		}
		ep.pruneLocked()
		if len(ep.conns) < ep.u.cfg.MinConnsPerEndpoint {
			ep.startDialLocked()
			ep.mu.Unlock()
			return
		}
		cc := ep.reserveLocked()
		if cc == nil {
			if len(ep.conns) < ep.u.cfg.MaxConnsPerEndpoint {
				ep.startDialLocked()
			}
			ep.mu.Unlock()
			return
		}
		w := ep.waiting[0]
		ep.waiting[0] = streamGen{}
		ep.waiting = ep.waiting[1:]
		ep.mu.Unlock()

		s := w.s
		s.mu.Lock()
		if s.gen == w.gen && s.waiting && s.waitPool == ep && !s.done {
			s.waiting, s.waitPool = false, nil
			s.open(b, cc)
		} else {
			cc.unreserve()
		}
		s.mu.Unlock()
	}
}

func (ep *endpointPool) close() {
	ep.mu.Lock()
	ep.closed = true
	conns := ep.conns
	ep.conns = nil
	ep.mu.Unlock()
	for _, cc := range conns {
		cc.close(errors.New("proxy shutting down"))
	}
}

func (ep *endpointPool) remove(cc *clientConn) {
	ep.mu.Lock()
	for i, c := range ep.conns {
		if c == cc {
			ep.conns = append(ep.conns[:i], ep.conns[i+1:]...)
			break
		}
	}
	ep.mu.Unlock()
}

// clientConn is one upstream HTTP/2 connection: its writing half (h2conn)
// and the streams on it. One goroutine reads it.
type clientConn struct {
	h2conn
	u    *upstreams
	pool *endpointPool
	conn net.Conn
	br   *connReader
	in   budgetReader
	hdr  headerBlock
	rf   *http2.Framer

	// Guarded by wmu:
	streams        map[uint32]*stream
	timeoutBuf     [16]byte // the grpc-timeout value being encoded
	nextID         uint32
	active         int // open streams
	reserved       int // slots promised to streams about to open
	peerMaxStreams uint32
	goingAway      bool
	idleSince      time.Time
	connThreshold  int32

	// The endpoint flood guard (read loop only, but outFrames).
	credit    int
	outFrames atomic.Int64

	// Keepalive: reads counts read batches; the pinger compares it
	// between its rounds (guarded by pingMu).
	reads  atomic.Uint64
	pingMu sync.Mutex
	seen   uint64
	quiet  int // pinger rounds without a read

	peek    func(fd uintptr) // peekFD, allocated once
	peekBuf [1]byte
	peekN   int
	peekErr error

	// What tells, when the endpoint closed the connection, which streams
	// it never received (see neverReached). Guarded by wmu.
	ackBase     uint64 // tcpi_bytes_acked once connected (the SYN's 1)
	ackBaseOK   bool
	failAcked   uint64 // tcpi_bytes_acked when a failed write closed the socket
	failAckedOK bool
	goAwaySeen  bool
	goAwayLast  uint32 // the largest last-stream-id of the endpoint's GOAWAYs
}

// connect dials the endpoint and starts HTTP/2 on the connection.
func (u *upstreams) connect(ep *endpointPool) (*clientConn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), u.cfg.DialTimeout)
	defer cancel()
	c, err := u.dial(ctx, "tcp", ep.addrStr)
	if err != nil {
		return nil, err
	}
	cc := &clientConn{
		u:              u,
		pool:           ep,
		conn:           c,
		streams:        make(map[uint32]*stream),
		nextID:         1,
		peerMaxStreams: initialPeerMaxStreams,
		connThreshold:  upstreamConnWindow / 4,
		idleSince:      u.cfg.Now(),
	}
	cc.h2conn.init(c, cc.drained)
	cc.ackBase, cc.ackBaseOK = tcpBytesAcked(cc.w.raw)
	cc.ackBaseOK = cc.ackBaseOK && cc.ackBase > 0
	cc.w.beforeClose = cc.noteWriteFailure
	cc.recvWin = upstreamConnWindow
	cc.peek = cc.peekFD
	cc.credit = floodBurst
	cc.h2conn.outFrames = &cc.outFrames
	cc.br = newConnReader(nil, newSockReader(c))
	cc.in.r = cc.br
	cc.rf = http2.NewFramer(nil, &cc.in)
	cc.hdr.init()
	cc.rf.SetMaxReadFrameSize(maxFrameSize)
	cc.rf.SetReuseFrames()

	cc.wmu.Lock()
	cc.w.Write([]byte(http2.ClientPreface))
	cc.fr.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(u.cfg.StreamWindow)},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderListSize},
	)
	cc.fr.WriteWindowUpdate(0, upstreamConnWindow-initialWindow)
	cc.w.flush()
	err = cc.w.err
	cc.wmu.Unlock()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("start HTTP/2 with %s: %w", ep.addrStr, err)
	}
	u.opened.Add(1)
	u.log.Debug("upstream connection opened", "endpoint", ep.addrStr, "local", c.LocalAddr().String())
	return cc, nil
}

// reserve takes a stream slot if the connection has one.
func (cc *clientConn) reserve() bool {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	if cc.closed || cc.goingAway || cc.nextID >= 1<<31-1 ||
		uint32(cc.active+cc.reserved) >= cc.peerMaxStreams || cc.w.err != nil {
		return false
	}
	if cc.active == 0 && cc.reserved == 0 && cc.peerClosed() {
		// An idle connection the endpoint closed (a FIN or a reset not
		// yet seen by the read loop): a request sent on it would be
		// lost with it, and could not be retried safely.
		cc.closed = true
		closeSocket(cc.conn)
		return false
	}
	cc.reserved++
	return true
}

// peerClosed reports whether the endpoint closed the connection, with a
// non-blocking peek at the socket (a raw system call: it does not wake
// the runtime's monitor thread). Only idle connections are checked, so the
// syscall is paid when the connection was quiet, not per stream under
// load: the price of not losing the first call after an endpoint died
// (TestBackendKilledBetweenCalls). That price is small: 0.9 peeks per call
// at a few thousand gRPC calls a second over three endpoints, about 0.12 us
// each (an empty socket's recv), against some 50 us of CPU per call.
// Nothing the read loop knows makes the peek redundant: its last read that
// found the socket empty says nothing of a FIN that came after, and the
// poller's wake-up for that FIN reaches the read loop only after a
// scheduling delay, which is the window the peek closes.
func (cc *clientConn) peerClosed() bool {
	if cc.w.raw == nil {
		return false
	}
	cc.peekN, cc.peekErr = 0, nil
	// Control, not Read: the read loop holds the socket's read lock
	// while it waits; MSG_DONTWAIT keeps the peek from blocking.
	if err := cc.w.raw.Control(cc.peek); err != nil {
		return true
	}
	// Nothing to read is EAGAIN (alive); end of stream (0 bytes) or an
	// error such as ECONNRESET means the endpoint is gone.
	return cc.peekN == 0 || cc.peekErr != nil
}

func (cc *clientConn) peekFD(fd uintptr) {
	cc.peekN, cc.peekErr = rawPeek(fd, cc.peekBuf[:])
	if cc.peekErr == syscall.EAGAIN {
		cc.peekN, cc.peekErr = 1, nil // nothing to read: alive
	}
}

func (cc *clientConn) unreserve() {
	cc.wmu.Lock()
	cc.reserved--
	cc.wmu.Unlock()
}

// open sends s's request headers on cc, in a slot reserved for it, then
// what is held of its body. Call with s.mu held.
func (s *stream) open(b *batch, cc *clientConn) {
	p := s.p
	cc.wmu.Lock()
	cc.reserved--
	if cc.closed || cc.w.err != nil {
		cc.wmu.Unlock()
		s.notAnswered(b, true, "connection closed before the request was sent")
		return
	}
	id := cc.nextID
	cc.nextID += 2
	cc.active++
	cc.idleSince = time.Time{}
	cc.streams[id] = s
	s.cc, s.upID, s.upOpen = cc, id, true
	s.reqH.win = cc.peerInitWin
	s.reqH.endSent = false
	s.upAt, s.upHeard = cc.w.queued, false
	// A new attempt: nothing of a response yet (an earlier attempt that
	// was refused may have marked its stream ended).
	s.respH.end, s.respH.endSent, s.respH.trailers = false, false, nil
	s.respH.recvWin = int32(p.cfg.StreamWindow)
	s.respH.unacked = 0
	now := b.now(p.cfg.Now)
	s.sent = now
	endStream := s.reqH.end && len(s.reqH.held) == 0 && s.reqH.trailers == nil
	if !s.deadline.IsZero() {
		// The value is built in the connection's buffer (wmu is held) and
		// sent as a literal never indexed, so that the encoder keeps no
		// reference to it, and a value that differs on every call does
		// not evict the request's other fields from the HPACK tables.
		t := appendGRPCTimeout(cc.timeoutBuf[:0], s.deadline.Sub(now))
		v := unsafe.String(unsafe.SliceData(t), len(t))
		cc.writeHeaders(id, endStream, s.req, hpack.HeaderField{Name: "grpc-timeout", Value: v, Sensitive: true})
	} else {
		cc.writeHeaders(id, endStream, s.req)
	}
	if endStream {
		s.reqH.endSent = true
	}
	cc.wmu.Unlock()
	b.add(&cc.h2conn)
	if !endStream {
		s.pushRequest(b)
	}
}

// streamClosed notes that a stream left cc. Call with wmu not held.
func (cc *clientConn) streamClosed(b *batch) {
	cc.wmu.Lock()
	cc.active--
	idle := cc.active == 0
	if idle {
		cc.idleSince = b.now(cc.u.cfg.Now)
	}
	closeNow := idle && cc.goingAway && !cc.closed
	cc.wmu.Unlock()
	if closeNow {
		cc.close(nil)
		return
	}
	b.kick(cc.pool)
}

// drained is called when a backed-up write to the endpoint completed:
// streams held for it are retried.
func (cc *clientConn) drained() {
	var b batch
	cc.wmu.Lock()
	blocked := cc.takeBlocked()
	cc.wmu.Unlock()
	for _, s := range blocked {
		s.mu.Lock()
		s.blockedUp = false
		s.pushRequest(&b)
		s.mu.Unlock()
	}
	b.flush()
}

// shutdownIdle closes an idle connection gracefully.
func (cc *clientConn) shutdownIdle() {
	cc.wmu.Lock()
	if !cc.closed {
		cc.goingAway = true
		cc.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		cc.w.flush()
	}
	cc.wmu.Unlock()
	cc.close(nil)
}

// close tears the connection down; its read loop then fails the streams
// left on it.
func (cc *clientConn) close(err error) {
	cc.wmu.Lock()
	cc.closed = true
	cc.wmu.Unlock()
	closeSocket(cc.conn)
}

// readLoop reads the endpoint's frames until the connection ends.
func (cc *clientConn) readLoop() {
	var b batch
	err := cc.readFrames(&b)
	b.flush()
	cc.teardown(&b, err)
	b.flush()
	cc.br.release()
}

// errCodeConnLost stands for the loss of the whole upstream connection
// where an HTTP/2 error code is expected; gRPC clients get UNAVAILABLE.
const errCodeConnLost http2.ErrCode = 0x1000

// errUpstreamProtocol is a protocol violation by the endpoint.
type errUpstreamProtocol struct {
	code   http2.ErrCode
	reason string
}

func (e errUpstreamProtocol) Error() string {
	return "endpoint violated HTTP/2 (" + e.code.String() + "): " + e.reason
}

func (cc *clientConn) readFrames(b *batch) error {
	sawSettings := false
	frame := func() error {
		cc.in.reset()
		f, err := cc.rf.ReadFrame()
		if err != nil {
			return cc.readError(b, err)
		}
		if !sawSettings {
			if _, ok := f.(*http2.SettingsFrame); !ok {
				return cc.goAway(b, http2.ErrCodeProtocol, "first frame is not SETTINGS")
			}
			sawSettings = true
		}
		if cc.floodGuard(f) {
			return cc.abusive(b, "flood of control or empty frames")
		}
		return cc.frame(b, f)
	}
	idle := func() bool {
		cc.reads.Add(1)
		b.flush()
		if pause := upstreamReadPause.Load(); pause != nil {
			(*pause)(cc)
		}
		return false
	}
	cc.br.quiet = func() { cc.releaseAcks(b) }
	return cc.br.readFrames(b, frame, idle)
}

// readError handles an error of the Framer's: nil when the connection
// goes on (a stream error resets only its stream).
func (cc *clientConn) readError(b *batch, err error) error {
	var se http2.StreamError
	if errors.As(err, &se) {
		cc.streamError(b, se.StreamID, se.Code, "invalid frame")
		return nil
	}
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		return cc.goAway(b, http2.ErrCode(ce), "invalid frame")
	}
	if errors.Is(err, http2.ErrFrameTooLarge) {
		return cc.goAway(b, http2.ErrCodeFrameSize, "frame too large")
	}
	if errors.Is(err, errFrameBudget) {
		return cc.abusive(b, err.Error())
	}
	return err
}

// frame handles one frame from the endpoint.
func (cc *clientConn) frame(b *batch, f http2.Frame) error {
	switch f := f.(type) {
	case *http2.HeadersFrame:
		if err := cc.headerBlock(b, f); err != nil {
			return err
		}
	case *http2.ContinuationFrame:
		if !cc.hdr.active {
			return cc.goAway(b, http2.ErrCodeProtocol, "CONTINUATION without HEADERS")
		}
		if err := cc.headerBlock(b, f); err != nil {
			return err
		}
	case *http2.DataFrame:
		flow := int32(f.Length)
		cc.wmu.Lock()
		if flow > cc.recvWin {
			cc.wmu.Unlock()
			return cc.goAway(b, http2.ErrCodeFlowControl, "connection window exceeded")
		}
		cc.recvWin -= flow
		if flow > 0 {
			cc.creditConn(flow, cc.connThreshold)
		}
		s := cc.streams[f.StreamID]
		cc.wmu.Unlock()
		if flow > 0 {
			b.add(&cc.h2conn)
		}
		if s == nil {
			if cc.idleID(f.StreamID) {
				return cc.goAway(b, http2.ErrCodeProtocol, "DATA on idle stream")
			}
			break
		}
		s.mu.Lock()
		if s.cc == cc && s.upID == f.StreamID && !s.done {
			switch {
			case !s.committed:
				s.upstreamFailed(b, http2.ErrCodeProtocol, "DATA before response headers")
				cc.resetStream(b, f.StreamID, http2.ErrCodeProtocol)
			case flow > s.respH.recvWin:
				s.upstreamFailed(b, http2.ErrCodeFlowControl, "stream window exceeded")
				cc.resetStream(b, f.StreamID, http2.ErrCodeFlowControl)
			case s.respH.end:
				s.upstreamFailed(b, http2.ErrCodeStreamClosed, "DATA after END_STREAM")
			default:
				s.respH.recvWin -= flow
				if pad := flow - int32(len(f.Data())); pad > 0 {
					s.respH.recvWin += pad // padding is returned at once
					s.respH.unacked += pad
				}
				s.responseData(b, f.Data(), f.StreamEnded())
			}
		}
		s.mu.Unlock()
	case *http2.RSTStreamFrame:
		s := cc.lookup(f.StreamID)
		if s == nil {
			if cc.idleID(f.StreamID) {
				return cc.goAway(b, http2.ErrCodeProtocol, "RST_STREAM on idle stream")
			}
			break
		}
		s.mu.Lock()
		if s.cc == cc && s.upID == f.StreamID {
			s.resetByEndpoint(b, f.ErrCode)
		}
		s.mu.Unlock()
	case *http2.SettingsFrame:
		if f.IsAck() {
			break
		}
		if err := cc.applySettings(b, f); err != nil {
			return err
		}
	case *http2.WindowUpdateFrame:
		if err := cc.windowUpdate(b, f); err != nil {
			return err
		}
	case *http2.PingFrame:
		if !f.IsAck() {
			cc.wmu.Lock()
			held := cc.queueAck(f.Data)
			cc.wmu.Unlock()
			if !held {
				b.add(&cc.h2conn)
			}
		}
	case *http2.GoAwayFrame:
		cc.goAwayReceived(b, f.LastStreamID, f.ErrCode)
	case *http2.PushPromiseFrame:
		return cc.goAway(b, http2.ErrCodeProtocol, "PUSH_PROMISE with push disabled")
	}
	return nil
}

// runPinger checks every upstream connection for silence once per
// UpstreamPingInterval until the proxy shuts down: one timer for the
// whole proxy, nothing per request.
func (u *upstreams) runPinger(done <-chan struct{}) {
	t := time.NewTicker(u.cfg.UpstreamPingInterval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		u.pools.Range(func(_, v any) bool {
			ep := v.(*endpointPool)
			ep.mu.Lock()
			conns := append([]*clientConn(nil), ep.conns...)
			ep.mu.Unlock()
			for _, cc := range conns {
				cc.checkSilence()
			}
			return true
		})
	}
}

// checkSilence pings a connection that was silent for two rounds, and
// closes one that stayed silent a round after the PING.
func (cc *clientConn) checkSilence() {
	cc.pingMu.Lock()
	defer cc.pingMu.Unlock()
	if r := cc.reads.Load(); r != cc.seen {
		cc.seen, cc.quiet = r, 0
		return
	}
	cc.quiet++
	switch {
	case cc.quiet == 2:
		cc.wmu.Lock()
		if !cc.closed {
			cc.fr.WritePing(false, [8]byte{'z', 'o', 'n', 'e', 'l', 'b'})
			cc.w.flush()
		}
		cc.wmu.Unlock()
	case cc.quiet > 2:
		cc.u.log.Warn("closing silent upstream connection", "endpoint", cc.pool.addrStr)
		cc.close(errors.New("no answer to PING"))
	}
}

// headerBlockError closes the connection over a header block that failed;
// apart from headerBlock so that errors.As's target is allocated only here.
func (cc *clientConn) headerBlockError(b *batch, err error) error {
	var ce http2.ConnectionError
	switch {
	case errors.Is(err, errFrameBudget):
		return cc.abusive(b, err.Error())
	case errors.As(err, &ce):
		return cc.goAway(b, http2.ErrCode(ce), "invalid header block")
	}
	return cc.goAway(b, http2.ErrCodeInternal, err.Error())
}

// headerBlock handles the outcome of a HEADERS or CONTINUATION frame from
// the endpoint: a connection error, nothing yet, or a complete block.
func (cc *clientConn) headerBlock(b *batch, frame http2.Frame) error {
	var done bool
	var err error
	switch f := frame.(type) {
	case *http2.HeadersFrame:
		done, err = cc.hdr.start(f)
	case *http2.ContinuationFrame:
		done, err = cc.hdr.add(f.HeaderBlockFragment(), f.HeadersEnded())
	}
	switch {
	case err != nil:
		return cc.headerBlockError(b, err)
	case !done:
		return nil
	}
	f := &cc.hdr
	if f.truncated || f.invalid != nil {
		cc.streamError(b, f.streamID, http2.ErrCodeProtocol, "invalid or too large response header block")
		return nil
	}
	s := cc.lookup(f.streamID)
	if s == nil {
		if cc.idleID(f.streamID) {
			return cc.goAway(b, http2.ErrCodeProtocol, "HEADERS on idle stream")
		}
		return nil
	}
	s.mu.Lock()
	if s.cc == cc && s.upID == f.streamID {
		s.responseHeaders(b, f.fields, f.endStream)
	}
	s.mu.Unlock()
	return nil
}

func (cc *clientConn) lookup(id uint32) *stream {
	cc.wmu.Lock()
	s := cc.streams[id]
	cc.wmu.Unlock()
	return s
}

// idleID reports whether id names a stream never opened on cc.
func (cc *clientConn) idleID(id uint32) bool {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	return id%2 == 0 || id >= cc.nextID
}

// resetStream sends RST_STREAM for an upstream stream.
func (cc *clientConn) resetStream(b *batch, id uint32, code http2.ErrCode) {
	cc.wmu.Lock()
	if !cc.closed {
		cc.fr.WriteRSTStream(id, code)
	}
	cc.wmu.Unlock()
	b.add(&cc.h2conn)
}

// streamError handles a stream-level protocol error by the endpoint.
func (cc *clientConn) streamError(b *batch, id uint32, code http2.ErrCode, reason string) {
	cc.resetStream(b, id, code)
	if s := cc.lookup(id); s != nil {
		s.mu.Lock()
		if s.cc == cc && s.upID == id {
			s.upstreamFailed(b, code, reason)
		}
		s.mu.Unlock()
	}
}

// floodGuard charges f to the endpoint's credit, the same rule as a
// client's: frames that answer requests earn, control and empty frames
// cost, and frames sent to the endpoint earn (it legitimately answers them
// with WINDOW_UPDATE and PING). It reports whether the credit ran out.
func (cc *clientConn) floodGuard(f http2.Frame) bool {
	if cc.u.cfg.DisableFloodGuard {
		return false
	}
	switch f := f.(type) {
	case *http2.HeadersFrame:
		cc.credit = min(cc.credit+floodEarnPerFrame, floodBurst)
		return false
	case *http2.ContinuationFrame:
		if len(f.HeaderBlockFragment()) > 0 {
			cc.credit = min(cc.credit+floodEarnPerFrame, floodBurst)
			return false
		}
	case *http2.DataFrame:
		if f.Length > 0 || f.StreamEnded() {
			cc.credit = min(cc.credit+floodEarnPerFrame, floodBurst)
			return false
		}
	case *http2.SettingsFrame:
		if f.IsAck() {
			return false
		}
	case *http2.PingFrame:
		if f.IsAck() {
			return false
		}
	case *http2.GoAwayFrame:
		return false
	}
	if cc.credit <= 0 {
		if out := cc.outFrames.Swap(0); out > 0 {
			cc.credit = int(min(int64(cc.credit)+floodEarnPerFrameOut*out, floodBurst))
		}
	}
	cc.credit--
	return cc.credit < 0
}

// abusive closes the connection of an endpoint that abuses the protocol:
// its streams fail, which the balancer sees as failures of the endpoint.
func (cc *clientConn) abusive(b *batch, reason string) error {
	cc.u.p.stats.upstreamFloods.Add(1)
	cc.u.log.Warn("closing abusive upstream connection", "endpoint", cc.pool.addrStr, "reason", reason)
	return cc.goAway(b, http2.ErrCodeEnhanceYourCalm, reason)
}

// goAway ends the connection for a protocol error by the endpoint.
func (cc *clientConn) goAway(b *batch, code http2.ErrCode, reason string) error {
	cc.wmu.Lock()
	if !cc.closed {
		cc.fr.WriteGoAway(cc.nextID-2+boolU32(cc.nextID < 2), code, []byte(reason))
		cc.w.flush()
	}
	cc.wmu.Unlock()
	return errUpstreamProtocol{code, reason}
}

func boolU32(v bool) uint32 {
	if v {
		return 1
	}
	return 0
}

// resetByEndpoint handles RST_STREAM from the endpoint. Call with s.mu
// held.
func (s *stream) resetByEndpoint(b *batch, code http2.ErrCode) {
	if s.done {
		return
	}
	if code == http2.ErrCodeNo && s.respH.end {
		return
	}
	// The stream is closed upstream: no reset back.
	s.reqH.endSent, s.respH.end = true, true
	s.upstreamFailed(b, code, "stream reset by endpoint ("+code.String()+")")
}

func (cc *clientConn) applySettings(b *batch, f *http2.SettingsFrame) error {
	var code http2.ErrCode
	var pushed []*stream
	cc.wmu.Lock()
	err := f.ForeachSetting(func(st http2.Setting) error {
		if err := st.Valid(); err != nil {
			code = http2.ErrCode(err.(http2.ConnectionError))
			return err
		}
		switch st.ID {
		case http2.SettingMaxConcurrentStreams:
			cc.peerMaxStreams = st.Val
		case http2.SettingInitialWindowSize:
			delta := int32(st.Val) - cc.peerInitWin
			cc.peerInitWin = int32(st.Val)
			for _, s := range cc.streams {
				w := int64(s.reqH.win) + int64(delta)
				if w > 1<<31-1 {
					code = http2.ErrCodeFlowControl
					return errors.New("window overflow")
				}
				s.reqH.win = int32(w)
				if delta > 0 {
					pushed = append(pushed, s)
				}
			}
		case http2.SettingMaxFrameSize:
			cc.peerMaxFrame = st.Val
		case http2.SettingHeaderTableSize:
			cc.enc.SetMaxDynamicTableSizeLimit(st.Val)
			cc.forgetBlocks()
		case http2.SettingMaxHeaderListSize:
			cc.peerMaxList = st.Val
		}
		return nil
	})
	if err == nil {
		cc.fr.WriteSettingsAck()
	}
	cc.wmu.Unlock()
	if err != nil {
		return cc.goAway(b, code, "invalid SETTINGS: "+err.Error())
	}
	b.add(&cc.h2conn)
	for _, s := range pushed {
		s.mu.Lock()
		if s.cc == cc {
			s.pushRequest(b)
		}
		s.mu.Unlock()
	}
	b.kick(cc.pool)
	return nil
}

func (cc *clientConn) windowUpdate(b *batch, f *http2.WindowUpdateFrame) error {
	inc := int64(f.Increment)
	cc.wmu.Lock()
	if f.StreamID == 0 {
		if int64(cc.sendWin)+inc > 1<<31-1 {
			cc.wmu.Unlock()
			return cc.goAway(b, http2.ErrCodeFlowControl, "connection window overflow")
		}
		cc.sendWin += int32(inc)
		blocked := cc.takeBlocked()
		cc.wmu.Unlock()
		for _, s := range blocked {
			s.mu.Lock()
			s.blockedUp = false
			s.pushRequest(b)
			s.mu.Unlock()
		}
		return nil
	}
	s := cc.streams[f.StreamID]
	if s == nil {
		cc.wmu.Unlock()
		if cc.idleID(f.StreamID) {
			return cc.goAway(b, http2.ErrCodeProtocol, "WINDOW_UPDATE on idle stream")
		}
		return nil
	}
	if int64(s.reqH.win)+inc > 1<<31-1 {
		cc.wmu.Unlock()
		cc.streamError(b, f.StreamID, http2.ErrCodeFlowControl, "stream window overflow")
		return nil
	}
	s.reqH.win += int32(inc)
	cc.wmu.Unlock()
	s.mu.Lock()
	if s.cc == cc {
		if s.upID == f.StreamID {
			s.upHeard = true
		}
		s.pushRequest(b)
	}
	s.mu.Unlock()
	return nil
}

// idStream is a stream and its id on a connection, taken together so that
// the stream's record can be checked to be that stream still (records are
// reused: see stream.recycle).
type idStream struct {
	s  *stream
	id uint32
}

// goAwayReceived stops new streams on cc; streams above lastID never
// reached the endpoint's application and go elsewhere.
func (cc *clientConn) goAwayReceived(b *batch, lastID uint32, code http2.ErrCode) {
	var unseen []idStream
	cc.wmu.Lock()
	cc.goingAway = true
	if !cc.goAwaySeen || lastID > cc.goAwayLast {
		cc.goAwaySeen, cc.goAwayLast = true, lastID
	}
	for id, s := range cc.streams {
		if id > lastID {
			unseen = append(unseen, idStream{s, id})
		}
	}
	empty := cc.active == len(unseen)
	cc.wmu.Unlock()
	cc.pool.remove(cc)
	for _, u := range unseen {
		s := u.s
		s.mu.Lock()
		if s.cc == cc && s.upID == u.id && s.upOpen && !s.done {
			s.reqH.endSent, s.respH.end = true, true // no reset: the stream does not exist there
			s.detachUpstream(b, false)
			s.notAnswered(b, true, "stream above the endpoint's GOAWAY last stream id")
		}
		s.mu.Unlock()
	}
	if empty {
		cc.close(nil)
	}
	b.kick(cc.pool)
}

// teardown fails the streams left on a connection that ended.
func (cc *clientConn) teardown(b *batch, err error) {
	cc.wmu.Lock()
	cc.closed = true
	left := make([]*stream, 0, len(cc.streams))
	for _, s := range cc.streams {
		left = append(left, s)
	}
	backlog := errors.Is(cc.w.err, errWriteBacklog)
	cut := cc.unreachedFrom(err)
	cc.wmu.Unlock()
	cc.conn.Close()
	cc.pool.remove(cc)
	reason := "connection lost"
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		reason = "connection lost: " + err.Error()
	}
	if backlog {
		// Closed by the writer: the endpoint does not read.
		cc.u.p.stats.upstreamFloods.Add(1)
		cc.u.log.Warn("closing upstream connection that does not read", "endpoint", cc.pool.addrStr)
		reason = errWriteBacklog.Error()
	}
	if pe, ok := err.(errUpstreamProtocol); ok {
		cc.u.log.Warn("closing upstream connection", "endpoint", cc.pool.addrStr, "err", pe)
	}
	for _, s := range left {
		s.mu.Lock()
		if s.cc == cc && s.upOpen && !s.done {
			s.reqH.endSent, s.respH.end = true, true
			if cut.neverReached(s) {
				s.detachUpstream(b, false)
				s.notAnswered(b, true, "the connection ended before the request reached the endpoint")
			} else {
				s.upstreamFailed(b, errCodeConnLost, reason)
			}
		}
		s.mu.Unlock()
	}
	b.kick(cc.pool)
}

var _ = strconv.Itoa
