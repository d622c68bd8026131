package proxy

import (
	"github.com/zonelb/zonelb/internal/grpccode"

	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/zonelb/zonelb/zone"
)

// stream is one request on its way through the proxy: a downstream stream
// (HTTP/2, or an HTTP/1.1 request served by net/http) mapped to an upstream
// HTTP/2 stream. It is a record, not a goroutine: the read loops of the two
// connections, timers and (for HTTP/1.1) the handler goroutine act on it
// under mu.
//
// Records of HTTP/2 streams are recycled (see recycle): what identifies
// an incarnation across its reuse is gen, and code that reaches a record
// through a pointer taken before it locked mu checks that the record is
// still the stream it meant (its connection and stream id, or gen).
type stream struct {
	mu  sync.Mutex
	gen uint64 // bumped when the stream ends; stale timer entries carry an old one
	// timerIdx are the stream's positions in sc.timers (deadline, stall),
	// -1 if none; guarded by the heap's mu.
	timerIdx [2]int

	streamState
}

// streamState is what a stream record holds for one incarnation: all of
// it is cleared when the record is reused.
type streamState struct {
	p *Proxy

	// Downstream: an HTTP/2 client stream, or an HTTP/1.1 handler.
	sc *serverConn
	h1 *h1Stream
	id uint32

	// Upstream, once opened.
	cc   *clientConn
	upID uint32
	// upAt is the byte offset on cc's connection of the stream's HEADERS,
	// and upHeard is set once the endpoint sent a frame for the stream
	// (see neverReached).
	upAt    uint64
	upHeard bool
	// waiting is set while the stream waits for an upstream connection
	// (a dial in progress, or every connection full).
	waiting bool

	route   Route
	picked  zone.Picked
	hasPick bool
	avoid   netip.AddrPort
	attempt int

	req      []hpack.HeaderField // request header block for upstream
	reqBox   *reqFields          // storage for req from reqFieldsPool, when it fits
	grpc     bool
	start    time.Time
	sent     time.Time // when the current attempt was sent upstream
	deadline time.Time // from grpc-timeout; zero if none

	reqH  half // client -> endpoint
	respH half // endpoint -> client

	// contentLength is the request's declared body length, -1 if none.
	contentLength int64
	reqBody       int64 // request body bytes received

	// replay holds the request body received while the request is not
	// committed, so it can be sent again to another endpoint.
	replay     []byte
	replayBox  *[]byte // where replay came from in p.replays, to give it back
	replayLost bool    // more than ReplayLimit: no retry possible

	committed   bool // response headers arrived from the endpoint
	headersSent bool // response headers went to the client
	upOpen      bool // the upstream stream is in cc.streams
	downOpen    bool // the downstream stream is in sc.streams
	done        bool // the exchange is over and reported

	blockedDown bool // in sc.blocked
	blockedUp   bool // in cc.blocked
	stallGen    uint64
	stallSince  time.Time

	failed      bool // answered by the proxy itself, with failOutcome
	failOutcome zone.Outcome

	waitPool *endpointPool // where the stream waits, while waiting
	timed    bool          // added to sc.timers since the last remove

	accounted int // held bytes counted in the proxy's stats

	info     RequestInfo
	respHdrN int64
}

// account brings the proxy's count of held bytes up to date with this
// stream's. Call with s.mu held after changing what it holds.
func (s *stream) account() {
	cur := len(s.reqH.held) + len(s.respH.held)
	if d := cur - s.accounted; d > 0 {
		s.p.stats.hold(d)
	} else if d < 0 {
		s.p.stats.release(-d)
	}
	s.accounted = cur
}

// half is one direction of a stream: bytes from a source hop to a
// destination hop.
type half struct {
	win      int32  // send window on the destination hop, for this stream
	recvWin  int32  // what the source may still send us on this stream
	unacked  int32  // forwarded, not yet returned to the source
	held     []byte // received, not yet sent on
	end      bool   // the source ended this direction
	endSent  bool   // END_STREAM went to the destination
	trailers []hpack.HeaderField
	bytes    int64 // payload bytes received from the source
}

// reqFields stores a request's header fields for the life of its
// stream: most requests have fewer than 16. It comes from reqFieldsPool
// rather than living in the stream record, where it was 640 of the
// record's 1320 bytes, the larger part of what the proxy allocated per
// call and so of how often the garbage collector runs.
type reqFields [16]hpack.HeaderField

var reqFieldsPool = sync.Pool{New: func() any { return new(reqFields) }}

// releaseReq gives the request's header storage back to reqFieldsPool.
// Call with s.mu held once nothing will send the request again (finish),
// or before s is shared.
func (s *stream) releaseReq() {
	if s.reqBox != nil {
		clear(s.reqBox[:])
		reqFieldsPool.Put(s.reqBox)
		s.reqBox = nil
	}
	s.req = nil
}

func (p *Proxy) newStream() *stream {
	s, _ := p.streams.Get().(*stream)
	if s == nil {
		s = &stream{timerIdx: [2]int{-1, -1}}
	} else {
		// A goroutine that still held a pointer to the record's last
		// incarnation may hold mu: the record is cleared under it, and
		// such a goroutine then finds a stream that is not its own.
		s.mu.Lock()
		s.streamState = streamState{}
		s.timerIdx = [2]int{-1, -1}
		s.mu.Unlock()
	}
	s.p = p
	s.contentLength = -1
	s.info.GRPCStatus = -1
	return s
}

// Recycling stream records.
//
// A record is 704 bytes, three quarters of what the engine allocated per
// forwarded call: at 5000 gRPC calls a second its garbage alone made the
// collector run about four times a second, some 0.75 ms of CPU each
// (GODEBUG=gctrace=1, GOGC 70, a live heap of 1-3 MB). An HTTP/2 stream's
// record goes back to the proxy's pool (Proxy.streams) once it ended and
// nothing lists it any more: not a connection's stream map, a blocked
// list or a pool's waiting queue, nor a timer (finish takes it off all
// of them, or it is not recycled). Goroutines can still hold pointers
// taken before the end (a read loop that looked the stream up and waits
// for mu, a timer that fired, a list of streams to push being walked):
// each checks, once it holds mu, that the record is still its stream
// (its connection and id, its upstream connection and id, or gen), and
// treats a record that is not as the ended stream it was. HTTP/1.1
// streams are not recycled: their handler goroutine reads the record
// after the end.

// recycle queues s, which just ended, to go back to the pool when b is
// flushed, when no stream lock is held. Call with s.mu held.
func (s *stream) recycle(b *batch) {
	if s.h1 != nil {
		return
	}
	b.ended = append(b.ended, streamGen{s, s.gen})
}

// streamGen is a stream record and the gen of the incarnation meant: a
// stream that ended, or one queued for a connection.
type streamGen struct {
	s   *stream
	gen uint64
}

// releaseEnded puts ended streams back to their proxy's pool: those still
// as they ended. Call with no stream lock held.
func releaseEnded(ended []streamGen) {
	for i, e := range ended {
		s := e.s
		s.mu.Lock()
		idle := s.gen == e.gen && s.done && s.h1 == nil && !s.downOpen && !s.upOpen && s.cc == nil &&
			!s.waiting && !s.blockedDown && !s.blockedUp && !s.timed
		p := s.p
		s.mu.Unlock()
		if idle {
			p.streams.Put(s)
		}
		ended[i] = streamGen{}
	}
}

// current reports whether s, looked up as stream id of sc before s.mu was
// taken, is still that stream. Call with s.mu held.
func (s *stream) current(sc *serverConn, id uint32) bool {
	return s.sc == sc && s.id == id && s.h1 == nil
}

// streamThreshold is when a stream's consumed window is returned: a
// quarter of the window, so that the sender never runs dry while an update
// is on its way.
func (p *Proxy) streamThreshold() int32 { return int32(p.cfg.StreamWindow / 4) }

// --- request direction ---

// requestData takes request body bytes from the client: flowLen is what
// they cost in flow control (padding included). Call with s.mu held.
func (s *stream) requestData(b *batch, data []byte, end bool) {
	s.reqBody += int64(len(data))
	s.reqH.bytes += int64(len(data))
	if !s.committed && !s.replayLost && len(data) > 0 {
		if len(s.replay)+len(data) > s.p.cfg.ReplayLimit {
			s.replayLost = true
			s.dropReplay()
		} else {
			if s.replayBox == nil {
				s.replayBox = s.p.replays.get()
				s.replay = (*s.replayBox)[:0]
			}
			s.replay = append(s.replay, data...)
		}
	}
	if end {
		s.reqH.end = true
	}
	if s.cc == nil || !s.upOpen {
		s.reqH.held = append(s.reqH.held, data...)
		s.account()
		return
	}
	n := s.forward(b, &s.reqH, &s.cc.h2conn, s.upID, data, &s.blockedUp)
	s.creditClient(b, n)
}

// pushRequest sends held request bytes upstream as far as windows allow.
func (s *stream) pushRequest(b *batch) {
	if s.cc == nil || !s.upOpen || s.done {
		return
	}
	n := s.forward(b, &s.reqH, &s.cc.h2conn, s.upID, nil, &s.blockedUp)
	s.creditClient(b, n)
}

// creditClient returns n forwarded request bytes to the client's windows.
func (s *stream) creditClient(b *batch, n int) {
	if n <= 0 {
		return
	}
	if s.h1 != nil {
		s.h1.cond.Broadcast()
		return
	}
	sc := s.sc
	sc.wmu.Lock()
	sc.creditConn(int32(n), sc.connThreshold)
	if !s.reqH.end && s.downOpen {
		s.ackStream(sc.fr, &s.reqH, s.id, n)
	}
	sc.wmu.Unlock()
	b.add(&sc.h2conn)
}

// ackStream counts n forwarded bytes of direction h against the stream's
// window and, past the threshold, returns them to the sender on stream id.
// Call with the writer's lock held.
func (s *stream) ackStream(fr *http2.Framer, h *half, id uint32, n int) {
	h.unacked += int32(n)
	if h.unacked >= s.p.streamThreshold() {
		fr.WriteWindowUpdate(id, uint32(h.unacked))
		h.recvWin += h.unacked
		h.unacked = 0
	}
}

// --- response direction ---

// responseData takes response body bytes from the endpoint. Call with
// s.mu held.
func (s *stream) responseData(b *batch, data []byte, end bool) {
	s.respH.bytes += int64(len(data))
	if end {
		s.respH.end = true
	}
	if s.h1 != nil {
		s.respH.held = append(s.respH.held, data...)
		s.account()
		s.h1.cond.Broadcast()
		if end {
			s.finish(b, s.outcome())
		}
		return
	}
	n := s.forward(b, &s.respH, &s.sc.h2conn, s.id, data, &s.blockedDown)
	s.creditUpstream(b, n)
	s.afterResponseWrite(b)
}

// pushResponse sends held response bytes to the client as far as windows
// allow.
func (s *stream) pushResponse(b *batch) {
	if s.done || s.h1 != nil {
		return
	}
	n := s.forward(b, &s.respH, &s.sc.h2conn, s.id, nil, &s.blockedDown)
	s.creditUpstream(b, n)
	s.afterResponseWrite(b)
}

// afterResponseWrite ends the exchange once the response is complete, and
// watches a response that is held back for a stalled client.
func (s *stream) afterResponseWrite(b *batch) {
	if s.respH.endSent {
		s.finish(b, s.outcome())
		return
	}
	if len(s.respH.held) > 0 {
		if s.stallSince.IsZero() && s.p.cfg.StalledWriteTimeout > 0 && s.sc != nil {
			s.stallSince = b.now(s.p.cfg.Now)
			s.stallGen++
			s.sc.timers.add(s.stallSince.Add(s.p.cfg.StalledWriteTimeout), s, s.gen, timerStall, s.stallGen)
		}
	} else {
		s.stallSince = time.Time{}
	}
}

// creditUpstream returns n forwarded response bytes to the endpoint's
// windows.
func (s *stream) creditUpstream(b *batch, n int) {
	if n <= 0 || s.cc == nil {
		return
	}
	cc := s.cc
	cc.wmu.Lock()
	if !s.respH.end && s.upOpen {
		s.ackStream(cc.fr, &s.respH, s.upID, n)
	}
	cc.wmu.Unlock()
	b.add(&cc.h2conn)
}

// forward sends h's held bytes, then data, to dst as far as the stream's
// and the connection's windows allow, holds the rest, and sends the end of
// the direction (END_STREAM, or trailers) once nothing is held. It returns
// how many bytes went out. Call with s.mu held.
func (s *stream) forward(b *batch, h *half, dst *h2conn, id uint32, data []byte, blocked *bool) int {
	dst.wmu.Lock()
	defer dst.wmu.Unlock()
	if dst.closed {
		h.held = append(h.held, data...)
		return 0
	}
	sent := 0
	if len(h.held) > 0 {
		n := s.sendData(dst, h, id, h.held, len(data) == 0)
		sent += n
		if n == len(h.held) {
			h.held = h.held[:0]
		} else {
			h.held = h.held[:copy(h.held, h.held[n:])]
		}
	}
	if len(h.held) == 0 && len(data) > 0 {
		n := s.sendData(dst, h, id, data, true)
		sent += n
		data = data[n:]
	}
	if len(data) > 0 {
		h.held = append(h.held, data...)
	}
	if len(h.held) == 0 && h.end && !h.endSent {
		if h.trailers != nil {
			dst.writeHeaders(id, true, h.trailers)
		} else {
			dst.fr.WriteData(id, true, nil)
		}
		h.endSent = true
	}
	if len(h.held) > 0 && (dst.sendWin <= 0 || !dst.canSendData()) {
		dst.addBlocked(s, blocked)
	}
	if len(h.held) == 0 && cap(h.held) > 0 {
		h.held = nil // an idle stream holds no buffer
	} else if len(h.held) > 0 && cap(h.held) > 2*s.p.cfg.StreamWindow {
		h.held = append([]byte(nil), h.held...)
	}
	b.add(dst)
	s.account()
	return sent
}

// sendData writes DATA frames for a prefix of p within the windows and
// returns its length. END_STREAM goes on the last frame when all of p
// fits, final says p is the last of the direction's bytes, and no trailers
// follow. Call with dst.wmu held.
func (s *stream) sendData(dst *h2conn, h *half, id uint32, p []byte, final bool) int {
	if !dst.canSendData() || h.win <= 0 {
		return 0
	}
	n := len(p)
	if int64(n) > int64(h.win) {
		n = int(h.win)
	}
	if int64(n) > int64(dst.sendWin) {
		n = int(dst.sendWin)
	}
	end := final && n == len(p) && h.end && h.trailers == nil
	max := int(dst.peerMaxFrame)
	for off := 0; off < n; {
		chunk := min(n-off, max)
		last := off+chunk == n
		dst.fr.WriteData(id, end && last, p[off:off+chunk])
		off += chunk
	}
	if end {
		h.endSent = true
	}
	if dst.outFrames != nil && n > 0 {
		dst.outFrames.Add(1)
	}
	h.win -= int32(n)
	dst.sendWin -= int32(n)
	return n
}

// --- response headers ---

// responseHeaders takes the endpoint's response headers (first block) or
// trailers. Call with s.mu held.
func (s *stream) responseHeaders(b *batch, fields []hpack.HeaderField, end bool) {
	if s.done {
		return
	}
	if !s.committed {
		status := 0
		for _, f := range fields {
			if f.Name == ":status" {
				status, _ = strconv.Atoi(f.Value)
			}
		}
		if status == 0 {
			s.upstreamFailed(b, http2.ErrCodeProtocol, "response without :status")
			return
		}
		if status >= 100 && status < 200 {
			return // informational: not forwarded
		}
		s.commit()
		s.info.TTFB = b.now(s.p.cfg.Now).Sub(s.sent)
		s.info.Status = status
		s.picked.Responded()
		s.respHdrN = fieldsSize(fields)
		if s.grpc && end {
			s.info.GRPCStatus = grpcStatusOf(fields)
		}
		s.sendResponseHeaders(b, fields, end)
		return
	}
	// Trailers.
	if !end {
		s.upstreamFailed(b, http2.ErrCodeProtocol, "trailers without END_STREAM")
		return
	}
	s.respHdrN += fieldsSize(fields)
	if s.grpc {
		s.info.GRPCStatus = grpcStatusOf(fields)
	}
	s.respH.trailers = filterResponse(fields)
	s.respH.end = true
	if s.h1 != nil {
		s.respH.trailers = append([]hpack.HeaderField(nil), s.respH.trailers...)
		s.h1.cond.Broadcast()
		s.finish(b, s.outcome())
		return
	}
	s.pushResponse(b)
	if !s.respH.endSent && !s.done {
		// Held behind response bytes: fields belongs to the
		// connection's decoder, keep a copy.
		s.respH.trailers = append([]hpack.HeaderField(nil), s.respH.trailers...)
	}
}

// sendResponseHeaders writes the response header block to the client.
func (s *stream) sendResponseHeaders(b *batch, fields []hpack.HeaderField, end bool) {
	s.headersSent = true
	if end {
		s.respH.end = true
		s.respH.endSent = true
	}
	if s.h1 != nil {
		s.h1.headers = append([]hpack.HeaderField(nil), fields...)
		s.h1.cond.Broadcast()
		if end {
			s.finish(b, s.outcome())
		}
		return
	}
	sc := s.sc
	sc.wmu.Lock()
	if !sc.closed {
		sc.writeHeaders(s.id, end, filterResponse(fields))
		sc.outFrames.Add(1)
	}
	sc.wmu.Unlock()
	b.add(&sc.h2conn)
	if end {
		s.finish(b, s.outcome())
	}
}

// commit marks the request as committed to its endpoint: no retry from
// now on, and the replay copy goes.
func (s *stream) commit() {
	s.committed = true
	s.dropReplay()
	s.replayLost = true
}

// dropReplay gives the replay copy back to the proxy's pool. Call with
// s.mu held.
func (s *stream) dropReplay() {
	if s.replayBox != nil {
		s.p.replays.put(s.replayBox, s.replay)
		s.replayBox = nil
	}
	s.replay = nil
}

// outcome is how a completed exchange went, for the balancer.
func (s *stream) outcome() zone.Outcome {
	if s.failed {
		return s.failOutcome
	}
	if s.grpc {
		if s.info.GRPCStatus < 0 {
			return zone.Failure // a gRPC server must end with a status
		}
		return grpcOutcome(s.info.Status, s.info.GRPCStatus)
	}
	return httpOutcome(s.info.Status)
}

// --- failures ---

// deadlineSlack is how close to a call's deadline an endpoint's reset is
// taken for the deadline itself.
const deadlineSlack = 10 * time.Millisecond

// upstreamFailed handles the loss of the upstream stream: retried when it
// provably never reached the endpoint's application, else answered with an
// error. Call with s.mu held.
func (s *stream) upstreamFailed(b *batch, code http2.ErrCode, reason string) {
	if s.done {
		return
	}
	s.detachUpstream(b, code != http2.ErrCodeNo)
	if !s.deadline.IsZero() && b.now(s.p.cfg.Now).After(s.deadline.Add(-deadlineSlack)) {
		// The endpoint gave up at the call's deadline (its copy of it
		// runs a little behind ours): the client's answer is the
		// deadline's.
		s.fail(b, http.StatusGatewayTimeout, grpccode.DeadlineExceeded, "zonelb: deadline exceeded", zone.Canceled)
		return
	}
	if s.committed {
		s.p.log.Debug("upstream stream failed mid-response", "service", s.route.Service, "code", code.String(), "reason", reason)
		if s.grpc {
			gc := grpcCodeForReset(code)
			if code == errCodeConnLost {
				gc = grpccode.Unavailable
			}
			s.fail(b, http.StatusBadGateway, gc, "zonelb: upstream stream failed: "+reason, zone.Failure)
			return
		}
		s.resetClient(b, http2.ErrCodeInternal)
		s.finish(b, zone.Failure)
		return
	}
	notReached := code == http2.ErrCodeRefusedStream
	s.notAnswered(b, notReached, reason)
}

// notAnswered handles an attempt that got no response: retry once on
// another endpoint if the request never reached the first and can be
// replayed; otherwise 502 / UNAVAILABLE. Call with s.mu held, the
// upstream stream detached.
func (s *stream) notAnswered(b *batch, notReached bool, reason string) {
	outcome := zone.Failure
	if notReached {
		outcome = zone.NotReached
	}
	ep := s.info.Endpoint
	if s.hasPick {
		s.picked.Done(zone.Result{Outcome: outcome})
		s.hasPick = false
	}
	s.info.Outcome = outcome
	canReplay := !s.replayLost || s.reqBody == 0
	if notReached && s.attempt == 0 && canReplay && ep != nil {
		s.p.log.Debug("retrying on another endpoint", "service", s.route.Service, "endpoint", ep.Addr.String(), "reason", reason)
		s.p.stats.retries.Add(1)
		s.info.Retried = true
		s.attempt++
		s.avoid = ep.Addr
		// The new attempt resends the whole body received so far.
		s.reqH.held = append(s.reqH.held[:0], s.replay...)
		s.reqH.endSent = false
		s.reqH.trailers = nil
		s.p.dispatch(b, s)
		return
	}
	addr := "?"
	if ep != nil {
		addr = ep.Addr.String()
	}
	s.p.log.Debug("upstream request failed", "service", s.route.Service, "endpoint", addr, "reason", reason)
	s.fail(b, http.StatusBadGateway, grpccode.Unavailable, "zonelb: upstream "+addr+" failed: "+reason, outcome)
}

// fail answers the client with an error the proxy produced, and ends the
// exchange: a gRPC status (trailers-only, or trailers after headers) or an
// HTTP status; an HTTP response already under way is reset. Call with
// s.mu held.
func (s *stream) fail(b *batch, status int, grpcCode grpccode.Code, msg string, outcome zone.Outcome) {
	if s.done {
		return
	}
	s.failed, s.failOutcome = true, outcome
	s.detachUpstream(b, true)
	if s.grpc {
		s.info.GRPCStatus = grpcCode
		st := []hpack.HeaderField{
			{Name: "grpc-status", Value: strconv.Itoa(int(grpcCode))},
			{Name: "grpc-message", Value: encodeGRPCMessage(msg)},
		}
		if !s.headersSent {
			s.info.Status = http.StatusOK
			fields := append([]hpack.HeaderField{{Name: ":status", Value: "200"}, {Name: "content-type", Value: "application/grpc"}}, st...)
			s.respH.held = nil
			s.sendResponseHeaders(b, fields, true)
			s.finish(b, outcome)
			return
		}
		// Trailers right away: what is held for the client is dropped.
		s.respH.held = nil
		s.respH.trailers = st
		s.respH.end = true
		if s.h1 != nil {
			s.h1.cond.Broadcast()
			s.finish(b, outcome)
			return
		}
		s.pushResponse(b)
		s.finish(b, outcome)
		return
	}
	if s.headersSent {
		s.resetClient(b, http2.ErrCodeInternal)
		s.finish(b, outcome)
		return
	}
	s.info.Status = status
	s.respH.held = append(s.respH.held[:0], msg+"\n"...)
	s.respH.end = true
	s.respH.trailers = nil
	s.respH.win = max(s.respH.win, 0)
	fields := []hpack.HeaderField{
		{Name: ":status", Value: strconv.Itoa(status)},
		{Name: "content-type", Value: "text/plain; charset=utf-8"},
		{Name: "x-content-type-options", Value: "nosniff"},
	}
	s.headersSent = true
	if s.h1 != nil {
		s.h1.headers = fields
		s.h1.cond.Broadcast()
		s.finish(b, outcome)
		return
	}
	s.sc.wmu.Lock()
	if !s.sc.closed {
		s.sc.writeHeaders(s.id, false, fields)
	}
	s.sc.wmu.Unlock()
	s.info.Outcome = outcome
	s.pushResponse(b)
}

// resetClient resets the downstream stream. Call with s.mu held.
func (s *stream) resetClient(b *batch, code http2.ErrCode) {
	s.respH.held = nil
	if s.h1 != nil {
		s.h1.reset = true
		s.h1.cond.Broadcast()
		return
	}
	if !s.downOpen {
		return
	}
	sc := s.sc
	sc.wmu.Lock()
	if !sc.closed {
		sc.fr.WriteRSTStream(s.id, code)
	}
	delete(sc.streams, s.id)
	sc.wmu.Unlock()
	s.downOpen = false
	b.add(&sc.h2conn)
	sc.streamClosed()
}

// detachUpstream takes the stream off its upstream connection, resetting
// the upstream stream if rst and it is not closed both ways. Call with
// s.mu held.
func (s *stream) detachUpstream(b *batch, rst bool) {
	if s.waiting {
		s.p.unwait(s)
	}
	cc := s.cc
	if cc == nil {
		return
	}
	if s.upOpen {
		cc.wmu.Lock()
		if rst && !(s.reqH.endSent && s.respH.end) && !cc.closed {
			cc.fr.WriteRSTStream(s.upID, http2.ErrCodeCancel)
		}
		delete(cc.streams, s.upID)
		cc.wmu.Unlock()
		s.upOpen = false
		b.add(&cc.h2conn)
		cc.streamClosed(b)
	}
	s.cc = nil
}

// finish ends the exchange: reports it, frees the upstream stream and the
// downstream one (resetting the client's half that is still open). Call
// with s.mu held; idempotent.
func (s *stream) finish(b *batch, outcome zone.Outcome) {
	if s.done {
		return
	}
	s.done = true
	s.gen++
	end := b.now(s.p.cfg.Now)
	if s.upOpen {
		s.detachUpstream(b, true)
	} else if s.waiting {
		s.p.unwait(s)
	}
	s.info.Outcome = outcome
	s.info.Duration = end.Sub(s.start)
	s.info.BytesSent = s.reqBody
	s.info.BytesRecv = s.respH.bytes
	if s.hasPick {
		s.hasPick = false
		s.picked.Done(zone.Result{
			Outcome:       outcome,
			TTFB:          s.info.TTFB,
			BytesSent:     s.reqBody + fieldsSize(s.req),
			BytesReceived: s.respH.bytes + s.respHdrN,
		})
	}
	s.p.stats.active.Add(-1)
	s.releaseReq()
	s.dropReplay()
	heldReq := len(s.reqH.held)
	s.reqH.held = nil
	if s.h1 == nil {
		s.sc.timers.remove(s)
		s.respH.held = nil
	}
	s.account()
	// Observed once Stats no longer counts the request (active, and on
	// HTTP/2 bytes held): an observer that reads Stats on seeing a
	// request end finds it gone.
	if o := s.p.cfg.Observer; o != nil {
		o.ObserveRequest(s.info)
	}
	if s.h1 != nil {
		s.h1.cond.Broadcast()
		return
	}
	if s.downOpen {
		sc := s.sc
		sc.wmu.Lock()
		// What the client sent and we could not forward goes back to
		// its connection window.
		if heldReq > 0 {
			sc.creditConn(int32(heldReq), sc.connThreshold)
		}
		if !s.reqH.end && !sc.closed {
			// The response is complete but the client is still sending:
			// it may stop (RFC 9113 section 8.1).
			code := http2.ErrCodeNo
			if !s.respH.endSent {
				code = http2.ErrCodeCancel
			}
			sc.fr.WriteRSTStream(s.id, code)
		}
		delete(sc.streams, s.id)
		sc.wmu.Unlock()
		s.downOpen = false
		b.add(&sc.h2conn)
		sc.streamClosed()
	}
	s.recycle(b)
}

// --- header helpers ---

// fieldsSize approximates a header block's size before compression, for
// byte accounting.
func fieldsSize(fields []hpack.HeaderField) int64 {
	var n int64
	for _, f := range fields {
		n += int64(len(f.Name) + len(f.Value) + 4)
	}
	return n
}

func grpcStatusOf(fields []hpack.HeaderField) grpccode.Code {
	for _, f := range fields {
		if f.Name == "grpc-status" {
			return grpccode.Code(atoiOr(f.Value, int(grpccode.Unknown)))
		}
	}
	return -1
}

// filterResponse drops connection-specific fields (RFC 9113 8.2.2) from a
// response header block, in place when there are none.
func filterResponse(fields []hpack.HeaderField) []hpack.HeaderField {
	for i, f := range fields {
		if isConnectionSpecific(f.Name) {
			out := append([]hpack.HeaderField(nil), fields[:i]...)
			for _, g := range fields[i+1:] {
				if !isConnectionSpecific(g.Name) {
					out = append(out, g)
				}
			}
			return out
		}
	}
	return fields
}

func isConnectionSpecific(name string) bool {
	switch name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "http2-settings":
		return true
	}
	return false
}
