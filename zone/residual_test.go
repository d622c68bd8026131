package zone_test

import (
	"testing"
	"time"

	"github.com/zonelb/zonelb/sim"
	"github.com/zonelb/zonelb/zone"
)

// unevenModel is the simulator's uneven scenario seen from one of zone c's
// three client nodes (zones c, a, b of 2, 6 and 4 endpoints serving 2
// calls at once, 10 ms; three client nodes per zone, 160 calls/s each):
// the other clients as background load, c's two others keeping about two
// thirds of theirs local and sending the rest to a, as the node under test
// should. It runs this node at 160 calls/s for 10 s to learn, then 20 s,
// and returns the model.
func unevenModel(t *testing.T, clients map[string]float64) *sim.Model {
	t.Helper()
	return unevenModelLearnt(t, clients, func(*zone.Balancer) {})
}

// unevenModelLearnt is unevenModel with learnt called on the balancer
// between the learning run and the measured one.
func unevenModelLearnt(t *testing.T, clients map[string]float64, learnt func(*zone.Balancer)) *sim.Model {
	t.Helper()
	cfg := zone.Config{LocalZone: "c", ZoneClients: clients}
	cfg.Spill.Budget = 0.1
	m, b := newModel(t, cfg, zone.MakeSpread([]string{"c", "a", "b"}, []int{2, 6, 4}))
	m.Workers = 2
	m.RTT = map[string]time.Duration{"c": 100 * time.Microsecond, "a": time.Millisecond, "b": time.Millisecond}
	m.Background = map[string]float64{"c": 2 * 160 * 0.65 / 2, "a": (3*160 + 2*160*0.35) / 6, "b": 3 * 160 / 4}
	m.Run(10*time.Second, 160)
	learnt(b)
	m.Reset()
	m.Run(20*time.Second, 160)
	return m
}

// The spread can change under a running balancer (the daemon follows the
// Nodes of each zone): from the next pick the spill goes by it, and what
// the balancer learnt stays (its budget's unloaded level, its gate).
func TestSetZoneClientsOnARunningBalancer(t *testing.T) {
	clients := map[string]float64{"a": 3, "b": 3, "c": 3}
	m := unevenModelLearnt(t, nil, func(b *zone.Balancer) {
		before := b.State().Spill[0].Share
		if err := b.SetZoneClients(clients); err != nil {
			t.Fatal(err)
		}
		clients["b"] = 100 // the balancer keeps its own copy
		if got := b.ZoneClients(); got["b"] != 3 {
			t.Errorf("ZoneClients after the caller changed its map: %v", got)
		}
		st := b.State()
		if after := st.Spill[0].Share; after != before {
			t.Errorf("spill share %v before, %v after: the gate's state was lost", before, after)
		}
		// a: 6 of 12 endpoints for 3 of 9 clients; b: 4 for 3, no room.
		if got := st.Spill[0].SpillTo; len(got) != 1 || got["a"] != 1 || st.ZoneClients["c"] != 3 {
			t.Errorf("State: spill to %v by clients %v; want all of it to a, by the spread set", got, st.ZoneClients)
		}
		if err := b.SetZoneClients(map[string]float64{"b": -1}); err == nil {
			t.Error("a negative count was taken")
		}
	})
	if got := m.Share("b"); got > 0.005 {
		t.Errorf("%.3f of the calls went to zone b after the spread was set: want none", got)
	}
	if got := m.Share("a"); got < 0.2 {
		t.Errorf("%.3f of the calls went to zone a: want the spill there", got)
	}
}

// Where the spill goes: given the clients' spread over zones, the requests
// an overloaded zone spills go to the zone with room (a: half the
// endpoints for a third of the clients), not to the one whose own clients
// already keep it busy (b: a third of each), as Envoy's zone-aware routing
// sends them; without it they land on both in proportion to their
// endpoints (measured: 16.8% of this node's calls to b, 26.4% to a, b's
// endpoints 63.3% busy; with it none to b, 53.2% to a, b 59.9% busy).
func TestSpillGoesWhereThereIsRoom(t *testing.T) {
	blind := unevenModel(t, nil)
	t.Logf("without the clients' spread: %v, b %.1f%% busy", blind, 100*blind.ZoneUtilisation("b"))
	m := unevenModel(t, map[string]float64{"a": 3, "b": 3, "c": 3})
	t.Logf("with it: %v, b %.1f%% busy", m, 100*m.ZoneUtilisation("b"))
	if got := m.Share("b"); got > 0.005 {
		t.Errorf("%.3f of the calls went to zone b, which has no room: want none", got)
	}
	if got := m.Share("a"); got < 0.2 {
		t.Errorf("%.3f of the calls went to zone a: want the spill there", got)
	}
	if blind.Share("b") < 0.05 {
		t.Errorf("without the spread %.3f went to zone b: the shape no longer shows the rule", blind.Share("b"))
	}
}

// Weights that only restate the endpoint counts change nothing: in the
// simulator's overload shape (zone a's clients are 60% of them, 10
// endpoints in each zone), b and c have the same room per endpoint, and
// the run is the same, request for request, as without the spread.
func TestResidualAlikeChangesNothing(t *testing.T) {
	run := func(clients map[string]float64) *sim.Model {
		cfg := zone.Config{LocalZone: "a", ZoneClients: clients}
		m, _ := newModel(t, cfg, threeZones(10))
		m.RTT = map[string]time.Duration{"b": time.Millisecond, "c": time.Millisecond}
		m.Run(10*time.Second, 1.26*10*m.Capacity())
		return m
	}
	without, with := run(nil), run(map[string]float64{"a": 6, "b": 2, "c": 2})
	if without.String() != with.String() || without.Percentile(0.99) != with.Percentile(0.99) {
		t.Errorf("with alike weights %v, without %v: want the same run", with, without)
	}
	if without.Share("b") < 0.05 || without.Share("c") < 0.05 {
		t.Errorf("%v: want a spill to both b and c", without)
	}
}
