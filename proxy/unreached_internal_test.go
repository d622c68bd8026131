package proxy

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/zonelb/zonelb/internal/testenv"
	"github.com/zonelb/zonelb/internal/testservice"
	"github.com/zonelb/zonelb/zone"
)

// These tests stand in for TestBackendsKilledUnderLoad (test/e2e): an
// endpoint's process dies while the proxy's read goroutine for its pooled
// connection runs late, and requests are written to the connection after
// the endpoint's kernel closed it. The late read goroutine is held with
// upstreamReadPause: it is the scheduler's doing on a busy machine and
// cannot be produced on demand otherwise. Every wait polls a kernel or
// proxy condition (TCP state, the writer's error), never a duration.

// deadEndpoint is endpoint "a": it accepts one connection, sends its
// SETTINGS, and then either reads everything and closes (a FIN: nothing was
// left unread) or reads nothing and closes (a reset: bytes left unread).
type deadEndpoint struct {
	addr    netip.AddrPort
	conn    chan net.Conn // the accepted connection, once closed (fin) or ready (reset)
	headers atomic.Int64  // HEADERS frames its application read
}

// With smallBuffer, its socket's receive buffer is the smallest the
// kernel allows, so that a few kilobytes it does not read fill it.
func startDeadEndpoint(t *testing.T, readAll, smallBuffer bool) *deadEndpoint {
	var lc net.ListenConfig
	if smallBuffer {
		lc.Control = smallSocketBuffer(unix.SO_RCVBUF)
	}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &deadEndpoint{addr: netip.MustParseAddrPort(ln.Addr().String()), conn: make(chan net.Conn, 1)}
	go func() {
		c, err := ln.Accept()
		ln.Close() // later dials are refused: they must not wait on us
		if err != nil {
			return
		}
		http2.NewFramer(c, nil).WriteSettings()
		if !readAll {
			e.conn <- c
			return
		}
		// Read until the first request ended and our SETTINGS were
		// acknowledged (the proxy writes nothing more unasked), then
		// close: a FIN, with nothing unread.
		preface := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(c, preface); err != nil {
			c.Close()
			return
		}
		fr := http2.NewFramer(nil, c)
		acked, ended := false, false
		for !acked || !ended {
			f, err := fr.ReadFrame()
			if err != nil {
				break
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				acked = acked || f.IsAck()
			case *http2.HeadersFrame:
				e.headers.Add(1)
				ended = ended || f.StreamEnded()
			case *http2.DataFrame:
				ended = ended || f.StreamEnded()
			}
		}
		c.Close()
		e.conn <- c
	}()
	t.Cleanup(func() { ln.Close() })
	return e
}

// killedEndpointRig is a proxy balancing round robin over a dead endpoint
// "a" and a live gRPC backend "b", with a's read loop held after it read
// a's SETTINGS.
type killedEndpointRig struct {
	t       *testing.T
	p       *Proxy
	a       *deadEndpoint
	b       *testservice.Server
	client  testgrpc.TestServiceClient
	held    <-chan struct{} // closed once a's read loop paused
	release func()
}

// With smallBuffers, the socket buffers of a's connection, the proxy's
// send buffer and a's receive buffer, are the smallest the kernel allows.
func newKilledEndpointRig(t *testing.T, readAll, smallBuffers bool) *killedEndpointRig {
	r := &killedEndpointRig{t: t, a: startDeadEndpoint(t, readAll, smallBuffers)}
	b, err := testservice.Start("127.0.0.1:0", testservice.Options{Name: "b"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Stop)
	r.b = b
	eps := []zone.Endpoint{
		{Addr: r.a.addr, Zone: "z", Ready: true, Serving: true},
		{Addr: netip.MustParseAddrPort(b.Addr()), Zone: "z", Ready: true, Serving: true},
	}
	p, err := New(Config{Router: StaticRouter{Service: "test", Picker: NewRoundRobin(eps)}, UpstreamPingInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	r.p = p
	if smallBuffers {
		d := p.cfg.dialer()
		d.Control = func(network, address string, c syscall.RawConn) error {
			if address != r.a.addr.String() {
				return nil
			}
			return smallSocketBuffer(unix.SO_SNDBUF)(network, address, c)
		}
		p.up.dial = d.DialContext // before the first call dials
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	held := make(chan struct{})
	release := make(chan struct{})
	var once, releaseOnce sync.Once
	pause := func(cc *clientConn) {
		if cc.pool.addr != r.a.addr {
			return
		}
		once.Do(func() {
			close(held)
			<-release
		})
	}
	upstreamReadPause.Store(&pause)
	r.release = func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(func() { // before the proxy's shutdown (cleanups run last first)
		r.release()
		upstreamReadPause.Store(nil)
	})
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	r.client = testgrpc.NewTestServiceClient(conn)
	r.held = held
	return r
}

// call makes a unary call in the background (the round robin's next pick
// is its endpoint); its result arrives on the channel.
func (r *killedEndpointRig) call() <-chan callResult { return r.callWith(0) }

// callWith is call with a request payload of size bytes.
func (r *killedEndpointRig) callWith(size int) <-chan callResult {
	ch := make(chan callResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		req := &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: make([]byte, size)}}
		resp, err := r.client.UnaryCall(ctx, req)
		ch <- callResult{resp.GetHostname(), err}
	}()
	return ch
}

type callResult struct {
	host string
	err  error
}

func (r *killedEndpointRig) wait(ch <-chan callResult, what string) callResult {
	r.t.Helper()
	select {
	case res := <-ch:
		return res
	case <-time.After(20 * time.Second):
		r.t.Fatalf("%s: no answer", what)
		return callResult{}
	}
}

// callB makes a call the round robin sends to b, and checks it.
func (r *killedEndpointRig) callB() {
	r.t.Helper()
	if res := r.wait(r.call(), "call to b"); res.err != nil || res.host != "b" {
		r.t.Fatalf("call to b: %q, %v", res.host, res.err)
	}
}

// aConn is the proxy's one connection to a.
func (r *killedEndpointRig) aConn() *clientConn {
	ep := r.p.up.pool(r.a.addr)
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if len(ep.conns) != 1 {
		r.t.Fatalf("%d connections to a, want 1", len(ep.conns))
	}
	return ep.conns[0]
}

// socketState is the TCP state of cc's socket and the writer's error;
// ok is false once the socket is closed.
func socketState(cc *clientConn) (state uint8, werr error, ok bool) {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	werr = cc.w.err
	var info *unix.TCPInfo
	var gerr error
	if err := cc.w.raw.Control(func(fd uintptr) { info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil || gerr != nil {
		return 0, werr, false
	}
	return info.State, werr, true
}

func wantUnavailable(t *testing.T, res callResult, what string) {
	t.Helper()
	if status.Code(res.err) != codes.Unavailable {
		t.Fatalf("%s: %q, %v; want UNAVAILABLE", what, res.host, res.err)
	}
}

// An endpoint whose process exits after reading everything sends FIN.
// Requests then written to its connection, before the read loop has seen
// the FIN, reach no application (its kernel answers them with RST): they
// complete on the other endpoint. The request it did read fails. With
// writeAgain, a further request's write fails (EPIPE: the reset arrived)
// and closes the socket before the read loop gets to it.
func TestRequestWrittenAfterEndpointFINIsRetried(t *testing.T) {
	for _, writeAgain := range []bool{false, true} {
		name := "read loop sees the FIN"
		if writeAgain {
			name = "a write fails first"
		}
		t.Run(name, func(t *testing.T) {
			r := newKilledEndpointRig(t, true, false)
			first := r.call() // to a, which reads it and exits
			waitHeld(t, r.held)
			cc := r.aConn()
			<-r.a.conn
			testenv.WaitFor(t, 10*time.Second, "a's FIN at the proxy (CLOSE_WAIT)", func() bool {
				st, _, ok := socketState(cc)
				return ok && st == unix.BPF_TCP_CLOSE_WAIT
			})
			r.callB()
			second := r.call() // to a's dead connection
			testenv.WaitFor(t, 10*time.Second, "a's kernel to reset the request written after its FIN", func() bool {
				st, werr, ok := socketState(cc)
				return werr != nil || (ok && st == unix.BPF_TCP_CLOSE)
			})
			var third <-chan callResult
			if writeAgain {
				r.callB()
				third = r.call() // to a: the write meets the reset
				testenv.WaitFor(t, 10*time.Second, "the write after the reset to fail", func() bool {
					_, werr, _ := socketState(cc)
					return werr != nil
				})
			}
			r.release()
			wantUnavailable(t, r.wait(first, "the request a read"), "the request a read")
			if res := r.wait(second, "the request written after a's FIN"); res.err != nil || res.host != "b" {
				t.Fatalf("the request written after a's FIN: %q, %v; want an answer from b", res.host, res.err)
			}
			if third != nil {
				if res := r.wait(third, "the request whose write failed"); res.err != nil || res.host != "b" {
					t.Fatalf("the request whose write failed: %q, %v; want an answer from b", res.host, res.err)
				}
			}
			if n := r.a.headers.Load(); n != 1 {
				t.Fatalf("a's application read %d requests, want 1", n)
			}
			if got := r.p.Stats().Retries; got < 1 {
				t.Fatalf("%d retries", got)
			}
		})
	}
}

// An endpoint that exits with bytes unread resets the connection: the
// kernel does not process the acknowledgment an RST carries, so what the
// endpoint's application read cannot be told from what it did not, and a
// request its kernel received fails. A request written after the reset
// arrived never left this host (the kernel refused the write): it is
// retried on the other endpoint.
func TestEndpointResetRetriesOnlyUnsentRequests(t *testing.T) {
	r := newKilledEndpointRig(t, false, false)
	first := r.call() // to a, which never reads it
	waitHeld(t, r.held)
	cc := r.aConn()
	server := <-r.a.conn
	testenv.WaitFor(t, 10*time.Second, "the request in a's socket, all acknowledged", func() bool {
		cc.wmu.Lock()
		open := len(cc.streams) == 1 && len(cc.w.buf) == 0 && !cc.w.draining
		cc.wmu.Unlock()
		if !open {
			return false
		}
		info := tcpInfo(t, cc.conn)
		return info.Unacked == 0 && info.Notsent_bytes == 0
	})
	server.Close() // unread bytes: a reset
	testenv.WaitFor(t, 10*time.Second, "a's reset at the proxy", func() bool {
		st, werr, ok := socketState(cc)
		return werr != nil || (ok && st == unix.BPF_TCP_CLOSE)
	})
	r.callB()
	second := r.call() // to a's dead connection: the write meets the reset
	testenv.WaitFor(t, 10*time.Second, "the write after the reset to fail", func() bool {
		_, werr, _ := socketState(cc)
		return werr != nil
	})
	r.release()
	wantUnavailable(t, r.wait(first, "the request in a's socket"), "the request in a's socket")
	if res := r.wait(second, "the request whose write the kernel refused"); res.err != nil || res.host != "b" {
		t.Fatalf("the request whose write the kernel refused: %q, %v; want an answer from b", res.host, res.err)
	}
	if got := r.p.Stats().Retries; got != 1 {
		t.Fatalf("%d retries, want 1", got)
	}
}

// An endpoint that stops reading fills its socket and ours; the request
// written next waits in the proxy's writer behind the blocked background
// write. When the endpoint then exits (a reset: bytes unread), that request
// was never handed to the kernel: it is retried on the other endpoint,
// while the one whose bytes a's kernel received fails.
func TestRequestQueuedInWriterOnResetIsRetried(t *testing.T) {
	r := newKilledEndpointRig(t, false, true)
	// More than the two small socket buffers hold, within a's windows.
	first := r.callWith(60 << 10) // to a, which never reads it
	waitHeld(t, r.held)
	cc := r.aConn()
	server := <-r.a.conn
	testenv.WaitFor(t, 10*time.Second, "the background write to block on the full socket", func() bool {
		cc.wmu.Lock()
		defer cc.wmu.Unlock()
		return len(cc.streams) == 1 && cc.w.draining && cc.w.inflight > 0
	})
	r.callB()
	second := r.call() // to a: its HEADERS wait in the writer
	testenv.WaitFor(t, 10*time.Second, "the second request queued in the writer", func() bool {
		cc.wmu.Lock()
		defer cc.wmu.Unlock()
		if len(cc.streams) != 2 || !cc.w.draining || len(cc.w.buf) == 0 {
			return false
		}
		handed := cc.w.queued - uint64(len(cc.w.buf)) // to the kernel, or to the background write
		for _, s := range cc.streams {
			if s.upID == 3 {
				return s.upAt >= handed
			}
		}
		return false
	})
	server.Close() // unread bytes: a reset
	testenv.WaitFor(t, 10*time.Second, "the background write to fail", func() bool {
		_, werr, _ := socketState(cc)
		return werr != nil
	})
	r.release()
	wantUnavailable(t, r.wait(first, "the request in a's socket"), "the request in a's socket")
	if res := r.wait(second, "the request queued in the writer"); res.err != nil || res.host != "b" {
		t.Fatalf("the request queued in the writer: %q, %v; want an answer from b", res.host, res.err)
	}
	if got := r.p.Stats().Retries; got != 1 {
		t.Fatalf("%d retries, want 1", got)
	}
}

// smallSocketBuffer sets a socket's buffer opt (SO_SNDBUF or SO_RCVBUF)
// to the kernel's minimum (it rounds the 1 byte asked up).
func smallSocketBuffer(opt int) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, 1) }); err != nil {
			return err
		}
		return serr
	}
}

func waitHeld(t *testing.T, held <-chan struct{}) {
	t.Helper()
	select {
	case <-held:
	case <-time.After(20 * time.Second):
		t.Fatal("the read loop of a's connection never paused")
	}
}
