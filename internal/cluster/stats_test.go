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

// A proxy death as the soak saw it (seed 1, the 2-minute form): a new
// connection was steered to the proxy 6 ms before its SIGKILL, its HTTP/2
// preface not yet answered; the kernel reset it with the listener; grpc-go
// failed the channel's next calls fast, naming that connection, for its
// reconnect backoff. The dead proxy was reaped and its successor started
// 2 ms after the kill, before the client first wrote after the reset.
// Those calls died with the proxy; a connection dialled after the kill
// that reached a proxy before the successor started is the hooks' fault.
func TestLostWithProxyCountsTheBreakTheClientSawLate(t *testing.T) {
	kill := time.Unix(1000, 0)
	ms := func(d float64) int64 { return kill.Add(time.Duration(d * float64(time.Millisecond))).UnixNano() }
	d := ProxyDeath{Before: kill.Add(-time.Millisecond), Sent: kill, Restarted: kill.Add(2 * time.Millisecond), Next: kill.Add(4 * time.Second)}
	proxy := ProxyAddr.String()
	w := Window{Conns: []Conn{
		{Local: "10.244.1.12:49410", Remote: proxy, DialStart: ms(-6.4), Established: ms(-5.9), Broken: ms(3)},
		{Local: "10.244.1.12:49500", Remote: "", DialStart: ms(-100), Established: ms(-99), Broken: ms(0.5)},
		{Local: "10.244.1.12:49600", Remote: "10.96.0.10:80", DialStart: ms(-1), Established: ms(1), Broken: ms(5)},
		{Local: "10.244.1.12:49700", Remote: proxy, DialStart: ms(-2), Established: ms(10), Broken: ms(4500)},
		{Local: "10.244.1.12:49800", Remote: proxy, DialStart: ms(0.3), Established: ms(0.6)},
		{Local: "10.244.1.12:49900", Remote: proxy, DialStart: ms(3), Established: ms(4)},
	}}
	for _, c := range []struct {
		f    Failure
		lost bool
	}{
		// Failed fast in transient failure: no connection of its own, the
		// error names the one that broke; broken after the restart.
		{Failure{ID: "a", Msg: "write tcp4 10.244.1.12:49410->10.96.0.10:80: write: broken pipe"}, true},
		{Failure{ID: "b", Conn: "10.244.1.12:49410", Msg: "connection reset"}, true},
		// Reset before its destination could be read: the dying proxy.
		{Failure{ID: "c", Conn: "10.244.1.12:49500"}, true},
		// Failed open to the ClusterIP: not the proxy's.
		{Failure{ID: "d", Conn: "10.244.1.12:49600"}, false},
		// Broken at the next fault: not this death's.
		{Failure{ID: "e", Conn: "10.244.1.12:49700"}, false},
		// No connection known.
		{Failure{ID: "f", Msg: "deadline exceeded"}, false},
	} {
		if got := w.LostWith(c.f, d); got != c.lost {
			t.Errorf("LostWith(%s %q %q) = %v, want %v", c.f.ID, c.f.Conn, c.f.Msg, got, c.lost)
		}
	}
	got := w.SteeredAfter(d)
	if len(got) != 1 || got[0].Local != "10.244.1.12:49800" {
		t.Errorf("SteeredAfter = %v, want only 10.244.1.12:49800 (dialled after the kill, before the successor)", got)
	}
}

func TestFailureOnKilledPod(t *testing.T) {
	killed := time.Unix(100, 0)
	gone := map[string]time.Time{"10.244.1.11:50051": killed}
	on := Failure{Start: killed.Add(-time.Millisecond).UnixNano(), Msg: "zonelb: upstream 10.244.1.11:50051 failed: connection lost"}
	if got := on.Upstream(); got != "10.244.1.11:50051" {
		t.Errorf("Upstream = %q, want the address the proxy names", got)
	}
	if !on.OnKilledPod(gone) {
		t.Error("a call started before its named pod was gone: not counted in flight on it")
	}
	late := on
	late.Start = killed.Add(time.Millisecond).UnixNano()
	other := on
	other.Msg = "zonelb: upstream 10.244.2.10:50051 failed: connection lost"
	none := on
	none.Msg = "connection reset by peer"
	for name, f := range map[string]Failure{"started after the kill": late, "another pod": other, "no upstream named": none} {
		if f.OnKilledPod(gone) {
			t.Errorf("%s: counted in flight on the killed pod", name)
		}
	}
	if got := none.Upstream(); got != "" {
		t.Errorf("Upstream of a message naming none = %q", got)
	}
}

// A local port reused by a later connection does not take over the
// failures of the earlier one: a call is matched with the connection
// dialled last before it started.
func TestConnOfReusedLocalAddress(t *testing.T) {
	early := Conn{Local: "10.0.0.1:5000", Remote: "169.254.20.11:15001", DialStart: 100}
	late := Conn{Local: "10.0.0.1:5000", Remote: "10.96.0.10:80", DialStart: 900}
	for _, conns := range [][]Conn{{early, late}, {late, early}} {
		w := Window{Conns: conns}
		if c, ok := w.ConnOf(Failure{Conn: "10.0.0.1:5000", Start: 200}); !ok || c != early {
			t.Errorf("conns %v: call at 200 matched %+v, want the one dialled at 100", conns, c)
		}
		if c, ok := w.ConnOf(Failure{Conn: "10.0.0.1:5000", Start: 950}); !ok || c != late {
			t.Errorf("conns %v: call at 950 matched %+v, want the one dialled at 900", conns, c)
		}
	}
}
