package zone_test

import (
	"testing"
	"time"

	"github.com/zonelb/zonelb/zone"
)

// Behaviour (a): with spare capacity in the local zone, at least 99% of
// requests stay local, where zone-blind balancing keeps about 1/3.
func TestBalancedLoadStaysLocal(t *testing.T) {
	for _, tc := range []struct {
		name       string
		cfg        zone.Config
		minLocal   float64
		maxLocal   float64
		wantActive bool
	}{
		{"zonelb", zone.Config{LocalZone: "a"}, 0.99, 1, false},
		{"zone-blind", zone.Config{LocalZone: "a", IgnoreZones: true}, 0, 0.6, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, b := newModel(t, tc.cfg, threeZones(4))
			half := m.Capacity() / 2
			m.RTT = map[string]time.Duration{"b": time.Millisecond, "c": time.Millisecond}
			// Every zone's endpoints at 50%: the remote ones from other
			// clients, the local ones from us.
			m.Background = map[string]float64{"b": half, "c": half}
			m.Run(60*time.Second, 4*half)
			local := m.Share("a")
			t.Logf("%v local share %.4f", m, local)
			if local < tc.minLocal || local > tc.maxLocal {
				t.Errorf("local share %.4f, want in [%v, %v]", local, tc.minLocal, tc.maxLocal)
			}
			if st := b.State(); len(st.Spill) > 0 && st.Spill[0].Active != tc.wantActive {
				t.Errorf("spill active %v at the end, want %v: %+v", st.Spill[0].Active, tc.wantActive, st.Spill[0])
			}
		})
	}
}

// Behaviour (b), parity rule: when the local zone is offered more than it
// can serve, only the excess spills, nearest zones first: the local
// endpoints stay the busiest, the spill is at least the excess, the nearer
// zone takes more of it than the farther, and p99 is no worse than 1.1x
// that of zone-blind Peak-EWMA P2C on the same workload. (The budget rule
// trades p99 for local share: TestDefaultBudgetTarget.)
func TestOverloadSpillsOnlyTheExcess(t *testing.T) {
	type outcome struct {
		local, toB, toC float64 // shares of requests
		ua, ub, uc      float64 // utilisation
		p99             time.Duration
	}
	run := func(cfg zone.Config) outcome {
		m, _ := newModel(t, cfg, threeZones(4))
		m.RTT = map[string]time.Duration{"b": time.Millisecond, "c": 2 * time.Millisecond}
		m.Background = map[string]float64{"b": 0.4 * m.Capacity(), "c": 0.4 * m.Capacity()}
		offered := 1.5 * 4 * m.Capacity() // 1.5x the local zone's capacity
		m.Run(20*time.Second, offered)    // warm-up, not measured
		m.Reset()
		m.Run(30*time.Second, offered)
		o := outcome{m.Share("a"), m.Share("b"), m.Share("c"),
			m.ZoneUtilisation("a"), m.ZoneUtilisation("b"), m.ZoneUtilisation("c"), m.Percentile(0.99)}
		t.Logf("%+v: %v; %+v", cfg.IgnoreZones, m, o)
		return o
	}
	distance := map[string]int{"b": 1, "c": 2}
	parity := zone.Config{LocalZone: "a", ZoneDistance: distance}
	parity.Spill.Budget = zone.ParityBudget
	z := run(parity)
	blind := run(zone.Config{LocalZone: "a", ZoneDistance: distance, IgnoreZones: true})

	const excess = 1.0 / 3 // (1.5 - 1) / 1.5
	if spilled := 1 - z.local; spilled < excess*0.95 {
		t.Errorf("spilled %.3f, want at least the excess %.3f", spilled, excess)
	}
	if z.ua < 0.75 || z.ua > 1 {
		t.Errorf("local utilisation %.2f, want near capacity (0.75..1)", z.ua)
	}
	if z.ua < z.ub || z.ua < z.uc {
		t.Errorf("local utilisation %.2f below a remote zone's (b %.2f, c %.2f): more spilled than needed", z.ua, z.ub, z.uc)
	}
	if z.toB <= z.toC {
		t.Errorf("nearer zone b took %.3f, farther c %.3f: want nearest first", z.toB, z.toC)
	}
	if z.local <= blind.local {
		t.Errorf("local share %.3f, zone-blind %.3f: want more kept local", z.local, blind.local)
	}
	if limit := blind.p99 * 11 / 10; z.p99 > limit {
		t.Errorf("p99 %v, want <= 1.1 x zone-blind's %v = %v", z.p99, blind.p99, limit)
	}
}

// Behaviour (d): a steady load near the local capacity does not flip
// spillover on and off, under the budget rule (default) or the parity
// rule. The parity rule without hysteresis (OnRatio = TargetRatio, and
// remote levels taken at face value rather than one standard error worse)
// flips many times, which shows the scenario probes flipping.
func TestSteadyLoadNearCapacityDoesNotFlip(t *testing.T) {
	run := func(cfg zone.Config, doubt float64) (flips uint64, st zone.SpillState) {
		m, b := newModel(t, cfg, threeZones(4))
		b.SetDoubt(doubt)
		m.RTT = map[string]time.Duration{"b": time.Millisecond, "c": time.Millisecond}
		m.Background = map[string]float64{"b": m.Capacity() / 2, "c": m.Capacity() / 2}
		m.Run(120*time.Second, 4*0.85*m.Capacity()) // 85% of the local capacity
		st = b.State().Spill[0]
		t.Logf("%v local share %.3f; spill %+v", m, m.Share("a"), st)
		return st.Flips, st
	}
	if flips, _ := run(zone.Config{LocalZone: "a"}, 1); flips > 2 {
		t.Errorf("%d flips under the budget rule, want at most 2", flips)
	}
	parity := zone.Config{LocalZone: "a"}
	parity.Spill.Budget = zone.ParityBudget
	flips, _ := run(parity, 1)
	if flips > 2 {
		t.Errorf("%d flips with the parity rule's hysteresis, want at most 2", flips)
	}
	noBand := parity
	noBand.Spill.OnRatio, noBand.Spill.TargetRatio = 1.0, 1.0
	if f, _ := run(noBand, 0); f < 2*flips+4 {
		t.Errorf("without hysteresis: %d flips, want clearly more than %d (the scenario does not probe flipping)", f, flips)
	}
}
