package zone_test

import (
	"math/rand/v2"
	"testing"

	"github.com/zonelb/zonelb/sim"
	"github.com/zonelb/zonelb/zone"
)

// The tests of this package pin the zone behaviours on the sim package's
// simulator (sim.Model: one client node, endpoints as queues, per-zone
// round trips, background load from other clients). They are an external
// test package because sim imports zone.

// newModel returns the simulator over eps and the balancer for cfg that it
// drives, on the simulated clock and the seeded source of the package's
// internal tests.
func newModel(t *testing.T, cfg zone.Config, eps []zone.Endpoint) (*sim.Model, *zone.Balancer) {
	t.Helper()
	m := sim.NewModel(eps)
	cfg.Now = m.Now
	if cfg.Rand == nil {
		cfg.Rand = rand.NewPCG(1, 2)
	}
	b, err := zone.NewBalancer(cfg)
	if err != nil {
		t.Fatalf("NewBalancer: %v", err)
	}
	m.Balance(b)
	return m, b
}

// threeZones is the common shape: n endpoints in each of the local zone
// "a" and the remote "b" and "c".
func threeZones(n int) []zone.Endpoint { return zone.MakeEndpoints(n, "a", "b", "c") }
