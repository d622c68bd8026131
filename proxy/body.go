package proxy

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
)

// replayBody lets a request body be sent again to another endpoint when the
// first attempt provably never reached its application. It records what
// attempts read, up to a limit; each attempt reads through its own
// [attemptBody] cursor. Data read by an abandoned attempt (the transport
// may still be reading in its own goroutine) is recorded, never lost.
//
// Once the request is committed (response headers arrived) no attempt
// follows, and the record is released as soon as the live attempt has
// read past it, so a long stream does not hold it.
type replayBody struct {
	src   io.ReadCloser
	limit int

	mu        sync.Mutex
	rec       []byte // bytes read from src so far, while recording
	recording bool   // false once over the limit or released
	overflow  bool   // more than limit bytes were read: no retry possible
	committed bool
	srcErr    error // sticky error from src (io.EOF at the end)
	read      int64 // total bytes read from src
}

func newReplayBody(src io.ReadCloser, limit int) *replayBody {
	return &replayBody{src: src, limit: limit, recording: true}
}

// canReplay reports whether a new attempt could resend everything read so
// far.
func (b *replayBody) canReplay() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.overflow && !b.committed
}

// commit marks the request as committed to its endpoint.
func (b *replayBody) commit() {
	b.mu.Lock()
	b.committed = true
	b.mu.Unlock()
}

// bytesRead is how many request-body bytes were read from the client.
func (b *replayBody) bytesRead() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.read
}

// attempt returns a reader for a new attempt, starting at the beginning.
func (b *replayBody) attempt() *attemptBody { return &attemptBody{b: b} }

var errAttemptAbandoned = errors.New("proxy: request attempt abandoned")

// attemptBody is one attempt's view of the request body.
type attemptBody struct {
	b         *replayBody
	pos       int // position in b.rec
	abandoned atomic.Bool
}

func (a *attemptBody) Read(p []byte) (int, error) {
	b := a.b
	if a.abandoned.Load() {
		return 0, errAttemptAbandoned
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if a.pos < len(b.rec) {
		n := copy(p, b.rec[a.pos:])
		a.pos += n
		return n, nil
	}
	if b.srcErr != nil {
		return 0, b.srcErr
	}
	if b.committed && b.recording {
		// Caught up with the record and no retry can follow: stop
		// recording and free it.
		b.recording = false
		b.rec = nil
		a.pos = 0
	}
	// Read from the client with the lock held: a concurrent reader (an
	// abandoned attempt's goroutine) would have to wait for this data
	// anyway, and holding the lock keeps the record in order.
	n, err := b.src.Read(p)
	b.read += int64(n)
	if n > 0 && b.recording {
		if len(b.rec)+n > b.limit {
			b.recording = false
			b.overflow = true
			b.rec = nil
			a.pos = 0
		} else {
			b.rec = append(b.rec, p[:n]...)
			a.pos = len(b.rec)
		}
	}
	if err != nil {
		b.srcErr = err
	}
	if a.abandoned.Load() {
		// Abandoned while blocked in Read: the data is in the record for
		// the next attempt.
		return 0, errAttemptAbandoned
	}
	return n, err
}

// Close is called by the transport when it is done with the body. It does
// not close the client's body: a later attempt may still need it. It must
// not wait for a Read blocked on the client (the transport waits for Close
// before RoundTrip returns), hence the atomic flag instead of the lock.
func (a *attemptBody) Close() error {
	a.abandoned.Store(true)
	return nil
}
