package sim

import (
	"container/heap"
	"slices"
	"testing"
	"time"
)

// An endpoint makes no progress during a pause: work that spans one ends
// that much later, work started inside one starts at its end.
func TestPausedEndpointsServeLate(t *testing.T) {
	ms := int64(time.Millisecond)
	p := &pauses{endpoints: true, spans: []Pause{{At: 10 * time.Millisecond, For: 5 * time.Millisecond}, {At: 30 * time.Millisecond, For: 10 * time.Millisecond}}}
	for _, tc := range []struct{ start, d, want int64 }{
		{0, 5 * ms, 5 * ms},        // before any pause
		{8 * ms, 4 * ms, 17 * ms},  // spans the first
		{12 * ms, 1 * ms, 16 * ms}, // starts inside it
		{8 * ms, 30 * ms, 53 * ms}, // spans both
		{40 * ms, 1 * ms, 41 * ms}, // starts at the end of the second
	} {
		if got := p.served(tc.start, tc.d); got != tc.want {
			t.Errorf("served(%v, %v) = %v, want %v", time.Duration(tc.start), time.Duration(tc.d), time.Duration(got), time.Duration(tc.want))
		}
	}
	var none *pauses
	if got := none.served(8*ms, 4*ms); got != 12*ms {
		t.Errorf("no pauses: served at %v, want 12ms", time.Duration(got))
	}
}

// The schedule is seeded, in range, lengths within bounds, spans apart.
func TestPausesSchedule(t *testing.T) {
	a := Pauses(3, time.Second, 11*time.Second, 3, 10*time.Millisecond, 100*time.Millisecond)
	b := Pauses(3, time.Second, 11*time.Second, 3, 10*time.Millisecond, 100*time.Millisecond)
	if len(a) < 15 || len(a) > 45 || len(a) != len(b) {
		t.Fatalf("%d and %d pauses in 10 s at 3 a second", len(a), len(b))
	}
	for i, p := range a {
		if p != b[i] {
			t.Fatalf("pause %d: %v then %v for the same seed", i, p, b[i])
		}
		if p.At < time.Second || p.At >= 11*time.Second || p.For < 10*time.Millisecond || p.For > 100*time.Millisecond {
			t.Errorf("pause %v out of range", p)
		}
		if i > 0 && a[i-1].At+a[i-1].For > p.At {
			t.Errorf("pauses %v and %v overlap", a[i-1], p)
		}
	}
}

// A paused proxy reads what reached it at the pause's end, all at once;
// ArrivalsFirst sends every new request before any waiting response.
func TestPausedProxyHoldsWork(t *testing.T) {
	e := &engine{sc: &Scenario{}, pauses: &pauses{proxy: true, order: ArrivalsFirst,
		spans: []Pause{{At: 10 * time.Millisecond, For: 20 * time.Millisecond}}}}
	ms := int64(time.Millisecond)
	if e.hold(event{at: 5 * ms, kind: evSend}) {
		t.Error("work before the pause held")
	}
	for _, ev := range []event{{at: 12 * ms, kind: evResponse}, {at: 15 * ms, kind: evSend}, {at: 20 * ms, kind: evResponse}, {at: 29 * ms, kind: evSend}} {
		if !e.hold(ev) {
			t.Errorf("work at %v in the pause not held", time.Duration(ev.at))
		}
	}
	// The release is the one action scheduled; run it.
	rel := e.events[0]
	e.events = e.events[:0]
	e.now = rel.at
	rel.act(e)
	if rel.at != 30*ms || len(e.events) != 4 {
		t.Fatalf("released at %v: %d events", time.Duration(rel.at), len(e.events))
	}
	var kinds []evKind
	for e.events.Len() > 0 {
		ev := heap.Pop(&e.events).(event)
		if ev.at != 30*ms {
			t.Errorf("released work at %v, want at the pause's end", time.Duration(ev.at))
		}
		kinds = append(kinds, ev.kind)
	}
	if want := []evKind{evSend, evSend, evResponse, evResponse}; !slices.Equal(kinds, want) {
		t.Errorf("release order %v, want %v", kinds, want)
	}
}
