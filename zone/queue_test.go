package zone_test

import (
	"testing"
	"time"

	"github.com/zonelb/zonelb/zone"
)

// stepSettled runs the capacity step of stepWindows (zone a's two
// endpoints of 5 ms calls drop from 8 calls at once to 1 under 600
// calls/s) with the queue limit on or off, and returns the local share
// and p99 over the phase from 1 s after the step on (11 s); with restore,
// zone a's endpoints then serve 8 at once again, and it returns the local
// share of the 5 s after that.
func stepSettled(t *testing.T, cfg zone.Config, queueLimits, restore bool) (local float64, p99 time.Duration, after float64) {
	m, b := stepModel(t, cfg)
	b.SetQueueLimits(queueLimits)
	m.Run(10*time.Second, stepOffered)
	m.ZoneWorkers["a"] = 1
	m.Run(time.Second, stepOffered)
	m.Reset()
	m.Run(11*time.Second, stepOffered)
	local, p99 = m.Share("a"), m.Percentile(0.99)
	if st := b.State(); len(st.Spill) > 0 && st.Spill[0].QueueLimit > 0 && (!st.Spill[0].Active || st.Spill[0].Share < st.Spill[0].QueueShare) {
		sp := st.Spill[0]
		// What operators see (zonelb_spillover_active, the dashboard's
		// "Services spilling") must say so while the limit sends calls
		// across, the gate open or not.
		t.Errorf("queue limit %d in force, sending %.3f across: state says active %v, share %.3f",
			sp.QueueLimit, sp.QueueShare, sp.Active, sp.Share)
	}
	t.Logf("budget %v blind %v queue limits %v: local %.3f p99 %v; %+v", cfg.Spill.Budget, cfg.IgnoreZones, queueLimits, local, p99, b.State().Spill)
	if restore {
		m.ZoneWorkers["a"] = 8
		m.Run(5*time.Second, stepOffered)
		m.Reset()
		m.Run(5*time.Second, stepOffered)
		after = m.Share("a")
		t.Logf("capacity back: local %.3f; %+v", after, b.State().Spill)
	}
	return local, p99, after
}

// The queue limit: a request that would find a queue of this node's
// requests on its local endpoint, one that made such requests wait past
// the budget (and past the trip across), crosses, whatever the share. With
// a small budget the local zone then keeps each endpoint at what it serves
// without queueing and only the rest crosses: on the capacity step
// (single-call endpoints after it) more calls stay local than zone-blind
// P2C keeps, at a p99 no higher than its: 47.8% at 15.2 ms against
// 33.1% at 16.4 ms. Without the limit (the share and the in-flight limit
// hold only the zone's mean level): 49.9% at 18.1 ms.
func TestQueueLimitSpillsOnlyWhatWouldQueue(t *testing.T) {
	small := zone.Config{LocalZone: "a"}
	small.Spill.Budget = 0.02
	local, p99, _ := stepSettled(t, small, true, false)
	blindLocal, blind, _ := stepSettled(t, zone.Config{LocalZone: "a", IgnoreZones: true}, true, false)
	if local < blindLocal || p99 > blind {
		t.Errorf("2%% budget: %.3f local at p99 %v; zone-blind P2C %.3f at %v: want at least as many local at a p99 no higher",
			local, p99, blindLocal, blind)
	}
}

// The queue limit lifts when the endpoints serve more at once again: one
// request per queueProbeGap is let past it, and when such requests come
// back within the budget the limit rises, until none is left. Measured
// without those requests: the limit of 1 (set while zone a's endpoints
// served one call at a time) stayed when they served 8 again, and the
// zone kept 46.6% of the calls where it can serve them all (99.1% with
// them, the limit then at 4 and falling).
func TestQueueLimitLiftsWhenCapacityReturns(t *testing.T) {
	small := zone.Config{LocalZone: "a"}
	small.Spill.Budget = 0.02
	_, _, after := stepSettled(t, small, true, true)
	if after < 0.95 {
		t.Errorf("capacity back: %.3f of the calls local, want >= 0.95", after)
	}
}

// stepPhase runs the capacity step of stepWindows and returns the local
// share and p99 over the whole phase after it, its first second included
// (12 s).
func stepPhase(t *testing.T, cfg zone.Config) (local float64, p99 time.Duration) {
	m, b := stepModel(t, cfg)
	m.Run(10*time.Second, stepOffered)
	m.Reset()
	m.ZoneWorkers["a"] = 1
	m.Run(12*time.Second, stepOffered)
	t.Logf("budget %v blind %v: local %.3f p99 %v; %s", cfg.Spill.Budget, cfg.IgnoreZones, m.Share("a"), m.Percentile(0.99), b.State().Reason)
	return m.Share("a"), m.Percentile(0.99)
}

// The latency rule, the far end of the budgets: each request goes to the
// cheaper, by Peak-EWMA cost, of P2C's choice in the local zone and P2C's
// choice in the others. The local zone is preferred only as far as it is
// faster, and a capacity step moves requests with the first slow answer,
// not at the next control step: over the whole phase after the step, its
// first second included, it keeps more calls local than zone-blind P2C at
// no higher p99. The smallest budget (2%) queues in the step's first
// 0.1-0.3 s, before its levels show the step: in the first second p99 31
// ms, over the phase above zone-blind's (measured with stepPhase at 2%).
func TestLatencyRule(t *testing.T) {
	if got, err := zone.ParseSpillBudget("latency"); err != nil || got != zone.LatencyBudget || zone.FormatSpillBudget(got) != "latency" {
		t.Fatalf("ParseSpillBudget(latency) = %v, %v", got, err)
	}
	cfg := zone.Config{LocalZone: "a"}
	cfg.Spill.Budget = zone.LatencyBudget
	if _, b := newModel(t, cfg, threeZones(2)); b.State().SplitReason != zone.ReasonLatency {
		t.Errorf("latency rule: reason %q", b.State().SplitReason)
	}
	local, p99 := stepPhase(t, cfg)
	blindLocal, blind := stepPhase(t, zone.Config{LocalZone: "a", IgnoreZones: true})
	if local < blindLocal || p99 > blind {
		t.Errorf("latency rule: %.3f local at p99 %v; zone-blind P2C %.3f at %v: want at least as many local at a p99 no higher",
			local, p99, blindLocal, blind)
	}
}

// A balancer started into an overload (its zone queued by other nodes'
// requests from the start) learns the overload as its unloaded level; only
// a level measured in another zone shows it was not. So an open gate
// spills at least a tenth of the requests until the remote level is
// known, once: then the unloaded level is held under it (11.2 ms, the
// remote level 11.9 ms; 80.2% local at p99 59.9 ms over the last 10 s).
// Measured without that (the gate closed again before 50 requests had
// crossed): the remote level stayed unknown, the unloaded level 34.9 ms,
// and the node kept all its calls local at p99 99.6 ms.
func TestColdStartIntoOverloadLearnsTheRemoteLevel(t *testing.T) {
	cfg := zone.Config{LocalZone: "a"}
	cfg.Spill.Budget = 1
	m, b := newModel(t, cfg, threeZones(2))
	m.Workers = 2
	m.RTT = map[string]time.Duration{"b": time.Millisecond, "c": time.Millisecond}
	capacity := 2 * m.Capacity() // of a zone
	m.Background = map[string]float64{"a": 0.95 * m.Capacity(), "b": 0.2 * m.Capacity(), "c": 0.2 * m.Capacity()}
	m.Run(2*time.Second, 0.3*capacity)
	m.Background["a"] = 0.6 * m.Capacity() // the other nodes spill
	m.Run(18*time.Second, 0.3*capacity)
	m.Reset()
	m.Run(10*time.Second, 0.3*capacity)
	sp := b.State().Spill[0]
	t.Logf("local %.3f p99 %v; %+v", m.Share("a"), m.Percentile(0.99), sp)
	if sp.ToLevel == 0 || sp.UnloadedLevel > sp.ToLevel {
		t.Errorf("unloaded level %v, remote level %v: want the remote level known and the unloaded level under it", sp.UnloadedLevel, sp.ToLevel)
	}
}
