package sim

import (
	"math"
	"testing"
	"time"
)

// smallEngine builds an engine for policy p on zones of the given
// endpoints and client nodes, without running it.
func smallEngine(t *testing.T, p Policy, zones ...ZoneSpec) *engine {
	t.Helper()
	sc := base()
	sc.Name = "unit"
	sc.Zones = zones
	sc.Load = 0.5
	e, err := newEngine(&sc, p, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func zonesOf(eps []*endpoint) map[string]int {
	out := map[string]int{}
	for _, ep := range eps {
		out[ep.zone]++
	}
	return out
}

// HAZL-like: the pool starts with the local zone; above a mean load of
// 2.0 requests in flight per pooled endpoint one remote endpoint joins,
// below 0.8 one leaves, between them nothing moves, and changes are paced.
func TestHAZLBand(t *testing.T) {
	if HAZLLow != 0.8 || HAZLHigh != 2.0 {
		t.Fatalf("band %v..%v, want HAZL's defaults 0.8..2.0", HAZLLow, HAZLHigh)
	}
	e := smallEngine(t, HAZLLike, ZoneSpec{"a", 1, 2}, ZoneSpec{"b", 1, 2})
	h := e.nodes[0].picker.(*hazl)
	if got := zonesOf(h.pool); got["a"] != 2 || got["b"] != 0 {
		t.Fatalf("initial pool %v, want the 2 local endpoints", got)
	}
	setLoad := func(per float64) {
		for _, ep := range h.pool {
			h.inflight[ep.idx] = 0
		}
		total := int(math.Round(per * float64(len(h.pool))))
		for i := range total {
			h.inflight[h.pool[i%len(h.pool)].idx]++
		}
	}
	step := func(per float64) map[string]int {
		e.now += int64(hazlPace)
		setLoad(per)
		h.adjust(e)
		return zonesOf(h.pool)
	}
	if got := step(2.0); got["b"] != 0 {
		t.Errorf("load 2.0 (at the high mark): pool %v, want no remote endpoint", got)
	}
	if got := step(2.5); got["b"] != 1 {
		t.Errorf("load 2.5: pool %v, want one remote endpoint added", got)
	}
	setLoad(3)
	h.adjust(e) // same instant: paced
	if got := zonesOf(h.pool); got["b"] != 1 {
		t.Errorf("second change within %v: pool %v", hazlPace, got)
	}
	if got := step(3); got["b"] != 2 {
		t.Errorf("load 3 a step later: pool %v, want the second remote endpoint", got)
	}
	if got := step(1.0); got["b"] != 2 {
		t.Errorf("load 1.0 (inside the band): pool %v, want unchanged", got)
	}
	if got := step(0.5); got["b"] != 1 {
		t.Errorf("load 0.5: pool %v, want one remote endpoint removed", got)
	}
	if got := step(0.5); got["b"] != 0 {
		t.Errorf("load 0.5 again: pool %v, want the last remote endpoint removed", got)
	}
	if got := step(0); got["a"] != 2 {
		t.Errorf("local endpoints never leave: pool %v", got)
	}
}

// Envoy load_aware_locality-like: utilisation EWMA with alpha 0.3,
// recomputed every second; local (but for 3% probes) while local
// utilisation <= remote mean + 0.1; otherwise hosts x (1 - utilisation).
func TestEnvoyLoadAwareRule(t *testing.T) {
	if EnvoyLALAlpha != 0.3 || EnvoyLALPeriod != time.Second || EnvoyLALThreshold != 0.1 || EnvoyLALProbe != 0.03 {
		t.Fatal("parameters differ from Envoy's documented defaults")
	}
	e := smallEngine(t, EnvoyLoadAware, ZoneSpec{"a", 1, 2}, ZoneSpec{"b", 1, 2}, ZoneSpec{"c", 1, 2})
	l := e.nodes[0].picker.(*envoyLAL)
	setBusy := func(z string, busy int) { // per endpoint, of 2 workers
		for _, ep := range e.readyByZone[z] {
			ep.busy = busy
		}
	}
	setBusy("a", 1) // 0.5
	setBusy("b", 1)
	setBusy("c", 0) // remote mean 0.25: local within 0.25 + 0.1? no
	l.recompute(e)
	// local 0.5 > 0.35: weighted: a 2x0.5=1, b 2x0.5=1, c 2x1=2.
	if want := 0.25; math.Abs(l.pLocal-want) > 1e-9 {
		t.Errorf("local 0.5 vs remote mean 0.25: pLocal %v, want %v (weights 1:1:2)", l.pLocal, want)
	}
	setBusy("c", 1) // now every zone at 0.5; EWMA: c = 0.3x0.5 + 0.7x0 = 0.15
	l.recompute(e)
	if got := l.util["c"]; math.Abs(got-0.15) > 1e-9 {
		t.Errorf("EWMA of c after 0 then 0.5: %v, want 0.15", got)
	}
	// local 0.5 vs remote mean (0.5+0.15)/2 = 0.325: 0.5 > 0.425: still weighted.
	if l.pLocal >= 1-EnvoyLALProbe {
		t.Errorf("pLocal %v, want weighted (local above remote + 0.1)", l.pLocal)
	}
	l.recompute(e) // c = 0.3x0.5 + 0.7x0.15 = 0.255; mean 0.3775; 0.5 <= 0.4775? no
	l.recompute(e) // c = 0.3285; mean 0.414; 0.5 <= 0.514: local
	if want := 1 - EnvoyLALProbe; l.pLocal != want {
		t.Errorf("local within remote + 0.1: pLocal %v, want %v (3%% probes)", l.pLocal, want)
	}
	// Weights are recomputed once a second, not per pick.
	l.next = e.now + int64(EnvoyLALPeriod)
	setBusy("a", 2)
	if _, _, ok := l.pick(e, nil); !ok || l.pLocal != 1-EnvoyLALProbe {
		t.Errorf("pick within the period recomputed the weights: pLocal %v", l.pLocal)
	}
}

// Envoy zone-aware routing: all local when the upstream's local share of
// hosts is at least the caller's; otherwise upstream/caller local, the
// rest by residual capacity; zone-blind below 6 hosts.
func TestEnvoyZoneAwareRule(t *testing.T) {
	e := smallEngine(t, EnvoyZoneAware, ZoneSpec{"a", 3, 6}, ZoneSpec{"b", 3, 4}, ZoneSpec{"c", 3, 2})
	byZone := map[string]*envoyZoneAware{}
	for _, n := range e.nodes {
		byZone[n.zone] = n.picker.(*envoyZoneAware)
	}
	// Hosts 6/4/2 of 12 (0.5, 0.33, 0.17); callers 3/3/3 (0.33 each).
	if a := byZone["a"]; a.pLocal != 1 {
		t.Errorf("zone a (hosts 0.5 >= callers 0.33): local share %v, want 1", a.pLocal)
	}
	if b := byZone["b"]; b.pLocal != 1 {
		t.Errorf("zone b (hosts 0.33 >= callers 0.33): local share %v, want 1", b.pLocal)
	}
	c := byZone["c"]
	if math.Abs(c.pLocal-0.5) > 1e-9 {
		t.Errorf("zone c (hosts 0.17 < callers 0.33): local share %v, want 0.5", c.pLocal)
	}
	if math.Abs(c.residual["a"]-(0.5-1.0/3)) > 1e-9 || c.residual["b"] != 0 {
		t.Errorf("residual capacity %v, want a 0.17 and b 0", c.residual)
	}
	small := smallEngine(t, EnvoyZoneAware, ZoneSpec{"a", 1, 1}, ZoneSpec{"b", 1, 4})
	if z := small.nodes[0].picker.(*envoyZoneAware); !z.blind {
		t.Errorf("5 hosts (< min_cluster_size %d): want zone-blind", EnvoyZoneAwareMinClusterSize)
	}
}
