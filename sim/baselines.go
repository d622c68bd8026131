package sim

import (
	"math/rand/v2"
	"slices"
	"time"

	"github.com/zonelb/zonelb/zone"
)

// The zone-aware baselines, each written from its documented rule and
// parameters (docs/zone-balancing.md cites them), never tuned: their unit
// tests pin the rule and the defaults. Inside a zone each picks by
// least-request power of two choices on this node's in-flight counts
// (Envoy's default LEAST_REQUEST; Linkerd's P2C), so that differences come
// from the zone rule.

// HAZL-like (Linkerd's High Availability Zonal Load balancing, closed
// source; its documentation): each proxy balances over a pool that starts
// with its own zone's endpoints. The pool's load is the mean, over its
// endpoints, of the requests in flight (Little's law: latency x
// throughput). Above the band's high mark an endpoint of another zone is
// added, below its low mark one is removed again, one at a time ("adds
// and removes remote endpoints gradually"; the pace is not documented:
// one change per hazlPace). One global band, defaults 0.8 and 2.0.
const (
	HAZLLow  = 0.8
	HAZLHigh = 2.0
	hazlPace = 100 * time.Millisecond
)

// Envoy load_aware_locality-like (alpha; its API documentation): each
// locality's utilisation (here requests in flight or queued at its
// endpoints over their concurrency: what ORCA would report) is smoothed
// by an EWMA with alpha 0.3 every weight update (1 s). Traffic stays local
// while the local utilisation is at most the remote localities' mean plus
// the variance threshold 0.1, but for 3% probes to remote localities;
// otherwise localities are weighted by hosts x (1 - utilisation).
const (
	EnvoyLALAlpha     = 0.3
	EnvoyLALPeriod    = time.Second
	EnvoyLALThreshold = 0.1
	EnvoyLALProbe     = 0.03
)

// Envoy zone-aware routing (its architecture overview): compare the
// upstream's share of healthy hosts in the local zone with the caller's
// own cluster's share there (here: client nodes). If the upstream's is at
// least the caller's, everything stays local; otherwise the local zone
// gets upstream share / caller share, and the rest goes to zones with
// residual capacity (upstream share above caller share), in proportion
// to it. Off (zone-blind) below min_cluster_size 6 hosts.
const EnvoyZoneAwareMinClusterSize = 6

// p2cLeast picks the endpoint with fewer of this node's requests in
// flight among two distinct random ones of cands, avoiding avoid; nil
// when cands is empty.
func p2cLeast(rnd *rand.Rand, cands []*endpoint, inflight []int, avoid *endpoint) *endpoint {
	n := len(cands)
	switch n {
	case 0:
		return nil
	case 1:
		return cands[0]
	}
	i := rnd.IntN(n)
	j := rnd.IntN(n - 1)
	if j >= i {
		j++
	}
	a, b := cands[i], cands[j]
	switch {
	case a == avoid:
		return b
	case b == avoid:
		return a
	case inflight[b.idx] < inflight[a.idx]:
		return b
	}
	return a
}

// hazl is one node's HAZL-like balancer.
type hazl struct {
	rnd      *rand.Rand
	zone     string
	inflight []int
	pool     []*endpoint
	remote   []*endpoint // added from other zones, newest last
	changed  int64       // ns: last pool change
}

func (h *hazl) load() float64 {
	if len(h.pool) == 0 {
		return 0
	}
	n := 0
	for _, ep := range h.pool {
		n += h.inflight[ep.idx]
	}
	return float64(n) / float64(len(h.pool))
}

// adjust applies the band: one endpoint in or out per hazlPace.
func (h *hazl) adjust(e *engine) {
	if e.now-h.changed < int64(hazlPace) {
		return
	}
	switch l := h.load(); {
	case l > HAZLHigh:
		var cands []*endpoint
		for _, ep := range e.readyCache {
			if ep.zone != h.zone && !contains(h.pool, ep) {
				cands = append(cands, ep)
			}
		}
		if len(cands) > 0 {
			ep := cands[h.rnd.IntN(len(cands))]
			h.pool = append(h.pool, ep)
			h.remote = append(h.remote, ep)
			h.changed = e.now
		}
	case l < HAZLLow && len(h.remote) > 0:
		last := h.remote[len(h.remote)-1]
		h.remote = h.remote[:len(h.remote)-1]
		h.pool = remove(h.pool, last)
		h.changed = e.now
	}
}

func (h *hazl) pick(e *engine, avoid *endpoint) (*endpoint, zone.Picked, bool) {
	h.adjust(e)
	ep := p2cLeast(h.rnd, h.pool, h.inflight, avoid)
	if ep == nil {
		return nil, zone.Picked{}, false
	}
	h.inflight[ep.idx]++
	return ep, zone.Picked{}, true
}

func (h *hazl) done(_ *engine, r *request, _ zone.Result) { h.inflight[r.tried.idx]-- }

// update keeps the ready members of the pool; the pool is the local
// zone's ready endpoints plus the remote ones added, or every ready
// endpoint when the local zone has none.
func (h *hazl) update(e *engine) {
	local := e.readyByZone[h.zone]
	if len(local) == 0 {
		h.pool, h.remote = append([]*endpoint(nil), e.readyCache...), nil
		return
	}
	var remote []*endpoint
	for _, ep := range h.remote {
		if ep.ready {
			remote = append(remote, ep)
		}
	}
	h.remote = remote
	h.pool = append(append([]*endpoint(nil), local...), remote...)
}

// envoyLAL is one node's Envoy load_aware_locality-like balancer.
type envoyLAL struct {
	rnd      *rand.Rand
	zone     string
	inflight []int
	util     map[string]float64 // EWMA of each zone's utilisation
	next     int64              // ns: next weight update
	pLocal   float64            // probability of the local zone
	weights  map[string]float64 // remote zones' weights
}

// zoneUtilisation is what the zone's endpoints would report: requests in
// service or queued over their concurrency.
func zoneUtilisation(eps []*endpoint) float64 {
	var used, capacity int
	for _, ep := range eps {
		used += ep.busy + len(ep.queue) - ep.head
		capacity += ep.workers
	}
	if capacity == 0 {
		return 0
	}
	return float64(used) / float64(capacity)
}

// recompute is the 1 s weight update.
func (l *envoyLAL) recompute(e *engine) {
	for z, eps := range e.readyByZone {
		u := zoneUtilisation(eps)
		if old, ok := l.util[z]; ok {
			u = EnvoyLALAlpha*u + (1-EnvoyLALAlpha)*old
		}
		l.util[z] = u
	}
	var remoteSum float64
	remotes := 0
	l.weights = map[string]float64{}
	for z, eps := range e.readyByZone {
		if z != l.zone {
			remoteSum += l.util[z]
			remotes++
			l.weights[z] = float64(len(eps)) * max(0, 1-l.util[z])
		}
	}
	local := e.readyByZone[l.zone]
	switch {
	case len(local) == 0:
		l.pLocal = 0
	case remotes == 0:
		l.pLocal = 1
	case l.util[l.zone] <= remoteSum/float64(remotes)+EnvoyLALThreshold:
		l.pLocal = 1 - EnvoyLALProbe
	default:
		wl := float64(len(local)) * max(0, 1-l.util[l.zone])
		var total float64
		for _, w := range l.weights {
			total += w
		}
		l.pLocal = 0
		if wl+total > 0 {
			l.pLocal = min(wl/(wl+total), 1-EnvoyLALProbe)
		}
	}
}

func (l *envoyLAL) pick(e *engine, avoid *endpoint) (*endpoint, zone.Picked, bool) {
	if e.now >= l.next {
		l.recompute(e)
		l.next = e.now + int64(EnvoyLALPeriod)
	}
	z := l.zone
	if l.rnd.Float64() >= l.pLocal {
		z = weightedZone(l.rnd, l.weights, e)
	}
	ep := p2cLeast(l.rnd, e.readyByZone[z], l.inflight, avoid)
	if ep == nil {
		ep = p2cLeast(l.rnd, e.readyCache, l.inflight, avoid)
	}
	if ep == nil {
		return nil, zone.Picked{}, false
	}
	l.inflight[ep.idx]++
	return ep, zone.Picked{}, true
}

func (l *envoyLAL) done(_ *engine, r *request, _ zone.Result) { l.inflight[r.tried.idx]-- }
func (l *envoyLAL) update(e *engine)                          { l.next = 0 } // recompute at once

// weightedZone draws a zone by weight; by host count when every weight is
// zero; "" when there is none.
func weightedZone(rnd *rand.Rand, weights map[string]float64, e *engine) string {
	names := sortedKeys(weights)
	var total float64
	for _, z := range names {
		total += weights[z]
	}
	if total <= 0 {
		for _, z := range names {
			total += float64(len(e.readyByZone[z]))
		}
		weights = map[string]float64{}
		for _, z := range names {
			weights[z] = float64(len(e.readyByZone[z]))
		}
	}
	x := rnd.Float64() * total
	for _, z := range names {
		if x < weights[z] {
			return z
		}
		x -= weights[z]
	}
	if len(names) > 0 {
		return names[len(names)-1]
	}
	return ""
}

// envoyZoneAware is one node's Envoy zone-aware routing.
type envoyZoneAware struct {
	rnd      *rand.Rand
	zone     string
	inflight []int
	blind    bool               // below min_cluster_size: zone-blind
	pLocal   float64            // share routed to the local zone
	residual map[string]float64 // other zones' residual capacity
}

// update recomputes the split from healthy host counts and the caller's
// cluster (the client nodes per zone).
func (z *envoyZoneAware) update(e *engine) {
	hosts := len(e.readyCache)
	z.blind = hosts < EnvoyZoneAwareMinClusterSize
	if z.blind {
		return
	}
	callers := map[string]int{}
	for _, n := range e.nodes {
		callers[n.zone]++
	}
	up := func(zn string) float64 { return float64(len(e.readyByZone[zn])) / float64(hosts) }
	down := func(zn string) float64 { return float64(callers[zn]) / float64(len(e.nodes)) }
	z.residual = map[string]float64{}
	for zn := range e.readyByZone {
		if zn != z.zone {
			z.residual[zn] = max(0, up(zn)-down(zn))
		}
	}
	if u, d := up(z.zone), down(z.zone); u >= d {
		z.pLocal = 1
	} else {
		z.pLocal = u / d
	}
}

func (z *envoyZoneAware) pick(e *engine, avoid *endpoint) (*endpoint, zone.Picked, bool) {
	cands := e.readyCache
	if !z.blind {
		zn := z.zone
		if z.rnd.Float64() >= z.pLocal {
			zn = weightedZone(z.rnd, z.residual, e)
		}
		if c := e.readyByZone[zn]; len(c) > 0 {
			cands = c
		}
	}
	ep := p2cLeast(z.rnd, cands, z.inflight, avoid)
	if ep == nil {
		return nil, zone.Picked{}, false
	}
	z.inflight[ep.idx]++
	return ep, zone.Picked{}, true
}

func (z *envoyZoneAware) done(_ *engine, r *request, _ zone.Result) { z.inflight[r.tried.idx]-- }

func contains(eps []*endpoint, ep *endpoint) bool {
	for _, x := range eps {
		if x == ep {
			return true
		}
	}
	return false
}

func remove(eps []*endpoint, ep *endpoint) []*endpoint {
	out := eps[:0:0]
	for _, x := range eps {
		if x != ep {
			out = append(out, x)
		}
	}
	return out
}

func sortedKeys(m map[string]float64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
