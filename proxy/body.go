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

	readMu sync.Mutex // held while reading from src

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
	if a.abandoned.Load() {
		return 0, errAttemptAbandoned
	}
	if n, err, ok := a.fromRecord(p); ok {
		return n, err
	}
	// Reads from the client are serialised by readMu, not mu: a read may
	// block for as long as the client likes, and commit, canReplay and a
	// replaying attempt must not wait for it. A reader that waited here
	// finds what the previous one read in the record.
	b := a.b
	b.readMu.Lock()
	defer b.readMu.Unlock()
	if n, err, ok := a.fromRecord(p); ok {
		return n, err
	}
	n, err := b.src.Read(p)

	b.mu.Lock()
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
	b.mu.Unlock()
	if a.abandoned.Load() {
		// Abandoned while blocked in Read: the data is in the record for
		// the next attempt.
		return 0, errAttemptAbandoned
	}
	return n, err
}

// fromRecord serves a read from the record or the sticky source error;
// ok is false when the caller must read from the client.
func (a *attemptBody) fromRecord(p []byte) (n int, err error, ok bool) {
	b := a.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if a.pos < len(b.rec) {
		n := copy(p, b.rec[a.pos:])
		a.pos += n
		return n, nil, true
	}
	if b.srcErr != nil {
		return 0, b.srcErr, true
	}
	if b.committed && b.recording {
		// Caught up with the record and no retry can follow: stop
		// recording and free it.
		b.recording = false
		b.rec = nil
		a.pos = 0
	}
	return 0, nil, false
}

// Close is called by the transport when it is done with the body. It does
// not close the client's body: a later attempt may still need it. It must
// not wait for a Read blocked on the client (the transport waits for Close
// before RoundTrip returns), hence the atomic flag instead of the lock.
func (a *attemptBody) Close() error {
	a.abandoned.Store(true)
	return nil
}
