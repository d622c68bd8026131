package zone

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

// testClock is an injected clock that moves only when told.
type testClock struct{ t time.Time }

func newTestClock() *testClock { return &testClock{t: time.Unix(1_700_000_000, 0)} }

func (c *testClock) Now() time.Time          { return c.t }
func (c *testClock) Advance(d time.Duration) { c.t = c.t.Add(d) }

// newTestBalancer returns a balancer on a test clock and a seeded source.
func newTestBalancer(tb testing.TB, cfg Config) (*Balancer, *testClock) {
	tb.Helper()
	clk := newTestClock()
	cfg.Now = clk.Now
	if cfg.Rand == nil {
		cfg.Rand = rand.NewPCG(1, 2)
	}
	b, err := NewBalancer(cfg)
	if err != nil {
		tb.Fatalf("NewBalancer: %v", err)
	}
	return b, clk
}

// zoneSpec is a zone name and how many ready endpoints it has.
type zoneSpec struct {
	zone string
	n    int
}

// makeEndpoints returns ready endpoints, addressed 127.0.<zone#>.<i>:8080
// (addresses are data only: nothing connects to them).
func makeEndpoints(spec ...zoneSpec) []Endpoint {
	var eps []Endpoint
	for zi, s := range spec {
		for i := range s.n {
			eps = append(eps, Endpoint{
				Addr:    netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, byte(zi + 1), byte(i + 1)}), 8080),
				Zone:    s.zone,
				Ready:   true,
				Serving: true,
			})
		}
	}
	return eps
}

func mustPick(tb testing.TB, b *Balancer, avoid netip.AddrPort) Picked {
	tb.Helper()
	p, err := b.Pick(avoid)
	if err != nil {
		tb.Fatalf("Pick(%v): %v", avoid, err)
	}
	return p
}

// threeZones is the common shape: local zone "a", remote "b" and "c".
func threeZones(n int) []Endpoint {
	return makeEndpoints(zoneSpec{"a", n}, zoneSpec{"b", n}, zoneSpec{"c", n})
}
