package proxy

import (
	"io"
	"net/http"
	"sync"
	"time"
)

// flushDelay is how long response bytes written to a client may wait for
// more before they are flushed, once the upstream has nothing more to read
// at once. Flushing after every write costs a frame and a write syscall
// each; letting the HTTP/2 server batch the headers, the message and the
// trailers of a unary call into one write is most of the win, and a
// streaming response waits at most this long for its flush.
const flushDelay = 50 * time.Microsecond

// lazyFlusher flushes a response only when the copy from upstream would
// wait: the handler writes without flushing, and a timer armed before each
// upstream read flushes if that read has not returned within flushDelay.
// The handler and the timer never use the ResponseWriter at the same time:
// both hold mu (and the handler is blocked in its read when the timer
// runs).
type lazyFlusher struct {
	w       http.ResponseWriter
	src     io.Reader // the upstream response body
	rc      *http.ResponseController
	stall   *stallWatch
	mu      sync.Mutex
	dirty   bool // written since the last flush
	stopped bool // the handler is done with the ResponseWriter
	timer   *time.Timer
}

func newLazyFlusher(w http.ResponseWriter, src io.Reader, rc *http.ResponseController, stall *stallWatch) *lazyFlusher {
	f := &lazyFlusher{w: w, src: src, rc: rc, stall: stall}
	f.timer = time.AfterFunc(time.Hour, f.flushNow)
	f.timer.Stop()
	return f
}

// Write writes p to the client, unflushed. With Read, it makes the
// flusher the two ends of the response copy (Proxy.copyBuffer).
func (f *lazyFlusher) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stall.arm()
	n, err := f.w.Write(p)
	f.stall.disarm()
	f.dirty = true
	return n, err
}

// Read reads from upstream with the flush armed: if the read has not
// returned within flushDelay, what was written so far goes out.
func (f *lazyFlusher) Read(p []byte) (int, error) {
	f.beforeRead()
	n, err := f.src.Read(p)
	f.afterRead()
	return n, err
}

// wrote marks headers written without a flush.
func (f *lazyFlusher) wrote() {
	f.mu.Lock()
	f.dirty = true
	f.mu.Unlock()
}

// beforeRead arms the flush for the read about to start; afterRead
// disarms it.
func (f *lazyFlusher) beforeRead() {
	f.mu.Lock()
	if f.dirty {
		f.timer.Reset(flushDelay)
	}
	f.mu.Unlock()
}

func (f *lazyFlusher) afterRead() { f.timer.Stop() }

func (f *lazyFlusher) flushNow() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.dirty || f.stopped {
		return
	}
	f.stall.arm()
	f.rc.Flush()
	f.stall.disarm()
	f.dirty = false
}

// stop disarms the flusher for good, waiting out a flush in progress; a
// timer that fires later does nothing. The server flushes what is left
// when the handler returns.
func (f *lazyFlusher) stop() {
	f.timer.Stop()
	f.mu.Lock()
	f.stopped = true
	f.mu.Unlock()
}
