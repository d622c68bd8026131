// Package eintr retries the blocking system calls that tests make
// directly (golang.org/x/sys/unix on raw file descriptors) when a signal
// interrupts them.
//
// Go's runtime signals its own threads all the time (SIGURG for
// preemption, SIGCHLD, SIGPROF...). Its handlers are installed with
// SA_RESTART, but the kernel restarts a call only when it has no timeout:
// a blocking connect(2), read(2) or write(2) on a socket with SO_SNDTIMEO
// or SO_RCVTIMEO, and accept(2) on one with SO_RCVTIMEO, returns EINTR
// instead. Go's own net package never sees this (its sockets are
// non-blocking and retry EINTR inside), so only code that calls unix.*
// itself needs these helpers.
//
// It is for tests and test helpers; the product uses the net package.
package eintr

import (
	"errors"

	"golang.org/x/sys/unix"
)

// maxRetries bounds the retries of one call: a call interrupted this many
// times in a row is reported with its EINTR (something signals the
// thread in a loop).
const maxRetries = 1000

// Connect connects the blocking socket fd to sa. An interrupted connect
// goes on in the kernel; calling connect(2) again on the same blocking
// socket waits for that same attempt (Linux: the SS_CONNECTING path, which
// neither runs the cgroup connect hooks again nor looks at sa) and returns
// its result. EISCONN after an interruption means the attempt completed
// in between: success.
func Connect(fd int, sa unix.Sockaddr) error {
	interrupted := false
	for range maxRetries {
		err := unix.Connect(fd, sa)
		switch {
		case errors.Is(err, unix.EINTR):
			interrupted = true
			continue
		case interrupted && errors.Is(err, unix.EISCONN):
			return nil
		}
		return err
	}
	return unix.EINTR
}

// Read is read(2), retried on EINTR (nothing was read then).
func Read(fd int, p []byte) (int, error) {
	for range maxRetries {
		n, err := unix.Read(fd, p)
		if !errors.Is(err, unix.EINTR) {
			return n, err
		}
	}
	return 0, unix.EINTR
}

// Write writes all of p, retrying on EINTR and after short writes (a
// signal can end a blocking write part way).
func Write(fd int, p []byte) (int, error) {
	done := 0
	for tries := 0; done < len(p) && tries < maxRetries; tries++ {
		n, err := unix.Write(fd, p[done:])
		if n > 0 {
			done += n
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			return done, err
		}
	}
	if done < len(p) {
		return done, unix.EINTR
	}
	return done, nil
}

// Accept is accept4(2) with SOCK_CLOEXEC, retried on EINTR.
func Accept(fd int) (int, unix.Sockaddr, error) {
	for range maxRetries {
		nfd, sa, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
		if !errors.Is(err, unix.EINTR) {
			return nfd, sa, err
		}
	}
	return -1, nil, unix.EINTR
}
