package eintr

import (
	"errors"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pendingConnect sets up a connect that blocks: a loopback listener with a
// backlog of 0 whose accept queue already holds one connection, so the
// kernel drops the next SYN and the client retransmits it after its
// initial RTO (1 s). It returns the listener, the queued connection's fd,
// a blocking socket with a send timeout (what makes the kernel answer a
// signal with EINTR instead of restarting), and the listener's address.
func pendingConnect(t *testing.T) (ln, queued, fd int, sa unix.Sockaddr) {
	t.Helper()
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(ln) })
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(ln, 0); err != nil {
		t.Fatal(err)
	}
	if sa, err = unix.Getsockname(ln); err != nil {
		t.Fatal(err)
	}
	socket := func() int {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		tv := unix.Timeval{Sec: 10}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
			t.Fatal(err)
		}
		return fd
	}
	queued = socket()
	if err := Connect(queued, sa); err != nil {
		t.Fatalf("first connect (fills the accept queue): %v", err)
	}
	return ln, queued, socket(), sa
}

// connectSignalled runs connect on a locked thread and sends that thread
// SIGURG (the runtime's preemption signal, harmless) every 5 ms until
// connect returns; once sent signals reach freeAfter it calls free.
func connectSignalled(t *testing.T, connect func() error, freeAfter int, free func()) error {
	t.Helper()
	tid := make(chan int, 1)
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tid <- unix.Gettid()
		done <- connect()
	}()
	target := <-tid
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(8 * time.Second)
	sent := 0
	for {
		select {
		case err := <-done:
			return err
		case <-deadline:
			t.Fatal("connect did not return within 8s")
		case <-tick.C:
			if err := unix.Tgkill(os.Getpid(), target, unix.SIGURG); err != nil {
				t.Fatalf("tgkill: %v", err)
			}
			if sent++; sent == freeAfter && free != nil {
				free()
			}
		}
	}
}

// TestPlainConnectIsInterrupted pins the cause: a blocking connect with a
// send timeout returns EINTR when the runtime signals its thread.
func TestPlainConnectIsInterrupted(t *testing.T) {
	_, _, fd, sa := pendingConnect(t)
	err := connectSignalled(t, func() error { return unix.Connect(fd, sa) }, 0, nil)
	if !errors.Is(err, unix.EINTR) {
		t.Fatalf("plain connect returned %v, want EINTR", err)
	}
}

// TestConnectRetriesEINTRUntilConnected: signals keep interrupting the
// connect; the queue frees after 10 of them and the retransmitted SYN
// completes the same attempt.
func TestConnectRetriesEINTRUntilConnected(t *testing.T) {
	ln, _, fd, sa := pendingConnect(t)
	var accepted atomic.Int32
	free := func() {
		nfd, _, err := Accept(ln)
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		unix.Close(nfd)
		accepted.Add(1)
	}
	if err := connectSignalled(t, func() error { return Connect(fd, sa) }, 10, free); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if accepted.Load() != 1 {
		t.Fatal("connect returned before the accept queue had room: the test did not exercise an interrupted connect")
	}
	peer, err := unix.Getpeername(fd)
	if err != nil {
		t.Fatalf("getpeername after Connect: %v", err)
	}
	if peer.(*unix.SockaddrInet4).Port != sa.(*unix.SockaddrInet4).Port {
		t.Errorf("connected to %+v, want %+v", peer, sa)
	}
}

func TestWriteAndReadRoundTrip(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if n, err := Write(fds[0], []byte("hello")); n != 5 || err != nil {
		t.Fatalf("Write: %d, %v", n, err)
	}
	buf := make([]byte, 16)
	if n, err := Read(fds[1], buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("Read: %q, %v", buf[:n], err)
	}
}
