package zone_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/zonelb/zonelb/sim"
	"github.com/zonelb/zonelb/zone"
)

// stalledCalm runs the e2e test's calm phase on a node that stalls: three
// zones of two endpoints with no capacity limit, 600 calls/s from this
// node, 1 ms calls that become 5 ms calls, while the whole node (the proxy
// and every zone's endpoints: in the mini cluster all zones share the
// machine) pauses for 10-100 ms a few times a second. It returns the
// share of the calls after the slowdown that crossed zones, and the
// lowest local share of a 2 s window (the e2e test's).
func stalledCalm(t *testing.T, seed uint64, order sim.PauseOrder, proxy, endpoints bool) (cross, worst float64, m *sim.Model) {
	m, b := newModel(t, zone.Config{LocalZone: "a"}, threeZones(2))
	m.ServiceTime, m.Workers = time.Millisecond, 1000
	m.RTT = map[string]time.Duration{"b": time.Millisecond, "c": time.Millisecond}
	const before, calm = 10 * time.Second, 10 * time.Second
	m.Pauses = sim.Pauses(seed, 0, before+calm, 3, 10*time.Millisecond, 100*time.Millisecond)
	m.PauseProxy, m.PauseEndpoints, m.PauseOrder = proxy, endpoints, order
	m.Run(before, 600)
	m.ServiceTime = 5 * time.Millisecond
	m.Reset()
	var local, total float64
	worst = 1
	m.Every(2*time.Second, func() {
		worst = min(worst, m.Share("a"))
		local += m.Share("a") * float64(m.Total())
		total += float64(m.Total())
		m.Reset()
	})
	m.Run(calm, 600)
	m.Every(time.Hour, func() {})
	t.Logf("seed %d order %d proxy %v endpoints %v: %.0f of %.0f calls local, worst 2 s window %.4f; %+v", seed, order, proxy, endpoints, local, total, worst, b.State().Spill)
	return 1 - local/total, worst, m
}

// A node-wide stall is no overload: it delays the local zone's answers,
// and the remote zones' alike, and after it the proxy reads a burst of
// new requests at once. A healthy, unloaded zone keeps its calls: at
// most 1% of each run's calls cross zones (issue 11's bound for a
// healthy zone), and no 2 s window keeps less than the e2e test's 97%
// (its calm phase is the first window here, the 2 s after the 1 ms ->
// 5 ms slowdown), on a node that pauses for 10-100 ms three times a
// second, whichever order the proxy reads the work that waited, over
// seeds 1..30. (Measured with the in-flight limit applied at once, after
// a stall too: 4.5-9.3% crossed, worst windows 79.5-92.5%, seeds 1..5;
// with the wait but a long stall's skewed levels read as a queue (see
// controlBudget), seeds 18 and 24 kept 96.1% and 96.3% of a window, the
// worst of seeds 1..10 98.1%; now 98.4% and 99.7%.)
func TestNodeStallIsNotOverload(t *testing.T) {
	for _, order := range []sim.PauseOrder{sim.Interleaved, sim.ArrivalsFirst} {
		for seed := uint64(1); seed <= 30; seed++ {
			t.Run(fmt.Sprintf("order%d/seed%d", order, seed), func(t *testing.T) {
				cross, worst, _ := stalledCalm(t, seed, order, true, true)
				if cross > 0.01 || worst < 0.97 {
					t.Errorf("%.4f of the calls crossed zones on a stalling node with a healthy, unloaded zone, want <= 0.01; worst 2 s window %.4f local, want >= 0.97", cross, worst)
				}
			})
		}
	}
}

// What the node's pauses stop: the proxy alone (a GC pause, its threads
// descheduled) and the whole node must not spill a healthy zone; the
// endpoints alone, with the proxy picking all along, look to it like a
// hung zone, and are reported only.
func TestProxyStallIsNotOverload(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		if cross, worst, _ := stalledCalm(t, seed, sim.Interleaved, true, false); cross > 0.01 || worst < 0.97 {
			t.Errorf("seed %d: %.4f of the calls crossed zones with the proxy pausing, want <= 0.01; worst 2 s window %.4f, want >= 0.97", seed, cross, worst)
		}
		cross, _, _ := stalledCalm(t, seed, sim.Interleaved, false, true)
		t.Logf("seed %d: endpoints alone pausing: %.4f crossed", seed, cross)
	}
}

// The wait after a stall (see the in-flight limit) must not keep a zone
// that hangs: on the same stalling node, once zone a stops answering
// (its endpoints serve nothing, and nothing times out), a few calls go
// there until its in-flight count reaches the limit, and from the next
// second on none at all.
func TestHungZoneSpillsOnStallingNode(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		_, _, m := stalledCalm(t, seed, sim.Interleaved, true, true)
		m.Pauses = sim.Pauses(seed, 20*time.Second, 22*time.Second, 3, 10*time.Millisecond, 100*time.Millisecond)
		m.ZoneWorkers["a"] = 0
		m.Reset()
		m.Run(time.Second, 600)
		first := m.Share("a")
		t.Logf("seed %d: zone a hung, first second: %v", seed, m)
		m.Reset()
		m.Run(time.Second, 600)
		t.Logf("seed %d: zone a hung, second second: %v", seed, m)
		if first > 0.1 || m.Share("a") > 0 {
			t.Errorf("seed %d: %.4f of the calls went to the hung zone a in the first second, %.4f in the next, want <= 0.1 and 0 (%v)", seed, first, m.Share("a"), m)
		}
	}
}
