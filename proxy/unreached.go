package proxy

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Requests an endpoint's application provably never received, on a
// connection that was lost.
//
// gRPC may retry a call transparently only when the server never processed
// it (A6). HTTP/2 says so itself with REFUSED_STREAM or a GOAWAY's last
// stream id; an endpoint killed under load says nothing, yet the kernel
// knows. A pooled connection stays in use until its read goroutine sees the
// end of it; on a busy machine that goroutine runs late, and requests are
// written meanwhile to a socket whose peer process is already gone
// (TestBackendsKilledUnderLoad: a call picked 7 ms after the kill failed).
//
// The facts this rests on (Linux, and any TCP that follows RFC 9293):
//
//   - A process that closes a socket (exit and SIGKILL included) sends FIN
//     only if nothing it received is left unread; otherwise the kernel
//     resets the connection (RST) instead. The FIN's acknowledgment covers
//     every byte its kernel received, so with a FIN, bytes acknowledged =
//     bytes the application read.
//   - After that close, a byte that arrives is answered with RST and never
//     reaches an application: the socket has none any more.
//   - We process the ACK a FIN carries before the FIN itself
//     (tcp_ack before tcp_fin): once the read sees the end of the stream,
//     tcpi_bytes_acked includes it. tcpi_bytes_acked counts the SYN as one
//     byte: ackBase, read right after connect, is subtracted.
//
// So when the connection ended with a FIN, a stream whose HEADERS begin at
// or beyond the bytes acknowledged never reached the endpoint's
// application, whether it was written before or after the FIN arrived, and
// it is retried elsewhere like a refused stream.
//
// Why not acknowledged bytes on RST (ECONNRESET): the kernel does not
// process the acknowledgment of an RST. A peer that read our request but
// whose delayed ACK had not left yet, then aborted (or closed with other
// bytes unread), leaves those bytes unacknowledged here though its
// application has them: a retry could run the request twice.
//
// What holds whatever ended the connection (RST, a keepalive timeout, a
// protocol error, a writer over its backlog): a byte the kernel never
// accepted from us never left this host, so no one can have read it. The
// writer counts the bytes the kernel accepted (sent: what each write
// returned, a failed write's partial count included, the client preface
// too); a background write still blocked when the connection is torn
// down is ended first (the socket closed), so that its count is known. A
// stream whose HEADERS begin at or beyond that count was refused by a
// write (EPIPE, ECONNRESET), or still queued in the writer when the
// connection failed, or written after: it is retried too. This is what saves the calls written to the
// connection of an endpoint killed with bytes unread in its socket, after
// its RST arrived (TestBackendsKilledUnderLoad).
//
// The two cuts: the bytes acknowledged are at most the bytes accepted (the
// kernel acknowledges nothing it did not send), so with a FIN the cut is
// the bytes acknowledged, and otherwise the bytes accepted; a stream is
// retried when its HEADERS begin at or beyond the cut that applies. The
// bytes accepted are a safe cut, not the tightest: some of them may never
// have left the socket's buffer either. Either way, a stream the endpoint
// sent anything for (response headers, WINDOW_UPDATE) or a GOAWAY named is
// never retried this way.
//
// Telling FIN from RST: after a FIN, read returns 0 (end of stream) before
// any error; a reset that comes later (the answer to bytes we sent after
// the FIN) makes the next write fail with EPIPE, not ECONNRESET (the reset
// of a socket in CLOSE_WAIT). Without a FIN, the reset's ECONNRESET goes to
// whichever read or write comes first, and a read after that sees end of
// stream too: so an end of stream counts as a FIN only when our writer did
// not see ECONNRESET and no background write is in progress (its error is
// not yet recorded). A failed write closes the socket, so its
// tcpi_bytes_acked is read then (noteWriteFailure).
//
// The half-close edge: a peer that only shut down its sending side (FIN)
// and still reads would receive bytes beyond the FIN's acknowledgment. An
// HTTP/2 endpoint that did so can answer nothing more on the connection:
// HTTP/2 has no half-closed connection, servers that linger after their
// GOAWAY (nginx's lingering close) discard what they read, and a graceful
// close names its last stream in a GOAWAY, which is honoured above.
//
// Cost: a counter add per queued write and per write to the socket, and
// one getsockopt per connection opened and per connection lost; nothing
// per request.

// unreachedCut is, for a lost connection, the offset from which what was
// written never reached the endpoint's application.
type unreachedCut struct {
	at         uint64
	goAwaySeen bool
	goAwayLast uint32
}

// neverReached reports whether s, a stream still open on the lost
// connection, provably never reached the endpoint. Call with s.mu held.
func (c unreachedCut) neverReached(s *stream) bool {
	if s.committed || s.upHeard {
		return false
	}
	if c.goAwaySeen && s.upID <= c.goAwayLast {
		return false
	}
	return s.upAt >= c.at
}

// unreachedFrom returns, for a connection whose read loop ended with
// readErr, where the bytes that never reached the endpoint's application
// begin: the bytes acknowledged if the connection ended with the
// endpoint's FIN, and otherwise the bytes the kernel accepted. Call with
// wmu held, before the socket is closed; it closes the socket if a
// background write is in progress, to end it and learn its count.
func (cc *clientConn) unreachedFrom(readErr error) unreachedCut {
	acked, fin := cc.finAcked(readErr) // needs the socket open
	cc.w.settle()
	cut := unreachedCut{at: cc.w.sent, goAwaySeen: cc.goAwaySeen, goAwayLast: cc.goAwayLast}
	if fin && acked < cut.at {
		cut.at = acked
	}
	return cut
}

// finAcked tells whether the connection ended with the endpoint's FIN,
// and then how many of our bytes its application read.
func (cc *clientConn) finAcked(readErr error) (uint64, bool) {
	if !cc.ackBaseOK || cc.w.draining {
		return 0, false
	}
	eof := errors.Is(readErr, io.EOF) || errors.Is(readErr, io.ErrUnexpectedEOF)
	var acked uint64
	switch werr := cc.w.err; {
	case eof && werr == nil:
		a, ok := tcpBytesAcked(cc.w.raw)
		if !ok {
			return 0, false
		}
		acked = a
	case (eof || errors.Is(readErr, net.ErrClosed)) && errors.Is(werr, syscall.EPIPE) && cc.failAckedOK:
		acked = cc.failAcked
	default:
		return 0, false
	}
	if acked < cc.ackBase {
		return 0, false
	}
	return acked - cc.ackBase, true
}

// noteWriteFailure keeps tcpi_bytes_acked of a socket a failed write is
// about to close. Called by the connection's writer with wmu held.
func (cc *clientConn) noteWriteFailure() {
	cc.failAcked, cc.failAckedOK = tcpBytesAcked(cc.w.raw)
}

// tcpBytesAcked reads the socket's tcpi_bytes_acked (Linux 4.1 and
// later; an older kernel's shorter TCP_INFO leaves it 0, which connect
// takes for "unknown": a connected socket has at least its SYN
// acknowledged).
func tcpBytesAcked(raw syscall.RawConn) (uint64, bool) {
	if raw == nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var err error
	if cerr := raw.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); cerr != nil || err != nil {
		return 0, false
	}
	return info.Bytes_acked, true
}

// upstreamReadPause, when set (by tests only), is called by an upstream
// connection's read loop each time it has processed all it read and is
// about to read the socket again: a test holds it there to stand for a
// read goroutine the scheduler runs late, which is the case this file is
// about and cannot be produced on demand otherwise.
var upstreamReadPause atomic.Pointer[func(cc *clientConn)]
