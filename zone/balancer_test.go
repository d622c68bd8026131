package zone

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// pickZones picks n times (each request answered at once) and counts the
// zones picked.
func pickZones(t *testing.T, b *Balancer, clk *testClock, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		p := mustPick(t, b, netip.AddrPort{})
		got[p.Endpoint.Zone]++
		clk.Advance(time.Millisecond)
		p.Done(Result{Outcome: Success, TTFB: 5 * time.Millisecond})
	}
	return got
}

// Behaviour (e): odd shapes of endpoint sets.
func TestOddShapes(t *testing.T) {
	ready := func(addr, zone string) Endpoint {
		return Endpoint{Addr: netip.MustParseAddrPort(addr), Zone: zone, Ready: true, Serving: true}
	}
	terminating := func(addr, zone string, serving bool) Endpoint {
		return Endpoint{Addr: netip.MustParseAddrPort(addr), Zone: zone, Serving: serving, Terminating: true}
	}
	for _, tc := range []struct {
		name      string
		local     string
		eps       []Endpoint
		wantZones map[string]bool // zones picks may land in, besides probes
		wantErr   error
	}{
		{
			name:      "uneven 4,4,3 stays local",
			local:     "c",
			eps:       makeEndpoints(zoneSpec{"a", 4}, zoneSpec{"b", 4}, zoneSpec{"c", 3}),
			wantZones: map[string]bool{"c": true},
		},
		{
			name:      "local zone with one endpoint",
			local:     "a",
			eps:       makeEndpoints(zoneSpec{"a", 1}, zoneSpec{"b", 5}),
			wantZones: map[string]bool{"a": true},
		},
		{
			name:      "local zone with none goes to the others",
			local:     "z",
			eps:       makeEndpoints(zoneSpec{"a", 2}, zoneSpec{"b", 2}),
			wantZones: map[string]bool{"a": true, "b": true},
		},
		{
			name:      "endpoints without a zone are remote",
			local:     "a",
			eps:       []Endpoint{ready("127.0.0.1:1", ""), ready("127.0.0.2:1", "a"), ready("127.0.0.3:1", "")},
			wantZones: map[string]bool{"a": true},
		},
		{
			name:      "only endpoints without a zone",
			local:     "a",
			eps:       []Endpoint{ready("127.0.0.1:1", ""), ready("127.0.0.2:1", "")},
			wantZones: map[string]bool{"": true},
		},
		{
			name:      "unknown local zone balances across all",
			local:     "",
			eps:       makeEndpoints(zoneSpec{"a", 2}, zoneSpec{"b", 2}),
			wantZones: map[string]bool{"a": true, "b": true},
		},
		{
			name:      "single endpoint overall",
			local:     "a",
			eps:       makeEndpoints(zoneSpec{"b", 1}),
			wantZones: map[string]bool{"b": true},
		},
		{
			name:  "terminating endpoints are a last resort",
			local: "a",
			eps: []Endpoint{
				terminating("127.0.0.1:1", "a", true),
				ready("127.0.0.2:1", "b"),
			},
			wantZones: map[string]bool{"b": true},
		},
		{
			name:  "all terminating: serving ones, local first",
			local: "a",
			eps: []Endpoint{
				terminating("127.0.0.1:1", "a", true),
				terminating("127.0.0.2:1", "b", true),
				terminating("127.0.0.3:1", "a", false),
			},
			wantZones: map[string]bool{"a": true},
		},
		{
			name:    "all terminating and not serving",
			local:   "a",
			eps:     []Endpoint{terminating("127.0.0.1:1", "a", false)},
			wantErr: ErrNoEndpoint,
		},
		{
			name:    "no endpoints",
			local:   "a",
			wantErr: ErrNoEndpoint,
		},
		{
			name:    "not ready and not terminating",
			local:   "a",
			eps:     []Endpoint{{Addr: netip.MustParseAddrPort("127.0.0.1:1"), Zone: "a"}},
			wantErr: ErrNoEndpoint,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, clk := newTestBalancer(t, Config{LocalZone: tc.local})
			b.Update(tc.eps)
			if tc.wantErr != nil {
				if _, err := b.Pick(netip.AddrPort{}); !errors.Is(err, tc.wantErr) {
					t.Fatalf("Pick error = %v, want %v", err, tc.wantErr)
				}
				return
			}
			const picks = 5000
			got := pickZones(t, b, clk, picks)
			outside := 0
			for z, n := range got {
				if !tc.wantZones[z] {
					outside += n
				}
			}
			// Probes: learning each remote zone's level takes
			// learnSamples requests there (more for the first of two
			// learnt at once), then at most one per 1/ProbeShare.
			remote := map[string]bool{}
			for _, e := range tc.eps {
				if !tc.wantZones[e.Zone] {
					remote[e.Zone] = true
				}
			}
			limit := len(remote)*2*learnSamples + int(picks*DefaultSpillProbeShare)
			if outside > limit {
				t.Errorf("%d picks outside %v, want at most %d probes (got %v)", outside, tc.wantZones, limit, got)
			}
			for z := range tc.wantZones {
				if got[z] == 0 {
					t.Errorf("no pick in zone %q (got %v)", z, got)
				}
			}
			if st := b.State(); strings.HasPrefix(tc.name, "all terminating") && !st.LastResort {
				t.Errorf("State.LastResort = false, want true")
			}
		})
	}
}

// P2C spreads requests over a zone's endpoints: none idles, none takes
// most.
func TestPickSpreadsWithinZone(t *testing.T) {
	b, clk := newTestBalancer(t, Config{LocalZone: "a"})
	b.Update(makeEndpoints(zoneSpec{"a", 4}))
	counts := map[netip.AddrPort]int{}
	var open []Picked
	for range 4000 {
		p := mustPick(t, b, netip.AddrPort{})
		counts[p.Endpoint.Addr]++
		open = append(open, p)
		if len(open) == 8 { // eight in flight at a time
			for _, q := range open {
				q.Done(Result{Outcome: Success, TTFB: 10 * time.Millisecond})
			}
			open = open[:0]
		}
		clk.Advance(time.Millisecond)
	}
	for a, n := range counts {
		if n < 700 || n > 1300 {
			t.Errorf("endpoint %v got %d of 4000 picks, want about 1000: %v", a, n, counts)
		}
	}
}

// Pick prefers the endpoint with the lower cost: estimate x (in-flight+1).
func TestPickPrefersLowerCost(t *testing.T) {
	b, clk := newTestBalancer(t, Config{LocalZone: "a", SlowStart: -1})
	eps := makeEndpoints(zoneSpec{"a", 2})
	b.Update(eps)
	fast, slow := eps[0].Addr, eps[1].Addr
	latency := map[netip.AddrPort]time.Duration{fast: time.Millisecond, slow: 50 * time.Millisecond}
	// Teach it: a retry avoiding one endpoint lands on the other.
	for range 20 {
		for _, avoid := range []netip.AddrPort{slow, fast} {
			p := mustPick(t, b, avoid)
			p.Done(Result{Outcome: Success, TTFB: latency[p.Endpoint.Addr]})
		}
		clk.Advance(100 * time.Millisecond)
	}
	n := 0
	for range 100 {
		p := mustPick(t, b, netip.AddrPort{})
		if p.Endpoint.Addr == fast {
			n++
		}
		p.Done(Result{Outcome: Success, TTFB: latency[p.Endpoint.Addr]})
	}
	if n != 100 {
		t.Errorf("fast endpoint got %d of 100 picks, want all", n)
	}
	// With 60 requests in flight on fast, slow (50ms x 1) is cheaper than
	// fast (about 1ms x 61).
	var held []Picked
	for range 60 {
		held = append(held, mustPick(t, b, slow))
	}
	if p := mustPick(t, b, netip.AddrPort{}); p.Endpoint.Addr != slow {
		t.Errorf("with 60 in flight on fast, Pick = %v, want slow", p.Endpoint.Addr)
	}
	for _, p := range held {
		p.Done(Result{Outcome: Canceled})
	}
}

// Update keeps the state of endpoints that stay and starts new ones fresh.
func TestUpdateKeepsState(t *testing.T) {
	b, clk := newTestBalancer(t, Config{LocalZone: "a"})
	eps := makeEndpoints(zoneSpec{"a", 3})
	stay := eps[0].Addr

	// Give the staying endpoint two requests in flight (while it is the
	// only one), then an estimate of 200ms and an ejection.
	b.Update(eps[:1])
	inflight := []Picked{mustPick(t, b, netip.AddrPort{}), mustPick(t, b, netip.AddrPort{})}
	b.Update(eps)
	b.mu.Lock()
	st := b.states[stateKey{stay, "a"}]
	b.mu.Unlock()
	st.ewma.mu.Lock()
	st.ewma.observeLocked(float64(200*time.Millisecond), b.clock(), b.decay)
	st.ewma.mu.Unlock()
	b.eject(st, b.clock())

	before := stateOf(t, b, stay)
	if !before.Ejected || before.InFlight != 2 {
		t.Fatalf("setup: state %+v, want ejected with 2 in flight", before)
	}

	// Replace the set: keep stay (with a changed weight), drop the
	// others, add a new one.
	changed := eps[0]
	changed.Weight = 3
	added := Endpoint{Addr: netip.MustParseAddrPort("127.0.9.9:8080"), Zone: "a", Ready: true, Serving: true}
	clk.Advance(time.Millisecond)
	b.Update([]Endpoint{changed, added})

	after := stateOf(t, b, stay)
	if after.InFlight != 2 || !after.Ejected || after.EjectedUntil != before.EjectedUntil ||
		after.Ejections != 1 || after.Estimate < 190*time.Millisecond {
		t.Errorf("staying endpoint lost state: before %+v, after %+v", before, after)
	}
	if after.Endpoint.Weight != 3 {
		t.Errorf("staying endpoint weight %d, want the update's 3", after.Endpoint.Weight)
	}
	fresh := stateOf(t, b, added.Addr)
	if fresh.Estimate != DefaultDefaultLatency || fresh.InFlight != 0 || fresh.SlowStartWeight != DefaultSlowStartMinWeight {
		t.Errorf("new endpoint state %+v, want DefaultLatency, idle, at the start of slow start", fresh)
	}
	if got := len(b.State().Endpoints); got != 2 {
		t.Errorf("%d endpoints after the update, want 2", got)
	}
	for _, p := range inflight { // Done on a kept state after the update
		p.Done(Result{Outcome: Success, TTFB: time.Millisecond})
	}
	if got := stateOf(t, b, stay).InFlight; got != 0 {
		t.Errorf("in flight %d after Done, want 0", got)
	}

	// An address that moves zone is a different pod: fresh state.
	moved := changed
	moved.Zone = "b"
	b.Update([]Endpoint{moved, added})
	if got := stateOf(t, b, stay); got.Ejected || got.Ejections != 0 {
		t.Errorf("endpoint that moved zone kept its old state: %+v", got)
	}
}

func stateOf(t *testing.T, b *Balancer, a netip.AddrPort) EndpointState {
	t.Helper()
	for _, e := range b.State().Endpoints {
		if e.Endpoint.Addr == a {
			return e
		}
	}
	t.Fatalf("endpoint %v not in State", a)
	return EndpointState{}
}

// Update drops endpoints without an address and repeated addresses.
func TestUpdateDropsInvalidAndRepeated(t *testing.T) {
	b, _ := newTestBalancer(t, Config{LocalZone: "a"})
	e := makeEndpoints(zoneSpec{"a", 1})[0]
	b.Update([]Endpoint{e, {Zone: "a", Ready: true}, e})
	if got := len(b.State().Endpoints); got != 1 {
		t.Errorf("%d endpoints, want 1", got)
	}
}

// Pick, Done and Update are safe for concurrent use (run with -race), and
// in-flight counts return to zero.
func TestConcurrentPickDoneUpdate(t *testing.T) {
	b, err := NewBalancer(Config{LocalZone: "a"}) // real clock, runtime randomness
	if err != nil {
		t.Fatal(err)
	}
	eps := threeZones(10)
	b.Update(eps)
	const pickers, requests = 8, 5000
	var pickersDone, updaterDone sync.WaitGroup
	for g := range pickers {
		pickersDone.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for i := range requests {
				var avoid netip.AddrPort
				if i%10 == 0 {
					avoid = eps[r.IntN(len(eps))].Addr
				}
				p, err := b.Pick(avoid)
				if err != nil {
					t.Error(err)
					return
				}
				o := Outcome(r.IntN(5))
				p.Done(Result{Outcome: o, TTFB: time.Duration(r.IntN(1000)) * time.Microsecond, BytesSent: 10, BytesReceived: 20})
			}
		})
	}
	stop := make(chan struct{})
	updaterDone.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			b.Update(eps[:len(eps)-i%3])
			_ = b.State()
		}
	})
	pickersDone.Wait()
	close(stop)
	updaterDone.Wait()

	b.Update(eps)
	for _, e := range b.State().Endpoints {
		if e.InFlight != 0 {
			t.Errorf("endpoint %v: %d in flight after all requests ended", e.Endpoint.Addr, e.InFlight)
		}
	}
	var reqs uint64
	for _, u := range b.Accounting().Usage() {
		reqs += u.Requests
	}
	if reqs != pickers*requests {
		t.Errorf("accounting counted %d requests, want %d", reqs, pickers*requests)
	}
}

// A retry leaves the failed endpoint's zone when another zone can serve:
// failures correlate within a zone.
func TestRetryLeavesTheFailedZone(t *testing.T) {
	b, _ := newTestBalancer(t, Config{LocalZone: "a", ZoneDistance: map[string]int{"b": 1, "c": 2}})
	eps := threeZones(3)
	b.Update(eps)
	failed := eps[0].Addr // in zone a
	for range 200 {
		p := mustPick(t, b, failed)
		if z := p.Endpoint.Zone; z != "b" {
			t.Fatalf("retry went to zone %q, want the nearest other zone b", z)
		}
		p.Done(Result{Outcome: Success, TTFB: time.Millisecond})
	}

	// With only the failed endpoint's zone left, the retry stays there but
	// avoids the endpoint.
	b.Update(eps[:3])
	for range 50 {
		p := mustPick(t, b, failed)
		if p.Endpoint.Addr == failed {
			t.Fatalf("retry returned the endpoint to avoid while others exist")
		}
		p.Done(Result{Outcome: Success, TTFB: time.Millisecond})
	}

	// And when the failed endpoint is all there is, it is returned.
	b.Update(eps[:1])
	if p := mustPick(t, b, failed); p.Endpoint.Addr != failed {
		t.Fatalf("Pick = %v, want the only endpoint %v", p.Endpoint.Addr, failed)
	}
}
