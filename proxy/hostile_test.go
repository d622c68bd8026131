package proxy_test

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/zonelb/zonelb/proxy"
	"github.com/zonelb/zonelb/zone"
)

// Hostile peers on both sides: what one abusive client or endpoint can
// cost the proxy, and that everyone else is unharmed.

// rawEndpoint is an HTTP/2 server driven frame by frame: it answers every
// request with respBytes of DATA as fast as the proxy's flow-control
// windows allow, and counts the DATA bytes it wrote.
type rawEndpoint struct {
	addr      netip.AddrPort
	respBytes int
	sent      atomic.Int64
	requests  atomic.Int64
}

func startRawEndpoint(t *testing.T, respBytes int) *rawEndpoint {
	e := &rawEndpoint{respBytes: respBytes}
	e.addr = startFrameEndpoint(t, "raw-endpoint", e.serve).addr
	return e
}

func (e *rawEndpoint) serve(c net.Conn, fr *http2.Framer) {
	var mu sync.Mutex // guards writes and the state below
	cond := sync.NewCond(&mu)
	connWin, initWin := int64(65535), int64(65535)
	streamWin := map[uint32]int64{}
	pending := map[uint32]int{}
	closed := false
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)

	go func() { // writer: DATA within the windows
		buf := make([]byte, 16384)
		mu.Lock()
		defer mu.Unlock()
		for !closed {
			wrote := false
			for id, left := range pending {
				n := min(int64(left), 16384, connWin, streamWin[id])
				if n <= 0 {
					continue
				}
				end := int(n) == left
				if fr.WriteData(id, end, buf[:n]) != nil {
					return
				}
				e.sent.Add(n)
				connWin -= n
				streamWin[id] -= n
				pending[id] = left - int(n)
				if end {
					delete(pending, id)
				}
				wrote = true
			}
			if !wrote {
				cond.Wait()
			}
		}
	}()
	defer func() {
		mu.Lock()
		closed = true
		cond.Broadcast()
		mu.Unlock()
	}()
	readFrames(fr, &mu, func(f http2.Frame) bool {
		mu.Lock()
		defer mu.Unlock()
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if v, ok := f.Value(http2.SettingInitialWindowSize); ok && !f.IsAck() {
				for id := range streamWin {
					streamWin[id] += int64(v) - initWin
				}
				initWin = int64(v)
			}
		case *http2.MetaHeadersFrame:
			e.requests.Add(1)
			hb.Reset()
			enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
			enc.WriteField(hpack.HeaderField{Name: "content-type", Value: "application/octet-stream"})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.StreamID, BlockFragment: hb.Bytes(), EndHeaders: true})
			streamWin[f.StreamID] = initWin
			pending[f.StreamID] = e.respBytes
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				connWin += int64(f.Increment)
			} else {
				streamWin[f.StreamID] += int64(f.Increment)
			}
		case *http2.RSTStreamFrame:
			delete(pending, f.StreamID)
		}
		cond.Broadcast()
		return true
	})
}

// startFrameEndpoint runs on loopback an HTTP/2 endpoint that a test
// plays frame by frame: on each connection it reads the client preface,
// sends SETTINGS, and hands serve a Framer on the connection that decodes
// header blocks.
func startFrameEndpoint(t testing.TB, name string, serve func(c net.Conn, fr *http2.Framer)) *backend {
	return startTCPBackend(t, name, func(c net.Conn) {
		if _, err := io.ReadFull(c, make([]byte, len(http2.ClientPreface))); err != nil {
			return
		}
		fr := http2.NewFramer(c, c)
		fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		if fr.WriteSettings() == nil {
			serve(c, fr)
		}
	})
}

// readFrames is the read loop of a peer played frame by frame: it hands
// fr's frames to handle until the connection fails or handle returns
// false, and after handle it answers what every HTTP/2 peer must: SETTINGS
// with an ACK, a PING with its ACK. wmu, if not nil, is held around those
// writes, for peers that write from another goroutine too (a Framer's
// writes must not overlap); it is not held while handle runs.
func readFrames(fr *http2.Framer, wmu sync.Locker, handle func(http2.Frame) bool) {
	for {
		f, err := fr.ReadFrame()
		if err != nil || !handle(f) {
			return
		}
		var answer func() error
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				answer = fr.WriteSettingsAck
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				answer = func() error { return fr.WritePing(true, f.Data) }
			}
		}
		if answer == nil {
			continue
		}
		if wmu != nil {
			wmu.Lock()
		}
		answer()
		if wmu != nil {
			wmu.Unlock()
		}
	}
}

// h2cGet fetches url over h2c with prior knowledge and returns the body
// length.
func h2cGet(t *testing.T, url string) int64 {
	t.Helper()
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: &http.Transport{Protocols: &protos}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v after %d bytes", url, err, n)
	}
	return n
}

// rawClient opens an HTTP/2 connection to addr with the given settings and
// counts the DATA bytes it receives (never returning window).
type rawClient struct {
	c      net.Conn
	fr     *http2.Framer
	mu     sync.Mutex
	hb     bytes.Buffer
	enc    *hpack.Encoder
	data   atomic.Int64
	codes  chan http2.ErrCode // GOAWAY codes
	closed chan struct{}
	status chan string // :status of response headers
}

func newRawClient(t *testing.T, addr string, settings ...http2.Setting) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	rc := &rawClient{c: c, codes: make(chan http2.ErrCode, 1), closed: make(chan struct{}), status: make(chan string, 16)}
	rc.fr = http2.NewFramer(c, c)
	rc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	rc.enc = hpack.NewEncoder(&rc.hb)
	c.Write([]byte(http2.ClientPreface))
	rc.fr.WriteSettings(settings...)
	go func() {
		defer close(rc.closed)
		readFrames(rc.fr, &rc.mu, rc.frame)
	}()
	return rc
}

// frame takes one frame from the proxy (readFrames answers SETTINGS).
func (rc *rawClient) frame(f http2.Frame) bool {
	switch f := f.(type) {
	case *http2.DataFrame:
		rc.data.Add(int64(len(f.Data())))
	case *http2.MetaHeadersFrame:
		for _, hf := range f.Fields {
			if hf.Name == ":status" {
				select {
				case rc.status <- hf.Value:
				default:
				}
			}
		}
	case *http2.GoAwayFrame:
		select {
		case rc.codes <- f.ErrCode:
		default:
		}
	}
	return true
}

func (rc *rawClient) block(kv ...string) []byte {
	rc.hb.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		rc.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return append([]byte(nil), rc.hb.Bytes()...)
}

func (rc *rawClient) get(id uint32, end bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, EndStream: end, EndHeaders: true,
		BlockFragment: rc.block(":method", "GET", ":scheme", "http", ":path", "/", ":authority", "x")})
}

// waitClosed waits for the proxy to close the connection.
func (rc *rawClient) waitClosed(t *testing.T, what string) {
	t.Helper()
	select {
	case <-rc.closed:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: connection not closed", what)
	}
}

// A client that announces a zero stream window and never opens it pulls
// at most one stream window (64 KiB) from the endpoint, counted in bytes
// the endpoint wrote; the proxy holds no more than that; and another
// client, on the same upstream connection, gets its full response
// meanwhile.
func TestZeroWindowReaderPullsAtMostOneWindow(t *testing.T) {
	ep := startRawEndpoint(t, 4<<20)
	p, addr := startProxy(t, proxy.NewRoundRobin([]zone.Endpoint{{Addr: ep.addr, Ready: true, Serving: true}}))
	rc := newRawClient(t, addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	rc.get(1, true)
	eventually(t, "the endpoint to answer", func() bool { return ep.requests.Load() == 1 })
	waitStable(t, ep.sent.Load)
	pulled, held := ep.sent.Load(), p.Stats().BufferedBytes
	t.Logf("zero-window reader: endpoint sent %d bytes, proxy holds %d, client got %d", pulled, held, rc.data.Load())
	if pulled > 64<<10 {
		t.Fatalf("a zero-window reader pulled %d bytes from the endpoint, want at most 64 KiB", pulled)
	}
	if held > 64<<10 || held != pulled {
		t.Fatalf("proxy holds %d bytes for the stalled stream (endpoint sent %d), want all of them and at most 64 KiB", held, pulled)
	}
	if rc.data.Load() != 0 {
		t.Fatalf("client with a zero window received %d bytes", rc.data.Load())
	}
	if n := h2cGet(t, "http://"+addr+"/"); n != 4<<20 {
		t.Fatalf("another client got %d bytes, want %d", n, 4<<20)
	}
	if p.Stats().UpstreamConns != 1 {
		t.Fatalf("%d upstream connections, want both streams on one", p.Stats().UpstreamConns)
	}
}

// Floods of cheap frames from a client that keeps reading: the connection
// gets GOAWAY(ENHANCE_YOUR_CALM) and is closed; a client next to it is
// unharmed.
func TestClientFloodsAreCut(t *testing.T) {
	ep := startRawEndpoint(t, 1024)
	eps := []zone.Endpoint{{Addr: ep.addr, Ready: true, Serving: true}}
	for _, tc := range []struct {
		name  string
		flood func(rc *rawClient, i int) error
	}{
		{"SETTINGS", func(rc *rawClient, i int) error { return rc.fr.WriteSettings() }},
		{"PING", func(rc *rawClient, i int) error { return rc.fr.WritePing(false, [8]byte{byte(i)}) }},
		{"WINDOW_UPDATE", func(rc *rawClient, i int) error { return rc.fr.WriteWindowUpdate(0, 1) }},
		{"PRIORITY", func(rc *rawClient, i int) error {
			return rc.fr.WritePriority(uint32(2*i+101), http2.PriorityParam{StreamDep: 1})
		}},
		{"empty DATA", func(rc *rawClient, i int) error { return rc.fr.WriteData(1, false, nil) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, addr := startProxy(t, proxy.NewRoundRobin(eps))
			rc := newRawClient(t, addr)
			rc.get(1, false) // a stream for the empty DATA
			for i := 0; i < 20000; i++ {
				rc.mu.Lock()
				err := tc.flood(rc, i)
				rc.mu.Unlock()
				if err != nil {
					break
				}
			}
			rc.waitClosed(t, tc.name+" flood")
			select {
			case code := <-rc.codes:
				if code != http2.ErrCodeEnhanceYourCalm {
					t.Fatalf("GOAWAY %v, want ENHANCE_YOUR_CALM", code)
				}
			default:
				t.Fatal("closed without GOAWAY")
			}
			if got := p.Stats().FloodsClosed; got != 1 {
				t.Fatalf("FloodsClosed = %d, want 1", got)
			}
			if n := h2cGet(t, "http://"+addr+"/"); n != 1024 {
				t.Fatalf("client next to the flood got %d bytes", n)
			}
		})
	}
}

// A header block that never ends (a CONTINUATION flood, empty frames that
// cost nothing in header size) is cut after a bounded number of bytes.
func TestContinuationFloodIsCut(t *testing.T) {
	ep := startRawEndpoint(t, 1024)
	p, addr := startProxy(t, proxy.NewRoundRobin([]zone.Endpoint{{Addr: ep.addr, Ready: true, Serving: true}}))
	rc := newRawClient(t, addr)
	rc.mu.Lock()
	rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndHeaders: false,
		BlockFragment: rc.block(":method", "GET", ":scheme", "http", ":path", "/", ":authority", "x")})
	sent := 0
	for i := 0; i < 1_000_000; i++ {
		if rc.fr.WriteContinuation(1, false, nil) != nil {
			break
		}
		sent += 9
	}
	rc.mu.Unlock()
	rc.waitClosed(t, "CONTINUATION flood")
	t.Logf("connection closed after the client wrote %d bytes of empty CONTINUATION frames", sent)
	if sent > 4<<20 {
		t.Fatalf("proxy read %d bytes of one header block", sent)
	}
	if p.Stats().FloodsClosed != 1 || ep.requests.Load() != 0 {
		t.Fatalf("FloodsClosed %d, endpoint requests %d; want 1, 0", p.Stats().FloodsClosed, ep.requests.Load())
	}
	if n := h2cGet(t, "http://"+addr+"/"); n != 1024 {
		t.Fatalf("client next to the flood got %d bytes", n)
	}
}

// An HPACK bomb (one large dynamic-table entry referenced by one-byte
// indexes) decodes past the header list limit: the request is refused
// (431) without reaching an endpoint, and the connection stays usable.
func TestHPACKBombIsRefused(t *testing.T) {
	ep := startRawEndpoint(t, 1024)
	_, addr := startProxy(t, proxy.NewRoundRobin([]zone.Endpoint{{Addr: ep.addr, Ready: true, Serving: true}}))
	rc := newRawClient(t, addr)
	kv := []string{":method", "GET", ":scheme", "http", ":path", "/", ":authority", "x"}
	big := string(bytes.Repeat([]byte("b"), 4000))
	for i := 0; i < 1000; i++ { // 1000 x 4 KB decoded, ~1 KB on the wire
		kv = append(kv, "x-bomb", big)
	}
	rc.mu.Lock()
	block := rc.block(kv...)
	rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndStream: true, EndHeaders: true, BlockFragment: block})
	rc.mu.Unlock()
	t.Logf("bomb: %d bytes on the wire, %d decoded", len(block), 1000*(len(big)+6))
	select {
	case st := <-rc.status:
		if st != "431" {
			t.Fatalf("bomb answered %s, want 431", st)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer to the HPACK bomb")
	}
	if ep.requests.Load() != 0 {
		t.Fatal("the bomb reached the endpoint")
	}
	rc.get(3, true)
	eventually(t, "the next request on the connection", func() bool { return rc.data.Load() == 1024 })
}

// observer records the outcome of the last request per endpoint.
type observer struct {
	mu  sync.Mutex
	out map[netip.AddrPort]zone.Outcome
}

func (o *observer) ObserveRequest(ri proxy.RequestInfo) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.out == nil {
		o.out = map[netip.AddrPort]zone.Outcome{}
	}
	if ri.Endpoint != nil {
		o.out[ri.Endpoint.Addr] = ri.Outcome
	}
}

func (o *observer) outcome(a netip.AddrPort) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	v, ok := o.out[a]
	if !ok {
		return -1
	}
	return int(v)
}

// An endpoint that goes silent (no FIN, no RST, no answer, not even to
// PING) is found out by the keepalive: its connection is closed and the
// call on it fails instead of hanging.
func TestSilentEndpointIsClosed(t *testing.T) {
	silent := startFrameEndpoint(t, "silent", func(c net.Conn, _ *http2.Framer) {
		io.Copy(io.Discard, c) // reads everything, answers nothing
	})
	p, addr := startProxy(t, proxy.NewRoundRobin(endpointsOf(silent)), func(c *proxy.Config) {
		c.UpstreamPingInterval = 20 * time.Millisecond
	})
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: &http.Transport{Protocols: &protos}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("call to a silent endpoint: status %d, want 502", resp.StatusCode)
	}
	if p.Stats().ActiveRequests != 0 {
		t.Fatalf("%d requests still in flight", p.Stats().ActiveRequests)
	}
}

// statsAtObserve records Proxy.Stats as an Observer sees it, for each
// finished request.
type statsAtObserve struct {
	p  atomic.Pointer[proxy.Proxy]
	mu sync.Mutex
	at []proxy.Stats
}

func (o *statsAtObserve) ObserveRequest(proxy.RequestInfo) {
	st := o.p.Load().Stats()
	o.mu.Lock()
	o.at = append(o.at, st)
	o.mu.Unlock()
}

// The Observer is told of a request once Stats no longer counts it:
// tests (and metrics) that read Stats on seeing a request end must not
// find it still active, nor, on HTTP/2, its bytes still held. It was told first, and
// TestAbusiveEndpointsAreCut, which reads Stats as soon as the abusive
// call is observed, failed now and then with "2 requests active".
func TestObserverSeesRequestGoneFromStats(t *testing.T) {
	good := startRawEndpoint(t, 100_000)
	var obs statsAtObserve
	p, addr := startProxy(t, proxy.NewRoundRobin([]zone.Endpoint{{Addr: good.addr, Ready: true, Serving: true}}),
		func(c *proxy.Config) { c.Observer = &obs })
	obs.p.Store(p)
	if n := h2cGet(t, "http://"+addr+"/"); n != 100_000 {
		t.Fatalf("HTTP/2 GET: %d bytes", n)
	}
	resp, err := http.Get("http://" + addr + "/") // HTTP/1.1
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if n != 100_000 {
		t.Fatalf("HTTP/1.1 GET: %d bytes", n)
	}
	eventually(t, "both requests to be observed", func() bool {
		obs.mu.Lock()
		defer obs.mu.Unlock()
		return len(obs.at) == 2
	})
	// HTTP/2: nothing of the request left. HTTP/1.1: what its writer
	// has still to send the client stays held (and counted) after the
	// exchange ended; the request is no longer active.
	if st := obs.at[0]; st.ActiveRequests != 0 || st.BufferedBytes != 0 {
		t.Errorf("HTTP/2 request observed while Stats counts %d active, %d bytes held; want 0, 0", st.ActiveRequests, st.BufferedBytes)
	}
	if st := obs.at[1]; st.ActiveRequests != 0 {
		t.Errorf("HTTP/1.1 request observed while Stats counts %d active; want 0", st.ActiveRequests)
	}
}
