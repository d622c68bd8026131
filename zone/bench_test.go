package zone

import (
	"net/netip"
	"testing"
	"time"
)

// benchBalancer has 1,000 endpoints over three zones, the local one warm.
func benchBalancer(b *testing.B) *Balancer {
	bal, err := NewBalancer(Config{LocalZone: "a"}) // real clock and randomness
	if err != nil {
		b.Fatal(err)
	}
	bal.Update(makeEndpoints(zoneSpec{"a", 334}, zoneSpec{"b", 333}, zoneSpec{"c", 333}))
	for range 10000 {
		p, _ := bal.Pick(netip.AddrPort{})
		p.Done(Result{Outcome: Success, TTFB: time.Millisecond})
	}
	return bal
}

// BenchmarkPick measures Pick alone at 1,000 endpoints.
func BenchmarkPick(b *testing.B) {
	bal := benchBalancer(b)
	held := make([]Picked, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		p, err := bal.Pick(netip.AddrPort{})
		if err != nil {
			b.Fatal(err)
		}
		held = append(held, p)
		if len(held) == cap(held) { // finish requests outside the measurement
			b.StopTimer()
			for _, p := range held {
				p.Done(Result{Outcome: Success, TTFB: time.Millisecond})
			}
			held = held[:0]
			b.StartTimer()
		}
	}
}

// BenchmarkPickDone measures one request's balancer overhead: Pick and Done.
func BenchmarkPickDone(b *testing.B) {
	bal := benchBalancer(b)
	r := Result{Outcome: Success, TTFB: time.Millisecond, BytesSent: 100, BytesReceived: 1000}
	b.ReportAllocs()
	for b.Loop() {
		p, err := bal.Pick(netip.AddrPort{})
		if err != nil {
			b.Fatal(err)
		}
		p.Done(r)
	}
}

// BenchmarkPickDoneParallel runs Pick and Done from every P at once.
func BenchmarkPickDoneParallel(b *testing.B) {
	bal := benchBalancer(b)
	r := Result{Outcome: Success, TTFB: time.Millisecond}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p, err := bal.Pick(netip.AddrPort{})
			if err != nil {
				b.Error(err)
				return
			}
			p.Done(r)
		}
	})
}

// BenchmarkPickRetry measures a retry that avoids a failed local endpoint
// and leaves its zone.
func BenchmarkPickRetry(b *testing.B) {
	bal := benchBalancer(b)
	avoid := makeEndpoints(zoneSpec{"a", 1})[0].Addr
	b.ReportAllocs()
	for b.Loop() {
		p, err := bal.Pick(avoid)
		if err != nil {
			b.Fatal(err)
		}
		p.Done(Result{Outcome: Canceled})
	}
}
