package proxy

import (
	"io"
	"net"
	"os"
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

func (r *sockReader) readFD(fd uintptr) bool {
	n, e := rawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.p[0])), uintptr(len(r.p)), 0)
	switch e {
	case 0:
		r.n, r.err = int(n), 0
		return true
	case syscall.EAGAIN:
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
