package proxy

import (
	"github.com/zonelb/zonelb/internal/grpccode"

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

// timerItems is a min-heap by when. It is typed rather than driven by
// container/heap, whose Push and Pop pass items as interface values: that
// boxed a timerItem on every add and every removal, two allocations per
// request that has a grpc-timeout.
type timerItems []timerItem

func (t timerItems) less(i, j int) bool { return t[i].when.Before(t[j].when) }

func (t timerItems) swap(i, j int) {
	t[i], t[j] = t[j], t[i]
	t[i].s.timerIdx[t[i].kind] = i
	t[j].s.timerIdx[t[j].kind] = j
}

func (t timerItems) up(j int) {
	for j > 0 {
		i := (j - 1) / 2 // parent
		if !t.less(j, i) {
			break
		}
		t.swap(i, j)
		j = i
	}
}

// down sifts item i0 down among the first n items; it reports whether the
// item moved.
func (t timerItems) down(i0, n int) bool {
	i := i0
	for {
		j := 2*i + 1
		if j >= n || j < 0 {
			break
		}
		if j2 := j + 1; j2 < n && t.less(j2, j) {
			j = j2
		}
		if !t.less(j, i) {
			break
		}
		t.swap(i, j)
		i = j
	}
	return i > i0
}

// push adds it and records its index in its stream.
func (t *timerItems) push(it timerItem) {
	it.s.timerIdx[it.kind] = len(*t)
	*t = append(*t, it)
	t.up(len(*t) - 1)
}

// removeAt takes item i out of the heap and returns it; its stream's
// index for it becomes -1.
func (t *timerItems) removeAt(i int) timerItem {
	n := len(*t) - 1
	if i != n {
		t.swap(i, n)
		if !t.down(i, n) {
			t.up(i)
		}
	}
	old := *t
	it := old[n]
	old[n] = timerItem{}
	*t = old[:n]
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
		th.items.removeAt(i)
	}
	th.items.push(timerItem{when: when, s: s, gen: gen, kind: kind, sub: sub})
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
			th.items.removeAt(i)
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
		th.items.removeAt(0)
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
		due = append(due, th.items.removeAt(0))
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
