package sim

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"time"

	"github.com/zonelb/zonelb/zone"
)

// Policy names a balancing policy the simulator compares.
type Policy string

const (
	// PerConnection is kube-proxy without topology: each client pod's
	// long-lived connection goes to a random ready endpoint, and every
	// request on it follows; a refused connection is re-made at random.
	PerConnection Policy = "per-connection"
	// RoundRobin balances each request to the next ready endpoint, zone-blind.
	RoundRobin Policy = "round-robin"
	// LeastRequest is per-request power of two choices on this node's
	// in-flight counts, zone-blind.
	LeastRequest Policy = "p2c-least-request"
	// PeakEWMA is the zone package with zone preference off: zone-blind
	// Peak-EWMA power of two choices.
	PeakEWMA Policy = "p2c-peak-ewma"
	// PreferSameZone has trafficDistribution: PreferSameZone semantics: the
	// node's zone if any endpoint there is ready, else every zone; inside,
	// per-request least-request P2C (a stronger baseline than kube-proxy's
	// per-connection choice, so that differences come from the zone rule).
	PreferSameZone Policy = "prefer-same-zone"
	// HAZLLike is Linkerd HAZL's load band (baselines.go).
	HAZLLike Policy = "hazl-like"
	// EnvoyLoadAware is Envoy's load_aware_locality (baselines.go).
	EnvoyLoadAware Policy = "envoy-load-aware"
	// EnvoyZoneAware is Envoy's zone-aware routing (baselines.go).
	EnvoyZoneAware Policy = "envoy-zone-aware"
	// Zonelb is the zone package as zonelb runs it.
	Zonelb Policy = "zonelb"
)

// Policies lists every policy, in report order.
var Policies = []Policy{PerConnection, RoundRobin, LeastRequest, PeakEWMA, PreferSameZone,
	HAZLLike, EnvoyLoadAware, EnvoyZoneAware, Zonelb}

func parsePolicies(s string) ([]Policy, error) {
	if s == "" || s == "all" {
		return Policies, nil
	}
	var out []Policy
	for _, name := range strings.Split(s, ",") {
		p := Policy(strings.TrimSpace(name))
		found := false
		for _, known := range Policies {
			if p == known {
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown policy %q (known: %s)", p, joinPolicies(Policies))
		}
		out = append(out, p)
	}
	return out, nil
}

func joinPolicies(ps []Policy) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = string(p)
	}
	return strings.Join(s, ", ")
}

// picker is one node's instance of a policy.
type picker interface {
	// pick chooses an endpoint, avoiding avoid when possible.
	pick(e *engine, avoid *endpoint) (*endpoint, zone.Picked, bool)
	// done reports how the current attempt of r ended.
	done(e *engine, r *request, res zone.Result)
	// update is called when the set of ready endpoints changes.
	update(e *engine)
}

// newPicker builds policy p for node n.
func newPicker(e *engine, p Policy, n *node, seed uint64) (picker, error) {
	rnd := rand.New(rand.NewPCG(seed, uint64(n.idx)+1<<32))
	switch p {
	case PerConnection:
		pc := &perConnection{rnd: rnd, conns: make([]*endpoint, e.sc.Conns)}
		pc.update(e)
		return pc, nil
	case RoundRobin:
		return &roundRobin{next: rnd.IntN(1 << 20)}, nil
	case LeastRequest:
		return &leastRequest{rnd: rnd, inflight: make([]int, len(e.eps))}, nil
	case PreferSameZone:
		return &leastRequest{rnd: rnd, inflight: make([]int, len(e.eps)), sameZone: n.zone}, nil
	case HAZLLike:
		h := &hazl{rnd: rnd, zone: n.zone, inflight: make([]int, len(e.eps)), changed: -int64(hazlPace)}
		h.update(e)
		return h, nil
	case EnvoyLoadAware:
		return &envoyLAL{rnd: rnd, zone: n.zone, inflight: make([]int, len(e.eps)), util: map[string]float64{}}, nil
	case EnvoyZoneAware:
		z := &envoyZoneAware{rnd: rnd, zone: n.zone, inflight: make([]int, len(e.eps))}
		z.update(e)
		return z, nil
	case PeakEWMA, Zonelb:
		cfg := zone.Config{
			LocalZone:    n.zone,
			IgnoreZones:  p == PeakEWMA,
			ZoneDistance: e.sc.ZoneDistance,
			Now:          func() time.Time { return simEpoch.Add(time.Duration(e.now)) },
			Rand:         rand.NewPCG(seed, uint64(n.idx)+1<<33),
		}
		cfg.Spill.Budget = e.budget
		// The clients' spread over zones, as Envoy's zone-aware routing
		// is given it: the scenario's client nodes.
		cfg.ZoneClients = map[string]float64{}
		for _, z := range e.sc.Zones {
			cfg.ZoneClients[z.Name] += float64(z.Nodes)
		}
		if e.log != nil {
			cfg.Logger = e.log.With("policy", p, "node", n.idx)
		}
		b, err := zone.NewBalancer(cfg)
		if err != nil {
			return nil, fmt.Errorf("node %d: %w", n.idx, err)
		}
		zp := &zonePicker{b: b, byAddr: e.byAddr()}
		zp.update(e)
		return zp, nil
	}
	return nil, fmt.Errorf("unknown policy %q", p)
}

// simEpoch anchors simulated time for the zone package's clock.
var simEpoch = time.Unix(1_700_000_000, 0)

// ready lists the endpoints the policies may use.
func (e *engine) ready() []*endpoint {
	var out []*endpoint
	for _, ep := range e.eps {
		if ep.ready {
			out = append(out, ep)
		}
	}
	return out
}

func (e *engine) byAddr() map[netip.AddrPort]*endpoint {
	m := make(map[netip.AddrPort]*endpoint, len(e.eps))
	for _, ep := range e.eps {
		m[ep.addr] = ep
	}
	return m
}

// zonePicker drives a zone.Balancer.
type zonePicker struct {
	b      *zone.Balancer
	byAddr map[netip.AddrPort]*endpoint
}

func (z *zonePicker) pick(_ *engine, avoid *endpoint) (*endpoint, zone.Picked, bool) {
	var a netip.AddrPort
	if avoid != nil {
		a = avoid.addr
	}
	p, err := z.b.Pick(a)
	if err != nil {
		return nil, zone.Picked{}, false
	}
	return z.byAddr[p.Endpoint.Addr], p, true
}

func (z *zonePicker) done(_ *engine, r *request, res zone.Result) { r.tok.Done(res) }

func (z *zonePicker) update(e *engine) {
	eps := make([]zone.Endpoint, 0, len(e.eps))
	for _, ep := range e.eps {
		eps = append(eps, zone.Endpoint{Addr: ep.addr, Zone: ep.zone, Ready: ep.ready, Serving: ep.ready})
	}
	z.b.Update(eps)
}

// perConnection pins each of the node's connections to a random endpoint.
type perConnection struct {
	rnd   *rand.Rand
	conns []*endpoint
}

func (pc *perConnection) connect(e *engine, avoid *endpoint) *endpoint {
	ready := e.readyCache
	if len(ready) == 0 {
		return nil
	}
	for range 4 { // a refused reconnect may land on the same endpoint again
		if ep := ready[pc.rnd.IntN(len(ready))]; ep != avoid || len(ready) == 1 {
			return ep
		}
	}
	return ready[pc.rnd.IntN(len(ready))]
}

func (pc *perConnection) pick(e *engine, avoid *endpoint) (*endpoint, zone.Picked, bool) {
	if avoid != nil { // the connection to avoid was refused: re-make it
		for i, c := range pc.conns {
			if c == avoid {
				pc.conns[i] = pc.connect(e, avoid)
			}
		}
	}
	c := pc.conns[pc.rnd.IntN(len(pc.conns))]
	return c, zone.Picked{}, c != nil
}

func (pc *perConnection) done(*engine, *request, zone.Result) {}

func (pc *perConnection) update(e *engine) {
	for i, c := range pc.conns {
		if c == nil || !c.ready {
			pc.conns[i] = pc.connect(e, nil)
		}
	}
}

// roundRobin cycles through the ready endpoints.
type roundRobin struct{ next int }

func (rr *roundRobin) pick(e *engine, avoid *endpoint) (*endpoint, zone.Picked, bool) {
	ready := e.readyCache
	if len(ready) == 0 {
		return nil, zone.Picked{}, false
	}
	ep := ready[rr.next%len(ready)]
	rr.next++
	if ep == avoid && len(ready) > 1 {
		ep = ready[rr.next%len(ready)]
		rr.next++
	}
	return ep, zone.Picked{}, true
}

func (rr *roundRobin) done(*engine, *request, zone.Result) {}
func (rr *roundRobin) update(*engine)                      {}

// leastRequest is P2C on this node's in-flight counts; with sameZone set,
// over the node's zone when any endpoint there is ready (PreferSameZone).
type leastRequest struct {
	rnd      *rand.Rand
	inflight []int
	sameZone string
}

func (lr *leastRequest) pick(e *engine, avoid *endpoint) (*endpoint, zone.Picked, bool) {
	cands := e.readyCache
	if lr.sameZone != "" {
		if local := e.readyByZone[lr.sameZone]; len(local) > 0 {
			cands = local
		}
	}
	ep := p2cLeast(lr.rnd, cands, lr.inflight, avoid)
	if ep == nil {
		return nil, zone.Picked{}, false
	}
	lr.inflight[ep.idx]++
	return ep, zone.Picked{}, true
}

func (lr *leastRequest) done(_ *engine, r *request, _ zone.Result) { lr.inflight[r.tried.idx]-- }
func (lr *leastRequest) update(*engine)                            {}
