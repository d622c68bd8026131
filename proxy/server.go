package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// serverConn is one downstream HTTP/2 connection: its writing half
// (h2conn), the streams the client opened, and the state of its read loop.
type serverConn struct {
	h2conn
	p      *Proxy
	conn   net.Conn
	br     *connReader
	in     budgetReader
	hdr    headerBlock
	rf     *http2.Framer
	route  Route
	remote string
	timers timerHeap

	// Guarded by wmu:
	streams       map[uint32]*stream
	connThreshold int32
	goAwaySent    bool
	goAwayID      uint32

	outFrames atomic.Int64 // HEADERS and DATA written to the client, for the flood guard
	lastIDa   atomic.Uint32
	draining  atomic.Bool

	// Read loop only:
	lastID     uint32
	peerGoAway bool
	credit     int // flood guard credit
	opened     int // streams opened
	resets     int // streams reset by the client before an answer
}

// maxHeaderListSize is SETTINGS_MAX_HEADER_LIST_SIZE on both hops: the
// decoded size of a header block the proxy accepts.
const maxHeaderListSize = 64 << 10

// readBufferSize is the buffer protocol detection reads a new connection's
// first bytes into; an HTTP/2 connection drops it once it has read them
// and reads through buffers of readBufs (connReader), an HTTP/1.1 or
// opaque one keeps it. Upstream connections read through readBufs too.
const readBufferSize = 2 << 10

// serveH2 runs a downstream HTTP/2 connection until it ends. src reads the
// connection (newSockReader); first, if not nil, holds what was read of it
// already.
func (p *Proxy) serveH2(c net.Conn, first *bufio.Reader, src io.Reader, route Route) {
	br := newConnReader(first, src)
	sc := &serverConn{
		p:       p,
		conn:    c,
		br:      br,
		route:   route,
		remote:  c.RemoteAddr().String(),
		streams: make(map[uint32]*stream),
		credit:  floodBurst,
	}
	sc.connThreshold = int32(p.cfg.ConnWindow / 4)
	sc.timers.init(sc)
	sc.h2conn.init(c, sc.drained)
	sc.h2conn.outFrames = &sc.outFrames
	sc.recvWin = int32(p.cfg.ConnWindow)
	sc.in.r = br
	sc.rf = http2.NewFramer(nil, &sc.in)
	sc.hdr.init()
	sc.rf.SetMaxReadFrameSize(maxFrameSize)
	sc.rf.SetReuseFrames()
	if !p.addConn(sc) {
		c.Close()
		return
	}
	defer p.removeConn(sc)

	var b batch
	err := sc.serve(&b)
	b.flush()
	sc.teardown(&b, err)
	b.flush()
	sc.br.release()
}

func (sc *serverConn) serve(b *batch) error {
	preface := make([]byte, len(http2.ClientPreface))
	sc.br.SetReadDeadline(time.Now().Add(sc.p.cfg.DetectTimeout + 10*time.Second))
	if _, err := io.ReadFull(sc.br, preface); err != nil {
		return err
	}
	sc.br.SetReadDeadline(time.Time{})
	if !bytes.Equal(preface, []byte(http2.ClientPreface)) {
		return sc.goAway(http2.ErrCodeProtocol, "invalid connection preface")
	}
	cfg := sc.p.cfg
	sc.wmu.Lock()
	sc.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: uint32(cfg.MaxConcurrentStreams)},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(cfg.StreamWindow)},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderListSize},
	)
	if cfg.ConnWindow > initialWindow {
		sc.fr.WriteWindowUpdate(0, uint32(cfg.ConnWindow-initialWindow))
	}
	sc.wmu.Unlock()
	b.add(&sc.h2conn)
	b.flush()
	if sc.draining.Load() {
		sc.startDrain()
	}

	sawSettings := false
	frame := func() error {
		sc.in.reset()
		f, err := sc.rf.ReadFrame()
		if err != nil {
			return sc.readError(b, err)
		}
		if !sawSettings {
			if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
				return sc.goAway(http2.ErrCodeProtocol, "first frame is not SETTINGS")
			}
			sawSettings = true
		}
		return sc.frame(b, f)
	}
	idle := func() bool {
		b.flush()
		return sc.closable()
	}
	sc.br.quiet = func() { sc.releaseAcks(b) }
	return sc.br.readFrames(b, frame, idle)
}

// readError handles an error of the Framer's: nil when the connection
// goes on (a stream error resets only its stream).
func (sc *serverConn) readError(b *batch, err error) error {
	var se http2.StreamError
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &se):
		sc.streamError(b, se.StreamID, se.Code)
		return nil
	case errors.As(err, &ce):
		return sc.goAway(http2.ErrCode(ce), "invalid frame")
	case errors.Is(err, http2.ErrFrameTooLarge):
		return sc.goAway(http2.ErrCodeFrameSize, "frame too large")
	case errors.Is(err, errFrameBudget):
		sc.p.stats.floods.Add(1)
		sc.p.log.Warn("closing abusive client connection", "remote", sc.remote, "reason", err.Error())
		return sc.goAway(http2.ErrCodeEnhanceYourCalm, err.Error())
	}
	return err
}

// closable reports whether a draining connection has no stream left.
func (sc *serverConn) closable() bool {
	if !sc.peerGoAway && !sc.draining.Load() {
		return false
	}
	sc.wmu.Lock()
	defer sc.wmu.Unlock()
	return len(sc.streams) == 0 && (sc.peerGoAway || sc.goAwaySent)
}

// frame handles one frame from the client.
func (sc *serverConn) frame(b *batch, f http2.Frame) error {
	switch f := f.(type) {
	case *http2.HeadersFrame:
		sc.guardUseful()
		return sc.headerBlock(b, f)
	case *http2.ContinuationFrame:
		if len(f.HeaderBlockFragment()) > 0 {
			sc.guardUseful()
		} else if !sc.guardCheap() {
			return sc.flood("flood of control or empty frames")
		}
		if !sc.hdr.active {
			return sc.goAway(http2.ErrCodeProtocol, "CONTINUATION without HEADERS")
		}
		return sc.headerBlock(b, f)
	case *http2.DataFrame:
		return sc.data(b, f)
	case *http2.RSTStreamFrame:
		return sc.rstStream(b, f)
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		if !sc.guardCheap() {
			return sc.flood("flood of control or empty frames")
		}
		return sc.settings(b, f)
	case *http2.WindowUpdateFrame:
		if !sc.guardCheap() {
			return sc.flood("flood of control or empty frames")
		}
		return sc.windowUpdate(b, f)
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		if !sc.guardCheap() {
			return sc.flood("flood of control or empty frames")
		}
		sc.wmu.Lock()
		held := sc.queueAck(f.Data)
		sc.wmu.Unlock()
		if !held {
			b.add(&sc.h2conn)
		}
	case *http2.PriorityFrame:
		if !sc.guardCheap() {
			return sc.flood("flood of control or empty frames")
		}
		if f.StreamDep == f.StreamID {
			sc.streamError(b, f.StreamID, http2.ErrCodeProtocol)
		}
	case *http2.GoAwayFrame:
		sc.peerGoAway = true
	case *http2.PushPromiseFrame:
		return sc.goAway(http2.ErrCodeProtocol, "PUSH_PROMISE from a client")
	default:
		// Unknown frame types are ignored (RFC 9113 section 5.5), but
		// not free.
		if !sc.guardCheap() {
			return sc.flood("flood of control or empty frames")
		}
	}
	return nil
}

// idle reports whether id names a stream the client never opened.
func (sc *serverConn) idle(id uint32) bool { return id%2 == 0 || id > sc.lastID }

func (sc *serverConn) lookup(id uint32) *stream {
	sc.wmu.Lock()
	s := sc.streams[id]
	sc.wmu.Unlock()
	return s
}

// headerBlock handles the outcome of a HEADERS or CONTINUATION frame:
// a connection error, nothing yet, or a complete header block.
func (sc *serverConn) headerBlock(b *batch, frame http2.Frame) error {
	var done bool
	var err error
	switch f := frame.(type) {
	case *http2.HeadersFrame:
		done, err = sc.hdr.start(f)
	case *http2.ContinuationFrame:
		done, err = sc.hdr.add(f.HeaderBlockFragment(), f.HeadersEnded())
	}
	switch {
	case err != nil:
		return sc.headerBlockError(err)
	case !done:
		return nil
	}
	return sc.headers(b, &sc.hdr)
}

// headerBlockError closes the connection over a header block that failed.
// It is apart from headerBlock so that the error target errors.As needs is
// allocated only on this path, not for every HEADERS frame.
func (sc *serverConn) headerBlockError(err error) error {
	var ce http2.ConnectionError
	switch {
	case errors.Is(err, errFrameBudget):
		sc.p.stats.floods.Add(1)
		sc.p.log.Warn("closing abusive client connection", "remote", sc.remote, "reason", err.Error())
		return sc.goAway(http2.ErrCodeEnhanceYourCalm, err.Error())
	case errors.As(err, &ce):
		return sc.goAway(http2.ErrCode(ce), "invalid header block")
	}
	return sc.goAway(http2.ErrCodeInternal, err.Error())
}

func (sc *serverConn) headers(b *batch, f *headerBlock) error {
	id := f.streamID
	if id%2 == 0 {
		return sc.goAway(http2.ErrCodeProtocol, "HEADERS on a server stream id")
	}
	if f.invalid != nil {
		if id > sc.lastID {
			sc.lastID = id
			sc.lastIDa.Store(id)
		}
		sc.streamError(b, id, http2.ErrCodeProtocol)
		return nil
	}
	if s := sc.lookup(id); s != nil {
		// Trailers.
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.current(sc, id) {
			sc.endedStreamError(b, id, http2.ErrCodeStreamClosed)
			return nil
		}
		if s.reqH.end || s.done {
			sc.streamErrorLocked(b, s, http2.ErrCodeStreamClosed)
			return nil
		}
		if !f.endStream || f.truncated || hasPseudo(f.fields) {
			sc.streamErrorLocked(b, s, http2.ErrCodeProtocol)
			return nil
		}
		if s.contentLength >= 0 && s.reqBody != s.contentLength {
			sc.streamErrorLocked(b, s, http2.ErrCodeProtocol)
			return nil
		}
		s.reqH.trailers = append([]hpack.HeaderField(nil), f.fields...)
		s.requestData(b, nil, true)
		return nil
	}
	if id <= sc.lastID {
		return sc.goAway(http2.ErrCodeStreamClosed, "HEADERS on a closed stream")
	}
	sc.lastID = id
	sc.lastIDa.Store(id)
	if f.hasPriority && f.priority.StreamDep == id {
		sc.streamError(b, id, http2.ErrCodeProtocol)
		return nil
	}
	sc.wmu.Lock()
	refuse := sc.goAwaySent || len(sc.streams) >= sc.p.cfg.MaxConcurrentStreams
	sc.wmu.Unlock()
	if refuse || sc.peerGoAway {
		sc.streamError(b, id, http2.ErrCodeRefusedStream)
		return nil
	}
	if f.truncated {
		sc.wmu.Lock()
		sc.writeHeaders(id, true, []hpack.HeaderField{{Name: ":status", Value: "431"}})
		sc.wmu.Unlock()
		b.add(&sc.h2conn)
		return nil
	}
	p := sc.p
	s := p.newStream()
	s.sc, s.id, s.route = sc, id, sc.route
	s.start = b.now(p.cfg.Now)
	s.reqBox = reqFieldsPool.Get().(*reqFields)
	if code := s.parseRequest(append(s.reqBox[:0], f.fields...)); code != http2.ErrCodeNo {
		s.releaseReq()
		sc.streamError(b, id, code)
		return nil
	}
	end := f.endStream
	if end && s.contentLength > 0 {
		s.releaseReq()
		sc.streamError(b, id, http2.ErrCodeProtocol)
		return nil
	}
	sc.opened++
	p.stats.requests.Add(1)
	p.stats.active.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	sc.wmu.Lock()
	sc.streams[id] = s
	s.downOpen = true
	s.respH.win = sc.peerInitWin
	sc.wmu.Unlock()
	s.reqH.recvWin = int32(max(p.cfg.StreamWindow, initialWindow))
	s.reqH.end = end
	s.info.Service = s.route.Service
	s.info.GRPC = s.grpc
	if !s.deadline.IsZero() {
		sc.timers.add(s.deadline, s, s.gen, timerDeadline, 0)
	}
	p.dispatch(b, s)
	return nil
}

func hasPseudo(fields []hpack.HeaderField) bool {
	for _, f := range fields {
		if len(f.Name) > 0 && f.Name[0] == ':' {
			return true
		}
	}
	return false
}

// parseRequest checks a request header block (RFC 9113 section 8.3) and
// keeps it, in place, as the block to send upstream; grpc-timeout is taken
// out (it is re-added, less the time spent here, when the request goes
// out). It returns the stream error code for a malformed request.
func (s *stream) parseRequest(fields []hpack.HeaderField) http2.ErrCode {
	var method, scheme, path, authority, timeout string
	out := fields[:0]
	for _, f := range fields {
		if len(f.Name) > 0 && f.Name[0] == ':' {
			switch f.Name {
			case ":method":
				method = f.Value
			case ":scheme":
				scheme = f.Value
			case ":path":
				path = f.Value
			case ":authority":
				authority = f.Value
			default:
				return http2.ErrCodeProtocol
			}
			out = append(out, f)
			continue
		}
		switch f.Name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "http2-settings":
			return http2.ErrCodeProtocol
		case "te":
			if f.Value != "trailers" {
				return http2.ErrCodeProtocol
			}
		case "content-length":
			n, err := strconv.ParseUint(f.Value, 10, 63)
			if err != nil || (s.contentLength >= 0 && int64(n) != s.contentLength) {
				return http2.ErrCodeProtocol
			}
			s.contentLength = int64(n)
		case "content-type":
			s.grpc = isGRPC(f.Value)
		case "grpc-timeout":
			timeout = f.Value
		}
		out = append(out, f)
	}
	if method == "" {
		return http2.ErrCodeProtocol
	}
	if method == "CONNECT" {
		if authority == "" || scheme != "" || path != "" {
			return http2.ErrCodeProtocol
		}
	} else if scheme == "" || path == "" {
		return http2.ErrCodeProtocol
	}
	if s.grpc && timeout != "" {
		if d, ok := parseGRPCTimeout(timeout); ok {
			s.deadline = s.start.Add(d)
			kept := out[:0]
			for _, f := range out {
				if f.Name != "grpc-timeout" {
					kept = append(kept, f)
				}
			}
			out = kept
		}
	}
	s.req = out
	return http2.ErrCodeNo
}

func (sc *serverConn) data(b *batch, f *http2.DataFrame) error {
	id := f.StreamID
	flow := int32(f.Length)
	data := f.Data()
	if len(data) == 0 && !f.StreamEnded() {
		if !sc.guardCheap() {
			return sc.flood("flood of control or empty frames")
		}
	} else if !sc.guardUseful() {
		return sc.flood("")
	}
	sc.wmu.Lock()
	if flow > sc.recvWin {
		sc.wmu.Unlock()
		return sc.goAway(http2.ErrCodeFlowControl, "connection window exceeded")
	}
	sc.recvWin -= flow
	s := sc.streams[id]
	if s == nil && flow > 0 {
		// Closed stream: the bytes still count on the connection.
		sc.creditConn(flow, sc.connThreshold)
	}
	sc.wmu.Unlock()
	if s == nil {
		if sc.idle(id) {
			return sc.goAway(http2.ErrCodeProtocol, "DATA on an idle stream")
		}
		sc.streamError(b, id, http2.ErrCodeStreamClosed)
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.current(sc, id) {
		sc.creditConnLocked(b, flow)
		sc.endedStreamError(b, id, http2.ErrCodeStreamClosed)
		return nil
	}
	if s.reqH.end || s.done {
		sc.creditConnLocked(b, flow)
		sc.streamErrorLocked(b, s, http2.ErrCodeStreamClosed)
		return nil
	}
	if flow > s.reqH.recvWin {
		sc.creditConnLocked(b, flow)
		sc.streamErrorLocked(b, s, http2.ErrCodeFlowControl)
		return nil
	}
	s.reqH.recvWin -= flow
	if pad := flow - int32(len(data)); pad > 0 {
		// Padding is returned at once, to the connection and the stream.
		sc.creditConnLocked(b, pad)
		s.reqH.recvWin += pad
		if !f.StreamEnded() {
			sc.wmu.Lock()
			sc.fr.WriteWindowUpdate(id, uint32(pad))
			sc.wmu.Unlock()
		}
	}
	if s.contentLength >= 0 {
		total := s.reqBody + int64(len(data))
		if total > s.contentLength || (f.StreamEnded() && total != s.contentLength) {
			sc.creditConnLocked(b, int32(len(data)))
			sc.streamErrorLocked(b, s, http2.ErrCodeProtocol)
			return nil
		}
	}
	s.requestData(b, data, f.StreamEnded())
	return nil
}

// creditConnLocked returns n bytes to the client's connection window.
func (sc *serverConn) creditConnLocked(b *batch, n int32) {
	if n <= 0 {
		return
	}
	sc.wmu.Lock()
	sc.creditConn(n, sc.connThreshold)
	sc.wmu.Unlock()
	b.add(&sc.h2conn)
}

func (sc *serverConn) rstStream(b *batch, f *http2.RSTStreamFrame) error {
	s := sc.lookup(f.StreamID)
	if s == nil {
		if sc.idle(f.StreamID) {
			return sc.goAway(http2.ErrCodeProtocol, "RST_STREAM on an idle stream")
		}
		if !sc.guardCheap() {
			return sc.flood("flood of control or empty frames")
		}
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.current(sc, f.StreamID) {
		return nil // it ended meanwhile, and its record was reused
	}
	if !s.headersSent {
		sc.resets++
		if sc.opened >= resetMinStreams && 2*sc.resets > sc.opened && !sc.p.cfg.DisableFloodGuard {
			return sc.flood("rapid reset: most streams reset before they were answered")
		}
	}
	sc.dropStream(b, s)
	return nil
}

// dropStream ends a stream the client closed (reset, or a stream error
// we sent): the upstream stream is cancelled. Call with s.mu held.
func (sc *serverConn) dropStream(b *batch, s *stream) {
	if s.downOpen {
		sc.wmu.Lock()
		delete(sc.streams, s.id)
		if n := int32(len(s.reqH.held)); n > 0 {
			sc.creditConn(n, sc.connThreshold)
		}
		sc.wmu.Unlock()
		s.downOpen = false
		s.reqH.held = nil
		s.account()
	}
	s.reqH.end = true
	s.finish(b, canceledOutcome)
	sc.streamClosed()
}

func (sc *serverConn) settings(b *batch, f *http2.SettingsFrame) error {
	var code http2.ErrCode
	var pushed []*stream
	sc.wmu.Lock()
	err := f.ForeachSetting(func(st http2.Setting) error {
		if err := st.Valid(); err != nil {
			code = http2.ErrCode(err.(http2.ConnectionError))
			return err
		}
		switch st.ID {
		case http2.SettingInitialWindowSize:
			delta := int32(st.Val) - sc.peerInitWin
			sc.peerInitWin = int32(st.Val)
			for _, s := range sc.streams {
				w := int64(s.respH.win) + int64(delta)
				if w > 1<<31-1 {
					code = http2.ErrCodeFlowControl
					return errors.New("window overflow")
				}
				s.respH.win = int32(w)
				if delta > 0 {
					pushed = append(pushed, s)
				}
			}
		case http2.SettingMaxFrameSize:
			sc.peerMaxFrame = st.Val
		case http2.SettingHeaderTableSize:
			sc.enc.SetMaxDynamicTableSizeLimit(st.Val)
			sc.forgetBlocks()
		case http2.SettingMaxHeaderListSize:
			sc.peerMaxList = st.Val
		}
		return nil
	})
	if err == nil {
		sc.fr.WriteSettingsAck()
	}
	sc.wmu.Unlock()
	if err != nil {
		return sc.goAway(code, "invalid SETTINGS")
	}
	b.add(&sc.h2conn)
	for _, s := range pushed {
		s.mu.Lock()
		if s.sc == sc && s.h1 == nil {
			s.pushResponse(b)
		}
		s.mu.Unlock()
	}
	return nil
}

func (sc *serverConn) windowUpdate(b *batch, f *http2.WindowUpdateFrame) error {
	inc := int64(f.Increment)
	sc.wmu.Lock()
	if f.StreamID == 0 {
		if int64(sc.sendWin)+inc > 1<<31-1 {
			sc.wmu.Unlock()
			return sc.goAway(http2.ErrCodeFlowControl, "connection window overflow")
		}
		sc.sendWin += int32(inc)
		blocked := sc.takeBlocked()
		sc.wmu.Unlock()
		sc.pushBlocked(b, blocked)
		return nil
	}
	s := sc.streams[f.StreamID]
	if s == nil {
		sc.wmu.Unlock()
		if sc.idle(f.StreamID) {
			return sc.goAway(http2.ErrCodeProtocol, "WINDOW_UPDATE on an idle stream")
		}
		return nil
	}
	if int64(s.respH.win)+inc > 1<<31-1 {
		sc.wmu.Unlock()
		sc.streamError(b, f.StreamID, http2.ErrCodeFlowControl)
		return nil
	}
	s.respH.win += int32(inc)
	sc.wmu.Unlock()
	s.mu.Lock()
	if s.current(sc, f.StreamID) {
		s.pushResponse(b)
	}
	s.mu.Unlock()
	return nil
}

func (sc *serverConn) pushBlocked(b *batch, blocked []*stream) {
	for _, s := range blocked {
		s.mu.Lock()
		s.blockedDown = false
		s.pushResponse(b)
		s.mu.Unlock()
	}
}

// drained is called when a backed-up write to the client completed.
func (sc *serverConn) drained() {
	var b batch
	sc.wmu.Lock()
	blocked := sc.takeBlocked()
	sc.wmu.Unlock()
	sc.pushBlocked(&b, blocked)
	b.flush()
}

// streamError resets a stream for a protocol error by the client.
func (sc *serverConn) streamError(b *batch, id uint32, code http2.ErrCode) {
	if s := sc.lookup(id); s != nil {
		s.mu.Lock()
		if s.current(sc, id) {
			sc.streamErrorLocked(b, s, code)
		} else {
			sc.endedStreamError(b, id, code)
		}
		s.mu.Unlock()
		return
	}
	sc.wmu.Lock()
	sc.fr.WriteRSTStream(id, code)
	sc.wmu.Unlock()
	b.add(&sc.h2conn)
}

// endedStreamError resets stream id, which ended while a frame for it was
// handled (its record was reused since), as streamErrorLocked does for an
// ended stream.
func (sc *serverConn) endedStreamError(b *batch, id uint32, code http2.ErrCode) {
	sc.wmu.Lock()
	sc.fr.WriteRSTStream(id, code)
	sc.wmu.Unlock()
	b.add(&sc.h2conn)
	sc.streamClosed()
}

// streamErrorLocked resets s for a protocol error. Call with s.mu held.
func (sc *serverConn) streamErrorLocked(b *batch, s *stream, code http2.ErrCode) {
	sc.wmu.Lock()
	sc.fr.WriteRSTStream(s.id, code)
	sc.wmu.Unlock()
	b.add(&sc.h2conn)
	sc.dropStream(b, s)
}

// goAway sends GOAWAY for a connection error and returns the error that
// ends the read loop.
func (sc *serverConn) goAway(code http2.ErrCode, reason string) error {
	sc.wmu.Lock()
	if !sc.closed {
		sc.fr.WriteGoAway(sc.lastID, code, []byte(reason))
		sc.goAwaySent = true
		sc.w.flush()
	}
	sc.wmu.Unlock()
	return connError{code, reason}
}

// connError is a connection error the proxy detected on a client
// connection.
type connError struct {
	code   http2.ErrCode
	reason string
}

func (e connError) Error() string { return "HTTP/2 " + e.code.String() + ": " + e.reason }

// startDrain sends GOAWAY to the client: streams it opened so far finish,
// new ones are refused, and the connection closes when none is left.
func (sc *serverConn) startDrain() {
	sc.draining.Store(true)
	sc.wmu.Lock()
	if !sc.goAwaySent && !sc.closed {
		sc.goAwaySent = true
		sc.goAwayID = sc.lastIDa.Load()
		sc.fr.WriteGoAway(sc.goAwayID, http2.ErrCodeNo, nil)
		sc.w.flush()
	}
	empty := len(sc.streams) == 0
	sc.wmu.Unlock()
	if empty {
		sc.closeConn()
	}
}

// streamClosed closes a draining connection once its last stream ended.
func (sc *serverConn) streamClosed() {
	if !sc.draining.Load() {
		return
	}
	sc.wmu.Lock()
	empty := len(sc.streams) == 0 && sc.goAwaySent
	sc.wmu.Unlock()
	if empty {
		sc.closeConn()
	}
}

// closeConn closes the socket once what is queued for it was written.
func (sc *serverConn) closeConn() {
	sc.wmu.Lock()
	sc.w.flush()
	draining := sc.w.draining
	sc.wmu.Unlock()
	if draining {
		// A backlog is being written; give it a moment.
		time.AfterFunc(100*time.Millisecond, func() { sc.conn.Close() })
		return
	}
	closeSocket(sc.conn)
}

// teardown ends every stream left when the connection ends.
func (sc *serverConn) teardown(b *batch, err error) {
	sc.wmu.Lock()
	sc.w.flush()
	sc.closed = true
	left := make([]*stream, 0, len(sc.streams))
	for _, s := range sc.streams {
		left = append(left, s)
	}
	draining := sc.w.draining
	sc.wmu.Unlock()
	linger := err == nil || errors.As(err, new(connError))
	tc, isTCP := sc.conn.(*net.TCPConn)
	if linger && isTCP && !draining {
		// We end the connection (GOAWAY sent or received, nothing left):
		// send FIN now and close after lingerClose, below.
		tc.CloseWrite()
	} else {
		linger = false
		sc.conn.Close()
	}
	sc.timers.stop()
	if ce, ok := err.(connError); ok && ce.code != http2.ErrCodeNo {
		sc.p.log.Debug("client connection error", "remote", sc.remote, "err", ce)
	}
	for _, s := range left {
		s.mu.Lock()
		if s.sc != sc || !s.downOpen {
			// It ended meanwhile (and its record may serve another
			// stream now).
			s.mu.Unlock()
			continue
		}
		sc.wmu.Lock()
		delete(sc.streams, s.id)
		sc.wmu.Unlock()
		s.downOpen = false
		s.reqH.end = true
		s.finish(b, canceledOutcome)
		s.mu.Unlock()
	}
	if linger {
		sc.lingerClose()
	}
}

// Lingering close bounds: how long and how much a connection we ended is
// still read from before it is closed.
const (
	lingerTimeout = time.Second
	lingerBytes   = 64 << 10
)

// lingerClose reads and discards what the client still sends after our
// FIN, until it closes its side or lingerTimeout or lingerBytes pass, then
// closes. Closing a socket with unread bytes in it sends a reset instead
// of a FIN, and the reset can destroy our last frames (the GOAWAY) before
// the client has read them: a client that sent GOAWAY and then a PING saw
// "connection reset by peer" instead of a closed connection (h2spec
// http2/7/1, now and then).
func (sc *serverConn) lingerClose() {
	defer sc.conn.Close()
	sc.br.SetReadDeadline(time.Now().Add(lingerTimeout))
	io.CopyN(io.Discard, sc.br, lingerBytes)
}

// --- flood guard ---
//
// Defences the HTTP/2 layer needs beyond the protocol (see docs/proxy.md,
// "Abuse"): a client may flood PING, SETTINGS, WINDOW_UPDATE, PRIORITY or
// empty frames while it keeps reading, or open and reset streams as fast as
// it can (rapid reset).

// Flood guard limits, per downstream HTTP/2 connection.
const (
	// floodBurst is the credit a connection starts with and can save up:
	// this many cheap frames in a row are fine.
	floodBurst = 1000
	// A frame that carries a request (HEADERS) or request bytes (non-empty
	// DATA) earns this much credit; every control or empty frame costs one.
	floodEarnPerFrame = 4
	// Every HEADERS or DATA frame written to the client earns this much: a
	// client legitimately answers received data with control frames (grpc-go
	// sends a BDP PING and WINDOW_UPDATEs as messages arrive).
	floodEarnPerFrameOut = 2
	// Rapid reset: after resetMinStreams streams, a connection whose
	// client reset more than half of them prematurely (before the response
	// headers went out) is closed (CVE-2023-44487; Envoy's rule).
	resetMinStreams = 500
)

func (sc *serverConn) guardUseful() bool {
	sc.credit = min(sc.credit+floodEarnPerFrame, floodBurst)
	return true
}

func (sc *serverConn) guardCheap() bool {
	if sc.p.cfg.DisableFloodGuard {
		return true
	}
	if sc.credit <= 0 {
		if out := sc.outFrames.Swap(0); out > 0 {
			sc.credit = int(min(int64(sc.credit)+floodEarnPerFrameOut*out, floodBurst))
		}
	}
	sc.credit--
	return sc.credit >= 0
}

// flood closes the connection of an abusive client.
func (sc *serverConn) flood(reason string) error {
	if reason == "" {
		return nil
	}
	sc.p.stats.floods.Add(1)
	sc.p.log.Warn("closing abusive client connection", "remote", sc.remote, "reason", reason)
	return sc.goAway(http2.ErrCodeEnhanceYourCalm, reason)
}
