package proxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/zonelb/zonelb/internal/testenv"
	"github.com/zonelb/zonelb/zone"
)

// The read loops take arbitrary bytes from the network: the client's read
// loop from any pod on the node, the endpoint's from any server. These
// targets feed them arbitrary bytes after a valid start and check that
// nothing panics, that every loop ends when its connection does, that no
// request stays in flight and that no goroutine outlives the proxy. `make
// test` runs each for a bounded time (see Makefile); the committed seed
// corpus (testdata/fuzz) runs with every plain `go test`.

// frames builds HTTP/2 frames with x/net's Framer.
type frames struct {
	buf bytes.Buffer
	fr  *http2.Framer
	hb  bytes.Buffer
	enc *hpack.Encoder
}

func newFrames() *frames {
	f := &frames{}
	f.fr = http2.NewFramer(&f.buf, nil)
	f.fr.AllowIllegalWrites = true
	f.enc = hpack.NewEncoder(&f.hb)
	return f
}

func (f *frames) block(kv ...string) []byte {
	f.hb.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		f.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return append([]byte(nil), f.hb.Bytes()...)
}

func (f *frames) headers(id uint32, end bool, kv ...string) *frames {
	f.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: f.block(kv...), EndStream: end, EndHeaders: true})
	return f
}

func (f *frames) bytes() []byte { return append([]byte(nil), f.buf.Bytes()...) }

var grpcRequest = []string{":method", "POST", ":scheme", "http", ":path", "/grpc.testing.TestService/UnaryCall", ":authority", "x", "content-type", "application/grpc", "te", "trailers", "grpc-timeout", "1S"}

// clientSeeds are what a client may send after the preface.
func clientSeeds() [][]byte {
	var seeds [][]byte
	f := newFrames()
	f.fr.WriteSettings()
	f.headers(1, false, grpcRequest...)
	f.fr.WriteData(1, true, []byte{0, 0, 0, 0, 2, 8, 1})
	seeds = append(seeds, f.bytes())

	f = newFrames()
	f.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
	f.headers(1, true, ":method", "GET", ":scheme", "http", ":path", "/", ":authority", "x")
	f.fr.WriteWindowUpdate(1, 100)
	f.fr.WriteWindowUpdate(0, 100)
	f.fr.WritePing(false, [8]byte{1})
	f.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	seeds = append(seeds, f.bytes())

	f = newFrames()
	f.fr.WriteSettings()
	f.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: f.block(grpcRequest...)[:5], EndHeaders: false})
	f.fr.WriteContinuation(3, false, []byte{0x40})
	f.fr.WriteContinuation(3, true, nil)
	f.fr.WritePriority(3, http2.PriorityParam{StreamDep: 3})
	f.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	seeds = append(seeds, f.bytes())

	f = newFrames()
	f.fr.WriteSettings()
	f.headers(1, false, grpcRequest...)
	f.fr.WriteDataPadded(1, false, []byte{0, 0, 0, 0, 0}, make([]byte, 10))
	f.headers(1, true, "x-trailer", "1")
	f.fr.WriteData(1, true, nil)
	seeds = append(seeds, f.bytes())
	return seeds
}

// serverSeeds are what an endpoint may answer to one gRPC request on
// stream 1.
func serverSeeds() [][]byte {
	var seeds [][]byte
	f := newFrames()
	f.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 10})
	f.headers(1, false, ":status", "200", "content-type", "application/grpc")
	f.fr.WriteData(1, false, []byte{0, 0, 0, 0, 0})
	f.headers(1, true, "grpc-status", "0")
	seeds = append(seeds, f.bytes())

	f = newFrames()
	f.fr.WriteSettings()
	f.fr.WriteRSTStream(1, http2.ErrCodeRefusedStream)
	f.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	seeds = append(seeds, f.bytes())

	f = newFrames()
	f.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	f.fr.WriteWindowUpdate(1, 1)
	f.fr.WritePing(false, [8]byte{})
	f.headers(1, true, ":status", "200", "content-type", "application/grpc", "grpc-status", "12")
	f.fr.WriteData(1, false, []byte{1})
	seeds = append(seeds, f.bytes())

	f = newFrames()
	f.fr.WriteSettings()
	f.headers(1, false, ":status", "100")
	f.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: f.block(":status", "200")[:1], EndHeaders: false})
	f.fr.WriteContinuation(1, true, nil)
	f.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, EndHeaders: true})
	seeds = append(seeds, f.bytes())
	return seeds
}

// startFuzzBackend serves h2c on loopback for the client-side target.
func startFuzzBackend(tb testing.TB) netip.AddrPort {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/grpc")
		w.Write([]byte{0, 0, 0, 0, 0})
		w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
	})}
	go srv.Serve(l)
	tb.Cleanup(func() { srv.Close() })
	return netip.MustParseAddrPort(l.Addr().String())
}

func fuzzProxy(tb testing.TB, ep netip.AddrPort) *Proxy {
	p, err := New(Config{
		Router:              StaticRouter{Service: "fuzz", Picker: NewRoundRobin([]zone.Endpoint{{Addr: ep, Ready: true, Serving: true}})},
		StalledWriteTimeout: 100 * time.Millisecond,
		DialTimeout:         time.Second,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// runClient plays a client that sends the preface and data, reads
// whatever comes back, and hangs up; it waits for the proxy's read loop to
// end and for no request to be left in flight. Over a socket (loopback
// TCP) the proxy reads with frameLoop, over net.Pipe with the Framer
// reading as it needs: the two paths of connReader.readFrames.
func runClient(t *testing.T, p *Proxy, data []byte, wait <-chan struct{}, socket bool) {
	start := time.Now()
	defer func() {
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("one input took %v", d)
		}
	}()
	c, s := net.Pipe()
	if socket {
		c, s = loopbackPair(t)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.serveH2(s, nil, newSockReader(s), p.cfg.Router.(StaticRouter).route())
	}()
	go io.Copy(io.Discard, c)
	c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	c.Write([]byte(http2.ClientPreface))
	c.Write(data)
	// Let what was sent play out a little, as a client that waits for
	// its answers would.
	if wait != nil {
		select {
		case <-wait:
		case <-time.After(5 * time.Second):
		}
	} else {
		time.Sleep(time.Millisecond)
	}
	c.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		buf := make([]byte, 1<<20)
		t.Fatalf("client read loop did not end after its connection closed\n%s", buf[:runtime.Stack(buf, true)])
	}
	testenv.WaitFor(t, 10*time.Second, "no request in flight", func() bool { return p.Stats().ActiveRequests == 0 })
}

func (r StaticRouter) route() Route { return Route(r) }

// checkNoLeak fails tb if a goroutine of the proxy's outlives it: one
// with a method of the package's types on its stack (the fuzzing
// framework's own goroutines come and go).
func checkNoLeak(tb testing.TB) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		leaked := proxyGoroutines()
		if leaked == "" {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("goroutines of the proxy outlived it:\n%s", leaked)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func proxyGoroutines() string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []byte
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte("zonelb/proxy.(*")) && !bytes.Contains(g, []byte("proxy.checkNoLeak")) {
			out = append(append(out, g...), "\n\n"...)
		}
	}
	return string(out)
}

func shutdown(tb testing.TB, p *Proxy) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.Shutdown(ctx)
}

// FuzzServerReadLoop: arbitrary bytes from a client after the preface.
func FuzzServerReadLoop(f *testing.F) {
	for _, s := range clientSeeds() {
		f.Add(s)
	}
	ep := startFuzzBackend(f)
	p := fuzzProxy(f, ep)
	f.Cleanup(func() {
		shutdown(f, p)
		checkNoLeak(f)
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		runClient(t, p, data, nil, false)
		runClient(t, p, data, nil, true)
	})
}

// FuzzClientReadLoop: arbitrary bytes from an endpoint answering one
// gRPC call.
func FuzzClientReadLoop(f *testing.F) {
	for _, s := range serverSeeds() {
		f.Add(s)
	}
	f.Cleanup(func() { checkNoLeak(f) })
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		served := make(chan struct{})
		go func() {
			defer close(served)
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			go io.Copy(io.Discard, c)
			c.Write(data)
			time.Sleep(time.Millisecond)
		}()
		p := fuzzProxy(t, netip.MustParseAddrPort(l.Addr().String()))
		req := newFrames()
		req.fr.WriteSettings()
		req.headers(1, false, grpcRequest...)
		req.fr.WriteData(1, true, []byte{0, 0, 0, 0, 0})
		runClient(t, p, req.bytes(), served, len(data)%2 == 0)
		shutdown(t, p)
		l.Close()
		<-served
	})
}
