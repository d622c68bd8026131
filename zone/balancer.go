package zone

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Balancer picks endpoints of one service for one node: Peak-EWMA with
// power of two choices inside a zone, the local zone first, spilling to the
// nearest other zones only the share of requests the local zone cannot
// serve as well as they can (see docs/zone-balancing.md).
//
// Pick and Done are safe for concurrent use and take no lock shared by all
// requests: Pick reads an immutable snapshot of the endpoint set through an
// atomic pointer and per-endpoint atomics; Update, ejection and the
// periodic control step rebuild or adjust under a mutex that Pick only
// ever try-locks, once per control interval. A Balancer must not be copied.
type Balancer struct {
	// typical is the estimate of the endpoint that last completed a
	// request, in any zone (float64 bits, ns; 0 = none yet): the price of
	// an unmeasured endpoint when its own zone has no measurement.
	typical atomic.Uint64

	// Immutable after NewBalancer.
	cfg        Config
	log        *slog.Logger
	acct       *Accounting
	clock      func() int64 // ns since epoch
	rnd        rand.Source
	epoch      time.Time
	decay      float64 // ns
	invDecay   float64 // 1/ns
	defaultLat float64 // ns
	slowStart  int64   // ns; 0 = off
	probeAfter int64   // ns; 0 = no probes
	// maxProbeGap caps the probe backoff: 3 x Decay, after which the fade
	// alone would bring back an endpoint priced out by up to e^3 = 20x.
	maxProbeGap int64 // ns
	minWeight   float64
	interval    int64 // ns
	// doubt is how many standard errors a remote level is judged above
	// its mean (spill.go); a variable only so that a test can remove it.
	doubt float64
	// zoneProbation lets one endpoint at a time probe a zone that is down
	// (ejection.go); a variable only so that a test can turn it off.
	zoneProbation bool
	// noQueueLimit turns the queue limit off (budget.go); a variable only
	// so that a test can show what it does.
	noQueueLimit bool

	// Read by Pick without locking.
	latency  atomic.Bool // the latency rule (LatencyBudget)
	snap     atomic.Pointer[snapshot]
	nextTick atomic.Int64 // ns; Pick runs the control step once past it

	mu         sync.Mutex // guards the fields below
	members    []member
	index      map[netip.AddrPort]int
	states     map[stateKey]*endpointRecord
	zones      map[string]*zoneStats
	classSize  int   // endpoints in the class in use (ready, or last resort)
	lastResort bool  // the class in use is terminating-but-serving endpoints
	ejected    int   // members currently ejected
	nextReturn int64 // earliest ejection end; math.MaxInt64 when none
	lastTick   int64
	gates      map[int]*spillGate // by the distance of the tier they lead to
}

// member is one endpoint of the current set, as Update received it.
type member struct {
	ep *Endpoint
	st *endpointRecord
}

// stateKey identifies an endpoint's state across updates. The zone is part
// of it: an address that moves zone is a different pod, and keeping the
// zone fixed per state lets Done use the state's zone without atomics.
type stateKey struct {
	addr netip.AddrPort
	zone string
}

// snapshot is what Pick reads: immutable once published.
type snapshot struct {
	members []member
	index   map[netip.AddrPort]int // into members
	// tiers[0] is the local zone (possibly empty); then the other zones,
	// one tier per distance, nearest first, empty tiers left out.
	tiers          []tier
	zoneBlind      bool
	lastResort     bool // only terminating-but-serving endpoints are left
	ignoreEjection bool // every usable endpoint is ejected: use them anyway
}

type tier struct {
	distance int
	entries  []entry
	zones    []tierZone
	gate     *spillGate // into this tier from the one before; nil for tiers[0]
	// byZone and upTo (Config.ZoneClients): the entries of each of zones,
	// and the running sum of their residual capacities, by which a
	// request spilled into this tier picks its zone; nil for P2C over
	// entries.
	byZone [][]entry
	upTo   []float64
}

// live is this balancer's requests in flight in the tier's zones.
func (t *tier) live() int64 {
	var n int64
	for i := range t.zones {
		n += t.zones[i].zs.live.Load()
	}
	return n
}

// firstNonEmpty is the index of the first tier with entries, or -1.
func (s *snapshot) firstNonEmpty() int {
	for i := range s.tiers {
		if len(s.tiers[i].entries) > 0 {
			return i
		}
	}
	return -1
}

type tierZone struct {
	zs    *zoneStats
	count int
}

type entry struct {
	ep     *Endpoint
	st     *endpointRecord
	weight float64
}

// minEstimate floors the latency estimate in cost comparisons: an estimate
// faded to nothing would make cost ignore in-flight requests altogether.
const minEstimate = float64(time.Microsecond)

// NewBalancer returns a Balancer with no endpoints; call Update to give it
// some.
func NewBalancer(cfg Config) (*Balancer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new balancer: %w", err)
	}
	cfg = cfg.withDefaults()
	cfg.ZoneDistance = maps.Clone(cfg.ZoneDistance) // the caller may reuse its map
	acct := cfg.Accounting
	if acct == nil {
		var err error
		if acct, err = NewAccounting(DefaultPricePerGB); err != nil {
			return nil, fmt.Errorf("new balancer: %w", err)
		}
	}
	b := &Balancer{
		cfg:           cfg,
		log:           cfg.Logger,
		acct:          acct,
		rnd:           cfg.Rand,
		decay:         float64(cfg.Decay),
		invDecay:      1 / float64(cfg.Decay),
		defaultLat:    float64(cfg.DefaultLatency),
		slowStart:     int64(max(cfg.SlowStart, 0)),
		probeAfter:    int64(cfg.ProbeAfter),
		maxProbeGap:   max(int64(cfg.ProbeAfter), 3*int64(cfg.Decay)),
		minWeight:     cfg.SlowStartMinWeight,
		interval:      int64(cfg.Spill.Interval),
		doubt:         1,
		zoneProbation: true,
		states:        make(map[stateKey]*endpointRecord),
		zones:         make(map[string]*zoneStats),
		gates:         make(map[int]*spillGate),
		nextReturn:    math.MaxInt64,
	}
	if now := cfg.Now; now != nil {
		b.epoch = now()
		b.clock = func() int64 { return int64(now().Sub(b.epoch)) }
	} else {
		b.epoch = time.Now()
		b.clock = func() int64 { return int64(time.Since(b.epoch)) }
	}
	b.nextTick.Store(b.interval)
	b.latency.Store(latencyRule(cfg.Spill.Budget))
	b.mu.Lock()
	b.rebuild(0)
	b.mu.Unlock()
	return b, nil
}

// Accounting returns the Accounting the balancer records bytes in.
func (b *Balancer) Accounting() *Accounting { return b.acct }

func (b *Balancer) zoneBlind() bool { return b.cfg.IgnoreZones || b.cfg.LocalZone == "" }

// distance ranks zone z for spillover; the local zone is 0.
func (b *Balancer) distance(z string) int {
	if b.zoneBlind() || z == b.cfg.LocalZone {
		return 0
	}
	if d, ok := b.cfg.ZoneDistance[z]; ok {
		return d
	}
	return 1
}

// Update replaces the endpoint set. Endpoints that stay (same address and
// zone) keep their latency estimate, in-flight count, ejection and slow
// start; new ones start at DefaultLatency in slow start. Endpoints without
// a valid address, and repeats of an address, are dropped with a warning.
func (b *Balancer) Update(eps []Endpoint) {
	now := b.clock()
	b.mu.Lock()
	defer b.mu.Unlock()

	states := make(map[stateKey]*endpointRecord, len(eps))
	index := make(map[netip.AddrPort]int, len(eps))
	members := make([]member, 0, len(eps))
	for _, ep := range eps {
		if !ep.Addr.IsValid() {
			b.log.Warn("zone: endpoint without a valid address dropped", "zone", ep.Zone, "node", ep.Node)
			continue
		}
		if _, dup := index[ep.Addr]; dup {
			b.log.Warn("zone: repeated endpoint address dropped", "addr", ep.Addr)
			continue
		}
		k := stateKey{ep.Addr, ep.Zone}
		st := b.states[k]
		if st == nil {
			st = b.newState(ep, now)
		}
		if st.ep == nil || *st.ep != ep {
			// A fresh value, never mutated: Picked.Endpoint of requests
			// in flight keeps pointing at the old one.
			e := ep
			st.ep = &e
		}
		states[k] = st
		index[ep.Addr] = len(members)
		members = append(members, member{ep: st.ep, st: st})
	}
	for k, st := range b.states {
		if states[k] == nil && st.ejectedUntil.Load() != 0 {
			b.ejected-- // leaves ejected: no longer counts against the cap
		}
	}
	b.states, b.index, b.members = states, index, members
	b.rebuild(now)
}

func (b *Balancer) newState(ep Endpoint, now int64) *endpointRecord {
	st := &endpointRecord{
		b:    b,
		zone: b.zoneStatsLocked(ep.Zone),
		pair: b.acct.Pair(b.cfg.LocalZone, ep.Zone),
	}
	st.ewma.resetLocked(b.defaultLat, now) // not shared yet: no lock needed
	st.rampStart.Store(now)
	st.probeGap.Store(b.firstProbeGap())
	return st
}

func (b *Balancer) zoneStatsLocked(name string) *zoneStats {
	zs, ok := b.zones[name]
	if !ok {
		zs = &zoneStats{name: name, distance: b.distance(name)}
		b.zones[name] = zs
	}
	return zs
}

// rebuild publishes a new snapshot from the members and their ejection
// state. Called with b.mu held.
func (b *Balancer) rebuild(now int64) {
	s := &snapshot{members: b.members, index: b.index, zoneBlind: b.zoneBlind()}

	// The class in use: ready endpoints; terminating-but-serving ones
	// only when no endpoint is ready anywhere.
	class := make([]member, 0, len(b.members))
	for _, m := range b.members {
		if m.ep.Ready {
			class = append(class, m)
		}
	}
	if len(class) == 0 {
		for _, m := range b.members {
			if m.ep.Serving && m.ep.Terminating {
				class = append(class, m)
			}
		}
		s.lastResort = len(class) > 0
	}
	b.classSize, b.lastResort = len(class), s.lastResort

	usable := make([]member, 0, len(class))
	for _, m := range class {
		if m.st.ejectedUntil.Load() == 0 {
			usable = append(usable, m)
		}
	}
	if len(usable) == 0 && len(class) > 0 {
		usable, s.ignoreEjection = class, true
	}

	byDistance := map[int][]entry{0: nil}
	for _, m := range usable {
		d := b.distance(m.ep.Zone)
		w := float64(m.ep.Weight)
		if w == 0 {
			w = 1
		}
		byDistance[d] = append(byDistance[d], entry{ep: m.ep, st: m.st, weight: w})
	}
	distances := make([]int, 0, len(byDistance))
	for d := range byDistance {
		distances = append(distances, d)
	}
	slices.Sort(distances)
	for _, d := range distances {
		t := tier{distance: d, entries: byDistance[d]}
		if len(s.tiers) > 0 {
			t.gate = b.gates[d]
			if t.gate == nil {
				t.gate = &spillGate{distance: d}
				b.gates[d] = t.gate
			}
		}
		counts := map[*zoneStats]int{}
		for _, e := range t.entries {
			counts[e.st.zone]++
		}
		for zs, n := range counts {
			t.zones = append(t.zones, tierZone{zs: zs, count: n})
		}
		slices.SortFunc(t.zones, func(x, y tierZone) int { return cmp.Compare(x.zs.name, y.zs.name) })
		s.tiers = append(s.tiers, t)
	}
	b.setResidual(s, len(usable))
	b.snap.Store(s)
}

// SetZoneClients changes the clients' spread over zones (Config.ZoneClients;
// nil for none) without losing what the balancer has learnt: the next
// pick spills by the new weights. The daemon calls it as Nodes join or
// leave zones.
func (b *Balancer) SetZoneClients(clients map[string]float64) error {
	var errs []error
	Config{ZoneClients: clients}.validateZones(func(field string, v any, want string) {
		errs = append(errs, fmt.Errorf("zone config: %s = %v, want %s", field, v, want))
	})
	if err := errors.Join(errs...); err != nil {
		return err
	}
	now := b.clock()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cfg.ZoneClients = maps.Clone(clients)
	b.rebuild(now)
	return nil
}

// ZoneClients returns the clients' spread over zones the balancer spills
// by (Config.ZoneClients), a copy; nil for none.
func (b *Balancer) ZoneClients() map[string]float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.cfg.ZoneClients)
}

// setResidual weighs the zones of each tier after the first by residual
// capacity (Config.ZoneClients) out of n usable endpoints: a zone's
// share of them less its share of the clients, at least 0. A tier keeps
// P2C over all its entries when it has one zone, when no zone has room,
// and when the weights are proportional to the zones' endpoint counts
// (the same spill as P2C over the tier: where the other zones are alike,
// as in the simulator's overload, nothing changes).
func (b *Balancer) setResidual(s *snapshot, n int) {
	var clients float64
	for _, c := range b.cfg.ZoneClients {
		clients += c
	}
	if s.zoneBlind || clients <= 0 || n == 0 {
		return
	}
	for i := 1; i < len(s.tiers); i++ {
		t := &s.tiers[i]
		if len(t.zones) < 2 {
			continue
		}
		w := make([]float64, len(t.zones))
		for j, z := range t.zones {
			w[j] = max(0, float64(z.count)/float64(n)-b.cfg.ZoneClients[z.zs.name]/clients)
		}
		alike, perEndpoint := true, w[0]/float64(t.zones[0].count)
		for j, z := range t.zones {
			alike = alike && math.Abs(w[j]/float64(z.count)-perEndpoint) <= 1e-9*perEndpoint
		}
		if alike {
			continue
		}
		t.byZone, t.upTo = make([][]entry, len(t.zones)), make([]float64, len(t.zones))
		sum := 0.0
		for j, z := range t.zones {
			sum += w[j]
			t.upTo[j] = sum
			for _, e := range t.entries {
				if e.st.zone == z.zs {
					t.byZone[j] = append(t.byZone[j], e)
				}
			}
		}
	}
}

// spillEntries are the entries a request that reached tier t picks
// from: a zone drawn by residual capacity, if t has weights
// (setResidual), else all of t's.
func (b *Balancer) spillEntries(t *tier) []entry {
	if t.upTo == nil {
		return t.entries
	}
	x := float64(b.rnd.Uint64()>>11) / (1 << 53) * t.upTo[len(t.upTo)-1]
	for j, u := range t.upTo {
		if x < u {
			return t.byZone[j]
		}
	}
	return t.entries
}

// inClass tells whether m is in the class of endpoints in use.
func (b *Balancer) inClass(m member) bool {
	if b.lastResort {
		return m.ep.Serving && m.ep.Terminating
	}
	return m.ep.Ready
}

// Pick chooses an endpoint for one request. avoid names an endpoint to
// skip when possible (the one a transparent retry follows); the zero
// AddrPort means none. A retry also leaves avoid's zone when another zone
// can take it, because failures correlate within a zone. Pick allocates
// nothing; the caller must call Done on the result exactly once.
func (b *Balancer) Pick(avoid netip.AddrPort) (Picked, error) {
	now := b.clock()
	if now >= b.nextTick.Load() {
		b.tick(now)
	}
	s := b.snap.Load()
	if avoid.IsValid() {
		if i, ok := s.index[avoid]; ok {
			return b.pickRetry(s, now, s.members[i].st)
		}
	}

	if b.latency.Load() && !s.zoneBlind {
		if p, ok := b.pickByLatency(s, now); ok {
			return p, nil
		}
	}

	// Walk the cascade: a request stops at the first tier with endpoints
	// unless that tier's outgoing gate sends it on (its spill share, or a
	// probe of the next tier's level).
	t := 0
	for {
		t = b.walk(s, t, now)
		e, probe := b.p2c(s, b.spillEntries(&s.tiers[t]), now, nil, nil)
		if e == nil && s.tiers[t].upTo != nil { // the zone drawn lost its endpoints
			e, probe = b.p2c(s, s.tiers[t].entries, now, nil, nil)
		}
		if e == nil {
			break
		}
		// The queue limit: an endpoint P2C chose with this many of our
		// requests ahead already makes the request wait past the budget.
		if !probe && t+1 < len(s.tiers) && s.tiers[t+1].gate.overQueue(e.st.inflight.Load(), now) {
			t++
			continue
		}
		return b.picked(e, now, probe), nil
	}
	for i := range s.tiers { // t had no usable endpoint: nearest first
		if i == t {
			continue
		}
		if e, probe := b.p2c(s, s.tiers[i].entries, now, nil, nil); e != nil {
			return b.picked(e, now, probe), nil
		}
	}
	return Picked{}, ErrNoEndpoint
}

// pickByLatency is Pick under the latency rule: P2C's choice in the first
// tier with endpoints and P2C's choice in the next one, the cheaper by
// Peak-EWMA cost (latency estimate x (in-flight + 1)): the local zone is
// preferred only as far as it is faster. A probe (see p2c) goes first,
// and a probe claimed on the other side is released. ok is false when
// there is no such pair of tiers (Pick then goes on as usual).
func (b *Balancer) pickByLatency(s *snapshot, now int64) (Picked, bool) {
	t := s.firstNonEmpty()
	if t < 0 || t+1 >= len(s.tiers) {
		return Picked{}, false
	}
	near, nearProbe := b.p2c(s, s.tiers[t].entries, now, nil, nil)
	far, farProbe := b.p2c(s, s.tiers[t+1].entries, now, nil, nil)
	switch {
	case near == nil && far == nil:
		return Picked{}, false
	case far == nil:
		return b.picked(near, now, nearProbe), true
	case near == nil:
		return b.picked(far, now, farProbe), true
	case nearProbe && farProbe:
		far.st.inflight.Add(-1)
		return b.picked(near, now, true), true
	case nearProbe:
		return b.picked(near, now, true), true
	case farProbe:
		return b.picked(far, now, true), true
	case b.cost(far, now) < b.cost(near, now):
		return b.picked(far, now, false), true
	}
	return b.picked(near, now, false), true
}

// walk returns the tier a request that reached tier t stops at: the
// first tier from t on with endpoints, unless that tier's outgoing gate
// sends it on (its spill share, the in-flight limit, or a probe of the
// next tier's level).
func (b *Balancer) walk(s *snapshot, t int, now int64) int {
	for t+1 < len(s.tiers) {
		if len(s.tiers[t].entries) == 0 {
			t++
			continue
		}
		g := s.tiers[t+1].gate
		if th := g.threshold.Load(); th != 0 && b.rnd.Uint64() < th {
			t++
			continue
		}
		if g.overLimit(s.tiers[t].live(), now) {
			t++
			continue
		}
		if n := g.probe.Load(); n > 0 && g.probe.CompareAndSwap(n, n-1) {
			g.probes.Add(1)
			t++
		}
		break
	}
	return t
}

// pickRetry picks for a retry away from avoid: first outside avoid's zone
// (nearest tiers first), then anywhere but avoid, then avoid itself when it
// is all there is.
func (b *Balancer) pickRetry(s *snapshot, now int64, avoid *endpointRecord) (Picked, error) {
	if !s.zoneBlind {
		for t := range s.tiers {
			tr := &s.tiers[t]
			if len(tr.zones) == 1 && tr.zones[0].zs == avoid.zone {
				continue // nothing in this tier outside avoid's zone
			}
			if e, probe := b.p2c(s, tr.entries, now, avoid, avoid.zone); e != nil {
				return b.picked(e, now, probe), nil
			}
		}
	}
	for t := range s.tiers {
		if e, probe := b.p2c(s, s.tiers[t].entries, now, avoid, nil); e != nil {
			return b.picked(e, now, probe), nil
		}
	}
	for t := range s.tiers {
		if e, probe := b.p2c(s, s.tiers[t].entries, now, nil, nil); e != nil {
			return b.picked(e, now, probe), nil
		}
	}
	return Picked{}, ErrNoEndpoint
}

// picked counts the request in flight on e; a probe's slot is already
// taken (p2c claimed it).
func (b *Balancer) picked(e *entry, now int64, probe bool) Picked {
	var load int64 // a probe's slot is its own: nothing else in flight
	if !probe {
		load = e.st.inflight.Add(1) - 1
	}
	e.st.zone.live.Add(1)
	return Picked{Endpoint: e.ep, state: e.st, start: now, load: int32(min(load, math.MaxInt32)), probe: probe}
}

// p2c returns the cheaper of two distinct random usable entries of es, or
// nil when none is usable. Entries are unusable when ejected since the
// snapshot was built, when they are avoid, or when in avoidZone.
//
// The dearer one is returned instead, as a probe, when it is due for one
// (see Config.ProbeAfter): nothing in flight and no answer for its probe
// gap. Claiming its in-flight slot from 0 to 1 makes probes one at a time.
// Without probes, the loser of every comparison is priced only by an
// estimate that no request refreshes: with two endpoints P2C compares the
// same pair every time, so one slow sample starves an endpoint until the
// sample fades below its rival's cost.
func (b *Balancer) p2c(s *snapshot, es []entry, now int64, avoid *endpointRecord, avoidZone *zoneStats) (e *entry, probe bool) {
	n := len(es)
	switch n {
	case 0:
		return nil, false
	case 1:
		if b.usable(s, &es[0], avoid, avoidZone) {
			return &es[0], false
		}
		return nil, false
	}
	// One 64-bit draw gives both indices: each 32-bit half scaled to its
	// range (Lemire's multiply-shift), the second skipping the first.
	x := b.rnd.Uint64()
	i := int(uint64(uint32(x)) * uint64(n) >> 32)
	j := int((x >> 32) * uint64(n-1) >> 32)
	if j >= i {
		j++
	}
	a, c := &es[i], &es[j]
	ua, uc := b.usable(s, a, avoid, avoidZone), b.usable(s, c, avoid, avoidZone)
	switch {
	case ua && uc:
		win, lose := a, c
		if b.cost(c, now) < b.cost(a, now) {
			win, lose = c, a
		}
		if st := lose.st; st.ewma.age(now) >= st.probeGap.Load() && st.inflight.CompareAndSwap(0, 1) {
			return lose, true
		}
		return win, false
	case ua:
		return a, false
	case uc:
		return c, false
	}
	// Both unusable: rare on the first pick (an ejection racing the
	// snapshot), common only on retries that filter a zone. Take the
	// first usable one after i.
	for k := 1; k < n; k++ {
		if e := &es[(i+k)%n]; b.usable(s, e, avoid, avoidZone) {
			return e, false
		}
	}
	return nil, false
}

// firstProbeGap is the probe gap of a new or returning endpoint.
func (b *Balancer) firstProbeGap() int64 {
	if b.probeAfter == 0 {
		return math.MaxInt64
	}
	return b.probeAfter
}

func (b *Balancer) usable(s *snapshot, e *entry, avoid *endpointRecord, avoidZone *zoneStats) bool {
	st := e.st
	return st != avoid && (avoidZone == nil || st.zone != avoidZone) &&
		(s.ignoreEjection || st.ejectedUntil.Load() == 0)
}

// cost is Peak-EWMA's: the latency estimate times (in-flight + 1), divided
// by the endpoint's weight, itself reduced during slow start.
func (b *Balancer) cost(e *entry, now int64) float64 {
	st := e.st
	est := st.ewma.projected(now, b.invDecay)
	if !st.measured.Load() {
		// Priced at its peers' level: its own zone's if measured, else
		// the service's (zone-blind, or the zone's first endpoint).
		if t := math.Float64frombits(st.zone.typical.Load()); t > 0 {
			est = t
		} else if t := math.Float64frombits(b.typical.Load()); t > 0 {
			est = t
		}
	}
	est = max(est, minEstimate)
	c := est * float64(st.inflight.Load()+1)
	return c / (e.weight * b.rampWeight(st, now))
}

// rampWeight is the share of its weight an endpoint has in slow start.
func (b *Balancer) rampWeight(st *endpointRecord, now int64) float64 {
	if b.slowStart == 0 {
		return 1
	}
	age := now - st.rampStart.Load()
	if age >= b.slowStart {
		return 1
	}
	if age < 0 {
		age = 0
	}
	return b.minWeight + (1-b.minWeight)*float64(age)/float64(b.slowStart)
}
