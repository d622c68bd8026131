package proxy

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/zonelb/zonelb/internal/testenv"
)

// A connection whose peer never reads queues at most maxWriteBacklog bytes
// (and the frame that crosses it): then the connection fails, what was
// queued is let go, and nothing more is queued.
func TestWriteBacklogIsBounded(t *testing.T) {
	c, peer := net.Pipe() // peer never reads: writes to c block
	defer peer.Close()
	var h h2conn
	h.init(c, nil)
	payload := make([]byte, maxFrameSize)
	peak, frames := 0, 0
	for ; frames < 2*maxWriteBacklog/maxFrameSize; frames++ {
		h.wmu.Lock()
		// Past flow control on purpose: the bound is for whatever is
		// queued, headers and control frames included.
		h.fr.WriteData(1, false, payload)
		peak = max(peak, len(h.w.buf)+h.w.inflight)
		h.w.flush() // the first one hands the backlog to a drain that blocks
		failed := h.w.err != nil
		h.wmu.Unlock()
		if failed {
			break
		}
	}
	h.wmu.Lock()
	defer h.wmu.Unlock()
	t.Logf("connection failed after %d frames of %d bytes; at most %d bytes queued", frames+1, maxFrameSize, peak)
	if !errors.Is(h.w.err, errWriteBacklog) {
		t.Fatalf("write error %v, want %v", h.w.err, errWriteBacklog)
	}
	if limit := maxWriteBacklog + 9 + maxFrameSize; peak > limit {
		t.Fatalf("%d bytes queued for a peer that does not read, want at most %d", peak, limit)
	}
	h.fr.WritePing(false, [8]byte{})
	if len(h.w.buf) != 0 {
		t.Fatalf("%d bytes queued after the connection failed", len(h.w.buf))
	}
	h.wmu.Unlock()
	testenv.WaitFor(t, 5*time.Second, "the drain to end", func() bool {
		h.wmu.Lock()
		defer h.wmu.Unlock()
		return !h.w.draining
	})
	h.wmu.Lock()
}
