package zone

import (
	"net/netip"
	"testing"
	"time"
)

// Equal endpoints share even a strictly sequential load (one request at a
// time, so in-flight counts never differ): the proxy's promise that calls
// over one connection spread over the pods. Before an endpoint is
// measured it is priced at its measured peers' level, and its first sample
// replaces the placeholder; otherwise the endpoints sampled first would
// fade below the 30ms default and the rest would starve for a minute.
func TestEqualEndpointsShareSequentialLoad(t *testing.T) {
	for _, ignoreZones := range []bool{true, false} {
		b, clk := newTestBalancer(t, Config{LocalZone: "a", IgnoreZones: ignoreZones})
		b.Update(makeEndpoints(zoneSpec{"a", 3}))
		if ignoreZones {
			// One endpoint per zone: peers are found across zones.
			b.Update(makeEndpoints(zoneSpec{"a", 1}, zoneSpec{"b", 1}, zoneSpec{"c", 1}))
		}
		got := map[netip.AddrPort]int{}
		const n = 3000
		for i := 0; i < n; i++ {
			p := mustPick(t, b, netip.AddrPort{})
			got[p.Endpoint.Addr]++
			// 200µs to 260µs: equal endpoints, a little noise.
			ttfb := 200*time.Microsecond + time.Duration(i*7919%61)*time.Microsecond
			clk.Advance(ttfb)
			p.Done(Result{Outcome: Success, TTFB: ttfb})
			clk.Advance(50 * time.Microsecond)
		}
		if len(got) != 3 {
			t.Fatalf("ignoreZones=%v: %d of 3 endpoints used: %v", ignoreZones, len(got), got)
		}
		for addr, c := range got {
			if c < n/3*9/10 || c > n/3*11/10 {
				t.Errorf("ignoreZones=%v: %s got %d of %d, want within 10%% of %d (%v)", ignoreZones, addr, c, n, n/3, got)
			}
		}
	}
}

// A new endpoint joining a measured set starts at its peers' level: not
// free (it gets no more than its share while it ramps in), and not held
// back by the fixed default once slow start is over (it gets its share
// at once, where a 30ms default would starve it for most of a minute).
func TestNewEndpointStartsAtPeersLevel(t *testing.T) {
	b, clk := newTestBalancer(t, Config{LocalZone: "a"})
	eps := makeEndpoints(zoneSpec{"a", 3})
	b.Update(eps[:2])
	run := func(n int) map[netip.AddrPort]int {
		got := map[netip.AddrPort]int{}
		for i := 0; i < n; i++ {
			p := mustPick(t, b, netip.AddrPort{})
			got[p.Endpoint.Addr]++
			clk.Advance(time.Millisecond)
			p.Done(Result{Outcome: Success, TTFB: time.Millisecond})
		}
		return got
	}
	clk.Advance(time.Minute) // the first two are past slow start
	run(1000)
	b.Update(eps)
	got := run(300)
	if newcomer := got[eps[2].Addr]; newcomer > 100 {
		t.Fatalf("the new endpoint got %d of 300 requests while ramping in: treated as free (%v)", newcomer, got)
	}
	clk.Advance(DefaultSlowStart)
	got = run(3000)
	if newcomer := got[eps[2].Addr]; newcomer < 900 {
		t.Fatalf("after slow start the new endpoint got %d of 3000 requests, want about a third (%v)", newcomer, got)
	}
}

// A response that has started no longer counts as load: long streams on an
// endpoint do not make it look busy (cost = estimate x (in flight + 1)),
// and Done after Responded does not release the slot twice.
func TestRespondedReleasesInFlight(t *testing.T) {
	b, clk := newTestBalancer(t, Config{LocalZone: "a", SlowStart: -1})
	eps := makeEndpoints(zoneSpec{"a", 2})
	b.Update(eps)
	inflight := func(addr netip.AddrPort) int64 {
		for _, e := range b.State().Endpoints {
			if e.Endpoint.Addr == addr {
				return e.InFlight
			}
		}
		t.Fatalf("no endpoint %s", addr)
		return 0
	}
	// Ten long streams on whichever endpoints P2C chooses, all answered.
	var streams []Picked
	for i := 0; i < 10; i++ {
		p := mustPick(t, b, netip.AddrPort{})
		clk.Advance(time.Millisecond)
		p.Responded()
		p.Responded() // at most once takes effect
		streams = append(streams, p)
	}
	for _, ep := range eps {
		if n := inflight(ep.Addr); n != 0 {
			t.Fatalf("%s: %d in flight after every stream was answered, want 0", ep.Addr, n)
		}
	}
	for _, p := range streams {
		p.Done(Result{Outcome: Success, TTFB: time.Millisecond})
	}
	for _, ep := range eps {
		if n := inflight(ep.Addr); n != 0 {
			t.Fatalf("%s: in flight %d after Done, want 0 (released twice or not at all)", ep.Addr, n)
		}
	}
	// Without Responded the slot is held until Done.
	p := mustPick(t, b, netip.AddrPort{})
	if n := inflight(p.Endpoint.Addr); n != 1 {
		t.Fatalf("in flight %d before the response, want 1", n)
	}
	p.Done(Result{Outcome: Success, TTFB: time.Millisecond})
}
