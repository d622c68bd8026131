package zone

import (
	"math"
	"testing"
	"time"
)

// Bytes are counted per (source zone, destination zone) and direction,
// and cross-zone bytes are priced on both sides of the crossing.
func TestAccountingByZonePairAndDirection(t *testing.T) {
	acct, err := NewAccounting(DefaultPricePerGB)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := newTestBalancer(t, Config{LocalZone: "a", Accounting: acct})
	eps := makeEndpoints(zoneSpec{"a", 1}, zoneSpec{"b", 1})
	b.Update(eps)
	local, remote := eps[0].Addr, eps[1].Addr

	// A pick avoiding one endpoint lands on the other.
	toLocal := func(r Result) { mustPick(t, b, remote).Done(r) }
	toRemote := func(r Result) { mustPick(t, b, local).Done(r) }
	toLocal(Result{Outcome: Success, TTFB: time.Millisecond, BytesSent: 100, BytesReceived: 1000})
	toLocal(Result{Outcome: Failure, BytesSent: 7, BytesReceived: -5}) // negative counts as 0
	toRemote(Result{Outcome: Success, TTFB: time.Millisecond, BytesSent: 1 << 30, BytesReceived: 1 << 29})
	toRemote(Result{Outcome: Canceled, BytesReceived: 1 << 29})

	got := acct.Usage()
	want := []PairUsage{
		{From: "a", To: "a", Requests: 2, BytesSent: 107, BytesReceived: 1000},
		// 2 GiB (2^31 bytes, 2.147483648 GB) crossed: $0.01 per GB
		// leaving a, $0.01 entering b.
		{From: "a", To: "b", Requests: 2, BytesSent: 1 << 30, BytesReceived: 1 << 30, CrossZone: true, CostUSD: 0.04294967296},
	}
	if len(got) != len(want) {
		t.Fatalf("usage %+v, want %+v", got, want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.From != w.From || g.To != w.To || g.Requests != w.Requests || g.BytesSent != w.BytesSent ||
			g.BytesReceived != w.BytesReceived || g.CrossZone != w.CrossZone || math.Abs(g.CostUSD-w.CostUSD) > 1e-12 {
			t.Errorf("usage[%d] = %+v, want %+v", i, g, w)
		}
	}
}

// The price is per GB of 10^9 bytes, as cloud providers bill, not per GiB.
func TestCrossZoneCost(t *testing.T) {
	for _, tc := range []struct {
		bytes uint64
		want  float64
	}{
		// 1 GB crossing at $0.01 each way: $0.01 out of one zone, $0.01
		// into the other.
		{1_000_000_000, 0.02},
		// A GiB is 1.073741824 GB.
		{1 << 30, 0.02147483648},
		{0, 0},
	} {
		if got := CrossZoneCost(tc.bytes, 0.01); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("CrossZoneCost(%d bytes, $0.01/GB) = %v, want %v", tc.bytes, got, tc.want)
		}
	}
}

// Unknown zones are counted but not priced: no one knows whether the bytes
// crossed.
func TestAccountingUnknownZoneNotPriced(t *testing.T) {
	acct, _ := NewAccounting(0.01)
	acct.Pair("a", "").Record(1<<30, 0)
	acct.Pair("", "b").Record(1<<30, 0)
	for _, u := range acct.Usage() {
		if u.CrossZone || u.CostUSD != 0 {
			t.Errorf("pair %q->%q priced: %+v", u.From, u.To, u)
		}
	}
}

func TestNewAccountingRejectsBadPrice(t *testing.T) {
	for _, p := range []float64{-0.01, math.NaN(), math.Inf(1)} {
		if _, err := NewAccounting(p); err == nil {
			t.Errorf("NewAccounting(%v) accepted", p)
		}
	}
	if a, err := NewAccounting(0); err != nil || a.PricePerGB() != 0 {
		t.Errorf("NewAccounting(0) = %v, %v; want a free Accounting", a, err)
	}
}
