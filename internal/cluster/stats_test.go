package cluster

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestMergeAddsCountsAndSortsLatencies(t *testing.T) {
	a := Window{Start: 10, End: 20, OK: 2, Failed: 1, ViaProxy: 2, Dials: 1,
		ByBackend: map[string]int{"a1": 2}, ByZone: map[string]int{"zone-a": 2},
		BytesByZone: map[string]int64{"zone-a": 200}, LatenciesUS: []int64{30, 10},
		Failures: []Failure{{Start: 15, Code: "Unavailable"}}}
	b := Window{Start: 5, End: 25, OK: 2, ByBackend: map[string]int{"a1": 1, "b1": 1},
		ByZone: map[string]int{"zone-a": 1, "zone-b": 1}, BytesByZone: map[string]int64{"zone-b": 100, "zone-a": 100},
		LatenciesUS: []int64{20, 40}}
	m := Merge(a, b)
	if m.Start != 5 || m.End != 25 || m.OK != 4 || m.Failed != 1 || m.ViaProxy != 2 || m.Dials != 1 {
		t.Fatalf("merged counts: %+v", m)
	}
	if m.ByBackend["a1"] != 3 || m.ByZone["zone-b"] != 1 || m.BytesByZone["zone-a"] != 300 {
		t.Fatalf("merged maps: %+v", m)
	}
	if got := m.LatenciesUS; len(got) != 4 || got[0] != 10 || got[3] != 40 {
		t.Fatalf("latencies %v, want sorted 10..40", got)
	}
	if m.Share("zone-a") != 0.75 || m.ByteShare("zone-a") != 0.75 {
		t.Errorf("shares: calls %.2f bytes %.2f, want 0.75 and 0.75", m.Share("zone-a"), m.ByteShare("zone-a"))
	}
	if m.FailedSince(time.Unix(0, 16)) != 0 || m.FailedSince(time.Unix(0, 15)) != 1 {
		t.Error("FailedSince counts failures by their start")
	}
	if got := m.Backends(); len(got) != 2 || got[0] != "a1" || got[1] != "b1" {
		t.Errorf("backends %v", got)
	}
}

func TestPercentileIsNearestRank(t *testing.T) {
	var w Window
	for i := int64(1); i <= 100; i++ {
		w.LatenciesUS = append(w.LatenciesUS, i*1000) // 1..100 ms
	}
	for p, want := range map[float64]time.Duration{50: 50 * time.Millisecond, 99: 99 * time.Millisecond, 100: 100 * time.Millisecond, 0: time.Millisecond} {
		if got := w.Percentile(p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
	if (Window{}).Percentile(50) != 0 {
		t.Error("empty window: want 0")
	}
}

// The backend's service model: Capacity calls at a time, the rest wait;
// raising the capacity lets the waiting calls in.
func TestSlotsQueueBeyondCapacityAndFollowChanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSlots(BackendLoad{ServiceTime: Duration(10 * time.Millisecond), Capacity: 1})
		start := time.Now()
		var mu sync.Mutex
		var done []time.Duration
		var wg sync.WaitGroup
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.serveCall(context.Background()); err != nil {
					t.Error(err)
				}
				mu.Lock()
				done = append(done, time.Since(start))
				mu.Unlock()
			}()
		}
		wg.Wait()
		if len(done) != 3 || done[0] != 10*time.Millisecond || done[1] != 20*time.Millisecond || done[2] != 30*time.Millisecond {
			t.Fatalf("one at a time: finished at %v, want 10ms, 20ms, 30ms", done)
		}

		done = nil
		start = time.Now()
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.serveCall(context.Background())
				mu.Lock()
				done = append(done, time.Since(start))
				mu.Unlock()
			}()
		}
		synctest.Wait() // one serving, two waiting
		s.set(BackendLoad{ServiceTime: Duration(10 * time.Millisecond), Capacity: 3})
		wg.Wait()
		for _, d := range done {
			if d != 10*time.Millisecond {
				t.Fatalf("after raising the capacity: finished at %v, want all at 10ms", done)
			}
		}
	})
}

func TestSlotsWaitingCallGivesUpWithItsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSlots(BackendLoad{ServiceTime: Duration(time.Second), Capacity: 1})
		var busy sync.WaitGroup
		busy.Go(func() { s.serveCall(context.Background()) })
		defer busy.Wait()
		synctest.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		if err := s.serveCall(ctx); err == nil {
			t.Fatal("a call waiting for a slot ignored its deadline")
		}
		if d := time.Since(start); d != 50*time.Millisecond {
			t.Errorf("gave up after %v, want 50ms", d)
		}
	})
}

// An open-loop client issues calls at the rate whatever the answers do,
// and counts the calls it could not start.
func TestPaceIssuesAtRateAndCountsSkips(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		tokens := make(chan struct{}, 2)
		var mu sync.Mutex
		skipped := 0
		go pace(ctx, 100, tokens, func() { mu.Lock(); skipped++; mu.Unlock() })
		time.Sleep(time.Second + time.Millisecond) // nobody takes tokens
		cancel()
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if len(tokens) != 2 || skipped != 98 {
			t.Errorf("after 1s at 100/s with 2 slots: %d queued, %d skipped; want 2 and 98", len(tokens), skipped)
		}
	})
}
