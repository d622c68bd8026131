package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/zonelb/zonelb/proxy"
)

// The forwarding hot path, end to end on loopback: client, proxy and
// backend run in this process, so ns/op and allocs/op cover all three; a
// change in the proxy shows as a change here (compare with benchstat).
// The proxy's own cost beside real peers is `make bench`.

// BenchmarkForwardH2 forwards h2c GETs with a 1 KiB response, over one
// client connection.
func BenchmarkForwardH2(b *testing.B) {
	body := make([]byte, 1024)
	h2 := startRawH2Backend(b, func(w http.ResponseWriter, r *http.Request) { w.Write(body) })
	_, addr := startProxy(b, proxy.NewRoundRobin(endpointsOf(h2)))
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true) // h2c with prior knowledge, as gRPC clients speak
	client := &http.Client{Transport: &http.Transport{Protocols: &protos}}
	url := "http://" + addr + "/"
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		resp, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// BenchmarkForwardGRPCUnary forwards gRPC unary calls with 1 KiB each way,
// over one client connection.
func BenchmarkForwardGRPCUnary(b *testing.B) {
	be := startBackend(b, "a")
	_, addr := startProxy(b, proxy.NewRoundRobin(endpointsOf(be)))
	client := dial(b, addr)
	req := &testgrpc.SimpleRequest{ResponseSize: 1024, Payload: &testgrpc.Payload{Body: make([]byte, 1024)}}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := client.UnaryCall(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEngineUnary measures the engine's own cost per forwarded unary
// gRPC call (1 KiB each way, one client connection, calls one after
// another): the client and the endpoint are frame-level peers that replay
// pre-encoded frames and read into fixed buffers, so they allocate nothing
// per call. Their header blocks are what a warm HPACK encoder sends, as
// grpc-go's does: the first call's fields enter the dynamic table, later
// calls send one-byte indexes.
// The "direct" sub-benchmark runs the same client against the same
// endpoint without the proxy: its allocs/op is the harness's own (0); the
// "proxy" sub-benchmark's allocs/op is then the engine's, both hops and
// HPACK included.
func BenchmarkEngineUnary(b *testing.B) {
	ep := startReplayEndpoint(b)
	_, addr := startProxy(b, proxy.NewRoundRobin(endpointsOf(ep)))
	for _, tc := range []struct{ name, addr string }{{"direct", ep.addr.String()}, {"proxy", addr}} {
		b.Run(tc.name, func(b *testing.B) {
			c := newReplayClient(b, tc.addr)
			c.call(b) // warm the connections up
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				c.call(b)
			}
		})
	}
}

// frame appends an HTTP/2 frame to dst (the harness's own frames; the
// engine builds its frames with x/net's Framer).
func frame(dst []byte, typ, flags byte, id uint32, payload []byte) []byte {
	n := len(payload)
	dst = append(dst, byte(n>>16), byte(n>>8), byte(n), typ, flags, byte(id>>24), byte(id>>16), byte(id>>8), byte(id))
	return append(dst, payload...)
}

// setID rewrites the stream id of every frame in frames.
func setID(frames []byte, id uint32) {
	for len(frames) >= 9 {
		n := int(frames[0])<<16 | int(frames[1])<<8 | int(frames[2])
		if frames[3] != 0x8 || binary.BigEndian.Uint32(frames[5:]) != 0 { // not a connection WINDOW_UPDATE
			binary.BigEndian.PutUint32(frames[5:], id)
		}
		frames = frames[9+n:]
	}
}

// warmBlocks encodes fields twice with one HPACK encoder: first, as the
// first call on a connection sends them (entering the dynamic table), and
// next, as every later call does (indexes only).
func warmBlocks(kv ...string) (first, next []byte) {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for pass := 0; pass < 2; pass++ {
		buf.Reset()
		for i := 0; i+1 < len(kv); i += 2 {
			enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		if pass == 0 {
			first = append([]byte(nil), buf.Bytes()...)
		}
	}
	return first, append([]byte(nil), buf.Bytes()...)
}

// frameReader reads frames into a fixed buffer.
type frameReader struct {
	r   *bufio.Reader
	buf []byte
	h   [9]byte
}

func (fr *frameReader) next() (typ, flags byte, id uint32, payload []byte, err error) {
	h := fr.h[:]
	if _, err = io.ReadFull(fr.r, h); err != nil {
		return
	}
	n := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
	if n > len(fr.buf) {
		fr.buf = make([]byte, n)
	}
	payload = fr.buf[:n]
	_, err = io.ReadFull(fr.r, payload)
	return h[3], h[4], binary.BigEndian.Uint32(h[5:]) & (1<<31 - 1), payload, err
}

// startReplayEndpoint answers every request, once its END_STREAM arrived,
// with pre-encoded HEADERS, a 1 KiB message and trailers, and returns the
// connection window the request used.
func startReplayEndpoint(b *testing.B) *backend {
	// Response header blocks: one encoder for headers and trailers, as
	// they share the connection's table.
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	block := func(kv ...string) []byte {
		hbuf.Reset()
		for i := 0; i+1 < len(kv); i += 2 {
			enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		return append([]byte(nil), hbuf.Bytes()...)
	}
	build := func() []byte {
		resp := frame(nil, 0x8, 0, 0, []byte{0, 0, 0x4, 0x5}) // WINDOW_UPDATE(0, 1029)
		resp = frame(resp, 0x1, 0x4, 1, block(":status", "200", "content-type", "application/grpc"))
		resp = frame(resp, 0x0, 0, 1, grpcFrame(make([]byte, 1024)))
		return frame(resp, 0x1, 0x5, 1, block("grpc-status", "0"))
	}
	first, next := build(), build()
	return startTCPBackend(b, "replay", func(c net.Conn) {
		resp := first
		fr := &frameReader{r: bufio.NewReaderSize(c, 32<<10), buf: make([]byte, 16384)}
		if _, err := io.ReadFull(fr.r, make([]byte, len(http2.ClientPreface))); err != nil {
			return
		}
		out := frame(nil, 0x4, 0, 0, nil) // SETTINGS
		c.Write(out)
		ack := frame(nil, 0x4, 0x1, 0, nil)
		w := make([]byte, 0, 4096)
		for {
			typ, flags, id, _, err := fr.next()
			if err != nil {
				return
			}
			switch {
			case typ == 0x4 && flags&0x1 == 0:
				w = append(w, ack...)
			case (typ == 0x0 || typ == 0x1) && flags&0x1 != 0:
				setID(resp, id)
				w = append(w, resp...)
				resp = next
			}
			if fr.r.Buffered() == 0 && len(w) > 0 {
				if _, err := c.Write(w); err != nil {
					return
				}
				w = w[:0]
			}
		}
	})
}

// replayClient sends pre-encoded gRPC calls over one connection.
type replayClient struct {
	c         net.Conn
	fr        *frameReader
	req, next []byte
	id        uint32
}

func newReplayClient(b *testing.B, addr string) *replayClient {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	c.Write([]byte(http2.ClientPreface))
	c.Write(frame(nil, 0x4, 0, 0, nil))
	rc := &replayClient{c: c, fr: &frameReader{r: bufio.NewReaderSize(c, 32<<10), buf: make([]byte, 16384)}, id: 1}
	first, next := warmBlocks(":method", "POST", ":scheme", "http", ":path", "/grpc.testing.TestService/UnaryCall",
		":authority", "bench", "content-type", "application/grpc", "te", "trailers")
	for i, block := range [][]byte{first, next} {
		req := frame(nil, 0x8, 0, 0, []byte{0, 0, 0x4, 0x5}) // the last response's connection window back
		req = frame(req, 0x1, 0x4, 1, block)
		req = frame(req, 0x0, 0x1, 1, grpcFrame(make([]byte, 1024)))
		if i == 0 {
			rc.req = req
		} else {
			rc.next = req
		}
	}
	return rc
}

// call sends one call and reads until its trailers.
func (rc *replayClient) call(b *testing.B) {
	setID(rc.req, rc.id)
	if _, err := rc.c.Write(rc.req); err != nil {
		b.Fatal(err)
	}
	for {
		typ, flags, id, _, err := rc.fr.next()
		if err != nil {
			b.Fatal(err)
		}
		switch {
		case typ == 0x4 && flags&0x1 == 0:
			rc.c.Write(frame(nil, 0x4, 0x1, 0, nil)) // once per connection
		case typ == 0x3 || typ == 0x7:
			b.Fatalf("stream reset or GOAWAY (frame type %d)", typ)
		case typ == 0x1 && id == rc.id && flags&0x1 != 0:
			rc.id += 2
			rc.req = rc.next
			return
		}
	}
}
