package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/zonelb/zonelb/proxy"
	"github.com/zonelb/zonelb/zone"
)

// Every call over one client connection is balanced on its own. With the
// reference round-robin picker, three equal backends share 3000 sequential
// calls within 10%. With the real zone balancer and eight calls in flight
// every backend takes a real part, not an exact third: Peak-EWMA follows
// latency, and on loopback one slow sample (a GC pause, a scheduling
// hiccup) makes a backend look slower for a few seconds of its 10s decay.
// The exact share of equal backends under Peak-EWMA is pinned, with
// injected time, by zone's TestEqualEndpointsShareSequentialLoad.
func TestCallsOverOneConnectionSpreadEvenly(t *testing.T) {
	t.Run("round robin", func(t *testing.T) {
		bs := []*backend{startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "c")}
		testSpread(t, bs, proxy.NewRoundRobin(endpointsOf(bs...)), 1, 0.9, 1.1)
	})
	t.Run("zone balancer", func(t *testing.T) {
		bs := []*backend{startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "c")}
		eps := endpointsOf(bs...)
		for i := range eps {
			eps[i].Zone = "zone-a"
		}
		bal, err := zone.NewBalancer(zone.Config{LocalZone: "zone-a"})
		if err != nil {
			t.Fatal(err)
		}
		bal.Update(eps)
		// Eight calls in flight, as a busy client has: the in-flight term
		// of the cost then spreads calls even while one backend's estimate
		// carries a recent peak (sequential calls on loopback would leave
		// such a backend idle for seconds, by Peak-EWMA's design).
		testSpread(t, bs, bal, 8, 0.3, 1.7)
	})
}

// testSpread sends 3000 calls over one connection, workers at a time, and
// checks that each backend's share is within [lo, hi] times an even third.
func testSpread(t *testing.T, bs []*backend, picker proxy.Picker, workers int, lo, hi float64) {
	_, addr := startProxy(t, picker)
	client := dial(t, addr)
	const calls = 3000
	got := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < calls/workers; i++ {
				resp, err := client.UnaryCall(ctxTimeout(t, 10*time.Second), &testgrpc.SimpleRequest{})
				if err != nil {
					t.Errorf("call: %v", err)
					return
				}
				mu.Lock()
				got[resp.GetHostname()]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("calls per backend: %v", got)
	for _, b := range bs {
		share := got[b.name]
		if float64(share) < calls/3*lo || float64(share) > calls/3*hi {
			t.Errorf("backend %s got %d of %d calls, want %.0f to %.0f (all: %v)", b.name, share, calls, calls/3*lo, calls/3*hi, got)
		}
	}
}

// Status codes, percent-encoded messages, binary metadata in headers and
// trailers, and trailers-only responses survive the proxy.
func TestStatusAndMetadataPreserved(t *testing.T) {
	b := startBackend(t, "a")
	_, addr := startProxy(t, proxy.NewRoundRobin(endpointsOf(b)))
	client := dial(t, addr)

	msg := "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈 and 100% sure\t\n"
	_, err := client.UnaryCall(ctxTimeout(t, 5*time.Second), &testgrpc.SimpleRequest{
		ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.FailedPrecondition), Message: msg},
	})
	if st := status.Convert(err); st.Code() != codes.FailedPrecondition || st.Message() != msg {
		t.Fatalf("got status %v %q, want FailedPrecondition %q", st.Code(), st.Message(), msg)
	}

	bin := string([]byte{0, 1, 2, 0xfe, 0xff})
	ctx := metadata.AppendToOutgoingContext(ctxTimeout(t, 5*time.Second), "x-echo-bin", bin)
	var header, trailer metadata.MD
	if _, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.Header(&header), grpc.Trailer(&trailer)); err != nil {
		t.Fatal(err)
	}
	if h, tr := header.Get("x-echo-bin"), trailer.Get("x-echo-bin"); len(h) != 1 || h[0] != bin || len(tr) != 1 || tr[0] != bin {
		t.Fatalf("binary metadata: header %q trailer %q, want %q in both", h, tr, bin)
	}
}

// A trailers-only response (status in the only HEADERS frame) must reach
// the client as one: a gRPC client rejects a status in the headers followed
// by an empty stream end.
func TestTrailersOnlyResponse(t *testing.T) {
	b := startBackend(t, "a")
	_, addr := startProxy(t, proxy.NewRoundRobin(endpointsOf(b)))
	client := dial(t, addr)
	// Unimplemented methods and errors before any message are answered
	// trailers-only by grpc-go.
	stream, err := client.StreamingOutputCall(ctxTimeout(t, 5*time.Second), &testgrpc.StreamingOutputCallRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatalf("empty stream: got %v, want io.EOF", err)
	}
	_, err = testgrpc.NewUnimplementedServiceClient(mustConn(t, addr)).UnimplementedCall(ctxTimeout(t, 5*time.Second), &testgrpc.Empty{})
	if st := status.Convert(err); st.Code() != codes.Unimplemented {
		t.Fatalf("unimplemented: got %v, want Unimplemented", err)
	}

	// Byte level: the response is one HEADERS frame with END_STREAM.
	frames := rawGRPCCall(t, addr, "/grpc.testing.UnimplementedService/UnimplementedCall", nil)
	if len(frames) != 1 {
		t.Fatalf("trailers-only response: got %d frames (%v), want one HEADERS with END_STREAM", len(frames), frames)
	}
	if f := frames[0]; f.typ != http2.FrameHeaders || !f.endStream || f.headers["grpc-status"] != "12" {
		t.Fatalf("trailers-only response: got %+v", f)
	}
}

// grpc-timeout is forwarded, less the time spent in the proxy; when it
// expires the client gets DEADLINE_EXCEEDED from the proxy itself and the
// upstream call is cancelled.
func TestDeadlinePropagation(t *testing.T) {
	b := startBackend(t, "a")
	_, addr := startProxy(t, proxy.NewRoundRobin(endpointsOf(b)))
	client := dial(t, addr)
	if _, err := client.UnaryCall(ctxTimeout(t, 3*time.Second), &testgrpc.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	if got := time.Duration(b.sawDeadline.Load()); got <= 0 || got > 3*time.Second {
		t.Fatalf("server saw deadline %v away, want in (0, 3s]", got)
	}

	// A raw client that sets grpc-timeout but has no deadline of its own:
	// only the proxy can end the call.
	frames := rawGRPCCall(t, addr, "/grpc.testing.TestService/UnaryCall", map[string]string{"grpc-timeout": "200m", "x-sleep": "1h"})
	last := frames[len(frames)-1]
	if last.headers["grpc-status"] != "4" || !last.endStream {
		t.Fatalf("expired deadline: got %+v, want grpc-status 4 with END_STREAM", frames)
	}
	eventually(t, "server to see the call cancelled", func() bool { return b.canceled.Load() == 1 })
}

// A client cancelling a call cancels the upstream stream.
func TestClientCancelPropagates(t *testing.T) {
	b := startBackend(t, "a")
	_, addr := startProxy(t, proxy.NewRoundRobin(endpointsOf(b)))
	client := dial(t, addr)
	ctx, cancel := context.WithCancel(context.Background())
	ctx = metadata.AppendToOutgoingContext(ctx, "x-sleep", "1h")
	errc := make(chan error, 1)
	go func() { _, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}); errc <- err }()
	eventually(t, "call to reach the server", func() bool { return b.calls.Load() == 1 })
	cancel()
	if err := <-errc; status.Code(err) != codes.Canceled {
		t.Fatalf("got %v, want Canceled", err)
	}
	eventually(t, "server to see the cancellation", func() bool { return b.canceled.Load() == 1 })
}

// Streaming in every direction, with messages of 4 MiB and more.
func TestStreamingAndLargeMessages(t *testing.T) {
	b := startBackend(t, "a")
	_, addr := startProxy(t, proxy.NewRoundRobin(endpointsOf(b)))
	client := dial(t, addr, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20), grpc.MaxCallSendMsgSize(16<<20)))
	ctx := ctxTimeout(t, 30*time.Second)

	big := 8 << 20
	resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseSize: int32(big), Payload: &testgrpc.Payload{Body: make([]byte, big)}})
	if err != nil || len(resp.GetPayload().GetBody()) != big {
		t.Fatalf("8 MiB unary: err %v, got %d bytes", err, len(resp.GetPayload().GetBody()))
	}

	up, err := client.StreamingInputCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		if err := up.Send(&testgrpc.StreamingInputCallRequest{Payload: &testgrpc.Payload{Body: make([]byte, 4<<20)}}); err != nil {
			t.Fatal(err)
		}
	}
	if r, err := up.CloseAndRecv(); err != nil || r.GetAggregatedPayloadSize() != 16<<20 {
		t.Fatalf("client streaming: %v, %d bytes", err, r.GetAggregatedPayloadSize())
	}

	duplex, err := client.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, size := range []int32{1, 31415, 4 << 20, 0} {
		if err := duplex.Send(&testgrpc.StreamingOutputCallRequest{ResponseParameters: []*testgrpc.ResponseParameters{{Size: size}}}); err != nil {
			t.Fatal(err)
		}
		r, err := duplex.Recv()
		if err != nil || len(r.GetPayload().GetBody()) != int(size) {
			t.Fatalf("ping-pong %d: %v, %d bytes", i, err, len(r.GetPayload().GetBody()))
		}
	}
	duplex.CloseSend()
	if _, err := duplex.Recv(); err != io.EOF {
		t.Fatalf("end of duplex: %v", err)
	}
}

// A slow reader stalls its stream through flow control: the proxy holds
// no more than its copy buffers, and the server cannot run ahead of the
// client by more than the flow-control windows.
func TestSlowReaderBoundsMemory(t *testing.T) {
	b := startBackend(t, "a")
	p, addr := startProxy(t, proxy.NewRoundRobin(endpointsOf(b)))
	// A fixed 64 KiB window on the client (no BDP growth).
	client := dial(t, addr, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	const n, size = 10000, 1024
	params := make([]*testgrpc.ResponseParameters, n)
	for i := range params {
		params[i] = &testgrpc.ResponseParameters{Size: size}
	}
	stream, err := client.FullDuplexCall(ctxTimeout(t, 60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&testgrpc.StreamingOutputCallRequest{ResponseParameters: params}); err != nil {
		t.Fatal(err)
	}
	read := 0
	for ; read < 100; read++ {
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	// Let the server run until flow control stops it.
	waitStable(t, func() int64 { return b.sent.Load() })
	ahead := b.sent.Load() - int64(read)
	t.Logf("paused client: server %d messages (%d KiB) ahead", ahead, ahead*size>>10)
	// Windows on the path: client 64 KiB, proxy downstream stream window
	// plus copy buffer, proxy upstream stream window, server's own
	// write quota. 2 MiB is generous; an unbounded proxy lets all 10 MB
	// through.
	if ahead*size > 2<<20 {
		t.Fatalf("server ran %d messages (%d KiB) ahead of a paused client", ahead, ahead*size>>10)
	}
	for ; read < n; read++ {
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("message %d: %v", read, err)
		}
	}
	stream.CloseSend()
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatal(err)
	}
	t.Logf("proxy buffered peak: %d bytes", p.Stats().BufferedPeak)
	if peak := p.Stats().BufferedPeak; peak > 2*32<<10 {
		t.Fatalf("proxy held %d bytes at peak, want at most two copy buffers (64 KiB)", peak)
	}
}

// waitStable waits until v stops changing (a process settling).
func waitStable(t *testing.T, v func() int64) {
	t.Helper()
	last, same := v(), 0
	deadline := time.Now().Add(10 * time.Second)
	for same < 20 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		if cur := v(); cur == last {
			same++
		} else {
			last, same = cur, 0
		}
	}
}

// A backend killed between calls costs no call while another is up.
func TestBackendKilledBetweenCalls(t *testing.T) {
	a, b := startBackend(t, "a"), startBackend(t, "b")
	p, addr := startProxy(t, proxy.NewRoundRobin(endpointsOf(a, b)))
	client := dial(t, addr)
	for i := 0; i < 10; i++ {
		if _, err := client.UnaryCall(ctxTimeout(t, 5*time.Second), &testgrpc.SimpleRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	a.srv.Stop() // hard: connections closed, listener gone
	for i := 0; i < 100; i++ {
		resp, err := client.UnaryCall(ctxTimeout(t, 5*time.Second), &testgrpc.SimpleRequest{})
		if err != nil {
			t.Fatalf("call %d after backend a died: %v", i, err)
		}
		if resp.GetHostname() != "b" {
			t.Fatalf("call %d answered by %s", i, resp.GetHostname())
		}
	}
	if p.Stats().Retries == 0 {
		t.Fatal("no transparent retry recorded, yet a dead endpoint was in rotation")
	}
}

// A backend that goes away gracefully (GOAWAY) lets its in-flight call
// finish, and new calls go elsewhere without failing.
func TestGoAwayFromBackend(t *testing.T) {
	a, b := startBackend(t, "a"), startBackend(t, "b")
	_, addr := startProxy(t, proxy.NewRoundRobin(endpointsOf(a, b)))
	client := dial(t, addr)
	// Warm both upstream connections.
	for i := 0; i < 4; i++ {
		if _, err := client.UnaryCall(ctxTimeout(t, 5*time.Second), &testgrpc.SimpleRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	// A slow call in flight on a.
	var inflight error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			ctx := metadata.AppendToOutgoingContext(ctxTimeout(t, 10*time.Second), "x-sleep", "300ms")
			resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
			if err != nil || resp.GetHostname() == "a" {
				inflight = err
				return
			}
		}
	}()
	eventually(t, "a slow call on a", func() bool { return a.calls.Load() >= 3 })
	go a.srv.GracefulStop()
	for i := 0; i < 100; i++ {
		if _, err := client.UnaryCall(ctxTimeout(t, 5*time.Second), &testgrpc.SimpleRequest{}); err != nil {
			t.Fatalf("call %d during a's GOAWAY: %v", i, err)
		}
	}
	wg.Wait()
	if inflight != nil {
		t.Fatalf("in-flight call on the departing backend failed: %v", inflight)
	}
}

// A reset from upstream mid-stream reaches the client as an error with
// the reset's meaning, never a hang or a clean end.
func TestUpstreamResetMidStream(t *testing.T) {
	h2 := startRawH2Backend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/grpc")
		w.WriteHeader(200)
		w.Write(grpcFrame(nil)) // one (empty) message
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // RST_STREAM
	})
	_, addr := startProxy(t, proxy.NewRoundRobin(endpointsOf(h2)))
	client := dial(t, addr)
	stream, err := client.StreamingOutputCall(ctxTimeout(t, 5*time.Second), &testgrpc.StreamingOutputCallRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("first message: %v", err)
	}
	_, err = stream.Recv()
	if err == nil || err == io.EOF || status.Code(err) == codes.OK {
		t.Fatalf("after upstream reset: got %v, want an error status", err)
	}
}

// Shutdown sends GOAWAY, lets in-flight calls finish, and refuses new
// connections.
func TestGracefulShutdown(t *testing.T) {
	b := startBackend(t, "a")
	p, addr := startProxy(t, proxy.NewRoundRobin(endpointsOf(b)))
	client := dial(t, addr)
	errc := make(chan error, 1)
	go func() {
		ctx := metadata.AppendToOutgoingContext(ctxTimeout(t, 10*time.Second), "x-sleep", "300ms")
		_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		errc <- err
	}()
	eventually(t, "call in flight", func() bool { return b.calls.Load() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("in-flight call during drain: %v", err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("proxy still accepts connections after shutdown")
	}
}

// HTTP/1.1 clients are balanced per request too, and bytes that are not
// HTTP are relayed as opaque TCP.
func TestHTTP1AndOpaqueTCP(t *testing.T) {
	h2 := startRawH2Backend(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello "+r.URL.Path)
	})
	_, addr := startProxy(t, proxy.NewRoundRobin(endpointsOf(h2)))
	resp, err := http.Get("http://" + addr + "/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "hello /x" {
		t.Fatalf("HTTP/1.1: %d %q", resp.StatusCode, body)
	}

	echo := startEcho(t)
	_, addr = startProxy(t, proxy.NewRoundRobin(endpointsOf(echo)))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("\x16\x03\x01 not http\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "\x16\x03\x01 not http\n" {
		t.Fatalf("opaque TCP echo: %q %v", line, err)
	}
}

// --- helpers for raw HTTP/2 ---

type rawFrame struct {
	typ       http2.FrameType
	endStream bool
	headers   map[string]string
	data      int
}

// rawGRPCCall sends one gRPC request (empty message) with the given extra
// headers over a hand-driven HTTP/2 connection and returns every frame of
// the response stream, so tests can check the exact framing.
func rawGRPCCall(t *testing.T, addr, path string, extra map[string]string) []rawFrame {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte(http2.ClientPreface))
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpackDecoder()
	fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpackEncoder(&hb)
	for _, kv := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", path}, {":authority", "test"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		enc(kv[0], kv[1])
	}
	for k, v := range extra {
		enc(k, v)
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
	fr.WriteData(1, true, grpcFrame(nil))
	var frames []rawFrame
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading response frames: %v (so far %+v)", err, frames)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID != 1 {
				continue
			}
			h := map[string]string{}
			for _, hf := range f.Fields {
				h[hf.Name] = hf.Value
			}
			frames = append(frames, rawFrame{typ: http2.FrameHeaders, endStream: f.StreamEnded(), headers: h})
			if f.StreamEnded() {
				return frames
			}
		case *http2.DataFrame:
			if f.StreamID != 1 {
				continue
			}
			frames = append(frames, rawFrame{typ: http2.FrameData, endStream: f.StreamEnded(), data: len(f.Data())})
			if f.StreamEnded() {
				return frames
			}
		case *http2.RSTStreamFrame:
			t.Fatalf("stream reset: %v (frames %+v)", f.ErrCode, frames)
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY: %v", f.ErrCode)
		}
	}
}

func grpcFrame(msg []byte) []byte {
	b := make([]byte, 5+len(msg))
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	copy(b[5:], msg)
	return b
}

// startRawH2Backend serves handler over h2c with prior knowledge.
func startRawH2Backend(t testing.TB, handler http.HandlerFunc) *backend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	protos.SetHTTP1(true)
	srv := &http.Server{Handler: handler, Protocols: &protos}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	b := &backend{name: "raw"}
	b.addr = mustAddrPort(l.Addr().String())
	return b
}

func startEcho(t testing.TB) *backend {
	return startTCPBackend(t, "echo", func(c net.Conn) { io.Copy(c, c) })
}

// startTCPBackend accepts connections on loopback and hands each to serve
// in its own goroutine, closing it when serve returns.
func startTCPBackend(t testing.TB, name string, serve func(net.Conn)) *backend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); serve(c) }()
		}
	}()
	return &backend{name: name, addr: mustAddrPort(l.Addr().String())}
}

func mustConn(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecureCreds()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

var _ = errors.New
var _ = strings.Contains

// A stream the endpoint refuses (REFUSED_STREAM) never reached its
// application: it is retried on another endpoint, transparently.
func TestRetryOnRefusedStream(t *testing.T) {
	refusing := startRefusingBackend(t)
	good := startBackend(t, "good")
	p, addr := startProxy(t, proxy.NewRoundRobin(endpointsOf(refusing, good)))
	client := dial(t, addr)
	for i := 0; i < 20; i++ {
		resp, err := client.UnaryCall(ctxTimeout(t, 5*time.Second), &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("body to replay")}})
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if resp.GetHostname() != "good" {
			t.Fatalf("call %d answered by %q", i, resp.GetHostname())
		}
	}
	if r := p.Stats().Retries; r < 5 {
		t.Fatalf("%d retries; round robin should have sent about half the calls to the refusing endpoint first", r)
	}
}

// Once response headers arrived the call is committed (gRPC A6): a reset
// after that is not retried.
func TestNoRetryAfterResponseHeaders(t *testing.T) {
	var calls atomic.Int64
	resetting := startRawH2Backend(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/grpc")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	})
	good := startBackend(t, "good")
	p, addr := startProxy(t, proxy.NewRoundRobin(endpointsOf(resetting, good)))
	client := dial(t, addr)
	_, err := client.UnaryCall(ctxTimeout(t, 5*time.Second), &testgrpc.SimpleRequest{})
	if err == nil {
		t.Fatal("a call reset after its response headers succeeded: it was retried")
	}
	if calls.Load() != 1 || good.calls.Load() != 0 || p.Stats().Retries != 0 {
		t.Fatalf("resetting endpoint %d calls, good endpoint %d, retries %d; want 1, 0, 0", calls.Load(), good.calls.Load(), p.Stats().Retries)
	}
}

// startRefusingBackend speaks just enough HTTP/2 to refuse every stream.
func startRefusingBackend(t *testing.T) *backend {
	return startFrameEndpoint(t, "refusing", func(c net.Conn, fr *http2.Framer) {
		readFrames(fr, nil, func(f http2.Frame) bool {
			if f, ok := f.(*http2.MetaHeadersFrame); ok {
				fr.WriteRSTStream(f.StreamID, http2.ErrCodeRefusedStream)
			}
			return true
		})
	})
}
