package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/sys/unix"

	"github.com/zonelb/zonelb/internal/testenv"
)

// loopbackPair returns the two ends of a TCP connection over loopback:
// real sockets, which the read loops read with frameLoop (net.Pipe takes
// the plain io.Reader path).
func loopbackPair(tb testing.TB) (client, server net.Conn) {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		tb.Fatal("accept failed")
	}
	tb.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// frameSink runs connReader.readFrames over the server end of a loopback
// pair with a Framer, as both read loops do, and reports what it saw.
type frameSink struct {
	cr     *connReader
	rf     *http2.Framer
	b      batch
	clocks int // clock reads through b.now, one per frame asked
	times  chan time.Time
	// hold, if set before the loop's first idle, keeps that idle (and the
	// loop, inside its socket's read call) until it is closed.
	hold   chan struct{}
	got    chan []byte // each frame's type and payload, as it is handled
	idles  chan idleState
	result chan error
}

// idleState is what the connection's buffer held when idle was called.
type idleState struct {
	box      bool
	buffered int
}

func newFrameSink(tb testing.TB, server net.Conn) (*frameSink, func() error, func() bool) {
	src := newSockReader(server)
	if _, ok := src.(*sockReader); !ok {
		tb.Fatal("a TCP connection is not read as a socket")
	}
	s := &frameSink{
		cr:     newConnReader(nil, src),
		got:    make(chan []byte, 1000),
		idles:  make(chan idleState, 1000),
		result: make(chan error, 1),
		times:  make(chan time.Time, 1000),
	}
	clock := func() time.Time {
		s.clocks++
		return time.Unix(int64(s.clocks), 0)
	}
	s.rf = http2.NewFramer(nil, s.cr)
	s.rf.SetMaxReadFrameSize(maxFrameSize)
	frame := func() error {
		f, err := s.rf.ReadFrame()
		if err != nil {
			return err
		}
		d, ok := f.(*http2.DataFrame)
		if !ok {
			return errors.New("not a DATA frame")
		}
		s.times <- s.b.now(clock)
		s.got <- append([]byte(nil), d.Data()...)
		return nil
	}
	idle := func() bool {
		s.idles <- idleState{s.cr.box != nil, s.cr.Buffered()}
		if s.hold != nil {
			<-s.hold
			s.hold = nil
		}
		return false
	}
	return s, frame, idle
}

func startFrameSink(tb testing.TB, server net.Conn) *frameSink {
	return startFrameSinkHeld(tb, server, nil)
}

func startFrameSinkHeld(tb testing.TB, server net.Conn, hold chan struct{}) *frameSink {
	s, frame, idle := newFrameSink(tb, server)
	s.hold = hold
	go func() { s.result <- s.cr.readFrames(&s.b, frame, idle) }()
	return s
}

func (s *frameSink) end(tb testing.TB) error {
	tb.Helper()
	select {
	case err := <-s.result:
		return err
	case <-time.After(10 * time.Second):
		tb.Fatal("the read loop did not end")
		return nil
	}
}

func dataFrames(payloads ...[]byte) []byte {
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	for _, p := range payloads {
		fr.WriteData(1, false, p)
	}
	return buf.Bytes()
}

// Over a socket, the read loop hands the Framer whole frames only, however
// the bytes are cut: one byte at a time, a frame split across writes, many
// frames in one read, frames of the largest size the proxy reads. A frame
// cut at the end of a read stays buffered for the next; with no part of a
// frame left, the connection holds no buffer when it waits.
func TestFrameLoopWholeFramesOverASocket(t *testing.T) {
	client, server := loopbackPair(t)
	s := startFrameSink(t, server)

	var want [][]byte
	for i := range 40 {
		want = append(want, bytes.Repeat([]byte{byte(i)}, i*37))
	}
	want = append(want, bytes.Repeat([]byte{'m'}, maxFrameSize), bytes.Repeat([]byte{'n'}, maxFrameSize), nil)
	stream := dataFrames(want...)

	// One frame a byte at a time.
	first := dataFrames(want[3])
	for _, c := range first {
		client.Write([]byte{c})
	}
	if got := <-s.got; !bytes.Equal(got, want[3]) {
		t.Fatalf("frame sent byte by byte: %d bytes, want %d", len(got), len(want[3]))
	}
	if st := <-s.idles; st.box || st.buffered != 0 {
		t.Fatalf("after a whole frame, idle with buffer %v and %d bytes buffered; want no buffer held", st.box, st.buffered)
	}
	// A frame and half of the next in one write: the half is kept.
	two := dataFrames(want[5], want[6])
	half := len(dataFrames(want[5])) + 20
	client.Write(two[:half])
	if got := <-s.got; !bytes.Equal(got, want[5]) {
		t.Fatalf("first of two frames: %d bytes, want %d", len(got), len(want[5]))
	}
	if st := <-s.idles; !st.box || st.buffered != 20 {
		t.Fatalf("with part of a frame read, idle with buffer %v and %d bytes buffered; want the 20 bytes kept", st.box, st.buffered)
	}
	client.Write(two[half:])
	if got := <-s.got; !bytes.Equal(got, want[6]) {
		t.Fatalf("frame completed by a second read: %d bytes, want %d", len(got), len(want[6]))
	}
	<-s.idles
	// The rest in pieces that cut frames anywhere, in one go.
	for off, step := 0, 1; off < len(stream); off, step = off+step, step*3%7919+1 {
		client.Write(stream[off:min(off+step, len(stream))])
	}
	for i, w := range want {
		select {
		case got := <-s.got:
			if !bytes.Equal(got, w) {
				t.Fatalf("frame %d: %d bytes, want %d", i, len(got), len(w))
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("frame %d of %d never handled", i, len(want))
		}
	}
	client.Close()
	if err := s.end(t); err != io.EOF {
		t.Fatalf("read loop ended with %v, want EOF", err)
	}
}

// The lever: after a read that drained the socket, the loop waits for the
// next bytes without reading the empty socket first. Twenty bursts, each
// written once the last was handled, cost at most the one empty read of
// the loop's start (and one for a spurious wake-up); a loop that reads
// until EAGAIN makes one per burst.
func TestFrameLoopWaitsWithoutAnEmptyRead(t *testing.T) {
	client, server := loopbackPair(t)
	s := startFrameSink(t, server)
	for i := range 20 {
		client.Write(dataFrames([]byte("ping"), bytes.Repeat([]byte{byte(i)}, 1000)))
		<-s.got
		<-s.got
		<-s.idles
	}
	client.Close()
	if err := s.end(t); err != io.EOF {
		t.Fatalf("read loop ended with %v, want EOF", err)
	}
	// A burst that waited past frameBackstop (a loaded machine) may add
	// the empty read the backstop makes.
	if n := s.cr.emptyReads - int(s.cr.backstops.Load()); n > 2 {
		t.Fatalf("%d reads found the socket empty in 20 bursts, besides the backstop's; want at most 2", n)
	}
}

// A read loop waiting in the poller without having read the empty socket
// still ends when the connection is closed or a read deadline passes.
func TestFrameLoopEndsOnCloseAndDeadline(t *testing.T) {
	client, server := loopbackPair(t)
	s := startFrameSink(t, server)
	client.Write(dataFrames([]byte("x")))
	<-s.got
	<-s.idles
	s.cr.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if err := s.end(t); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after the deadline: %v", err)
	}

	client, server = loopbackPair(t)
	s = startFrameSink(t, server)
	client.Write(dataFrames([]byte("y")))
	<-s.got
	<-s.idles
	server.Close()
	if err := s.end(t); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

// A frame longer than the proxy reads fails from its header: the loop
// does not wait for a payload it would not read.
func TestFrameLoopRejectsOversizedFrameFromItsHeader(t *testing.T) {
	client, server := loopbackPair(t)
	s := startFrameSink(t, server)
	client.Write([]byte{0, 0x40, 1, byte(http2.FrameData), 0, 0, 0, 0, 1})
	if err := s.end(t); !errors.Is(err, http2.ErrFrameTooLarge) {
		t.Fatalf("oversized frame: %v, want ErrFrameTooLarge", err)
	}
}

// The frames of one read share one clock read (batch.now); the next read
// reads the clock again.
func TestFrameLoopReadsTheClockOncePerRead(t *testing.T) {
	client, server := loopbackPair(t)
	s := startFrameSink(t, server)
	var seen []time.Time
	for range 3 {
		client.Write(dataFrames([]byte("a"), []byte("b"), []byte("c")))
		for range 3 {
			<-s.got
			seen = append(seen, <-s.times)
		}
		<-s.idles
	}
	client.Close()
	s.end(t)
	for i, tm := range seen {
		if want := time.Unix(int64(i/3+1), 0); !tm.Equal(want) {
			t.Fatalf("frame %d of 3 reads of 3 frames saw clock read %d, want %d", i, tm.Unix(), want.Unix())
		}
	}
}

// A FIN that came with the last bytes is reported by the read after them,
// and its readiness edge was raised before the read that took the bytes:
// the loop must not wait after that read (it would wait forever; the
// kernel's TCP_INQ count says a FIN is pending). Here the bytes and the
// FIN arrive while the loop is busy with the previous read's frames.
func TestFrameLoopSeesAFinThatCameWithData(t *testing.T) {
	client, server, s, hold := lastBytesWhileHeld(t)
	client.(*net.TCPConn).CloseWrite()
	waitTCPState(t, server, 8, "the FIN to reach the socket") // TCP_CLOSE_WAIT
	close(hold)
	if got := <-s.got; string(got) != "last" {
		t.Fatalf("frame read with the FIN: %q", got)
	}
	if err := s.end(t); err != io.EOF {
		t.Fatalf("read loop ended with %v, want EOF", err)
	}
}

// A reset that came with the last bytes: TCP_INQ says nothing is left
// (it counts a FIN, not a reset), the reset's readiness edge was used by
// the wake-up that read the bytes, and the loop waits without the read
// that would report it. The backstop makes that read within
// frameBackstop; without it the loop waited forever. The bytes and the
// reset arrive while the loop is busy with the previous read's frames, so
// one read takes them. (Now and then the runtime's poller collects the
// reset's readiness only after that read, and the loop sees the reset at
// once: in 40 runs, twice. So five connections: without the backstop, one
// of them hangs all but surely.)
func TestFrameLoopSeesAResetThatCameWithData(t *testing.T) {
	for i := range 5 {
		client, server, s, hold := lastBytesWhileHeld(t)
		client.(*net.TCPConn).SetLinger(0)
		client.Close()                                              // a reset, after the bytes
		waitTCPState(t, server, 7, "the reset to reach the socket") // TCP_CLOSE
		close(hold)
		if got := <-s.got; string(got) != "last" {
			t.Fatalf("connection %d: frame read with the reset: %q", i, got)
		}
		// end allows 10 s, 50 backstops: a loop without one never ends.
		if err := s.end(t); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("connection %d: read loop ended with %v, want ECONNRESET", i, err)
		}
		if n := s.cr.backstops.Load(); n > 1 {
			t.Fatalf("connection %d: the backstop passed %d times before the reset was read, want at most 1", i, n)
		}
	}
}

// A connection that goes quiet after a read pays one backstop: its
// deadline passes, the loop makes the empty read it skipped, and waits
// for the next bytes with no deadline, which it then reads as before.
func TestFrameLoopBackstopOnAQuietConnection(t *testing.T) {
	client, server := loopbackPair(t)
	s := startFrameSink(t, server)
	client.Write(dataFrames([]byte("before")))
	<-s.got
	<-s.idles
	testenv.WaitFor(t, 10*time.Second, "the backstop to pass", func() bool {
		return s.cr.backstops.Load() > 0
	})
	client.Write(dataFrames([]byte("after")))
	if got := <-s.got; string(got) != "after" {
		t.Fatalf("frame after the backstop: %q", got)
	}
	<-s.idles
	client.Close()
	if err := s.end(t); err != io.EOF {
		t.Fatalf("read loop ended with %v, want EOF", err)
	}
	if n := s.cr.emptyReads; n < 1 {
		t.Fatalf("%d empty reads: the backstop did not make the read it skipped", n)
	}
}

// A busy connection sets the backstop's deadline once per frameBackstop,
// not once per wake-up: 200 bursts, each a wake-up that waits without an
// empty read, arm it at most once per backstop of the time they took
// (plus the first).
func TestFrameLoopArmsTheBackstopRarely(t *testing.T) {
	client, server := loopbackPair(t)
	s := startFrameSink(t, server)
	start := time.Now()
	for i := range 200 {
		client.Write(dataFrames(bytes.Repeat([]byte{byte(i)}, 100)))
		<-s.got
		<-s.idles
	}
	took := time.Since(start)
	client.Close()
	if err := s.end(t); err != io.EOF {
		t.Fatalf("read loop ended with %v, want EOF", err)
	}
	if n, most := s.cr.arms, 1+int(took/frameBackstop)+1; n > most {
		t.Fatalf("200 wake-ups in %v armed the backstop %d times, want at most %d", took, n, most)
	}
}

// lastBytesWhileHeld starts a frame loop on a loopback connection, lets
// it handle a first frame, holds it inside its read call, and sends a
// frame "last" that the loop has not read yet: what the peer does next
// (close, reset) arrives with those bytes. The loop goes on when hold is
// closed.
func lastBytesWhileHeld(t *testing.T) (client, server net.Conn, s *frameSink, hold chan struct{}) {
	t.Helper()
	client, server = loopbackPair(t)
	hold = make(chan struct{})
	s = startFrameSinkHeld(t, server, hold)
	client.Write(dataFrames([]byte("first")))
	<-s.got
	<-s.idles // the loop is held inside its read call
	client.Write(dataFrames([]byte("last")))
	return client, server, s, hold
}

// waitTCPState waits until the kernel's TCP state of c is state
// (include/net/tcp_states.h).
func waitTCPState(t *testing.T, c net.Conn, state uint8, what string) {
	t.Helper()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 5*time.Second, what, func() bool {
		var got uint8
		raw.Control(func(fd uintptr) {
			if info, err := unix.GetsockoptTCPInfo(int(fd), syscall.SOL_TCP, unix.TCP_INFO); err == nil {
				got = info.State
			}
		})
		return got == state
	})
}

// A read deadline the connection's owner sets while the loop waits
// (connReader.SetReadDeadline) survives the backstop: one that passes
// after the backstop's still ends the loop, with the deadline's error.
func TestFrameLoopKeepsTheOwnersDeadline(t *testing.T) {
	client, server := loopbackPair(t)
	s := startFrameSink(t, server)
	client.Write(dataFrames([]byte("x")))
	<-s.got
	<-s.idles
	s.cr.SetReadDeadline(time.Now().Add(frameBackstop * 3 / 2))
	if err := s.end(t); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after the owner's deadline: %v", err)
	}
}
