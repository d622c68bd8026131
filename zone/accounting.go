package zone

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
)

// DefaultPricePerGB is the price of one GB (10^9 bytes, the unit cloud
// providers bill) crossing a zone boundary, in USD, charged on each side of
// the crossing (AWS bills inter-AZ traffic "$0.01/GB in each direction":
// the sender's egress and the receiver's ingress).
const DefaultPricePerGB = 0.01

// BytesPerGB is the GB that prices are per: 10^9 bytes, not a GiB.
const BytesPerGB = 1e9

// Accounting counts requests and bytes per (source zone, destination zone)
// pair and direction. The hot path is three atomic adds on counters
// resolved when the endpoint set changes; reading (Usage) is for metrics.
// One Accounting is meant to be shared by all balancers of a node.
type Accounting struct {
	pricePerGB float64

	mu    sync.Mutex
	pairs map[zonePair]*PairCounter
}

type zonePair struct{ from, to string }

// NewAccounting returns an Accounting that prices cross-zone bytes at
// pricePerGB USD per GB (BytesPerGB) on each side of the crossing. 0 means crossing is
// free (on premises); use DefaultPricePerGB for the cloud rate.
func NewAccounting(pricePerGB float64) (*Accounting, error) {
	if math.IsNaN(pricePerGB) || math.IsInf(pricePerGB, 0) || pricePerGB < 0 {
		return nil, fmt.Errorf("zone accounting: price per GB %v, want a finite value >= 0", pricePerGB)
	}
	return &Accounting{pricePerGB: pricePerGB, pairs: make(map[zonePair]*PairCounter)}, nil
}

// PricePerGB returns the configured price per GB (BytesPerGB) on each side.
func (a *Accounting) PricePerGB() float64 { return a.pricePerGB }

// Pair returns the counters of requests from zone from to zone to,
// creating them on first use. Resolve it once per endpoint (not per
// request): the returned pointer stays valid for the Accounting's life.
func (a *Accounting) Pair(from, to string) *PairCounter {
	k := zonePair{from, to}
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.pairs[k]
	if !ok {
		p = &PairCounter{}
		a.pairs[k] = p
	}
	return p
}

// PairCounter counts one zone pair's traffic. Safe for concurrent use.
type PairCounter struct {
	requests atomic.Uint64
	sent     atomic.Uint64 // source -> destination (request bytes)
	received atomic.Uint64 // destination -> source (response bytes)
}

// Record adds one request that sent and received the given byte counts.
// Negative counts are taken as 0.
func (p *PairCounter) Record(sent, received int64) {
	p.requests.Add(1)
	if sent > 0 {
		p.sent.Add(uint64(sent))
	}
	if received > 0 {
		p.received.Add(uint64(received))
	}
}

// PairUsage is one zone pair's traffic so far.
type PairUsage struct {
	From, To string // "" is an unknown zone
	// CrossZone is true when both zones are known and differ: the bytes
	// crossed a zone boundary and cost money.
	CrossZone bool
	Requests  uint64
	// BytesSent flowed From -> To, BytesReceived To -> From.
	BytesSent, BytesReceived uint64
	// CostUSD is (BytesSent+BytesReceived) / 2^30 x price x 2 (both sides
	// of the crossing pay) for cross-zone pairs, 0 otherwise.
	CostUSD float64
}

// Usage returns every pair's counters, sorted by From then To.
func (a *Accounting) Usage() []PairUsage {
	a.mu.Lock()
	out := make([]PairUsage, 0, len(a.pairs))
	for k, p := range a.pairs {
		u := PairUsage{
			From:          k.from,
			To:            k.to,
			CrossZone:     k.from != "" && k.to != "" && k.from != k.to,
			Requests:      p.requests.Load(),
			BytesSent:     p.sent.Load(),
			BytesReceived: p.received.Load(),
		}
		if u.CrossZone {
			u.CostUSD = CrossZoneCost(u.BytesSent+u.BytesReceived, a.pricePerGB)
		}
		out = append(out, u)
	}
	a.mu.Unlock()
	slices.SortFunc(out, func(x, y PairUsage) int {
		return cmp.Or(cmp.Compare(x.From, y.From), cmp.Compare(x.To, y.To))
	})
	return out
}

// CrossZoneCost is the cost in USD of bytes that crossed a zone boundary,
// at pricePerGB per GB (BytesPerGB) charged on each side of the crossing.
func CrossZoneCost(bytes uint64, pricePerGB float64) float64 {
	return float64(bytes) / BytesPerGB * pricePerGB * 2
}
