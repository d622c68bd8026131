package proxy

import (
	"encoding/binary"
	"net"
	"net/http"
	"sync"
	"time"
)

// Defences the HTTP/2 layer underneath lacks (see docs/proxy.md, "Abuse"):
// Go's HTTP/2 server answers every PING, SETTINGS, WINDOW_UPDATE and
// PRIORITY it is sent and has no notion of a client that floods them while
// it keeps reading, nor of a client that opens a stream and never reads the
// response. A proxy in front of every pod on a node must not be tied up by
// one misbehaving client.

// Flood guard limits, per downstream HTTP/2 connection.
const (
	// floodBurst is the credit a connection starts with and can save up:
	// this many cheap frames in a row are fine.
	floodBurst = 1000
	// A frame that carries a request (HEADERS) or request bytes (non-empty
	// DATA) earns this much credit; every control or empty frame costs one.
	floodEarnPerFrame = 4
	// Every HEADERS or DATA frame written to the client earns this much: a
	// client legitimately answers received data with control frames (grpc-go
	// sends a BDP PING and WINDOW_UPDATEs as messages arrive, one message
	// at a time on a paced stream). Answers to the client's own frames
	// (PING and SETTINGS acks) earn nothing, so a flood still drains.
	floodEarnPerFrameOut = 2
	// Rapid reset: after resetMinStreams streams, a connection whose
	// client reset more than half of them prematurely (before the response
	// headers went out) is closed (CVE-2023-44487; Envoy's rule). Resets of
	// answered streams are ordinary cancellations and do not count.
	resetMinStreams = 500
)

// floodGuard watches the frames a client sends, without decoding them, and
// closes the connection when cheap frames outrun useful ones. It sits on the
// connection's reads (parsing frame headers as they pass) and writes
// (earning credit for data sent).
type floodGuard struct {
	conn    net.Conn
	onFlood func(reason string)

	mu      sync.Mutex
	in, out frameScanner // frames read from and written to the client
	credit  int
	streams int
	resets  int                 // premature resets
	lastID  uint32              // highest stream id the client opened
	waiting map[uint32]struct{} // streams opened and not answered yet
	tripped bool
}

// frameScanner finds HTTP/2 frame headers in a byte stream as it passes,
// without copying payloads.
type frameScanner struct {
	skip    int // bytes still to pass before the first frame (the preface)
	hdr     [9]byte
	hdrN    int
	payload int // payload bytes of the current frame still to pass
}

// scan walks b and calls frame for every frame header completed in it;
// it stops early when frame returns a reason.
func (fs *frameScanner) scan(b []byte, frame func(typ, flags byte, length int, stream uint32) string) string {
	for len(b) > 0 {
		switch {
		case fs.skip > 0:
			n := min(fs.skip, len(b))
			fs.skip -= n
			b = b[n:]
		case fs.payload > 0:
			n := min(fs.payload, len(b))
			fs.payload -= n
			b = b[n:]
		default:
			n := copy(fs.hdr[fs.hdrN:], b)
			fs.hdrN += n
			b = b[n:]
			if fs.hdrN < len(fs.hdr) {
				return ""
			}
			fs.hdrN = 0
			length := int(fs.hdr[0])<<16 | int(fs.hdr[1])<<8 | int(fs.hdr[2])
			fs.payload = length
			if reason := frame(fs.hdr[3], fs.hdr[4], length, binary.BigEndian.Uint32(fs.hdr[5:])&(1<<31-1)); reason != "" {
				return reason
			}
		}
	}
	return ""
}

func newFloodGuard(c net.Conn, onFlood func(string)) *floodGuard {
	return &floodGuard{conn: c, onFlood: onFlood, in: frameScanner{skip: len(h2Preface)}, credit: floodBurst,
		waiting: make(map[uint32]struct{})}
}

// read observes bytes the server read from the client.
func (g *floodGuard) read(b []byte) {
	if reason := g.observe(b); reason != "" {
		g.onFlood(reason)
		g.conn.Close()
	}
}

// wrote observes bytes written to the client.
func (g *floodGuard) wrote(b []byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.out.scan(b, func(typ, _ byte, _ int, stream uint32) string {
		switch typ {
		case frameHeaders, frameRSTStream:
			delete(g.waiting, stream) // answered (or reset by us)
		}
		if typ == frameData || typ == frameHeaders {
			g.credit = min(g.credit+floodEarnPerFrameOut, floodBurst)
		}
		return ""
	})
}

// observe walks the frame headers in b read from the client; it returns
// why the connection must close, or "".
func (g *floodGuard) observe(b []byte) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.tripped {
		return ""
	}
	reason := g.in.scan(b, g.frame)
	if reason != "" {
		g.tripped = true
	}
	return reason
}

// HTTP/2 frame types and flags the guard looks at.
const (
	frameData         = 0x0
	frameHeaders      = 0x1
	framePriority     = 0x2
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	framePing         = 0x6
	frameWindowUpdate = 0x8
	frameContinuation = 0x9
	flagAck           = 0x1
	flagEndStream     = 0x1
)

func (g *floodGuard) frame(typ, flags byte, length int, stream uint32) string {
	useful := false
	switch typ {
	case frameData:
		useful = length > 0 || flags&flagEndStream != 0
	case frameHeaders:
		if stream > g.lastID { // a new stream, not trailers
			g.lastID = stream
			g.streams++
			g.waiting[stream] = struct{}{}
		}
		useful = true
	case frameRSTStream:
		if _, ok := g.waiting[stream]; ok {
			delete(g.waiting, stream)
			g.resets++
			if g.streams >= resetMinStreams && 2*g.resets > g.streams {
				return "rapid reset: most streams reset before they were answered"
			}
		}
	case frameSettings, framePing:
		if flags&flagAck != 0 {
			return "" // answers to ours cost us nothing
		}
	case frameContinuation:
		useful = length > 0
	}
	if useful {
		g.credit = min(g.credit+floodEarnPerFrame, floodBurst)
		return ""
	}
	g.credit--
	if g.credit < 0 {
		return "flood of control or empty frames"
	}
	return ""
}

// stallWatch resets a stream whose response write stays blocked for too
// long: a client that opens a stream and never reads (its flow-control
// window stays shut) would otherwise hold the stream, a goroutine and the
// upstream stream forever. Only a blocked write counts: a stream that is
// merely quiet (a long-lived watch) is left alone.
type stallWatch struct {
	timeout time.Duration
	timer   *time.Timer
}

func newStallWatch(rc *http.ResponseController, timeout time.Duration) *stallWatch {
	if timeout <= 0 {
		return nil
	}
	w := &stallWatch{timeout: timeout}
	w.timer = time.AfterFunc(time.Hour, func() {
		// A deadline in the past resets the stream at once, which fails
		// the blocked write.
		rc.SetWriteDeadline(time.Unix(1, 0))
	})
	w.timer.Stop()
	return w
}

func (w *stallWatch) arm() {
	if w != nil {
		w.timer.Reset(w.timeout)
	}
}

func (w *stallWatch) disarm() {
	if w != nil {
		w.timer.Stop()
	}
}
