package zone

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"time"
)

// State is a point-in-time view of a balancer, for /debug/state and
// metrics. Building it takes the balancer's mutex and allocates: call it
// from a scrape, not per request.
type State struct {
	LocalZone string
	// ZoneAware is false when zones are ignored (IgnoreZones, or no
	// LocalZone).
	ZoneAware bool
	// LastResort is true when no endpoint is ready and only
	// terminating-but-serving ones are used.
	LastResort bool
	// IgnoringEjection is true when every usable endpoint is ejected and
	// they are used all the same.
	IgnoringEjection bool
	// SpillBudget is the spill rule's budget (SpillConfig.Budget;
	// negative: the parity rule), and SpillBudgetText the same as
	// configuration writes it ("50%", "parity").
	SpillBudget     float64
	SpillBudgetText string
	// ZoneClients is the clients' spread over zones the spill goes by
	// (Config.ZoneClients); nil for none.
	ZoneClients map[string]float64 `json:",omitempty"`
	// SplitReason says why the traffic is split as it is, as one of the
	// Reason* codes; Reason says it for humans: "local under budget:
	// 10.2ms of 15.3ms", "spilling 31%: local 7.9ms over budget 7.5ms",
	// "local zone failed: no usable endpoint there", ...
	SplitReason string
	Reason      string
	// Spill has one entry per tier boundary, nearest first: Spill[0]
	// governs traffic leaving the local zone for the nearest zones.
	Spill     []SpillState
	Zones     []ZoneState     // sorted by distance, then name
	Endpoints []EndpointState // in the order Update gave them
}

// SpillState describes spillover across one tier boundary: from the tier
// before (the local zone, for the first) to the zones of distance Distance.
type SpillState struct {
	Distance int
	Zones    []string // the zones of the tier spilled to
	// Active: the tier before spills, its gate open or its queue limit
	// in force (either sends requests across).
	Active bool
	// Share is the share of requests reaching the boundary that cross it,
	// by the gate's share and the queue limit together (0 when inactive).
	Share float64
	// Flips counts spillover turning on or off since the balancer began
	// (Active changing, under the budget rule by the gate or the queue limit).
	Flips uint64
	// Probes counts single requests sent to refresh a stale level.
	Probes uint64
	// FromLevel and ToLevel are the latency levels compared at the last
	// control step (ToLevel is 0 until measured under the budget rule,
	// and FromLevel's under the parity rule).
	FromLevel, ToLevel time.Duration
	// UnloadedLevel and BudgetedLevel (budget rule) are the tier before's
	// learnt unloaded level and the level its budget allows.
	UnloadedLevel, BudgetedLevel time.Duration
	// QueueLimit (budget rule) is the queue limit in force: a request
	// whose endpoint in the tier before has this many of this node's
	// requests in flight crosses (0: none); QueueShare the share of the
	// requests reaching that tier it sent across lately.
	QueueLimit int
	QueueShare float64
	// SpillTo is the share of the spilled requests each zone of the tier
	// takes by residual capacity (Config.ZoneClients: only zones with
	// room); nil when P2C picks over the whole tier.
	SpillTo map[string]float64 `json:",omitempty"`
}

// ZoneState describes one zone of the endpoint set.
type ZoneState struct {
	Zone      string
	Distance  int // 0 for the local zone
	Endpoints int // in the set
	Usable    int // in the class in use and not ejected
	// Level is the zone's smoothed mean latency as measured from here;
	// 0 when nothing was measured yet.
	Level time.Duration
}

// EndpointState describes one endpoint.
type EndpointState struct {
	Endpoint Endpoint
	// Estimate is the Peak-EWMA latency estimate as Pick sees it now.
	Estimate time.Duration
	InFlight int64
	Ejected  bool
	// EjectedUntil is when the endpoint returns; zero when not ejected.
	EjectedUntil        time.Time
	Ejections           uint64 // times ejected in total
	ConsecutiveFailures int
	Probation           bool
	// SlowStartWeight is the share of its weight the endpoint has now: 1
	// outside slow start.
	SlowStartWeight float64
}

// State returns the balancer's state at the moment it is read. Endpoints
// whose backoff has ended return first, as the next control step would
// return them (returnEjected): only a Pick runs a step, and without this
// State reported them ejected, until a time already past, for as long as
// the service had no traffic.
func (b *Balancer) State() State {
	now := b.clock()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.returnEjected(now)
	s := b.snap.Load()
	st := State{
		LocalZone:        b.cfg.LocalZone,
		ZoneAware:        !s.zoneBlind,
		LastResort:       s.lastResort,
		IgnoringEjection: s.ignoreEjection,
		SpillBudget:      b.cfg.Spill.Budget,
		SpillBudgetText:  FormatSpillBudget(b.cfg.Spill.Budget),
		ZoneClients:      maps.Clone(b.cfg.ZoneClients),
	}
	st.SplitReason, st.Reason = b.reasonLocked(s)
	for _, t := range s.tiers[1:] {
		g := t.gate
		sp := SpillState{
			Distance:      t.distance,
			Active:        g.spilling(),
			Share:         min(g.share+g.queueShare, 1),
			Flips:         g.flips.Load(),
			Probes:        g.probes.Load(),
			FromLevel:     time.Duration(g.from),
			UnloadedLevel: time.Duration(g.unloaded),
			BudgetedLevel: time.Duration(g.setpoint),
			QueueLimit:    int(g.queue.Load()),
			QueueShare:    g.queueShare,
		}
		if g.toKnown {
			sp.ToLevel = time.Duration(g.to)
		}
		for j, tz := range t.zones {
			sp.Zones = append(sp.Zones, tz.zs.name)
			if t.upTo != nil {
				if sp.SpillTo == nil {
					sp.SpillTo = make(map[string]float64, len(t.zones))
				}
				w := t.upTo[j]
				if j > 0 {
					w -= t.upTo[j-1]
				}
				if w > 0 {
					sp.SpillTo[tz.zs.name] = w / t.upTo[len(t.upTo)-1]
				}
			}
		}
		st.Spill = append(st.Spill, sp)
	}

	usable := map[*zoneStats]int{}
	for _, t := range s.tiers {
		for _, tz := range t.zones {
			usable[tz.zs] += tz.count
		}
	}
	zones := map[*zoneStats]*ZoneState{}
	for _, m := range b.members {
		zs := m.st.zone
		z := zones[zs]
		if z == nil {
			z = &ZoneState{Zone: zs.name, Distance: zs.distance, Usable: usable[zs],
				Level: time.Duration(zs.levelNs())}
			zones[zs] = z
		}
		z.Endpoints++
		st.Endpoints = append(st.Endpoints, b.endpointView(m, now))
	}
	for _, z := range zones {
		st.Zones = append(st.Zones, *z)
	}
	slices.SortFunc(st.Zones, func(x, y ZoneState) int {
		return cmp.Or(cmp.Compare(x.Distance, y.Distance), cmp.Compare(x.Zone, y.Zone))
	})
	return st
}

func (b *Balancer) endpointView(m member, now int64) EndpointState {
	es := m.st
	out := EndpointState{
		Endpoint:        *m.ep,
		Estimate:        time.Duration(es.ewma.projected(now, b.invDecay)),
		InFlight:        es.inflight.Load(),
		SlowStartWeight: b.rampWeight(es, now),
	}
	if until := es.ejectedUntil.Load(); until != 0 {
		out.Ejected = true
		out.EjectedUntil = b.epoch.Add(time.Duration(until))
	}
	es.ewma.mu.Lock()
	out.Ejections = es.totalEjections
	out.ConsecutiveFailures = es.consecutive
	out.Probation = es.probation
	es.ewma.mu.Unlock()
	return out
}

// The reasons State.SplitReason names, as metric label values.
const (
	ReasonZoneBlind        = "zone_blind"
	ReasonNoEndpoints      = "no_endpoints"
	ReasonLocalFailed      = "local_failed"
	ReasonNoLocalEndpoints = "no_local_endpoints"
	ReasonLocalOnly        = "local_only"
	ReasonUnderBudget      = "under_budget"
	ReasonSpilling         = "spilling"
	ReasonParity           = "parity"
	ReasonLatency          = "latency"
)

// reasonLocked says why the service's traffic is split as it is: the
// state of the local zone and of the first gate, as a code and for
// humans. Called with b.mu held.
func (b *Balancer) reasonLocked(s *snapshot) (code, text string) {
	switch {
	case s.zoneBlind && b.cfg.LocalZone == "":
		return ReasonZoneBlind, "zone-blind: the node's zone is unknown"
	case s.zoneBlind:
		return ReasonZoneBlind, "zone-blind: zones ignored by configuration"
	case len(s.tiers) == 0 || len(s.members) == 0:
		return ReasonNoEndpoints, "no endpoints"
	case len(s.tiers[0].entries) == 0 && b.zoneHasMembers(b.cfg.LocalZone):
		return ReasonLocalFailed, "local zone failed: no usable endpoint there"
	case len(s.tiers[0].entries) == 0:
		return ReasonNoLocalEndpoints, "no endpoints in the local zone"
	case len(s.tiers) == 1:
		return ReasonLocalOnly, "local only: no other zone has endpoints"
	}
	if latencyRule(b.cfg.Spill.Budget) {
		return ReasonLatency, "latency: each request to the faster of the best local and the best remote endpoint"
	}
	g := s.tiers[1].gate
	parity := b.cfg.Spill.Budget < 0
	switch {
	case g.active && parity:
		return ReasonSpilling, fmt.Sprintf("spilling %.0f%%: local %v over remote %v (parity)",
			100*g.share, roundLevel(g.from), roundLevel(g.to))
	case g.active:
		return ReasonSpilling, fmt.Sprintf("spilling %.0f%%: local %v over budget %v",
			100*min(g.share+g.queueShare, 1), roundLevel(g.from), roundLevel(g.setpoint))
	case g.queueOn:
		return ReasonSpilling, fmt.Sprintf("spilling %.0f%%: a queue of %d on an endpoint goes over budget %v (local %v)",
			100*g.queueShare, g.queue.Load(), roundLevel(g.setpoint), roundLevel(g.from))
	case parity:
		return ReasonParity, "local at parity with remote zones"
	case g.setpoint == 0:
		return ReasonUnderBudget, "local under budget (unloaded level not learnt yet)"
	}
	return ReasonUnderBudget, fmt.Sprintf("local under budget: %v of %v", roundLevel(g.from), roundLevel(g.setpoint))
}

func (b *Balancer) zoneHasMembers(zone string) bool {
	for _, m := range b.members {
		if m.ep.Zone == zone {
			return true
		}
	}
	return false
}

// roundLevel rounds a level in ns for humans: 7.9ms, 312µs.
func roundLevel(ns float64) time.Duration {
	d := time.Duration(ns)
	switch {
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}
