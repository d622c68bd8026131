package proxy_test

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/zonelb/zonelb/internal/testenv"
	"github.com/zonelb/zonelb/internal/testservice"
	"github.com/zonelb/zonelb/proxy"
	"github.com/zonelb/zonelb/zone"
)

// backend is a gRPC test server on loopback (internal/testservice) whose
// behaviour the request steers: metadata "x-sleep" delays the answer until
// then or cancellation, ResponseStatus makes it fail, "x-echo-bin" is
// echoed as header and trailer.
type backend struct {
	name string
	addr netip.AddrPort
	srv  *testservice.Server

	calls       atomic.Int64
	sent        atomic.Int64 // streaming responses sent
	canceled    atomic.Int64 // calls that saw their context end early
	streamErrs  atomic.Int64 // streaming sends that failed
	sawDeadline atomic.Int64 // remaining time (ns) the last call's context carried, -1 if none
}

func startBackend(t testing.TB, name string) *backend {
	t.Helper()
	b := &backend{name: name}
	srv, err := testservice.Start("127.0.0.1:0", testservice.Options{Name: name, OnCall: b.observe, OnSend: b.onSend})
	if err != nil {
		t.Fatal(err)
	}
	b.srv, b.addr = srv, netip.MustParseAddrPort(srv.Addr())
	t.Cleanup(srv.Stop)
	return b
}

func (b *backend) onSend(err error) {
	if err != nil {
		b.streamErrs.Add(1)
		return
	}
	b.sent.Add(1)
}

func (b *backend) observe(ctx context.Context) error {
	b.calls.Add(1)
	if dl, ok := ctx.Deadline(); ok {
		b.sawDeadline.Store(int64(time.Until(dl)))
	} else {
		b.sawDeadline.Store(-1)
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("x-echo-bin"); len(v) > 0 {
		grpc.SetHeader(ctx, metadata.Pairs("x-echo-bin", v[0]))
		grpc.SetTrailer(ctx, metadata.Pairs("x-echo-bin", v[0]))
	}
	if v := md.Get("x-sleep"); len(v) > 0 {
		d, _ := time.ParseDuration(v[0])
		select {
		case <-time.After(d):
		case <-ctx.Done():
			b.canceled.Add(1)
			return ctx.Err()
		}
	}
	return nil
}

// startProxy runs a proxy on loopback in front of the given picker and
// returns its address.
func startProxy(t testing.TB, picker proxy.Picker, mutate ...func(*proxy.Config)) (*proxy.Proxy, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startProxyOn(t, l, picker, mutate...)
}

// startProxyOn is startProxy on the listener l.
func startProxyOn(t testing.TB, l net.Listener, picker proxy.Picker, mutate ...func(*proxy.Config)) (*proxy.Proxy, string) {
	t.Helper()
	cfg := proxy.Config{
		Router: proxy.StaticRouter{Service: "test", Picker: picker},
		Logger: testLogger(t),
	}
	for _, m := range mutate {
		m(&cfg)
	}
	p, err := proxy.New(cfg)
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	go p.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	return p, l.Addr().String()
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("ZONELB_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func endpointsOf(bs ...*backend) []zone.Endpoint {
	eps := make([]zone.Endpoint, len(bs))
	for i, b := range bs {
		eps[i] = zone.Endpoint{Addr: b.addr, Zone: "zone-" + strconv.Itoa(i), Ready: true, Serving: true}
	}
	return eps
}

// dial opens ONE gRPC client connection to addr.
func dial(t testing.TB, addr string, opts ...grpc.DialOption) testgrpc.TestServiceClient {
	t.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return testgrpc.NewTestServiceClient(cc)
}

// eventually polls cond until it holds or the bounded wait ends. Only for
// state that real processes or kernels must settle.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, 5*time.Second, what, cond)
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
