package proxy_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/zonelb/zonelb/proxy"
)

// rawH2Conn opens an HTTP/2 connection that the test drives frame by frame,
// reading everything the proxy sends in the background (a client that keeps
// reading is what the flood guard must still catch).
func rawH2Conn(t *testing.T, addr string) (*http2.Framer, <-chan struct{}) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte(http2.ClientPreface))
	fr := http2.NewFramer(c, nil)
	fr.WriteSettings()
	closed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, c)
		close(closed)
	}()
	return fr, closed
}

func TestFloodGuardClosesPingFlood(t *testing.T) {
	b := startBackend(t, "a")
	p, addr := startProxy(t, proxy.NewRoundRobin(endpointsOf(b)))
	fr, closed := rawH2Conn(t, addr)
	for i := 0; i < 5000; i++ {
		if err := fr.WritePing(false, [8]byte{byte(i)}); err != nil {
			break // closed under us: the guard worked
		}
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("connection flooding PINGs was not closed")
	}
	if p.Stats().FloodsClosed != 1 {
		t.Fatalf("FloodsClosed = %d, want 1", p.Stats().FloodsClosed)
	}
}

func TestFloodGuardClosesRapidReset(t *testing.T) {
	b := startBackend(t, "a")
	p, addr := startProxy(t, proxy.NewRoundRobin(endpointsOf(b)))
	fr, closed := rawH2Conn(t, addr)
	var hb bytes.Buffer
	enc := hpackEncoder(&hb)
	for _, kv := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/grpc.testing.TestService/EmptyCall"}, {":authority", "t"}, {"content-type", "application/grpc"}} {
		enc(kv[0], kv[1])
	}
	for id := uint32(1); id < 2*1000; id += 2 {
		if fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true}) != nil ||
			fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
			break
		}
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("connection resetting every stream was not closed")
	}
	if p.Stats().FloodsClosed != 1 {
		t.Fatalf("FloodsClosed = %d, want 1", p.Stats().FloodsClosed)
	}
}

// A client that stops reading cannot hold a stream forever: the blocked
// write is cut after StalledWriteTimeout and the upstream call cancelled.
func TestStalledReaderIsReset(t *testing.T) {
	b := startBackend(t, "a")
	_, addr := startProxy(t, proxy.NewRoundRobin(endpointsOf(b)), func(c *proxy.Config) {
		c.StalledWriteTimeout = 200 * time.Millisecond
	})
	client := dial(t, addr, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	params := make([]*testgrpc.ResponseParameters, 2000)
	for i := range params {
		params[i] = &testgrpc.ResponseParameters{Size: 1024}
	}
	stream, err := client.StreamingOutputCall(ctxTimeout(t, 30*time.Second), &testgrpc.StreamingOutputCallRequest{ResponseParameters: params})
	if err != nil {
		t.Fatal(err)
	}
	// Never read: the server fills the windows, the proxy's write blocks.
	eventually(t, "the stalled call to be cancelled upstream", func() bool { return b.canceled.Load() >= 1 || sendFailed(b) })
	for {
		if _, err := stream.Recv(); err != nil {
			if status.Code(err) == codes.OK {
				t.Fatalf("stalled stream ended cleanly: %v", err)
			}
			break
		}
	}
}

// sendFailed reports whether the backend's streaming send loop ended
// early (its stream was cancelled while sending).
func sendFailed(b *backend) bool {
	return b.sent.Load() > 0 && b.sent.Load() < 2000 && b.streamErrs.Load() > 0
}

// A legitimate client is never taken for a flood: a long server stream of
// tiny messages, read by a default grpc-go client (which answers data with
// BDP pings and window updates), and many small unary calls.
func TestFloodGuardSparesLegitimateClients(t *testing.T) {
	b := startBackend(t, "a")
	p, addr := startProxy(t, proxy.NewRoundRobin(endpointsOf(b)))
	client := dial(t, addr)
	// Paced, so that every message arrives alone and the client answers
	// each with control frames (a watch stream), then a burst.
	params := make([]*testgrpc.ResponseParameters, 23000)
	for i := range params {
		params[i] = &testgrpc.ResponseParameters{Size: 8}
		if i < 3000 {
			params[i].IntervalUs = 200
		}
	}
	stream, err := client.StreamingOutputCall(ctxTimeout(t, 60*time.Second), &testgrpc.StreamingOutputCallRequest{ResponseParameters: params})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		_, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d messages: %v", n, err)
		}
		n++
	}
	for i := 0; i < 2000; i++ {
		if _, err := client.EmptyCall(ctxTimeout(t, 5*time.Second), &testgrpc.Empty{}); err != nil {
			t.Fatalf("unary %d: %v", i, err)
		}
	}
	// 600 streams cancelled by the client after their first message (a
	// client giving up on a watch): resets of answered streams are not a
	// rapid-reset attack. On a connection of their own, so that they are
	// all of its streams.
	watcher := dial(t, addr)
	for i := 0; i < 600; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		s, err := watcher.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{ResponseParameters: []*testgrpc.ResponseParameters{{Size: 8}, {Size: 8, IntervalUs: 1e6}}})
		if err == nil {
			_, err = s.Recv()
		}
		cancel()
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	if p.Stats().FloodsClosed != 0 {
		t.Fatalf("flood guard closed %d legitimate connections", p.Stats().FloodsClosed)
	}
}
