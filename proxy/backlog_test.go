package proxy_test

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"golang.org/x/sys/unix"

	"github.com/zonelb/zonelb/proxy"
	"github.com/zonelb/zonelb/zone"
)

// A response the proxy holds because the client connection's queue of
// unwritten frames is over its backlog limit (writeBacklogLimit, 256 KiB)
// waits for that queue to drain. When the write that follows takes the
// whole queue at once, no background drain runs, none ends to push the
// held streams, and batch.flush must push them itself: before it did
// (780ba1a), they waited forever (227 streams, each with its 1 KiB
// response, in one hung run).
//
// No timing decides it. streams calls get 1 KiB each: the client's 64 KiB
// connection window takes the first responses and the proxy holds the
// rest, about 40 KiB more than the backlog limit. One WINDOW_UPDATE then
// lets all of them go in one read of the client's socket: the first
// 256 KiB queue up, the streams after them are held on the backlog, and
// the flush's write takes the queue at once, since the proxy's send
// buffer (set on the listener, which accepted sockets inherit) is larger
// than everything still to send. The client then sends a PING. The proxy
// reads it only once the flush that followed the WINDOW_UPDATE returned,
// pushes included, so its ACK comes after every response the proxy could
// send: all of them must have ended by then. (With a send buffer too small
// for that, a background drain would push the rest after the ACK: the
// test would fail without a fault, so it checks the buffer first.)
func TestStreamsHeldOnABacklogAWriteClearedAreSent(t *testing.T) {
	const (
		streams    = 360
		respBytes  = 1024
		connWindow = 65535 // the client's, not raised until the release
		held       = streams*respBytes - connWindow
	)
	ep := startRawEndpoint(t, respBytes)
	l := listenWithSocketBuffer(t, unix.SO_SNDBUF, 4<<20, held+held/4)
	p, addr := startProxyOn(t, l, proxy.NewRoundRobin([]zone.Endpoint{{Addr: ep.addr, Ready: true, Serving: true}}))

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second)) // a bound on a broken run, not a measure
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.Write([]byte(http2.ClientPreface))
	fr.WriteSettings()
	enc := &hpackBlock{}
	enc.enc = hpack.NewEncoder(&enc.buf)
	for i := uint32(0); i < streams; i++ {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 2*i + 1, EndStream: true, EndHeaders: true,
			BlockFragment: enc.block(":method", "GET", ":scheme", "http", ":path", "/", ":authority", "x")})
	}
	var data, ended int
	read := func(until func(f http2.Frame) bool) {
		t.Helper()
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("after %d bytes of responses, %d of %d ended: %v", data, ended, streams, err)
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					fr.WriteSettingsAck()
				}
			case *http2.DataFrame:
				data += len(f.Data())
				if f.StreamEnded() {
					ended++
				}
			case *http2.RSTStreamFrame, *http2.GoAwayFrame:
				t.Fatalf("%v", f)
			}
			if until(f) {
				return
			}
		}
	}
	read(func(http2.Frame) bool { return data == connWindow })
	eventually(t, "every response but the first window's to be held", func() bool { return p.Stats().BufferedBytes == held })

	fr.WriteWindowUpdate(0, 1<<30)
	read(func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok && data > connWindow })
	ping := [8]byte{'b', 'a', 'c', 'k', 'l', 'o', 'g'}
	fr.WritePing(false, ping)
	read(func(f http2.Frame) bool { pf, ok := f.(*http2.PingFrame); return ok && pf.IsAck() && pf.Data == ping })
	t.Logf("at the PING's ACK: %d of %d responses ended, %d of %d bytes received; proxy holds %d",
		ended, streams, data, streams*respBytes, p.Stats().BufferedBytes)
	if ended != streams || data != streams*respBytes {
		t.Fatalf("%d of %d responses ended (%d of %d bytes) once the proxy had handled the WINDOW_UPDATE; the rest stayed held on a backlog that was gone",
			ended, streams, data, streams*respBytes)
	}
}

// listenWithSocketBuffer listens on loopback with sockets whose buffer
// opt (unix.SO_SNDBUF, unix.SO_RCVBUF) asks for size bytes; accepted
// sockets inherit it. It fails unless the kernel grants at least need
// (net.core.wmem_max and rmem_max cap it).
func listenWithSocketBuffer(t *testing.T, opt, size, need int) net.Listener {
	t.Helper()
	granted := 0
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, size); serr == nil {
				granted, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, opt)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	l, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	if granted < need {
		t.Fatalf("the kernel granted a socket buffer of %d bytes, the test needs %d", granted, need)
	}
	return l
}
