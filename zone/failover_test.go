package zone

import (
	"testing"
	"time"
)

// Behaviour (c): when the local zone fails, traffic moves to other zones
// within one second, and no request fails where a retry was safe.
func TestLocalZoneFailureMovesTrafficWithinASecond(t *testing.T) {
	for _, tc := range []struct {
		name      string
		outcome   Outcome
		retrySafe bool
	}{
		{"refused", NotReached, true},
		{"errors", Failure, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, clk := newTestBalancer(t, Config{LocalZone: "a"})
			m := newQueueModel(t, b, clk, threeZones(4))
			m.rtt = map[string]time.Duration{"b": time.Millisecond, "c": time.Millisecond}
			m.external = map[string]float64{"b": m.capacity() / 2, "c": m.capacity() / 2}
			rate := 2 * m.capacity()    // half the local zone's capacity
			m.run(10*time.Second, rate) // learns the remote levels
			m.reset()
			m.run(10*time.Second, rate)
			if s := m.share("a"); s < 0.99 {
				t.Fatalf("before the failure: local share %.3f, want >= 0.99", s)
			}

			m.failing["a"] = tc.outcome
			m.reset()
			m.run(time.Second, rate)
			firstSecond := m.failed
			m.reset()
			m.run(10*time.Second, rate)
			t.Logf("%s: %d failed in the first second; after it: %v, local share %.4f",
				tc.name, firstSecond, m, m.share("a"))

			// After one second, what still goes local is only the
			// probation request of an endpoint back from ejection.
			if s := m.share("a"); s > 0.01 {
				t.Errorf("local share %.4f from 1s after the failure, want <= 0.01", s)
			}
			if tc.retrySafe {
				if firstSecond+m.failed != 0 {
					t.Errorf("%d requests failed although each was retried once elsewhere", firstSecond+m.failed)
				}
			} else if m.failed > 20 {
				t.Errorf("%d requests failed after the first second, want only probation requests (<= 20)", m.failed)
			}
		})
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

// A zone whose endpoints are all ejected is probed by one endpoint at a
// time: while it stays down, each backoff costs one failed request, not one
// per endpoint; when it recovers, its endpoints all come back.
func TestDownZoneIsProbedByOneEndpoint(t *testing.T) {
	for _, tc := range []struct {
		name     string
		oneByOne bool
	}{{"zone probation", true}, {"per endpoint (without it)", false}} {
		t.Run(tc.name, func(t *testing.T) {
			b, clk := newTestBalancer(t, Config{LocalZone: "a"})
			m := newQueueModel(t, b, clk, makeEndpoints(zoneSpec{"a", 8}, zoneSpec{"b", 8}))
			m.rtt = map[string]time.Duration{"b": time.Millisecond}
			rate := 2 * m.capacity()
			m.run(5*time.Second, rate)
			m.failing["a"] = Failure
			m.reset()
			b.zoneProbation = tc.oneByOne
			m.run(30*time.Second, rate)
			failed := m.failed
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
			delete(m.failing, "a")
			m.run(70*time.Second, rate) // the longest backoff is 1 minute
			m.reset()
			m.run(10*time.Second, rate) // learns the remote levels
			m.reset()
			m.run(10*time.Second, rate)
			if s := m.share("a"); s < 0.99 {
				t.Errorf("after the zone recovered: local share %.3f, want >= 0.99", s)
			}
		})
	}
}
