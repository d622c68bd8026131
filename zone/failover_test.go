package zone_test

import (
	"testing"
	"time"

	"github.com/zonelb/zonelb/zone"
)

// Behaviour (c): when the local zone fails, traffic moves to other zones
// within one second, and no request fails where a retry was safe.
func TestLocalZoneFailureMovesTrafficWithinASecond(t *testing.T) {
	for _, tc := range []struct {
		name      string
		outcome   zone.Outcome
		retrySafe bool
	}{
		{"refused", zone.NotReached, true},
		{"errors", zone.Failure, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := newModel(t, zone.Config{LocalZone: "a"}, threeZones(4))
			m.RTT = map[string]time.Duration{"b": time.Millisecond, "c": time.Millisecond}
			m.Background = map[string]float64{"b": m.Capacity() / 2, "c": m.Capacity() / 2}
			rate := 2 * m.Capacity()    // half the local zone's capacity
			m.Run(10*time.Second, rate) // learns the remote levels
			m.Reset()
			m.Run(10*time.Second, rate)
			if s := m.Share("a"); s < 0.99 {
				t.Fatalf("before the failure: local share %.3f, want >= 0.99", s)
			}

			m.Failing["a"] = tc.outcome
			m.Reset()
			m.Run(time.Second, rate)
			firstSecond := m.Failed()
			m.Reset()
			m.Run(10*time.Second, rate)
			t.Logf("%s: %d failed in the first second; after it: %v, local share %.4f",
				tc.name, firstSecond, m, m.Share("a"))

			// After one second, what still goes local is only the
			// probation request of an endpoint back from ejection.
			if s := m.Share("a"); s > 0.01 {
				t.Errorf("local share %.4f from 1s after the failure, want <= 0.01", s)
			}
			if tc.retrySafe {
				if firstSecond+m.Failed() != 0 {
					t.Errorf("%d requests failed although each was retried once elsewhere", firstSecond+m.Failed())
				}
			} else if m.Failed() > 20 {
				t.Errorf("%d requests failed after the first second, want only probation requests (<= 20)", m.Failed())
			}
		})
	}
}

// A zone whose endpoints are all ejected is probed by one endpoint at a
// time: while it stays down, each backoff costs one failed request, not one
// per endpoint; when it recovers, its endpoints all come back.
func TestDownZoneIsProbedByOneEndpoint(t *testing.T) {
	for _, tc := range []struct {
		name     string
		oneByOne bool
	}{{"zone probation", true}, {"per endpoint (without it)", false}} {
		t.Run(tc.name, func(t *testing.T) {
			m, b := newModel(t, zone.Config{LocalZone: "a"}, zone.MakeEndpoints(8, "a", "b"))
			m.RTT = map[string]time.Duration{"b": time.Millisecond}
			rate := 2 * m.Capacity()
			m.Run(5*time.Second, rate)
			m.Failing["a"] = zone.Failure
			m.Reset()
			b.SetZoneProbation(tc.oneByOne)
			m.Run(30*time.Second, rate)
			failed := m.Failed()
			// 8 endpoints x 5 failures to eject them, then the probes.
			t.Logf("%s: %d failed in 30s of zone failure", tc.name, failed)
			if tc.oneByOne && failed > 8*5+8 {
				t.Errorf("%d failed requests, want at most %d (ejection, then one probe per backoff)", failed, 8*5+8)
			}
			if !tc.oneByOne && failed <= 8*5+8 {
				t.Errorf("%d failed requests without zone probation: the test does not probe it", failed)
			}
			if !tc.oneByOne {
				return
			}
			delete(m.Failing, "a")
			m.Run(70*time.Second, rate) // the longest backoff is 1 minute
			m.Reset()
			m.Run(10*time.Second, rate) // learns the remote levels
			m.Reset()
			m.Run(10*time.Second, rate)
			if s := m.Share("a"); s < 0.99 {
				t.Errorf("after the zone recovered: local share %.3f, want >= 0.99", s)
			}
		})
	}
}
