package proxy

import (
	"bufio"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
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
	r.read = r.readFD
	return r
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

// clientReadSize is the size of the buffers a client connection reads
// into (readBufs): a read takes up to this much of what the client sent,
// several calls' frames at once under load.
const clientReadSize = 16 << 10

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
}

// newConnReader returns a reader of src, the connection's reader from
// newSockReader, that first returns what first holds (first may be nil).
func newConnReader(first *bufio.Reader, src io.Reader) *connReader {
	cr := &connReader{first: first, src: src}
	cr.sock, _ = src.(*sockReader)
	return cr
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
