package proxy

import (
	"github.com/zonelb/zonelb/internal/grpccode"

	"container/heap"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/zonelb/zonelb/zone"
)

// canceledOutcome is the balancer outcome of a request the client gave up
// on (or whose deadline passed).
const canceledOutcome = zone.Canceled

// Kinds of timed events on a stream.
const (
	timerDeadline = 0 // the call's grpc-timeout expires
	timerStall    = 1 // the response has been held for a stalled client
)

// timerHeap holds a downstream connection's timed stream events in one
// heap behind one time.Timer: no timer per request.
type timerHeap struct {
	sc    *serverConn
	mu    sync.Mutex
	items timerItems
	timer *time.Timer
	at    time.Time // when timer fires; zero if stopped
	dead  bool
}

type timerItem struct {
	when time.Time
	s    *stream
	gen  uint64 // the stream's gen when added
	kind int
	sub  uint64 // kind-specific generation (stall episodes)
}

type timerItems []timerItem

func (t timerItems) Len() int           { return len(t) }
func (t timerItems) Less(i, j int) bool { return t[i].when.Before(t[j].when) }
func (t timerItems) Swap(i, j int) {
	t[i], t[j] = t[j], t[i]
	t[i].s.timerIdx[t[i].kind] = i
	t[j].s.timerIdx[t[j].kind] = j
}
func (t *timerItems) Push(x any) {
	it := x.(timerItem)
	it.s.timerIdx[it.kind] = len(*t)
	*t = append(*t, it)
}
func (t *timerItems) Pop() any {
	old := *t
	it := old[len(old)-1]
	old[len(old)-1] = timerItem{}
	*t = old[:len(old)-1]
	it.s.timerIdx[it.kind] = -1
	return it
}

func (th *timerHeap) init(sc *serverConn) { th.sc = sc }

// add schedules an event for s, replacing one of the same kind. Call with
// s.mu held.
func (th *timerHeap) add(when time.Time, s *stream, gen uint64, kind int, sub uint64) {
	th.mu.Lock()
	defer th.mu.Unlock()
	if th.dead {
		return
	}
	s.timed = true
	if i := s.timerIdx[kind]; i >= 0 {
		heap.Remove(&th.items, i)
	}
	heap.Push(&th.items, timerItem{when: when, s: s, gen: gen, kind: kind, sub: sub})
	th.armLocked()
}

// remove drops s's events. Call with s.mu held.
func (th *timerHeap) remove(s *stream) {
	if !s.timed {
		return
	}
	s.timed = false
	th.mu.Lock()
	for k := range s.timerIdx {
		if i := s.timerIdx[k]; i >= 0 {
			heap.Remove(&th.items, i)
		}
	}
	th.mu.Unlock()
}

// armLocked sets the timer for the earliest event.
func (th *timerHeap) armLocked() {
	if len(th.items) == 0 {
		return
	}
	next := th.items[0].when
	if !th.at.IsZero() && !next.Before(th.at) {
		return
	}
	th.at = next
	d := time.Until(next)
	if th.timer == nil {
		th.timer = time.AfterFunc(d, th.fire)
	} else {
		th.timer.Reset(d)
	}
}

func (th *timerHeap) stop() {
	th.mu.Lock()
	th.dead = true
	for len(th.items) > 0 {
		heap.Pop(&th.items)
	}
	if th.timer != nil {
		th.timer.Stop()
	}
	th.mu.Unlock()
}

// fire handles the events that are due.
func (th *timerHeap) fire() {
	now := th.sc.p.cfg.Now()
	var due []timerItem
	th.mu.Lock()
	th.at = time.Time{}
	for len(th.items) > 0 && !th.items[0].when.After(now) {
		due = append(due, heap.Pop(&th.items).(timerItem))
	}
	if len(th.items) > 0 && !th.dead {
		th.armLocked()
	}
	th.mu.Unlock()
	var b batch
	for _, it := range due {
		s := it.s
		s.mu.Lock()
		if s.gen == it.gen && !s.done {
			switch it.kind {
			case timerDeadline:
				s.fail(&b, http.StatusGatewayTimeout, grpccode.DeadlineExceeded, "zonelb: deadline exceeded", canceledOutcome)
			case timerStall:
				if s.stallGen == it.sub && !s.stallSince.IsZero() {
					th.sc.p.log.Debug("resetting stream stalled by its client", "remote", th.sc.remote, "stream", s.id)
					s.resetClient(&b, http2.ErrCodeCancel)
					s.finish(&b, canceledOutcome)
				}
			}
		}
		s.mu.Unlock()
	}
	b.flush()
}
