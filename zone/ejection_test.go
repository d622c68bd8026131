package zone

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

// constSource always returns v: with v = 1<<63 the jitter draw is exactly
// 0.5, so a backoff is exactly its nominal value.
type constSource uint64

func (c constSource) Uint64() uint64 { return uint64(c) }

// failN picks avoiding nothing but only ever gets target (a one-endpoint
// zone, or retries steered away from the others) and fails it n times.
func failTimes(t *testing.T, b *Balancer, target netip.AddrPort, avoid netip.AddrPort, n int, o Outcome) {
	t.Helper()
	for i := range n {
		p := mustPick(t, b, avoid)
		if p.Endpoint.Addr != target {
			t.Fatalf("failure %d: picked %v, want %v", i, p.Endpoint.Addr, target)
		}
		p.Done(Result{Outcome: o})
	}
}

// Consecutive failures eject with exponential backoff; an endpoint comes
// back after it, on probation (its first failure ejects it again, for
// twice as long) and in slow start; a success ends probation.
func TestEjectionBackoffAndReturn(t *testing.T) {
	b, clk := newTestBalancer(t, Config{LocalZone: "a", Rand: constSource(1 << 63)})
	eps := makeEndpoints(zoneSpec{"a", 2})
	b.Update(eps)
	bad, good := eps[0].Addr, eps[1].Addr

	// Four failures: not yet. A success resets the count.
	failTimes(t, b, bad, good, 4, Failure)
	if st := stateOf(t, b, bad); st.Ejected || st.ConsecutiveFailures != 4 {
		t.Fatalf("after 4 failures: %+v, want not ejected, 4 in a row", st)
	}
	p := mustPick(t, b, good)
	p.Done(Result{Outcome: Success, TTFB: time.Millisecond})
	failTimes(t, b, bad, good, 4, NotReached)
	if st := stateOf(t, b, bad); st.Ejected {
		t.Fatalf("ejected after a success broke the run: %+v", st)
	}
	failTimes(t, b, bad, good, 1, Failure)
	ejectedAt := clk.Now()
	st := stateOf(t, b, bad)
	if !st.Ejected || !st.EjectedUntil.Equal(ejectedAt.Add(DefaultBaseBackoff)) {
		t.Fatalf("after 5 in a row: %+v, want ejected until now+%v", st, DefaultBaseBackoff)
	}
	// While ejected, even a retry avoiding the good one gets the good one.
	for range 20 {
		if p := mustPick(t, b, netip.AddrPort{}); p.Endpoint.Addr != good {
			t.Fatalf("picked the ejected endpoint")
		} else {
			p.Done(Result{Outcome: Success, TTFB: time.Millisecond})
		}
	}

	// Back after the backoff (at the first control step past it).
	clk.Advance(DefaultBaseBackoff + DefaultSpillInterval)
	mustPick(t, b, good).Done(Result{Outcome: Canceled}) // runs the control step
	st = stateOf(t, b, bad)
	if st.Ejected || !st.Probation || st.Estimate != DefaultDefaultLatency || st.SlowStartWeight != DefaultSlowStartMinWeight {
		t.Fatalf("after the backoff: %+v, want back, on probation, at DefaultLatency, starting slow start", st)
	}

	// One failure on probation ejects again, for twice as long.
	failTimes(t, b, bad, good, 1, Failure)
	st = stateOf(t, b, bad)
	if !st.Ejected || !st.EjectedUntil.Equal(clk.Now().Add(2*DefaultBaseBackoff)) || st.Ejections != 2 {
		t.Fatalf("failure on probation: %+v, want ejected for %v, 2 ejections", st, 2*DefaultBaseBackoff)
	}

	// Back again; a success ends probation, and it then takes 5 failures.
	clk.Advance(2*DefaultBaseBackoff + DefaultSpillInterval)
	failTimes(t, b, bad, good, 0, Failure) // runs the control step
	if p := mustPick(t, b, good); p.Endpoint.Addr != bad {
		t.Fatalf("picked %v, want %v back from ejection", p.Endpoint.Addr, bad)
	} else {
		p.Done(Result{Outcome: Success, TTFB: time.Millisecond})
	}
	if st := stateOf(t, b, bad); st.Ejected || st.Probation {
		t.Fatalf("after a success on probation: %+v, want back and off probation", st)
	}
	failTimes(t, b, bad, good, 4, Failure)
	if st := stateOf(t, b, bad); st.Ejected {
		t.Fatalf("4 failures after probation ejected: %+v", st)
	}
}

// State is true at the moment it is read, not as of the last control
// step: with no Pick since a backoff ended, no step has run, and State
// reported the endpoint ejected, until a time already past, for as long
// as the service stayed idle. Now the endpoint whose backoff ended is
// reported back, on probation, and usable in its zone; and, the zone being
// down, its other endpoint waits for that one's verdict (zone probation),
// so it is still reported ejected, for one more control interval, as the
// step would have held it.
func TestStateIsTrueWhenReadNotAtTheLastStep(t *testing.T) {
	b, clk := newTestBalancer(t, Config{LocalZone: "a", Rand: constSource(1 << 63)})
	eps := makeEndpoints(zoneSpec{"a", 2}, zoneSpec{"b", 2})
	b.Update(eps)
	a0, a1 := eps[0].Addr, eps[1].Addr
	// Zone a fails every call until both its endpoints are ejected, at
	// the same instant, for the same backoff (no jitter).
	for i := 0; !stateOf(t, b, a0).Ejected || !stateOf(t, b, a1).Ejected; i++ {
		if i == 4*DefaultConsecutiveFailures {
			t.Fatalf("zone a not ejected after %d calls: %+v", i, b.State().Endpoints)
		}
		p := mustPick(t, b, netip.AddrPort{})
		if p.Endpoint.Zone == "a" {
			p.Done(Result{Outcome: Failure})
		} else {
			p.Done(Result{Outcome: Success, TTFB: time.Millisecond})
		}
	}
	ejectedAt := clk.Now()

	clk.Advance(DefaultBaseBackoff) // and no Pick
	back, waiting := stateOf(t, b, a0), stateOf(t, b, a1)
	if back.Ejected {
		back, waiting = waiting, back
	}
	if back.Ejected || !back.EjectedUntil.IsZero() || !back.Probation {
		t.Errorf("%v after its backoff ended at %v: %+v, want back, on probation", back.Endpoint.Addr, ejectedAt.Add(DefaultBaseBackoff), back)
	}
	if want := clk.Now().Add(DefaultSpillInterval); !waiting.Ejected || !waiting.EjectedUntil.Equal(want) {
		t.Errorf("%v, in a zone down and probed by the other: %+v, want ejected until %v", waiting.Endpoint.Addr, waiting, want)
	}
	for _, z := range b.State().Zones {
		if z.Zone == "a" && z.Usable != 1 {
			t.Errorf("zone a: %d usable endpoints, want the 1 back on probation", z.Usable)
		}
	}
}

// The k-th ejection in a row lasts BaseBackoff x 2^k, capped at MaxBackoff,
// spread by Jitter.
func TestBackoffDoublesCapsAndJitters(t *testing.T) {
	for _, tc := range []struct {
		src  constSource
		k    int
		want time.Duration
	}{
		{1 << 63, 0, time.Second},
		{1 << 63, 1, 2 * time.Second},
		{1 << 63, 5, 32 * time.Second},
		{1 << 63, 6, time.Minute},
		{1 << 63, 100, time.Minute},
		{0, 0, 750 * time.Millisecond},        // lowest draw: 1 - Jitter
		{1<<64 - 1, 2, 5*time.Second - 1},     // highest draw: just under 1 + Jitter
		{1 << 62, 3, 8 * time.Second * 7 / 8}, // draw 0.25: 1 - Jitter/2
	} {
		b, _ := newTestBalancer(t, Config{Rand: tc.src})
		if got := b.backoff(tc.k); got < tc.want-time.Microsecond || got > tc.want+time.Microsecond {
			t.Errorf("backoff(%d) with draw %#x = %v, want %v", tc.k, uint64(tc.src), got, tc.want)
		}
	}
}

// Never more than MaxEjectedShare of the endpoints is ejected.
func TestEjectionCappedByShare(t *testing.T) {
	b, _ := newTestBalancer(t, Config{LocalZone: "a"})
	eps := makeEndpoints(zoneSpec{"a", 5})
	b.Update(eps)
	for range 200 { // every request fails
		p := mustPick(t, b, netip.AddrPort{})
		p.Done(Result{Outcome: NotReached})
	}
	ejected := 0
	for _, e := range b.State().Endpoints {
		if e.Ejected {
			ejected++
		}
	}
	if ejected != 2 { // floor(0.5 x 5)
		t.Errorf("%d of 5 ejected, want 2 (MaxEjectedShare 0.5)", ejected)
	}

	// A single endpoint is never ejected.
	b1, _ := newTestBalancer(t, Config{LocalZone: "a"})
	b1.Update(eps[:1])
	for range 50 {
		mustPick(t, b1, netip.AddrPort{}).Done(Result{Outcome: Failure})
	}
	if st := b1.State().Endpoints[0]; st.Ejected {
		t.Errorf("the only endpoint was ejected")
	}
}

// With ejection disabled, failures never eject.
func TestEjectionDisabled(t *testing.T) {
	cfg := Config{LocalZone: "a"}
	cfg.Ejection.ConsecutiveFailures = -1
	b, _ := newTestBalancer(t, cfg)
	eps := makeEndpoints(zoneSpec{"a", 2})
	b.Update(eps)
	failTimes(t, b, eps[0].Addr, eps[1].Addr, 50, Failure)
	if st := stateOf(t, b, eps[0].Addr); st.Ejected {
		t.Errorf("ejected with ejection disabled")
	}
}

// 429 / RESOURCE_EXHAUSTED counts as load: a latency penalty, never
// ejection, and it resets a run of failures.
func TestOverloadedIsLoadNotIllHealth(t *testing.T) {
	b, clk := newTestBalancer(t, Config{LocalZone: "a", SlowStart: -1})
	eps := makeEndpoints(zoneSpec{"a", 2})
	b.Update(eps)
	busy, other := eps[0].Addr, eps[1].Addr
	failTimes(t, b, busy, other, 4, Failure)
	for range 20 {
		p := mustPick(t, b, other)
		p.Done(Result{Outcome: Overloaded, TTFB: time.Millisecond})
		clk.Advance(time.Millisecond)
	}
	st := stateOf(t, b, busy)
	if st.Ejected || st.ConsecutiveFailures != 0 {
		t.Fatalf("after 20 overloads: %+v, want not ejected, failure run reset", st)
	}
	if st.Estimate < DefaultOverloadPenalty {
		t.Fatalf("estimate %v after overloads, want at least the penalty %v", st.Estimate, DefaultOverloadPenalty)
	}
	// P2C now steers away from it.
	for range 50 {
		p := mustPick(t, b, netip.AddrPort{})
		if p.Endpoint.Addr == busy {
			t.Fatalf("picked the overloaded endpoint over an idle one")
		}
		p.Done(Result{Outcome: Success, TTFB: time.Millisecond})
	}
}

// A failure never makes an endpoint look faster: the sample is the larger
// of TTFB and the estimate, plus the penalty.
func TestFailureNeverLooksFast(t *testing.T) {
	b, _ := newTestBalancer(t, Config{LocalZone: "a"})
	eps := makeEndpoints(zoneSpec{"a", 1})
	b.Update(eps)
	before := stateOf(t, b, eps[0].Addr).Estimate
	mustPick(t, b, netip.AddrPort{}).Done(Result{Outcome: Failure, TTFB: time.Microsecond})
	if got, want := stateOf(t, b, eps[0].Addr).Estimate, before+DefaultFailurePenalty; got != want {
		t.Errorf("estimate after a fast failure = %v, want %v", got, want)
	}
}

// A request cancelled before any response byte says the endpoint took at
// least that long: it raises the estimate, never lowers it.
func TestCanceledWithoutResponseIsALowerBound(t *testing.T) {
	b, clk := newTestBalancer(t, Config{LocalZone: "a"})
	eps := makeEndpoints(zoneSpec{"a", 1})
	b.Update(eps)
	a := eps[0].Addr

	p := mustPick(t, b, netip.AddrPort{})
	clk.Advance(time.Millisecond) // gave up early: teaches nothing
	p.Done(Result{Outcome: Canceled})
	if got := stateOf(t, b, a).Estimate; got != DefaultDefaultLatency {
		t.Errorf("estimate after an early cancel = %v, want unchanged %v", got, DefaultDefaultLatency)
	}

	p = mustPick(t, b, netip.AddrPort{})
	clk.Advance(time.Second) // a deadline hit: at least 1s
	p.Done(Result{Outcome: Canceled})
	if got := stateOf(t, b, a).Estimate; got != time.Second {
		t.Errorf("estimate after a 1s cancel = %v, want 1s", got)
	}
}

// Slow start: a new endpoint's weight ramps linearly from
// SlowStartMinWeight to 1 over SlowStart, so it gets fewer requests while
// it warms up than it will once warm.
func TestSlowStartRamps(t *testing.T) {
	b, clk := newTestBalancer(t, Config{LocalZone: "a", Rand: rand.NewPCG(3, 4)})
	old := makeEndpoints(zoneSpec{"a", 1})
	b.Update(old)
	clk.Advance(time.Hour) // the old endpoint is past slow start
	added := Endpoint{Addr: netip.MustParseAddrPort("127.0.9.9:8080"), Zone: "a", Ready: true, Serving: true}
	b.Update(append(old, added))

	for _, tc := range []struct {
		at   time.Duration
		want float64
	}{{0, 0.1}, {5 * time.Second, 0.55}, {10 * time.Second, 1}, {time.Minute, 1}} {
		clk2 := *clk
		clk2.Advance(tc.at)
		b.mu.Lock()
		st := b.states[stateKey{added.Addr, "a"}]
		b.mu.Unlock()
		if got := b.rampWeight(st, int64(clk2.Now().Sub(b.epoch))); got < tc.want-1e-9 || got > tc.want+1e-9 {
			t.Errorf("weight %v into slow start = %v, want %v", tc.at, got, tc.want)
		}
	}

	// Both answer in DefaultLatency, the estimate the new one starts
	// with, so only slow start tells them apart: count the new one's
	// share of picks in its first second and once warm.
	share := func() float64 {
		n := 0
		for range 1000 {
			p := mustPick(t, b, netip.AddrPort{})
			if p.Endpoint.Addr == added.Addr {
				n++
			}
			p.Done(Result{Outcome: Success, TTFB: DefaultDefaultLatency})
			clk.Advance(time.Millisecond) // 1s per round
		}
		return float64(n) / 1000
	}
	early := share()
	clk.Advance(20 * time.Second)
	warm := share()
	t.Logf("new endpoint's share: %.3f in its first second, %.3f when warm", early, warm)
	if !(early < 0.5*warm) || warm < 0.3 {
		t.Errorf("new endpoint's share: %.2f in its first second, %.2f when warm; want clearly less early", early, warm)
	}

	// Without slow start, the new endpoint is not held back.
	cfg := Config{LocalZone: "a", SlowStart: -1}
	b2, _ := newTestBalancer(t, cfg)
	b2.Update(append(old, added))
	b2.mu.Lock()
	st := b2.states[stateKey{added.Addr, "a"}]
	b2.mu.Unlock()
	if w := b2.rampWeight(st, 0); w != 1 {
		t.Errorf("weight with slow start off = %v, want 1", w)
	}
}
