package proxy_test

import (
	"bytes"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/zonelb/zonelb/proxy"
	"github.com/zonelb/zonelb/zone"
)

// PING acknowledgements ride with the next frames for their connection
// (pingack.go), and a quiet connection still gets its own.

// pingClient is an HTTP/2 client played frame by frame that reports the
// frames it reads, in order.
type pingClient struct {
	mu     sync.Mutex // around the Framer's writes
	fr     *http2.Framer
	hb     bytes.Buffer
	enc    *hpack.Encoder
	frames chan http2.Frame
}

func newPingClient(t *testing.T, addr string) *pingClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	pc := &pingClient{frames: make(chan http2.Frame, 64)}
	pc.fr = http2.NewFramer(c, c)
	pc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	pc.enc = hpack.NewEncoder(&pc.hb)
	c.Write([]byte(http2.ClientPreface))
	pc.fr.WriteSettings()
	go func() {
		defer close(pc.frames)
		for {
			f, err := pc.fr.ReadFrame()
			if err != nil {
				return
			}
			if sf, ok := f.(*http2.SettingsFrame); ok {
				if !sf.IsAck() {
					pc.mu.Lock()
					pc.fr.WriteSettingsAck()
					pc.mu.Unlock()
				}
				continue
			}
			pc.frames <- f
		}
	}()
	return pc
}

// next returns the next frame the proxy sent, SETTINGS aside.
func (pc *pingClient) next(t *testing.T) http2.Frame {
	t.Helper()
	f, ok := <-pc.frames
	if !ok {
		t.Fatal("the proxy closed the connection")
	}
	return f
}

// waitEnd reads frames until the end of the response on stream id.
func (pc *pingClient) waitEnd(t *testing.T, id uint32) {
	t.Helper()
	for !endsStream(pc.next(t), id) {
	}
}

// endsStream reports whether f is the last frame of stream id's response.
func endsStream(f http2.Frame, id uint32) bool {
	switch f := f.(type) {
	case *http2.DataFrame:
		return f.StreamID == id && f.StreamEnded()
	case *http2.MetaHeadersFrame:
		return f.StreamID == id && f.StreamEnded()
	}
	return false
}

// get sends a GET on stream id; ping, if not nil, goes just before it.
func (pc *pingClient) get(id uint32, ping *[8]byte) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	pc.hb.Reset()
	for _, kv := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "test"}, {":path", "/"}} {
		pc.enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	if ping != nil {
		pc.fr.WritePing(false, *ping)
	}
	pc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, EndStream: true, EndHeaders: true, BlockFragment: pc.hb.Bytes()})
}

// A PING's acknowledgement waits for the next frames to the client and
// leaves after them: sent with a request, it arrives after that request's
// response. Acknowledged at once, it would arrive first every time: the
// proxy handles the PING before it forwards the request. (A machine slow
// enough for the endpoint's answer to take longer than the read loop's
// backstop would see the acknowledgement first now and then; five tries.)
func TestPingAckRidesWithTheNextFrames(t *testing.T) {
	ep := startRawEndpoint(t, 100)
	_, addr := startProxy(t, proxy.NewRoundRobin([]zone.Endpoint{{Addr: ep.addr, Ready: true, Serving: true}}))
	pc := newPingClient(t, addr)
	pc.get(1, nil) // the connection's setup frames go out with the first answer
	pc.waitEnd(t, 1)
	for try, id := 0, uint32(3); try < 5; try, id = try+1, id+2 {
		data := [8]byte{'z', 'l', 'b', byte(try)}
		pc.get(id, &data)
		acked, responded, after := false, false, false
		for !acked || !responded {
			f := pc.next(t)
			if p, ok := f.(*http2.PingFrame); ok {
				if !p.IsAck() || p.Data != data {
					t.Fatalf("try %d: PING (ack %v) %q, want the acknowledgement of %q", try, p.IsAck(), p.Data, data)
				}
				acked, after = true, responded
			}
			responded = responded || endsStream(f, id)
		}
		if after {
			return
		}
		t.Logf("try %d: the acknowledgement came before the response", try)
	}
	t.Fatal("in 5 tries the PING acknowledgement never followed the response: it is not held for company")
}

// A PING on a connection with nothing else to carry its acknowledgement is
// acknowledged all the same (within the read loop's backstop): from a
// client, and from an endpoint on an upstream connection gone quiet.
func TestPingAckOnAQuietConnection(t *testing.T) {
	acked := make(chan [8]byte, 1)
	ep := startFrameEndpoint(t, "pinging-endpoint", func(c net.Conn, fr *http2.Framer) {
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		readFrames(fr, nil, func(f http2.Frame) bool {
			switch f := f.(type) {
			case *http2.MetaHeadersFrame:
				hb.Reset()
				enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.StreamID, BlockFragment: hb.Bytes(), EndHeaders: true, EndStream: true})
				fr.WritePing(false, [8]byte{'u', 'p'})
			case *http2.PingFrame:
				if f.IsAck() {
					acked <- f.Data
				}
			}
			return true
		})
	})
	_, addr := startProxy(t, proxy.NewRoundRobin(endpointsOf(ep)))
	pc := newPingClient(t, addr)
	pc.get(1, nil)
	pc.waitEnd(t, 1)
	data := [8]byte{'d', 'o', 'w', 'n'}
	pc.mu.Lock()
	pc.fr.WritePing(false, data)
	pc.mu.Unlock()
	for {
		if f, ok := pc.next(t).(*http2.PingFrame); ok {
			if !f.IsAck() || f.Data != data {
				t.Fatalf("PING (ack %v) %q, want the acknowledgement of %q", f.IsAck(), f.Data, data)
			}
			break
		}
	}
	select {
	case got := <-acked:
		if got != [8]byte{'u', 'p'} {
			t.Fatalf("the endpoint's PING was acknowledged with %q", got)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the endpoint's PING on a quiet upstream connection was never acknowledged")
	}
}
