package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Socket reads and writes without the runtime's system-call bookkeeping.
//
// A socket the engine reads or writes is non-blocking: a read or write
// returns at once, with data or EAGAIN. syscall.Read and syscall.Write
// still enter the scheduler's "in a system call" state, and the first one
// after the process was idle wakes the runtime's monitor thread (sysmon),
// which then polls every 20 us for a millisecond or more in case the call
// blocks. At a few hundred requests a second every request begins an idle
// period's end, so each paid a futex wake-up and several sleeps of a second
// thread: about as many system calls and context switches as forwarding
// the request itself. A raw system call on a non-blocking socket cannot
// block, so there is nothing for the monitor to watch; waiting for
// readiness stays with the runtime's poller (syscall.RawConn.Read).

// sockReader reads a socket with raw read(2) calls, waiting in the
// runtime's poller when there is nothing to read. Deadlines and Close work
// as for net.Conn.Read.
type sockReader struct {
	raw  syscall.RawConn
	dl   deadlines // the read deadline, shared with frameLoop's backstop
	p    []byte
	n    int
	err  syscall.Errno
	read func(fd uintptr) bool // readFD, allocated once

	// While pooled is set, readFD reads into a buffer from readBufs that it
	// takes only when it makes the system call, and leaves in box; a
	// read that finds nothing gives it back before waiting.
	pooled bool
	box    *[]byte
}

// newSockReader returns a reader for c: a sockReader when c is a socket,
// c itself otherwise (net.Pipe in tests).
func newSockReader(c net.Conn) io.Reader {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	r := &sockReader{raw: raw}
	r.dl.conn = c
	r.read = r.readFD
	return r
}

// deadliner is the part of net.Conn that sets its read deadline.
type deadliner interface {
	SetReadDeadline(time.Time) error
}

// deadlines is a socket's read deadline, which frameLoop's backstop
// shares with the deadline its owner sets (connReader.SetReadDeadline):
// a connection has one, so it is set to the earlier of the two, and the
// clock tells which passed. The lock is taken when either changes (the
// backstop about 10 times a second on a busy connection), never per read.
type deadlines struct {
	mu       sync.Mutex
	conn     deadliner
	owner    time.Time // zero: none
	backstop time.Time // zero: none
}

// apply sets the connection's deadline to the earlier of the two; d.mu
// is held.
func (d *deadlines) apply() {
	t := d.owner
	if t.IsZero() || !d.backstop.IsZero() && d.backstop.Before(t) {
		t = d.backstop
	}
	d.conn.SetReadDeadline(t)
}

// setBackstop sets (or with a zero t clears) the backstop's deadline.
func (d *deadlines) setBackstop(t time.Time) {
	d.mu.Lock()
	d.backstop = t
	d.apply()
	d.mu.Unlock()
}

// backstopPassed reports whether the deadline that passed is the
// backstop's and not the owner's, and then clears the backstop's.
func (d *deadlines) backstopPassed() bool {
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.owner.IsZero() && !now.Before(d.owner) || d.backstop.IsZero() || now.Before(d.backstop) {
		return false
	}
	d.backstop = time.Time{}
	d.apply()
	return true
}

func (r *sockReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.p = p
	err := r.raw.Read(r.read)
	r.p = nil
	if err != nil {
		return 0, err // closed, or a deadline passed
	}
	if r.err != 0 {
		return 0, os.NewSyscallError("read", r.err)
	}
	if r.n == 0 {
		return 0, io.EOF
	}
	return r.n, nil
}

// readBuffer waits until the socket has bytes and reads them into a
// buffer of readBufs, taken only then: a connection waiting for its peer
// holds no buffer. The caller gives the buffer back to readBufs.
func (r *sockReader) readBuffer() (*[]byte, int, error) {
	r.pooled = true
	err := r.raw.Read(r.read)
	r.pooled = false
	box := r.box
	r.box = nil
	switch {
	case err != nil: // closed, or a deadline passed
	case r.err != 0:
		err = os.NewSyscallError("read", r.err)
	case r.n == 0:
		err = io.EOF
	default:
		return box, r.n, nil
	}
	if box != nil {
		readBufs.Put(box)
	}
	return nil, 0, err
}

func (r *sockReader) readFD(fd uintptr) bool {
	p := r.p
	if r.pooled {
		r.box = readBufs.Get().(*[]byte)
		p = *r.box
	}
	n, e := rawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), 0)
	switch e {
	case 0:
		r.n, r.err = int(n), 0
		return true
	case syscall.EAGAIN:
		if r.box != nil {
			readBufs.Put(r.box)
			r.box = nil
		}
		return false // wait in the poller
	default:
		r.n, r.err = 0, e
		return true
	}
}

// rawWrite writes p to the non-blocking socket fd once; EAGAIN means
// the socket took nothing.
func rawWrite(fd uintptr, p []byte) (int, error) {
	n, e := rawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), 0)
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// rawPeek looks at the next bytes of the socket fd without taking them
// and without waiting (recv with MSG_PEEK|MSG_DONTWAIT): 0 bytes and no
// error means the peer closed its side.
func rawPeek(fd uintptr, p []byte) (int, error) {
	n, e := rawSyscall(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// rawSyscall makes system call trap with the socket fd, a buffer and a
// flags word, again while a signal interrupts it (EINTR): the one retry
// loop of the raw reads, writes and peeks.
func rawSyscall(trap, fd, buf, n, flags uintptr) (uintptr, syscall.Errno) {
	for {
		r, _, e := syscall.RawSyscall6(trap, fd, buf, n, flags, 0, 0)
		if e != syscall.EINTR {
			return r, e
		}
	}
}

// clientReadSize is the size of the buffers a connection reads into
// (readBufs): a read takes up to this much of what the peer sent, several
// calls' frames at once under load. It holds the largest frame the proxy
// reads with its header (16,393 bytes), so that a read loop can wait for
// the rest of any frame inside the buffer (frameLoop); 18 KiB is the Go
// allocator's size class such a buffer would take anyway.
const clientReadSize = 18 << 10

// readBufs holds the client connections' read buffers. A buffer belongs to
// a connection only from a read that found bytes until those bytes are
// consumed, so thousands of quiet connections share a few buffers.
var readBufs = sync.Pool{New: func() any {
	b := make([]byte, clientReadSize)
	return &b
}}

// connReader is a client connection's buffered reader. It reads through
// buffers of readBufs that it holds only while they hold unread bytes: a
// connection costs no buffer while its client is quiet, and a busy one
// reads 16 KiB at a time where a buffer held for the connection's life
// had to be small (it was 2 KiB, and at 5000 gRPC calls a second a third
// of the reads filled it, each costing one more read).
type connReader struct {
	first *bufio.Reader // bytes protocol detection read ahead; nil once drained
	sock  *sockReader   // the socket; nil when the connection is not one (tests)
	src   io.Reader     // what sock reads, or the connection itself
	box   *[]byte       // the buffer, while it holds bytes
	r, w  int           // unread bytes: (*box)[r:w]

	// inLoop is set while frameLoop reads the socket: the Framer then
	// only ever reads whole buffered frames, and a read past them would
	// wait for the socket inside the socket's own read (a deadlock), so
	// it fails instead.
	inLoop bool
	// quiet, if set, is called by frameLoop when it found the socket empty
	// and when its backstop passed: the owner releases the PING
	// acknowledgements it holds (pingack.go).
	quiet func()
	// emptyReads counts frameLoop's reads that found the socket empty
	// (the test of the lever counts them).
	emptyReads int
	// arms counts the times frameLoop moved its backstop's deadline.
	arms int
	// backstops counts the times frameLoop's backstop passed (tests read
	// it while the loop runs).
	backstops atomic.Int32
}

// newConnReader returns a reader of src, the connection's reader from
// newSockReader, that first returns what first holds (first may be nil).
func newConnReader(first *bufio.Reader, src io.Reader) *connReader {
	cr := &connReader{first: first, src: src}
	cr.sock, _ = src.(*sockReader)
	return cr
}

// SetReadDeadline sets the connection's read deadline as
// net.Conn.SetReadDeadline does. While frameLoop reads the connection its
// deadlines go through here: set on the connection itself, one would be
// replaced by the loop's backstop.
func (cr *connReader) SetReadDeadline(t time.Time) error {
	if cr.sock == nil {
		if d, ok := cr.src.(deadliner); ok {
			return d.SetReadDeadline(t)
		}
		return nil
	}
	d := &cr.sock.dl
	d.mu.Lock()
	d.owner = t
	d.apply()
	d.mu.Unlock()
	return nil
}

// Buffered is the number of bytes a Read returns without reading the
// connection.
func (cr *connReader) Buffered() int {
	n := cr.w - cr.r
	if cr.first != nil {
		n += cr.first.Buffered()
	}
	return n
}

func (cr *connReader) Read(p []byte) (int, error) {
	if cr.first != nil {
		if cr.first.Buffered() > 0 {
			return cr.first.Read(p)
		}
		cr.first = nil
	}
	if cr.r == cr.w {
		if cr.inLoop {
			return 0, errReadPastFrames
		}
		if len(p) >= clientReadSize {
			// A large frame: straight into the Framer's buffer.
			return cr.src.Read(p)
		}
		if err := cr.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, (*cr.box)[cr.r:cr.w])
	cr.r += n
	if cr.r == cr.w {
		cr.release()
	}
	return n, nil
}

// fill reads what the connection has into a buffer of readBufs.
func (cr *connReader) fill() error {
	if cr.sock != nil {
		box, n, err := cr.sock.readBuffer()
		if err != nil {
			return err
		}
		cr.box, cr.r, cr.w = box, 0, n
		return nil
	}
	box := readBufs.Get().(*[]byte)
	n, err := cr.src.Read(*box)
	if n == 0 {
		readBufs.Put(box)
		if err == nil {
			err = io.ErrNoProgress
		}
		return err
	}
	// An error that came with bytes comes again with the next read.
	cr.box, cr.r, cr.w = box, 0, n
	return nil
}

// release gives the buffer back; its bytes were all read, or the
// connection is done with.
func (cr *connReader) release() {
	if cr.box != nil {
		readBufs.Put(cr.box)
	}
	cr.box, cr.r, cr.w = nil, 0, 0
}

// A read loop that does not read an empty socket before it waits.
//
// A connection's read loop used to read frames through a Framer that read
// the socket whenever it had nothing buffered: each wait for the peer
// began with a read(2) that found the socket empty (EAGAIN), and only then
// did the goroutine park in the poller. syscall.RawConn.Read cannot skip
// that read: it clears the poller's readiness on entry, so readiness that
// came between an earlier read and the call would be lost. At 5000 gRPC
// calls a second that read was most of the difference between zonelb's
// 4.4-4.8 reads per call and HAProxy's 2.3.
//
// frameLoop stays inside one RawConn.Read call instead. Its callback reads
// the socket into the connection's buffer, has the Framer parse every whole
// frame buffered (the frame header's length tells), and then:
//   - if the read filled the buffer, returns to read again from a new
//     RawConn.Read (which sees a Close; nothing is lost, as the next read
//     is made whatever the readiness);
//   - if the kernel says the socket holds nothing more, it flushes what
//     the frames produced and waits in the poller without another read.
//     Bytes that arrive after the read raise a new edge of the poller's
//     edge-triggered epoll, and no readiness was cleared since the read,
//     so the wait sees them. Close and deadlines end the wait as they end
//     any read.
// A short read alone does not say the socket is drained: a FIN or a reset
// that came with the last bytes is reported by the read after them, and
// raised its edge before the read, so a loop that waited would wait
// forever on a connection its peer closed (seen: the hostile-endpoint
// tests' "FIN in the middle of a DATA frame" hung now and then). Netty
// and tokio learn of it from EPOLLRDHUP, which Go's poller does not pass
// on. So the loop reads with recvmsg and TCP_INQ (Linux 4.18): each read
// returns, as a control message, the bytes the socket still holds, and 1
// when nothing is left but the peer's FIN. Where TCP_INQ cannot be set,
// every read is followed by another, as before.
//
// A reset (RST) that came with the last bytes is not covered by TCP_INQ:
// the kernel marks the socket done only on a FIN (what TCP_INQ's 1 stands
// for); after a reset it reports 0, the error comes with the next read,
// and the reset's readiness edge was used up by the wake-up that read the
// bytes. Go's poller sees EPOLLERR and EPOLLRDHUP but does not pass them
// on, and every other way to learn of the reset at once is a system call
// per wake-up, the one this loop set out to save. Without more, the loop
// waited forever (until the upstream pinger's write failed, 30-45 s; a
// client connection with nothing in flight, forever):
// TestAbusiveEndpointsAreCut's mid-frame rows timed out 2 to 4 times in
// 10. So the loop keeps a backstop: whenever it waits after a read without
// the confirming empty read, a read deadline is pending at most
// frameBackstop after that read (see arm). When it passes, the loop makes
// the read it skipped: EAGAIN, and it waits with no deadline (after an
// empty read waiting is safe); bytes, and it goes on; a reset or EOF ends
// the loop as always. The bound: a reset that arrives in the same instant
// as the peer's last bytes is noticed up to frameBackstop late; a FIN,
// and a reset that arrives while the loop waits, are seen at once.
// A frame cut at the end of a read stays in the buffer for the next; a
// connection waiting with no partial frame holds no buffer.
//
// Measured 2026-12-06 on the shared 2-core VM (zonelb-proxy pinned to CPU 0
// and ghz to CPU 1 as make bench pins them, 4 connections, 1 KiB each way):
// read(2) per forwarded gRPC call at 200 / 1000 / 5000 calls/s fell from
// 6.0 / 5.5-5.9 / 2.8-4.3 to 3.0 / 2.8-2.9 / 1.5-2.2 (perf stat -e
// syscalls:sys_enter_read on the proxy, 3-5 alternating runs each). In 16
// alternating benchrun rounds (zonelb and HAProxy, gRPC), CPU per call at
// 5000 calls/s was 0.95x the build before's (median of the pairs; lower in
// 13 of 16) and 0.993x HAProxy's (median), against 1.020x; at 200 and 1000
// calls/s and at saturation no difference this machine resolves (8, 8 and
// 16 pairs: 1.01x, 0.98x, 0.97x).
// The build with the backstop (9ce2289) against the one before frameLoop
// (a550301), on a quiet machine, 10 alternating pairs of `benchrun -peers
// zonelb,haproxy -workloads grpc -runs 1 -rates 1000,5000 -sat-phase 1s
// -profile 0`: CPU per call 0.981x at 5000 calls/s (lower in 6 of 10;
// 1.018x -> 0.998x HAProxy's, medians), 0.961x at 1000 (7 of 10), 1.05x at
// saturation (3 of 10, 1 s phases; 0.77x -> 0.83x HAProxy's). The quiet
// make bench that followed: 1.0006x HAProxy's at 5000 (rounds 1.06, 0.95,
// 1.00), 0.78x at saturation.

// errReadPastFrames is a Framer's read beyond the whole frames buffered
// while frameLoop runs: a bug, not a peer's doing.
var errReadPastFrames = errors.New("proxy: frame read past the bytes buffered")

// frameHeaderLen is the size of an HTTP/2 frame header (RFC 9113 4.1).
const frameHeaderLen = 9

// frameLoop is the state of connReader.readFrames on a socket.
type frameLoop struct {
	cr      *connReader
	b       *batch                // the loop's batch: its clock is read again after each read
	frame   func() error          // reads and handles one frame
	idle    func() bool           // the frames read were handled; true ends the loop
	read    func(fd uintptr) bool // readFD, allocated once
	pending bool                  // frames handled since idle was last called
	done    bool
	err     error     // why the loop ended
	armed   time.Time // the backstop's read deadline; zero when none is set

	// recvmsg's arguments, when TCP_INQ is on (inq).
	inq  bool
	msg  syscall.Msghdr
	iov  syscall.Iovec
	cmsg [32]byte
}

// readFrames runs a connection's read loop until frame fails or idle
// returns true; b is the batch frame and idle use. frame reads one frame from cr (through the connection's
// Framer) and handles it; idle is called when the frames of a read were
// handled and the loop is about to wait for the socket (the batch is
// flushed there). Over a socket, frame is called only with a whole frame
// buffered; over anything else (net.Pipe in tests) the Framer reads as it
// needs.
func (cr *connReader) readFrames(b *batch, frame func() error, idle func() bool) error {
	if cr.sock == nil {
		for {
			b.t = time.Time{} // the Framer may read: a clock read per frame
			if err := frame(); err != nil {
				return err
			}
			if cr.Buffered() == 0 && idle() {
				return nil
			}
		}
	}
	fl := &frameLoop{cr: cr, b: b, frame: frame, idle: idle}
	fl.read = fl.readFD
	fl.enableInq()
	cr.takeFirst()
	cr.inLoop = true
	defer func() { cr.inLoop = false }()
	// The frames that came with the preface, before any wait.
	if fl.frames() || fl.pending && fl.idleNow() {
		return fl.err
	}
	defer fl.disarm()
	for !fl.done {
		err := cr.sock.raw.Read(fl.read)
		if err != nil && !fl.backstopPassed(err) {
			return err // closed, or the owner's deadline passed
		}
		if err != nil && cr.quiet != nil {
			cr.quiet()
		}
		// The backstop passed: the next RawConn.Read makes the read
		// skipped, with no deadline.
	}
	return fl.err
}

// frameBackstop bounds how long the loop waits after a read it did not
// confirm with an empty read, before it makes that read: the delay in
// noticing a reset that came with the peer's last bytes. 200 ms is far
// below what it replaces (30-45 s upstream, forever downstream) and long
// enough that it costs little: see arm.
const frameBackstop = 200 * time.Millisecond

// arm makes sure a read deadline is pending, at most frameBackstop from
// now, before the loop waits without an empty read. A deadline already
// pending is left as it is (it passes sooner), so a wait costs one test
// and no clock read: a busy connection sets the deadline, has it pass and
// makes one read (which finds bytes or nothing) about 5 times a second; a
// quiet one pays one deadline and one empty read per quiet period.
// (Moving the deadline forward when less than half was left, which needs
// the clock at every wait, cost 3 % of the engine's time per call:
// BenchmarkEngineUnary/proxy 11.80 us before the backstop, 12.18 us with
// it, medians of 6 alternating runs on the shared 2-core VM.)
func (fl *frameLoop) arm() {
	if !fl.armed.IsZero() {
		return
	}
	fl.armed = time.Now().Add(frameBackstop)
	fl.cr.arms++
	fl.cr.sock.dl.setBackstop(fl.armed)
}

// backstopPassed reports whether err, from RawConn.Read, is the backstop's
// deadline passing (not the owner's, see deadlines), and then clears it.
func (fl *frameLoop) backstopPassed(err error) bool {
	if fl.armed.IsZero() || !errors.Is(err, os.ErrDeadlineExceeded) || !fl.cr.sock.dl.backstopPassed() {
		return false
	}
	fl.armed = time.Time{}
	fl.cr.backstops.Add(1)
	return true
}

// disarm clears the backstop's deadline when the loop ends, leaving the
// owner's: the connection's later reads (lingerClose) are not cut by it.
func (fl *frameLoop) disarm() {
	if !fl.armed.IsZero() {
		fl.cr.sock.dl.setBackstop(time.Time{})
	}
}

// readFD is the RawConn.Read callback: true returns from RawConn.Read,
// false waits in the poller for the socket to become readable.
func (fl *frameLoop) readFD(fd uintptr) bool {
	cr := fl.cr
	p := cr.space()
	n, e, more := fl.recv(fd, p)
	switch {
	case e == syscall.EAGAIN:
		// After a full read, or a spurious wake-up.
		cr.emptyReads++
		if cr.quiet != nil {
			cr.quiet()
		}
		if fl.pending && fl.idleNow() {
			return true
		}
		if cr.r == cr.w {
			cr.release()
		}
		return false
	case e != 0:
		fl.done, fl.err = true, os.NewSyscallError("read", e)
		return true
	case n == 0:
		fl.done, fl.err = true, io.EOF
		if cr.r < cr.w {
			fl.err = io.ErrUnexpectedEOF // within a frame
		} else {
			cr.release()
		}
		return true
	}
	cr.w += n
	fl.b.t = time.Time{} // the frames of this read share a clock read (batch.now)
	full := n == len(p) || more
	if fl.frames() {
		return true
	}
	if fl.pending && (!full || cr.Buffered() == 0) && fl.idleNow() {
		return true
	}
	if full {
		return true // read again, from a new RawConn.Read
	}
	if cr.r == cr.w {
		cr.release()
	}
	fl.arm()
	return false // drained: wait without reading it again
}

// enableInq turns TCP_INQ on for the socket; without it (not TCP, or a
// kernel before 4.18) recv says there may be more after every read.
func (fl *frameLoop) enableInq() {
	var err error
	cerr := fl.cr.sock.raw.Control(func(fd uintptr) {
		err = syscall.SetsockoptInt(int(fd), syscall.SOL_TCP, unix.TCP_INQ, 1)
	})
	fl.inq = cerr == nil && err == nil
}

// recv reads the socket fd into p once; more reports whether the socket
// may hold more (bytes, or the peer's FIN or reset) after the read.
func (fl *frameLoop) recv(fd uintptr, p []byte) (n int, e syscall.Errno, more bool) {
	if !fl.inq {
		r, e := rawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), 0)
		return int(r), e, true
	}
	fl.iov.Base = &p[0]
	fl.iov.SetLen(len(p))
	fl.msg.Iov = &fl.iov
	fl.msg.Iovlen = 1
	fl.msg.Control = &fl.cmsg[0]
	fl.msg.SetControllen(len(fl.cmsg))
	r, e := rawSyscall(syscall.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&fl.msg)), 0, 0)
	fl.iov.Base = nil
	more = true
	if e == 0 && int(fl.msg.Controllen) >= syscall.CmsgLen(4) {
		h := (*syscall.Cmsghdr)(unsafe.Pointer(&fl.cmsg[0]))
		if h.Level == syscall.SOL_TCP && h.Type == unix.TCP_CM_INQ {
			more = *(*int32)(unsafe.Pointer(&fl.cmsg[syscall.CmsgLen(0)])) != 0
		}
	}
	return int(r), e, more
}

// frames handles every whole frame buffered; true when the loop ends.
func (fl *frameLoop) frames() bool {
	cr := fl.cr
	for cr.box != nil && frameBuffered((*cr.box)[cr.r:cr.w]) {
		fl.pending = true
		if err := fl.frame(); err != nil {
			fl.done, fl.err = true, err
			return true
		}
	}
	return false
}

// idleNow calls idle; true when the loop ends.
func (fl *frameLoop) idleNow() bool {
	fl.pending = false
	if fl.idle() {
		fl.done = true
	}
	return fl.done
}

// frameBuffered reports whether b begins with a whole frame, or with the
// header of a frame larger than the proxy reads (the Framer rejects it
// from its header alone).
func frameBuffered(b []byte) bool {
	if len(b) < frameHeaderLen {
		return false
	}
	n := int(b[0])<<16 | int(b[1])<<8 | int(b[2])
	return n > maxFrameSize || len(b) >= frameHeaderLen+n
}

// takeFirst moves what protocol detection read ahead into a buffer of
// readBufs, where frameLoop looks for whole frames.
func (cr *connReader) takeFirst() {
	if cr.first == nil {
		return
	}
	if n := cr.first.Buffered(); n > 0 && cr.box == nil {
		cr.box = readBufs.Get().(*[]byte)
		cr.r = 0
		cr.w, _ = cr.first.Read((*cr.box)[:n])
	}
	cr.first = nil
}

// space returns the free end of the buffer, after taking one from
// readBufs if none is held, or moving a partial frame to its start.
func (cr *connReader) space() []byte {
	if cr.box == nil {
		cr.box = readBufs.Get().(*[]byte)
		cr.r, cr.w = 0, 0
	} else if cr.r > 0 {
		cr.w = copy(*cr.box, (*cr.box)[cr.r:cr.w])
		cr.r = 0
	}
	return (*cr.box)[cr.w:]
}
