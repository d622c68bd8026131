package zone_test

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zonelb/zonelb/sim"
	"github.com/zonelb/zonelb/zone"
)

func TestParseSpillBudget(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
		bad  bool
	}{
		{in: "50%", want: 0.5},
		{in: " 12.5 % ", want: 0.125},
		{in: "300%", want: 3},
		{in: "parity", want: zone.ParityBudget},
		{in: "Parity", want: zone.ParityBudget},
		{in: "0.5", bad: true}, // a bare number is ambiguous: 0.5 or 0.5%?
		{in: "0%", bad: true},
		{in: "-10%", bad: true},
		{in: "NaN%", bad: true},
		{in: "Inf%", bad: true},
		{in: "20000%", bad: true},
		{in: "", bad: true},
		{in: "fast", bad: true},
	} {
		got, err := zone.ParseSpillBudget(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("ParseSpillBudget(%q) = %v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseSpillBudget(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if back, err := zone.ParseSpillBudget(zone.FormatSpillBudget(got)); err != nil || back != got {
			t.Errorf("round trip of %q: %v, %v", tc.in, back, err)
		}
	}
}

func TestSpillBudgetValidated(t *testing.T) {
	for _, b := range []float64{math.NaN(), math.Inf(1), zone.MaxSpillBudget + 1} {
		cfg := zone.Config{LocalZone: "a"}
		cfg.Spill.Budget = b
		if err := cfg.Validate(); err == nil {
			t.Errorf("Budget %v validated", b)
		}
	}
	_, b := newModel(t, zone.Config{LocalZone: "a"}, nil)
	if got := b.SpillBudget(); got != zone.DefaultSpillBudget {
		t.Errorf("default budget %v, want %v", got, zone.DefaultSpillBudget)
	}
	if err := b.SetSpillBudget(math.NaN()); err == nil {
		t.Error("SetSpillBudget(NaN) accepted")
	}
}

// targetShape is the shape for the default's target: three zones
// of three endpoints that each serve 2 calls at once (10 ms mean), zone a
// offered 1.5x its capacity by this node, b and c at 40% from others.
func targetShape(t *testing.T, cfg zone.Config) (*sim.Model, *zone.Balancer) {
	m, b := newModel(t, cfg, threeZones(3))
	m.Workers = 2
	m.RTT = map[string]time.Duration{"b": time.Millisecond, "c": time.Millisecond}
	m.Background = map[string]float64{"b": 0.4 * m.Capacity(), "c": 0.4 * m.Capacity()}
	return m, b
}

// The default budget's target: when the local zone (of queueing
// backends) is offered 1.5x its capacity, at least 50% of the calls stay
// local while p99 over the overload stays within 2.5x of zone-blind P2C's
// in the same run. The parity rule, for contrast, keeps fewer local.
func TestDefaultBudgetTarget(t *testing.T) {
	run := func(cfg zone.Config) (local float64, p99 time.Duration) {
		m, _ := targetShape(t, cfg)
		offered := 1.5 * 3 * m.Capacity()
		m.Run(10*time.Second, 0.3*3*m.Capacity()) // a quiet start: the unloaded level
		m.Reset()
		m.Run(30*time.Second, offered)
		t.Logf("budget %v blind %v: %v local %.3f p99 %v", cfg.Spill.Budget, cfg.IgnoreZones, m, m.Share("a"), m.Percentile(0.99))
		return m.Share("a"), m.Percentile(0.99)
	}
	local, p99 := run(zone.Config{LocalZone: "a"})
	_, blind := run(zone.Config{LocalZone: "a", IgnoreZones: true})
	if local < 0.5 {
		t.Errorf("default budget keeps %.3f local, want >= 0.5", local)
	}
	if limit := blind * 5 / 2; p99 > limit {
		t.Errorf("default budget p99 %v, want <= 2.5 x zone-blind's %v = %v", p99, blind, limit)
	}
}

// The learning bound: a fresh balancer in a healthy, unloaded zone sends
// at most 1% of its first 10,000 calls to other zones (the budget rule
// learns a remote level only when it spills). The parity rule, which
// learns remote levels with probes, does not meet it: the test bites.
func TestLearningIsFree(t *testing.T) {
	first := func(cfg zone.Config) float64 {
		m, _ := targetShape(t, cfg)
		rate := 0.3 * 3 * m.Capacity() // 30% of the local zone
		m.Run(time.Duration(10000/rate*float64(time.Second)), rate)
		t.Logf("budget %v: %v", cfg.Spill.Budget, m)
		return 1 - m.Share("a")
	}
	if cross := first(zone.Config{LocalZone: "a"}); cross > 0.01 {
		t.Errorf("%.4f of the first 10,000 calls crossed zones, want <= 0.01", cross)
	}
	parity := zone.Config{LocalZone: "a"}
	parity.Spill.Budget = zone.ParityBudget
	if cross := first(parity); cross <= 0.01 {
		t.Errorf("parity rule: %.4f crossed: the scenario does not show learning costs", cross)
	}
}

// stepOffered is the capacity step's offered load, calls/s (see
// stepWindows).
const stepOffered = 600.0

// stepModel is the queue model of the capacity step before it (see
// stepWindows): zone a's two endpoints of 5 ms calls serve 8 calls at
// once each; b and c, 1 ms away, idle but for their own 20% load.
func stepModel(t *testing.T, cfg zone.Config) (*sim.Model, *zone.Balancer) {
	m, b := newModel(t, cfg, threeZones(2))
	m.ServiceTime, m.Workers = 5*time.Millisecond, 8
	m.RTT = map[string]time.Duration{"b": time.Millisecond, "c": time.Millisecond}
	m.Background = map[string]float64{"b": 0.2 * m.Capacity(), "c": 0.2 * m.Capacity()}
	return m, b
}

// stepWindows runs the capacity step the demo shows: zone a's two
// endpoints (5 ms calls) serve 8 calls at once each, then from the step on
// 1 call each (400 calls/s together) while 600 calls/s are offered; b and
// c idle but for their own 20% load. It returns the local share and p99 of
// each second from the step on, and p99 over the whole first second.
func stepWindows(t *testing.T, cfg zone.Config, phase time.Duration) (shares []float64, p99s []time.Duration) {
	m, _ := stepModel(t, cfg)
	m.Run(10*time.Second, stepOffered)
	m.Reset()
	m.ZoneWorkers["a"] = 1
	m.Every(time.Second, func() {
		shares = append(shares, m.Share("a"))
		p99s = append(p99s, m.Percentile(0.99))
		m.Reset()
	})
	m.Run(phase, stepOffered)
	return shares, p99s
}

// No overshoot on a capacity step, and no queue before the spill: from
// the first second after the step to the end of the phase, the local
// share of every one-second window is at most 15 points below its mean
// over the last half of the phase, and p99 over the first second is
// within 3x of zone-blind P2C's.
func TestCapacityStepNoOvershoot(t *testing.T) {
	const phase = 12 * time.Second
	shares, p99s := stepWindows(t, zone.Config{LocalZone: "a"}, phase)
	_, blind := stepWindows(t, zone.Config{LocalZone: "a", IgnoreZones: true}, phase)
	half := shares[len(shares)/2:]
	var settled float64
	for _, s := range half {
		settled += s
	}
	settled /= float64(len(half))
	t.Logf("local shares per second %.3f, settled %.3f; p99 %v; zone-blind p99 %v", shares, settled, p99s, blind)
	for i, s := range shares[1:] {
		if s < settled-0.15 {
			t.Errorf("second %d after the step: local share %.3f, more than 15 points below the settled %.3f", i+1, s, settled)
		}
	}
	if limit := 3 * blind[0]; p99s[0] > limit {
		t.Errorf("p99 over the first second %v, want <= 3 x zone-blind's %v", p99s[0], blind[0])
	}
	// The local zone could serve 2/3 of the offered load, with a queue;
	// single-call endpoints reach the budget at about half their capacity.
	if settled < 0.3 {
		t.Errorf("settled local share %.3f: the local zone serves 2/3 of the offered load, want a good part kept", settled)
	}
}

// Once the local zone is loaded, a request that would queue past what
// the budget allows crosses at once (the tight in-flight limit): the
// queue's tail, which shows in p99 before the zone's mean level moves,
// stays bounded from the second after the step on. Measured on this
// shape with the loose limit only (2 x Little's law + 4): worst
// one-second p99 39.1 ms against zone-blind's worst 17.8 ms (2.2x); with
// the tight one, 26.1 ms (1.5x).
func TestLoadedZoneQueueTailIsBounded(t *testing.T) {
	const phase = 12 * time.Second
	_, p99s := stepWindows(t, zone.Config{LocalZone: "a"}, phase)
	_, blind := stepWindows(t, zone.Config{LocalZone: "a", IgnoreZones: true}, phase)
	worst := slices.Max(blind)
	t.Logf("p99 per second %v; zone-blind's %v", p99s, blind)
	for i, p := range p99s[1:] {
		if p > 2*worst {
			t.Errorf("second %d after the step: p99 %v, want <= 2 x zone-blind's worst second %v", i+1, p, worst)
		}
	}
}

// A budget changed on a running balancer changes its split, keeping what
// it learnt: a larger budget keeps more local. (From 10% rather than the
// default, at 1.25x the local capacity: at 1.5x the default already keeps
// 62% of the calls local, of at most 67%.)
func TestSetSpillBudgetChangesTheSplit(t *testing.T) {
	cfg := zone.Config{LocalZone: "a"}
	cfg.Spill.Budget = 0.1
	m, b := targetShape(t, cfg)
	offered := 1.25 * 3 * m.Capacity()
	m.Run(10*time.Second, 0.3*3*m.Capacity())
	m.Run(10*time.Second, offered)
	m.Reset()
	m.Run(10*time.Second, offered)
	before := m.Share("a")
	st := b.State()
	t.Logf("10%%: local %.3f, reason %q", before, st.Reason)
	if st.SpillBudgetText != "10%" || st.Spill[0].BudgetedLevel == 0 {
		t.Errorf("state %+v: want the budget and its level", st)
	}
	if err := b.SetSpillBudget(4); err != nil {
		t.Fatal(err)
	}
	m.Run(5*time.Second, offered)
	m.Reset()
	m.Run(10*time.Second, offered)
	after := m.Share("a")
	t.Logf("400%%: local %.3f, reason %q", after, b.State().Reason)
	if after < before+0.03 {
		t.Errorf("local share %.3f with a 400%% budget, %.3f with 10%%: want more kept local", after, before)
	}
}

// The reason for a service's split follows its state: under budget,
// spilling over budget, local zone failed.
func TestSplitReason(t *testing.T) {
	m, b := targetShape(t, zone.Config{LocalZone: "a"})
	m.Run(5*time.Second, 0.3*3*m.Capacity())
	if st := b.State(); st.SplitReason != zone.ReasonUnderBudget || !strings.HasPrefix(st.Reason, "local under budget: ") {
		t.Errorf("at 30%%: %q %q", st.SplitReason, st.Reason)
	}
	m.Run(5*time.Second, 1.5*3*m.Capacity())
	if st := b.State(); st.SplitReason != zone.ReasonSpilling || !strings.Contains(st.Reason, "over budget") {
		t.Errorf("at 150%%: %q %q", st.SplitReason, st.Reason)
	}
	m.Failing["a"] = zone.NotReached
	m.Run(2*time.Second, 0.3*3*m.Capacity())
	if st := b.State(); st.SplitReason != zone.ReasonLocalFailed {
		t.Errorf("local zone refusing: %q %q", st.SplitReason, st.Reason)
	}
	parity := zone.Config{LocalZone: "a"}
	parity.Spill.Budget = zone.ParityBudget
	_, pb := newModel(t, parity, threeZones(2))
	if st := pb.State(); st.SplitReason != zone.ReasonParity || st.SpillBudgetText != "parity" {
		t.Errorf("parity rule: %q %q %q", st.SplitReason, st.Reason, st.SpillBudgetText)
	}
}

// A service that becomes slower as a whole (a release, heavier calls:
// every request 5x slower, queued or not) is no overload: the unloaded
// level follows the requests that had their endpoint to themselves, so
// nothing spills. The mini cluster's e2e test does the same with real
// processes (1 ms -> 5 ms a call, before its overload).
func TestSlowerServiceIsNotOverload(t *testing.T) {
	m, b := newModel(t, zone.Config{LocalZone: "a"}, threeZones(2))
	m.ServiceTime, m.Workers = time.Millisecond, 64 // no queue at this load
	m.RTT = map[string]time.Duration{"b": time.Millisecond, "c": time.Millisecond}
	m.Run(10*time.Second, 600) // learn the 1 ms unloaded level
	m.ServiceTime = 5 * time.Millisecond
	// The first half second: the idle level lags the slowdown by a few
	// steps, during which the slower calls must not read as a queue
	// (measured before this step's idle requests were looked at: 3.7%
	// crossed here, and up to 14% of a window in the mini cluster's e2e
	// test on a loaded machine).
	m.Reset()
	m.Run(500*time.Millisecond, 600)
	t.Logf("in the first 0.5 s after the slowdown: %v", m)
	if local := m.Share("a"); local < 0.99 {
		t.Errorf("%.3f of the calls stayed local in the first 0.5 s after the service became slower with no queue, want >= 0.99 (%v)", local, b.State().Spill)
	}
	m.Reset()
	m.Run(10*time.Second, 600)
	t.Logf("after the slowdown: %v", m)
	if local := m.Share("a"); local < 0.99 {
		t.Errorf("%.3f of the calls stayed local after the service became slower with no queue, want >= 0.99 (%v)", local, b.State().Spill)
	}
}

// A bigger slowdown of the whole service (1 ms -> 10 ms and 20 ms a call,
// still no queue) is no overload either, although it leaves few requests
// that find their endpoint free of ours (idle requests: the evidence of a
// slowdown). The unloaded level follows batches of idle requests gathered
// over several control steps. Bounds: after the first 2 s, at most 1% of
// the calls cross (issue 11's bound for a healthy zone), and at 10 ms the
// first 2 s keep the e2e test's 97% too. At 20 ms the first 2 s are not
// held to it: the in-flight limit, set from the 1 ms level, sends the
// excess across until a batch of idle requests shows the slowdown (about
// 0.3 s: 1-5 of them a step), and 90.8% of the first 2 s stay local
// (1,109 of 1,222 calls).
// Measured before batches (one step's idle requests, or the idle level
// averaged over many steps): 1,133 and 730 of 1,222 calls local in the
// first 2 s, 100% and 90.1% over the next 10 s.
func TestBiggerSlowdownIsNotOverload(t *testing.T) {
	for _, tc := range []struct {
		to    time.Duration
		first float64 // the least local share of the first 2 s (0: not held)
	}{
		{to: 10 * time.Millisecond, first: 0.97},
		{to: 20 * time.Millisecond},
	} {
		t.Run(tc.to.String(), func(t *testing.T) {
			m, b := newModel(t, zone.Config{LocalZone: "a"}, threeZones(2))
			m.ServiceTime, m.Workers = time.Millisecond, 64 // no queue at this load
			m.RTT = map[string]time.Duration{"b": time.Millisecond, "c": time.Millisecond}
			m.Run(10*time.Second, 600) // learn the 1 ms unloaded level
			m.ServiceTime = tc.to
			m.Reset()
			m.Run(2*time.Second, 600)
			t.Logf("first 2 s after the slowdown: %v", m)
			if local := m.Share("a"); local < tc.first {
				t.Errorf("%.4f of the calls stayed local in the first 2 s after the service went to %v a call with no queue, want >= %.2f (%+v)", local, tc.to, tc.first, b.State().Spill)
			}
			m.Reset()
			m.Run(10*time.Second, 600)
			t.Logf("the 10 s after: %v", m)
			if local := m.Share("a"); local < 0.99 {
				t.Errorf("%.4f of the calls stayed local in the 10 s after, want >= 0.99 (%+v)", local, b.State().Spill)
			}
		})
	}
}
