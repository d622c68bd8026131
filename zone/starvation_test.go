package zone

import (
	"net/netip"
	"testing"
	"time"
)

// seqRun sends n requests one at a time (the load of one connection),
// each answering after ttfb(addr) on the test clock, 100µs apart, and
// counts them by endpoint. It stops early once stop says so.
func seqRun(t *testing.T, b *Balancer, clk *testClock, n int, ttfb func(netip.AddrPort) time.Duration, stop func(netip.AddrPort) bool) (map[netip.AddrPort]int, int) {
	t.Helper()
	got := map[netip.AddrPort]int{}
	for i := range n {
		p := mustPick(t, b, netip.AddrPort{})
		addr := p.Endpoint.Addr
		got[addr]++
		d := ttfb(addr)
		clk.Advance(d)
		p.Done(Result{Outcome: Success, TTFB: d})
		clk.Advance(100 * time.Microsecond)
		if stop != nil && stop(addr) {
			return got, i + 1
		}
	}
	return got, n
}

// One stall sample (a 1s GC pause, a loaded machine) must not price a
// healthy endpoint out for tens of seconds. Two endpoints answer in 1ms;
// one answers a single request in 1s, then 1ms again. With two endpoints
// P2C compares the same pair every time, so without a probe the stalled
// one waits for its 1s peak to fade below its rival's 1ms: about
// Decay x ln(1000) = 69s of one-at-a-time calls. It must get traffic back
// within two ProbeAfter (100ms) and then its share.
func TestStalledEndpointGetsTrafficBack(t *testing.T) {
	b, clk := newTestBalancer(t, Config{LocalZone: "a", SlowStart: -1})
	eps := makeEndpoints(zoneSpec{"a", 2})
	b.Update(eps)
	fast := func(netip.AddrPort) time.Duration { return time.Millisecond }
	if got, _ := seqRun(t, b, clk, 1000, fast, nil); got[eps[0].Addr] == 0 || got[eps[1].Addr] == 0 {
		t.Fatalf("warm-up not spread: %v", got)
	}

	// The next request stalls for 1s.
	p := mustPick(t, b, netip.AddrPort{})
	stalled := p.Endpoint.Addr
	clk.Advance(time.Second)
	p.Done(Result{Outcome: Success, TTFB: time.Second})
	stalledAt := clk.Now()

	// 1ms calls until the stalled endpoint gets one (bounded: 60k calls
	// are over a minute of simulated time).
	_, n := seqRun(t, b, clk, 60000, fast, func(a netip.AddrPort) bool { return a == stalled })
	back := clk.Now().Sub(stalledAt)
	t.Logf("stalled endpoint picked again after %d calls, %v", n, back)
	if back > 2*DefaultProbeAfter {
		t.Fatalf("stalled endpoint %s got no traffic for %v (%d calls) after one 1s sample, want <= %v", stalled, back, n, 2*DefaultProbeAfter)
	}
	// Its answer (1ms) gives it its share back at once.
	got, _ := seqRun(t, b, clk, 1000, fast, nil)
	if c := got[stalled]; c < 300 {
		t.Fatalf("after its fast answer the stalled endpoint got %d of 1000 calls, want >= 300 (%v)", c, got)
	}
}

// The probe that brings a stalled endpoint back must not feed a truly slow
// one: an endpoint that answers every request in 1s still gets almost
// nothing (each probe that finds it as slow as estimated doubles the wait
// for the next), and probes never overlap.
func TestSlowEndpointStaysAvoided(t *testing.T) {
	b, clk := newTestBalancer(t, Config{LocalZone: "a", SlowStart: -1})
	eps := makeEndpoints(zoneSpec{"a", 2})
	b.Update(eps)
	slow := eps[1].Addr
	ttfb := func(a netip.AddrPort) time.Duration {
		if a == slow {
			return time.Second
		}
		return time.Millisecond
	}
	start := clk.Now()
	got, n := seqRun(t, b, clk, 1<<20, ttfb, func(netip.AddrPort) bool { return clk.Now().Sub(start) >= 2*time.Minute })
	t.Logf("over %v: %d calls, slow endpoint %d", clk.Now().Sub(start), n, got[slow])
	// 2 minutes of one-at-a-time calls: probes after 0.1, 0.2, 0.4, ...
	// 25.6s of silence, then every 30s (3 x Decay): 11 with its first
	// pick. Without the backoff it gets one every 1.1s: 111.
	if c := got[slow]; c > 15 {
		t.Fatalf("the slow endpoint got %d of %d calls in 2 minutes, want <= 15", c, n)
	}

	// Probes never overlap: once the slow endpoint is due for one, of two
	// requests picked at once exactly one goes there.
	clk.Advance(40 * time.Second) // past the longest probe gap, 30s
	p1, p2 := mustPick(t, b, netip.AddrPort{}), mustPick(t, b, netip.AddrPort{})
	if (p1.Endpoint.Addr == slow) == (p2.Endpoint.Addr == slow) {
		t.Fatalf("picked %s and %s at once, want one probe to the slow %s and one to its rival", p1.Endpoint.Addr, p2.Endpoint.Addr, slow)
	}
	p1.Done(Result{Outcome: Success, TTFB: ttfb(p1.Endpoint.Addr)})
	p2.Done(Result{Outcome: Success, TTFB: ttfb(p2.Endpoint.Addr)})
}
