package zone

import (
	"testing"
	"time"
)

// threeZones is the common shape: local zone "a", remote "b" and "c".
func threeZones(n int) []Endpoint {
	return makeEndpoints(zoneSpec{"a", n}, zoneSpec{"b", n}, zoneSpec{"c", n})
}

// Behaviour (a): with spare capacity in the local zone, at least 99% of
// requests stay local, where zone-blind balancing keeps about 1/3.
func TestBalancedLoadStaysLocal(t *testing.T) {
	for _, tc := range []struct {
		name       string
		cfg        Config
		minLocal   float64
		maxLocal   float64
		wantActive bool
	}{
		{"zonelb", Config{LocalZone: "a"}, 0.99, 1, false},
		{"zone-blind", Config{LocalZone: "a", IgnoreZones: true}, 0, 0.6, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, clk := newTestBalancer(t, tc.cfg)
			m := newQueueModel(t, b, clk, threeZones(4))
			half := m.capacity() / 2
			m.rtt = map[string]time.Duration{"b": time.Millisecond, "c": time.Millisecond}
			// Every zone's endpoints at 50%: the remote ones from other
			// clients, the local ones from us.
			m.external = map[string]float64{"b": half, "c": half}
			m.run(60*time.Second, 4*half)
			local := m.share("a")
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
	run := func(cfg Config) outcome {
		b, clk := newTestBalancer(t, cfg)
		m := newQueueModel(t, b, clk, threeZones(4))
		m.rtt = map[string]time.Duration{"b": time.Millisecond, "c": 2 * time.Millisecond}
		m.external = map[string]float64{"b": 0.4 * m.capacity(), "c": 0.4 * m.capacity()}
		offered := 1.5 * 4 * m.capacity() // 1.5x the local zone's capacity
		m.run(20*time.Second, offered)    // warm-up, not measured
		m.reset()
		m.run(30*time.Second, offered)
		o := outcome{m.share("a"), m.share("b"), m.share("c"),
			m.zoneUtilisation("a"), m.zoneUtilisation("b"), m.zoneUtilisation("c"), m.percentile(0.99)}
		t.Logf("%+v: %v; %+v", cfg.IgnoreZones, m, o)
		return o
	}
	distance := map[string]int{"b": 1, "c": 2}
	parity := Config{LocalZone: "a", ZoneDistance: distance}
	parity.Spill.Budget = ParityBudget
	z := run(parity)
	blind := run(Config{LocalZone: "a", ZoneDistance: distance, IgnoreZones: true})

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
	run := func(cfg Config, doubt float64) (flips uint64, st SpillState) {
		b, clk := newTestBalancer(t, cfg)
		b.doubt = doubt
		m := newQueueModel(t, b, clk, threeZones(4))
		m.rtt = map[string]time.Duration{"b": time.Millisecond, "c": time.Millisecond}
		m.external = map[string]float64{"b": m.capacity() / 2, "c": m.capacity() / 2}
		m.run(120*time.Second, 4*0.85*m.capacity()) // 85% of the local capacity
		st = b.State().Spill[0]
		t.Logf("%v local share %.3f; spill %+v", m, m.share("a"), st)
		return st.Flips, st
	}
	if flips, _ := run(Config{LocalZone: "a"}, 1); flips > 2 {
		t.Errorf("%d flips under the budget rule, want at most 2", flips)
	}
	parity := Config{LocalZone: "a"}
	parity.Spill.Budget = ParityBudget
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
