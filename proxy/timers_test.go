package proxy

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestTimerItemsHeap drives the typed timer heap with random pushes and
// removals from anywhere, and checks after every step that each stream's
// recorded index points at its own item and that items leave in time order.
func TestTimerItemsHeap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.Unix(1_000_000, 0)
	var h timerItems
	var live []*stream
	check := func(step int) {
		t.Helper()
		for i, it := range h {
			if got := it.s.timerIdx[it.kind]; got != i {
				t.Fatalf("step %d: item %d records index %d", step, i, got)
			}
			if i > 0 && h.less(i, (i-1)/2) {
				t.Fatalf("step %d: item %d is earlier than its parent", step, i)
			}
		}
	}
	for step := range 2000 {
		switch {
		case len(live) == 0 || rng.IntN(3) > 0:
			s := &stream{timerIdx: [2]int{-1, -1}}
			kind := rng.IntN(2)
			h.push(timerItem{when: base.Add(time.Duration(rng.IntN(1000)) * time.Millisecond), s: s, kind: kind})
			live = append(live, s)
		default:
			k := rng.IntN(len(live))
			s := live[k]
			for kind, i := range s.timerIdx {
				if i >= 0 {
					it := h.removeAt(i)
					if it.s != s || it.kind != kind {
						t.Fatalf("step %d: removeAt(%d) returned another item", step, i)
					}
				}
			}
			if s.timerIdx != [2]int{-1, -1} {
				t.Fatalf("step %d: removed stream keeps indexes %v", step, s.timerIdx)
			}
			live = slices.Delete(live, k, k+1)
		}
		check(step)
	}
	var prev time.Time
	for len(h) > 0 {
		it := h.removeAt(0)
		if it.when.Before(prev) {
			t.Fatalf("popped %v after %v", it.when, prev)
		}
		prev = it.when
		check(-1)
	}
}
