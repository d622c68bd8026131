package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The frame-level engine: what both hops of a forwarded stream share.
//
// Each HTTP/2 connection, downstream (a client) or upstream (an endpoint),
// has one goroutine reading its frames and one h2conn holding what is
// needed to write to it: a Framer that writes into a buffer, an HPACK
// encoder, and the peer's flow-control window for the connection. All of it
// is guarded by the connection's write lock, wmu. Frames produced while
// handling one read of any socket go into the buffers of the connections
// they are for and leave in one write per connection when the reading
// goroutine has nothing more buffered to process (see batch).
//
// Acknowledgements of SETTINGS are frames like any other here: they share
// the write of whatever else the same read produced for their connection.
// Acknowledgements of PING wait for the next frames to their connection
// and follow them (pingack.go): gRPC's BDP PINGs would otherwise cost a
// write of their own, to a peer with nothing else coming, per call and
// direction.
//
// Where the CPU of a forwarded gRPC call goes beside HAProxy's (measured
// 2026-12-05 on the shared 2-core VM: zonelb-proxy and HAProxy 2.6 pinned
// as make bench pins them, ghz at 5000 calls/s over 4 connections, 1 KiB
// each way, 6 interleaved rounds of 4 s; utime and stime of every thread
// from /proc, syscalls with perf stat). The kernel side is not where
// zonelb loses: 30-39 us of system time per call (median 33-34) against
// HAProxy's 33.5-38 (36), with fewer writes (3.4-3.6 against 4.2) but more
// reads (4.4-4.8 plus 0.8 idle-connection peeks, against 2.3: most of the
// extra ones are the read that finds the socket empty before the goroutine
// parks; frameLoop in rawio.go has removed it since) and two epoll_waits
// per wake-up (the scheduler's non-blocking one, then the blocking one)
// against one, at about the same number of context
// switches (1.5-1.7 against 1.4 per call). The difference is user time:
// 11.5-18 us (median 15) against 11-13 (12.3). Sampled with perf record -g
// (6 s at 5000 calls/s), zonelb's 12 us of user time per call were: the
// scheduler and the poller (findRunnable, netpoll, park, ready) 1.8-2.4 us,
// the read path (Framer.ReadFrame, bufio, RawRead, sockReader) 1.8-2 us,
// HPACK decoding and the header checks 0.9-1 us, clock reads 0.6 us
// (time.Now costs two vDSO calls here, five or six per call), the zone
// balancer 0.4 us, allocation and GC 0.6 us, the stream handling the rest.
// HPACK encoding, map lookups (most of them the encoder's), allocation and
// GC were about 2.7 us of it before the header block memo (hpackmemo.go) and recycled stream
// records (stream.recycle), 1.3 us after; at saturation the two took user
// time per call from 7.9 to 6.8 us (medians of 6 rounds). At 5000 calls/s
// the whole-CPU difference they make (2-3 %) is below what this machine
// resolves between rounds.
//
// Lock order: a stream's mu before a connection's wmu; never two wmu at
// once.

// h2conn is the writing half of one HTTP/2 connection.
type h2conn struct {
	wmu  sync.Mutex
	w    connWriter
	fr   *http2.Framer // writes into w
	enc  *hpack.Encoder
	hbuf bytes.Buffer // header block being encoded

	// memo holds header blocks that repeat (hpackmemo.go); nil until one
	// does. tableChanged is set by the encoder's sink when a field
	// changed its dynamic table.
	memo         *blockMemo
	tableChanged bool

	// The peer's settings and windows, as they apply to what we send.
	sendWin      int32  // connection-level send window
	peerInitWin  int32  // SETTINGS_INITIAL_WINDOW_SIZE of the peer
	peerMaxFrame uint32 // SETTINGS_MAX_FRAME_SIZE of the peer
	peerMaxList  uint32 // SETTINGS_MAX_HEADER_LIST_SIZE of the peer (0: none)

	// recvWin is the connection window the peer may still use, and
	// recvUnacked how many bytes we received and released but have not yet
	// returned with WINDOW_UPDATE.
	recvWin     int32
	recvUnacked int32

	// outFrames, if set, counts DATA and HEADERS frames written (the
	// client flood guard's credit).
	outFrames *atomic.Int64

	// blocked are streams with bytes held for lack of connection window
	// (or because the socket is backed up); they are retried when the
	// window opens or the backlog drains.
	blocked []*stream

	// closed is set once the connection is torn down: nothing more is
	// written.
	closed bool
}

// writeBacklogLimit is how many unwritten bytes a connection may have
// queued before DATA for it is held back in streams instead (where flow
// control bounds it). Control frames are still queued; the flood guards
// bound those.
const writeBacklogLimit = 256 << 10

// maxWriteBacklog bounds the bytes queued for a peer that does not read
// them. DATA stops at writeBacklogLimit, but the frames flow control does
// not cover still queue: the headers of each new stream, RST_STREAM, acks
// of the peer's PINGs and SETTINGS. An endpoint that stops reading but
// still writes now and then (a deadlocked reader beside a live writer) is
// never found silent by the keepalive, and every call sent to it added its
// request headers here, without end (TestEndpointThatNeverReads: 500 calls
// with 60 KB of headers each); a client that stops reading, likewise its
// responses' headers. A peer that reads stays far below: DATA adds at most
// writeBacklogLimit and one stream window (4 MiB at most) beyond it, twice
// (queued, and in the hands of the drain). Past the bound the connection
// is closed, which fails its streams.
const maxWriteBacklog = 16 << 20

// errWriteBacklog is the write error past maxWriteBacklog.
var errWriteBacklog = errors.New("peer does not read: over 16 MiB of frames unwritten")

func (h *h2conn) init(c net.Conn, onDrained func()) {
	h.w.init(c, &h.wmu, onDrained)
	h.fr = http2.NewFramer(&h.w, nil)
	h.enc = hpack.NewEncoder(hpackSink{h})
	h.sendWin = initialWindow
	h.peerInitWin = initialWindow
	h.peerMaxFrame = 16384
}

const initialWindow = 65535

// canSendData reports whether DATA may be queued now. Call with wmu held.
func (h *h2conn) canSendData() bool {
	return !h.closed && h.sendWin > 0 && len(h.w.buf) < writeBacklogLimit && h.w.err == nil
}

// addBlocked queues s to be retried when the connection can take data
// again. Call with wmu held (and s.mu).
func (h *h2conn) addBlocked(s *stream, flag *bool) {
	if *flag {
		return
	}
	*flag = true
	h.blocked = append(h.blocked, s)
}

// takeBlocked returns the blocked streams and forgets them. Call with wmu
// held.
func (h *h2conn) takeBlocked() []*stream {
	b := h.blocked
	h.blocked = nil
	return b
}

// writeHeaders encodes fields as one header block and writes it as HEADERS
// and CONTINUATION frames. Call with wmu held.
func (h *h2conn) writeHeaders(id uint32, endStream bool, fields []hpack.HeaderField, extra ...hpack.HeaderField) {
	h.hbuf.Reset()
	h.encodeFields(fields)
	for _, f := range extra {
		h.encodeField(f)
	}
	block := h.hbuf.Bytes()
	max := int(h.peerMaxFrame)
	first := block
	if len(first) > max {
		first = first[:max]
	}
	block = block[len(first):]
	h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: endStream, EndHeaders: len(block) == 0})
	for len(block) > 0 {
		frag := block
		if len(frag) > max {
			frag = frag[:max]
		}
		block = block[len(frag):]
		h.fr.WriteContinuation(id, len(block) == 0, frag)
	}
}

// creditConn returns n received bytes to the peer's connection window,
// in batches. Call with wmu held.
func (h *h2conn) creditConn(n int32, threshold int32) {
	h.recvUnacked += n
	if h.recvUnacked >= threshold && !h.closed {
		h.fr.WriteWindowUpdate(0, uint32(h.recvUnacked))
		h.recvWin += h.recvUnacked
		h.recvUnacked = 0
	}
}

// connWriter buffers a connection's outgoing frames. flush tries one
// non-blocking write; what the socket does not take at once is written by a
// goroutine started for that purpose, so that a goroutine forwarding frames
// never blocks on a peer that does not read.
type connWriter struct {
	conn      net.Conn
	raw       syscall.RawConn // nil when conn is not a socket
	mu        *sync.Mutex     // the h2conn's wmu
	onDrained func()          // called, without locks, when a background drain caught up

	buf      []byte
	spare    []byte
	draining bool
	// acks holds PING acknowledgements waiting to follow the next frames
	// written (see queueAck); ackMode points Write there.
	acks     []byte
	ackMode  bool
	inflight int // bytes the drain is writing, out of buf
	err      error

	// queued counts every byte ever queued, from the connection's first
	// (an upstream connection's client preface): the byte offset, in the
	// connection's TCP stream, of what is queued next. An upstream
	// stream keeps the offset of its HEADERS (see neverReached).
	queued uint64
	// sent counts the bytes the kernel accepted: what writes returned,
	// a failed write's partial count included. Bytes from sent+inflight
	// on were never handed to the kernel (see unreachedFrom).
	sent uint64
	// idle is signalled (on mu) when a drain ends.
	idle sync.Cond
	// beforeClose, if set, is called with the lock held when a failed
	// write is about to close the connection, while its socket is still
	// open.
	beforeClose func()

	// for the non-blocking write callback, allocated once
	wb    []byte
	wn    int
	werr  error
	write func(fd uintptr) bool
}

func (w *connWriter) init(c net.Conn, mu *sync.Mutex, onDrained func()) {
	w.conn = c
	w.mu = mu
	w.idle.L = mu
	w.onDrained = onDrained
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			w.raw = raw
			w.write = w.writeFD
		}
	}
}

// Write queues p. Called by the Framer with the lock held. Once the
// connection failed, nothing more is queued.
func (w *connWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return len(p), nil
	}
	if w.ackMode {
		w.acks = append(w.acks, p...)
		if len(w.acks) > maxHeldAcks {
			w.mergeAcks() // a flood: no more holding (the flood guard ends it)
		}
		return len(p), nil
	}
	w.queued += uint64(len(p))
	w.buf = append(w.buf, p...)
	if len(w.buf)+w.inflight > maxWriteBacklog {
		w.fail(errWriteBacklog)
	}
	return len(p), nil
}

func (w *connWriter) writeFD(fd uintptr) bool {
	w.wn, w.werr = rawWrite(fd, w.wb)
	return true // never wait for the socket to become writable
}

// flush writes what is queued, followed by the PING acknowledgements
// held; acknowledgements alone stay held. Call with the lock held.
func (w *connWriter) flush() {
	if len(w.acks) > 0 && (len(w.buf) > 0 || w.draining) {
		w.mergeAcks()
	}
	if w.err != nil || w.draining || len(w.buf) == 0 {
		return
	}
	if w.raw != nil {
		w.wb = w.buf
		err := w.raw.Write(w.write)
		w.wb = nil
		n, werr := w.wn, w.werr
		if err != nil { // the callback did not run
			n, werr = 0, err
		}
		if n < 0 {
			n = 0
		}
		w.sent += uint64(n)
		if werr != nil && !errors.Is(werr, syscall.EAGAIN) {
			w.fail(werr)
			return
		}
		if n == len(w.buf) {
			w.reset()
			return
		}
		w.buf = w.buf[:copy(w.buf, w.buf[n:])]
	}
	w.draining = true
	go w.drain()
}

// mergeAcks queues the held PING acknowledgements after what is queued.
func (w *connWriter) mergeAcks() {
	if w.err == nil && len(w.acks) > 0 {
		mode := w.ackMode
		w.ackMode = false
		w.Write(w.acks) // copied into buf
		w.ackMode = mode
	}
	w.acks = w.acks[:0]
}

// reset empties the buffer, giving back a large one.
func (w *connWriter) reset() {
	if cap(w.buf) > 64<<10 {
		w.buf = nil
	} else {
		w.buf = w.buf[:0]
	}
}

func (w *connWriter) fail(err error) {
	w.err = err
	w.buf = nil
	if w.beforeClose != nil {
		w.beforeClose()
	}
	closeSocket(w.conn)
}

// closeSocket closes c without waiting for the close to complete.
// internal/poll's Close of a non-blocking socket marks it closing, wakes
// whoever waits on it, then waits until no call uses it any more; and a
// read loop is inside its socket's read call while it handles the frames
// of a read (frameLoop). A Close from that loop itself, or from a
// goroutine holding a lock the loop needs, would wait forever. Here the
// close goes on in a goroutine of its own: the loop sees the socket
// closing at its next wait or read and lets go, and the socket is closed
// then. Nothing is written after a failure either way (connWriter.err).
func closeSocket(c net.Conn) { go c.Close() }

// settle closes the connection if a drain is writing, and waits for that
// write to return: then sent counts all the kernel accepted. Call with the
// lock held.
func (w *connWriter) settle() {
	if !w.draining {
		return
	}
	closeSocket(w.conn)
	for w.draining {
		w.idle.Wait()
	}
}

// drain writes the backlog with blocking writes until it is empty.
func (w *connWriter) drain() {
	w.mu.Lock()
	for len(w.buf) > 0 && w.err == nil {
		data := w.buf
		w.buf = w.spare[:0]
		w.inflight = len(data)
		w.mu.Unlock()
		n, err := w.conn.Write(data)
		w.mu.Lock()
		w.sent += uint64(n)
		w.inflight = 0
		if cap(data) <= 64<<10 {
			w.spare = data[:0]
		}
		if err != nil && w.err == nil {
			w.fail(err)
		}
	}
	w.draining = false
	w.idle.Broadcast()
	w.mu.Unlock()
	if w.onDrained != nil {
		w.onDrained()
	}
}

// batch collects the connections a goroutine wrote to, to flush them
// together once it has nothing more to process.
type batch struct {
	dirty []*h2conn
	pools []*endpointPool // to serve their waiting streams once no stream lock is held
	ended []streamGen     // streams that ended, to recycle once no stream lock is held
	t     time.Time       // the clock, read once for the frames of a read (now)
}

// now returns the time at which the frames being handled were read: the
// clock, read at the first call after a flush. The requests and responses
// of one read of a socket share it, where each clock read cost two vDSO
// calls here and a forwarded gRPC call made five or six of them. It runs
// late by at most the time spent on the frames of one read; what it times
// (a request's start, its time to first byte and end, the time left of
// its deadline) is measured from when the socket was read either way.
func (b *batch) now(clock func() time.Time) time.Time {
	if b.t.IsZero() {
		b.t = clock()
	}
	return b.t
}

// kick asks for ep's waiting streams to be served at the next flush.
func (b *batch) kick(ep *endpointPool) {
	ep.mu.Lock()
	any := len(ep.waiting) > 0
	ep.mu.Unlock()
	if !any {
		return
	}
	for _, p := range b.pools {
		if p == ep {
			return
		}
	}
	b.pools = append(b.pools, ep)
}

// add marks h as written to.
func (b *batch) add(h *h2conn) {
	for _, d := range b.dirty {
		if d == h {
			return
		}
	}
	b.dirty = append(b.dirty, h)
}

// flush writes out every connection written to. Call with no stream lock
// held.
func (b *batch) flush() {
	for len(b.pools) > 0 {
		ep := b.pools[len(b.pools)-1]
		b.pools[len(b.pools)-1] = nil
		b.pools = b.pools[:len(b.pools)-1]
		ep.serveWaiting(b)
	}
	for i, h := range b.dirty {
		h.wmu.Lock()
		h.w.flush()
		// Streams held because the backlog was over writeBacklogLimit
		// wait for a drain to end; a write that took it all at once
		// ends none, so they are pushed here.
		push := len(h.blocked) > 0 && h.canSendData() && !h.w.draining
		h.wmu.Unlock()
		b.dirty[i] = nil
		if push && h.w.onDrained != nil {
			h.w.onDrained()
		}
	}
	b.dirty = b.dirty[:0]
	b.t = time.Time{}
	if len(b.ended) > 0 {
		releaseEnded(b.ended)
		b.ended = b.ended[:0]
	}
}

// maxFrameSize is the largest frame the proxy reads: HTTP/2's initial
// SETTINGS_MAX_FRAME_SIZE, which it never raises.
const maxFrameSize = 16384

// frameBudget bounds the bytes one ReadFrame may consume. A header block
// is read by x/net's Framer in one call, CONTINUATION frames and all; the
// Framer stops a block whose decoded size runs past
// SETTINGS_MAX_HEADER_LIST_SIZE, but not a flood of empty CONTINUATION
// frames, which cost nothing in header size and CPU for each. Past the
// budget the read fails and the connection is closed.
const frameBudget = 4*maxHeaderListSize + 2*maxFrameSize

// errFrameBudget is the read error past frameBudget.
var errFrameBudget = errors.New("header block too long (CONTINUATION flood)")

// budgetReader is what a connection's Framer reads through.
type budgetReader struct {
	r    io.Reader
	left int
}

func (b *budgetReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errFrameBudget
	}
	if len(p) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= n
	return n, err
}

// reset gives the next ReadFrame its budget.
func (b *budgetReader) reset() { b.left = frameBudget }

// bytesPool recycles byte buffers that live for part of one request (a
// stream's replay copy): at thousands of requests a second, a fresh
// kilobyte each was half of the bytes the engine allocated per call, and
// the garbage collector's churn over them brought freshly zeroed pages into
// the heap again and again. Buffers that grew past maxPooledBuf are left to
// the collector.
type bytesPool struct{ pool sync.Pool }

const maxPooledBuf = 16 << 10

// get returns a box holding an empty buffer.
func (bp *bytesPool) get() *[]byte {
	if b, ok := bp.pool.Get().(*[]byte); ok {
		return b
	}
	return new([]byte)
}

// put gives back box with buf, the buffer last taken from it (it may have
// grown). Nothing may use buf afterwards.
func (bp *bytesPool) put(box *[]byte, buf []byte) {
	if cap(buf) > maxPooledBuf {
		buf = nil
	}
	*box = buf[:0]
	bp.pool.Put(box)
}
