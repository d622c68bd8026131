package zone

import (
	"math"
	"sync/atomic"
	"time"
)

// zoneStats is what this balancer knows of one zone's latency and load.
//
// The level is the mean latency (TTFB, with failure and overload
// penalties) of requests this balancer sent there. Peak-EWMA estimates are
// the wrong yardstick between zones: a peak estimate sits near a high
// percentile that depends on how often the endpoint is sampled, so a busy
// local zone would look slower than an idle remote one serving the same
// latencies. A mean does not depend on the sampling rate.
type zoneStats struct {
	name     string
	distance int

	// acc packs the samples added since the last control step: count in
	// the top 20 bits, sum of microseconds in the low 44, so one atomic
	// add records a sample and one swap reads count and sum together.
	acc atomic.Uint64
	// idleAcc packs, as acc does, the successful requests that had their
	// endpoint to themselves (no other request of this balancer in flight
	// there when picked): their latency is the service's own, without a
	// queue of ours ahead of them.
	idleAcc atomic.Uint64
	// byLoad packs, as acc does, the successful requests by how many
	// other requests of this balancer were in flight on their endpoint
	// when they were picked (Picked.load; the last bucket takes all the
	// higher counts): see loadBuckets.
	byLoad [loadBuckets]atomic.Uint64
	ok     atomic.Uint64 // successful completions since the last control step
	live   atomic.Int64  // this balancer's requests in flight there, now
	level  atomic.Uint64 // float64 bits, ns: the slow level; 0 = unknown
	// typical is the estimate of the endpoint of this zone that last
	// completed a request (float64 bits, ns; 0 = none yet): the price of
	// an endpoint not measured yet, so that it is neither free nor
	// starved behind a fixed default while its peers' estimates are low.
	typical atomic.Uint64

	// Guarded by Balancer.mu.
	fast        float64 // ns: the level over the last few requests
	slow        float64 // ns: fast, averaged over LevelTime
	weight      float64 // effective samples behind fast; fades over StaleAfter
	total       float64 // samples ever: the level is known from Samples on
	lastSample  int64   // ns
	inflight    int64   // this balancer's requests in flight there, at the last step
	inflightNow int64   // the same, being summed by the current step
	growth      float64 // smoothed change of inflight per step
	completed   float64 // requests completed in the last step
	served      float64 // of which successfully
	// idle is the level of the requests that had their endpoint to
	// themselves (idleAcc), ns, and idleWeight the recent samples behind
	// it (fading as weight does): the unloaded level as it is now, which
	// tells a service that became slower (all its requests are, queued or
	// not) from a queue (only the requests behind others are).
	idle       float64
	idleWeight float64
	// idleNow and idleNowN: the mean and count of the idle requests of
	// the last step alone. idle averages over steps and lags a sudden
	// slowdown of the whole service by a few of them, during which the
	// slower requests would read as a queue.
	idleNow, idleNowN float64
	// loadLevel[j] is the level of the requests that found j others of
	// this balancer in flight on their endpoint (byLoad), ns, and
	// loadWeight[j] the recent samples behind it (fading as weight does).
	loadLevel, loadWeight [loadBuckets]float64
}

// loadBuckets is how many in-flight counts the levels by load tell apart
// (0 to loadBuckets-2 of this balancer's requests ahead on the endpoint,
// and loadBuckets-1 or more), and loadSamples how many recent samples a
// bucket's level needs to be used: the queue limit (see setQueueLimit) looks
// no further than a queue of loadBuckets-1 of this node's requests on one
// endpoint.
const (
	loadBuckets = 8
	loadSamples = 8
)

// A zone's level is used for a spill decision once learnSamples requests
// have completed there. Means of fewer samples are noise: in the simulator,
// remote levels from 5 probes opened gates at 50% load, and from 20 probes
// (latencies with a deviation near their mean) one gate in 100 nodes. Until
// then the controller assumes the tier behind the gate is as slow as the
// tier before it (no reason to move), and learns its level with probes at
// learnProbeShare, about learnSamples/learnProbeShare requests once per
// zone. Assuming a fixed latency instead (say DefaultLatency) would open
// every gate at once for services slower than it. A level once known stays
// in use; staleness only lowers its weight (so that fresh samples take
// over) and makes a closed gate probe it again, at ProbeShare.
const (
	learnSamples    = 50
	learnProbeShare = 0.1
)

// growthSmoothing smooths a zone's backlog growth over control periods
// (weight of the newest); measured on the queue model, 0.2 to 0.5 work
// alike and 0.5 reacts sooner.
const growthSmoothing = 0.5

const (
	accCountShift = 44
	accSumMask    = 1<<accCountShift - 1
	maxSampleUS   = 1 << 32 // ~71 minutes: clamps absurd samples
)

func (z *zoneStats) add(ns float64) { z.acc.Add(packSample(ns)) }

// packSample is one sample of ns nanoseconds as an addend of acc.
func packSample(ns float64) uint64 {
	us := uint64(max(ns, 0) / 1e3)
	return 1<<accCountShift | min(us, maxSampleUS)
}

func (z *zoneStats) levelNs() float64 { return math.Float64frombits(z.level.Load()) }

// spillGate controls the traffic crossing one tier boundary: from the tier
// before it (the local zone, for the first gate) to its own tier. Gates are
// keyed by their tier's distance and outlive snapshots. A request that
// reaches tier k-1 passes gate k with probability share, so with the
// default single remote tier there is one gate, and with more distances
// the gates form a cascade: nearest zones first, farther ones only when the
// nearer ones are themselves slower.
type spillGate struct {
	distance  int
	threshold atomic.Uint64 // share as a threshold on a uniform uint64
	probe     atomic.Int64  // this many of the next requests reaching the gate cross it
	probes    atomic.Uint64
	flips     atomic.Uint64
	// limit (budget rule) caps this balancer's requests in flight in the
	// tier before the gate; a request that finds it reached crosses the
	// gate (overLimit), but for hold ns after blind, the clock at the end
	// of the last gap longer than gap ns between picks (a stall: see
	// overLimit). seen is the clock of a recent pick. 0 = none, for all.
	limit atomic.Int64
	hold  atomic.Int64
	gap   atomic.Int64
	blind atomic.Int64
	seen  atomic.Int64
	stall atomic.Int64 // clock at the end of the last long stall (overLimitStallGaps)
	// queue (budget rule) is the queue limit of the tier before the gate
	// (see setQueueLimit): a request whose endpoint, as P2C chose it there,
	// has this many of this balancer's requests in flight or more crosses
	// the gate; 0 = none. queueProbe is the clock of the last request let
	// past the limit to keep the level at it measured.
	queue      atomic.Int64
	queueProbe atomic.Int64
	queued     atomic.Uint64 // requests the queue limit sent across since the last step

	// Guarded by Balancer.mu.
	active     bool
	share      float64
	completed  float64 // requests completed since the last probe was armed
	from, to   float64 // slow levels compared at the last step, ns
	toKnown    bool    // to rests on enough samples
	unloaded   float64 // budget rule: the unloaded level of the tier before, ns
	okRate     float64 // budget rule: its successful completions per second, smoothed
	known      int64   // budget rule: ns since the tier before's level is known
	setpoint   float64 // budget rule: the budgeted level at the last step, ns
	loaded     bool    // budget rule: the limit had its loaded form at the last step
	queueOn    bool    // budget rule: the queue limit is in force
	queueShare float64 // budget rule: share of the tier's requests it sent across, smoothed
	raised     bool    // budget rule: the queue limit rose at the last step
	// Budget rule: the idle requests of the tier before, gathered in
	// batches of idleSamples (see recentIdle): idleSum and idleN since
	// idleFrom, and the mean of the last full batch, completed at idleAt.
	idleSum, idleN float64
	idleFrom       int64
	idleBatch      float64
	idleAt         int64
}

// tick runs the control step if no one else is: return ejected endpoints
// whose backoff ended, refresh zone levels, adjust the spill shares, arm
// probes. Pick calls it once past nextTick; a Pick that finds the step
// already running goes on without waiting.
func (b *Balancer) tick(now int64) {
	if !b.mu.TryLock() {
		return
	}
	defer b.mu.Unlock()
	if now < b.nextTick.Load() {
		return // another Pick just ran it
	}
	b.nextTick.Store(now + b.interval)
	dt := now - b.lastTick
	b.lastTick = now

	b.returnEjected(now)
	b.refreshZones(now, dt)
	s := b.snap.Load()
	for k := 1; k < len(s.tiers); k++ {
		b.control(s, k, now, dt)
	}
}

// refreshZones folds each zone's samples since the last step into its
// levels, and measures its in-flight count and how that count moves.
func (b *Balancer) refreshZones(now, elapsed int64) {
	cfg := b.cfg.Spill
	dt := float64(max(elapsed, 0))
	fade := math.Exp(-dt / float64(cfg.StaleAfter))
	slowW := 1 - math.Exp(-dt/float64(cfg.LevelTime))

	for _, z := range b.zones {
		z.inflightNow = 0
	}
	for _, m := range b.members {
		m.st.zone.inflightNow += m.st.inflight.Load()
	}
	for _, z := range b.zones {
		// Backlog: in-flight requests are arrivals minus completions, so
		// their change is how fast a backlog builds, seen at once, while
		// latency shows it only when the queued requests complete. Long
		// streams inflate the count but not, in a steady state, its change.
		z.growth += (float64(z.inflightNow-z.inflight) - z.growth) * growthSmoothing
		z.inflight = z.inflightNow

		acc := z.acc.Swap(0)
		n := float64(acc >> accCountShift)
		z.completed = n
		z.served = float64(z.ok.Swap(0))
		z.weight *= fade // what was learnt long ago counts for less
		z.foldIdle(fade, float64(cfg.Samples))
		z.foldLoad(fade, float64(cfg.Samples))
		if n > 0 {
			mean := float64(acc&accSumMask) / n * 1e3
			// A batch of n samples moves the fast level with weight
			// n/(n+w), w the recent samples behind it (at most Samples):
			// a probe only nudges a well-known level, a busy zone's level
			// is its last period's mean, and a level not fed for a while
			// follows the first fresh samples.
			w := n / (n + min(z.weight, float64(cfg.Samples)))
			z.fast += (mean - z.fast) * w
			z.weight += n
			z.total += n
			z.lastSample = now
			if z.slow == 0 {
				z.slow = z.fast
			}
		}
		// The slow level averages the fast one over LevelTime: latency
		// comes in bursts as long as queues take to drain, and one
		// period's mean is a burst, not a level.
		if z.slow > 0 {
			z.slow += (z.fast - z.slow) * slowW
			z.level.Store(math.Float64bits(max(z.slow, 1))) // 0 means unknown
		}
	}
}

// foldIdle folds the idle samples since the last step into the idle
// level, as refreshZones folds all samples into the fast level.
func (z *zoneStats) foldIdle(fade, samples float64) {
	acc := z.idleAcc.Swap(0)
	z.idleWeight *= fade
	n := float64(acc >> accCountShift)
	z.idleNowN = n
	if n == 0 {
		return
	}
	mean := float64(acc&accSumMask) / n * 1e3
	z.idleNow = mean
	z.idle += (mean - z.idle) * (n / (n + min(z.idleWeight, samples)))
	z.idleWeight += n
}

// foldLoad folds the samples by load since the last step into the levels
// by load, each as refreshZones folds all samples into the fast level.
func (z *zoneStats) foldLoad(fade, samples float64) {
	for j := range z.byLoad {
		acc := z.byLoad[j].Swap(0)
		z.loadWeight[j] *= fade
		n := float64(acc >> accCountShift)
		if n == 0 {
			continue
		}
		mean := float64(acc&accSumMask) / n * 1e3
		z.loadLevel[j] += (mean - z.loadLevel[j]) * (n / (n + min(z.loadWeight[j], samples)))
		z.loadWeight[j] += n
	}
}

// tierStats sums a tier's zones: slow and fast levels weighted by endpoint
// counts over the zones known well enough, and the backlog growth and
// completions over all of them.
type tierStats struct {
	slow, fast float64
	known      bool
	unknown    bool    // some zone's level is not known yet
	stale      bool    // some zone's level rests on fewer than Samples recent samples
	weight     float64 // recent samples behind the known zones' levels
	growth     float64
	completed  float64
	ok         float64 // successful completions in the last step
	// idle is the level of requests that had their endpoint to
	// themselves (zoneStats.idle), weighted as slow is; idleKnown when
	// every known zone has idleSamples recent ones behind it.
	idle      float64
	idleKnown bool
	// idleNow is the mean of the last step's idle requests (idleNowN of
	// them) over all zones (zoneStats.idleNow).
	idleNow, idleNowN float64
	// byLoad[j] is the level of the requests that found j others of this
	// balancer in flight on their endpoint (zoneStats.loadLevel), weighted
	// as slow is over the zones where it rests on loadSamples recent
	// samples; 0 where none does.
	byLoad [loadBuckets]float64
}

// idleSamples is how many recent idle requests a zone's idle level needs
// before it may raise the unloaded level: a handful, since each one is a
// service time measured without a queue of ours, not a noisy mean.
const idleSamples = 8

func statsOf(t *tier, samples int) tierStats {
	var ts tierStats
	var weight float64
	var loadW [loadBuckets]float64
	idleMissing := false
	for _, tz := range t.zones {
		z := tz.zs
		ts.growth += z.growth
		ts.completed += z.completed
		ts.ok += z.served
		if z.idleNowN > 0 {
			ts.idleNow += z.idleNow * z.idleNowN
			ts.idleNowN += z.idleNowN
		}
		if z.weight < float64(samples) {
			ts.stale = true
		}
		if z.total < learnSamples {
			ts.unknown = true
			continue
		}
		w := float64(tz.count)
		ts.slow += z.slow * w
		ts.fast += z.fast * w
		ts.idle += z.idle * w
		for j := range loadW {
			if z.loadWeight[j] >= loadSamples {
				ts.byLoad[j] += z.loadLevel[j] * w
				loadW[j] += w
			}
		}
		weight += w
		ts.weight += z.weight
		if z.idleWeight < idleSamples {
			idleMissing = true
		}
	}
	if ts.idleNowN > 0 {
		ts.idleNow /= ts.idleNowN
	}
	if weight > 0 {
		ts.slow /= weight
		ts.fast /= weight
		ts.idle /= weight
		ts.known = true
		ts.idleKnown = !idleMissing
	}
	for j, w := range loadW {
		if w > 0 {
			ts.byLoad[j] /= w
		}
	}
	return ts
}

// control adjusts gate k, between tiers k-1 ("from") and k ("to"), by
// the budget rule (controlBudget) or the parity rule (controlParity).
func (b *Balancer) control(s *snapshot, k int, now, dt int64) {
	g := s.tiers[k].gate
	cfg := b.cfg.Spill
	before := &s.tiers[k-1]
	if len(before.entries) == 0 {
		return // nothing stops at tier k-1: its requests move on anyway
	}
	from := statsOf(before, cfg.Samples)
	to := statsOf(&s.tiers[k], cfg.Samples)
	var reach float64 // requests that reached tier k-1 in the last step
	for j := k - 1; j < len(s.tiers); j++ {
		ts := statsOf(&s.tiers[j], cfg.Samples)
		reach += ts.completed + ts.growth
		g.completed += ts.completed
	}
	toMeasured := [2]float64{to.slow, to.fast}
	if to.known {
		// Judge the tier behind the gate by a pessimistic bound, one
		// standard error above its mean for latencies whose deviation is
		// up to their mean: a level from 20 probes can be 20% low, and
		// opening on that noise sends traffic across that is slow to
		// correct (at a 2% share, a quiet node measures the other side
		// slowly). The bound fades as spilled requests measure the tier.
		worse := 1 + b.doubt/math.Sqrt(max(to.weight, 1))
		to.slow *= worse
		to.fast *= worse
	}
	g.from, g.to, g.toKnown = from.slow, to.slow, to.known
	if latencyRule(cfg.Budget) {
		// Pick compares endpoints across the boundary itself.
		g.active, g.share, g.queueOn, g.setpoint = false, 0, false, 0
		g.threshold.Store(0)
		g.probe.Store(0)
		g.queue.Store(0)
		g.limit.Store(0)
		return
	}
	if cfg.Budget >= 0 {
		// A flip is the tier starting or stopping to spill, by its gate
		// or its queue limit: what State.Active and the metrics' reason
		// "spilling" say, whichever of the two sends requests across.
		was := g.spilling()
		b.controlBudget(g, from, to, toMeasured, reach, dt)
		if g.spilling() != was {
			g.flips.Add(1)
		}
		if g.raised {
			// The level at the new limit was measured when requests at
			// that count crossed, long ago: forget it, so that the
			// requests now kept measure it afresh.
			g.raised = false
			if l := g.queue.Load(); l > 0 {
				for _, tz := range before.zones {
					tz.zs.loadWeight[l] = 0
				}
			}
		}
		g.threshold.Store(shareThreshold(g.share))
		g.probe.Store(0) // the budget rule learns from its spill, not from probes
		return
	}
	if !to.known {
		// No measurement yet: assume parity until probes measure it.
		to.slow, to.fast = from.slow, from.fast
		g.to = to.slow
	}
	b.controlParity(g, from, to, reach, dt)
	g.threshold.Store(shareThreshold(g.share))
	reached := s.firstNonEmpty() == k-1 || (k > 1 && s.tiers[k-1].gate.active)
	b.armProbes(g, to, reached)
}

// controlParity is the parity rule for gate g, with its reasoning in
// docs/zone-balancing.md:
//
//   - the gate opens when from's slow level exceeds OnRatio times to's;
//   - while open, its share is multiplied by exp(Gain x e x dt), with e =
//     from/(to x TargetRatio) - 1 on the fast levels, capped to [-1, 1]:
//     integral action that settles from's latency at TargetRatio times
//     to's, so that only what the tier before cannot serve as well passes;
//   - and the share also moves by from's backlog growth over the requests
//     reaching the gate: proportional action on the queue, which damps the
//     oscillation an integral controller alone would have (the queue is
//     itself an integrator, and latency lags it by the queueing delay);
//   - the gate closes when the share falls below MinShare while from's slow
//     level is below TargetRatio times to's. OnRatio > TargetRatio is the
//     hysteresis band.
func (b *Balancer) controlParity(g *spillGate, from, to tierStats, reach float64, dt int64) {
	cfg := b.cfg.Spill
	if !from.known {
		return
	}
	if !g.active {
		if from.slow > cfg.OnRatio*to.slow {
			g.active, g.share = true, cfg.InitialShare
			g.flips.Add(1)
			b.log.Info("zone: spillover on", "local_zone", b.cfg.LocalZone, "to_distance", g.distance,
				"from_level", time.Duration(from.slow), "to_level", time.Duration(to.slow))
		}
		return
	}
	secs := min(float64(dt)/1e9, 1) // a long gap is not a long push
	e := min(max(from.fast/(to.fast*cfg.TargetRatio)-1, -1), 1)
	share := g.share * math.Exp(cfg.Gain*e*secs)
	if reach > 0 {
		share += from.growth / reach
	}
	g.share = min(share, cfg.MaxShare)
	if g.share < cfg.MinShare {
		// Off only when the slow levels agree: the hysteresis.
		if from.slow < cfg.TargetRatio*to.slow {
			g.active, g.share = false, 0
			g.flips.Add(1)
			b.log.Info("zone: spillover off", "local_zone", b.cfg.LocalZone, "to_distance", g.distance,
				"from_level", time.Duration(from.slow), "to_level", time.Duration(to.slow))
		} else {
			g.share = cfg.MinShare
		}
	}
}

// armProbes keeps the level behind a closed gate measured and fresh (the
// parity rule compares with it), so that the decision to open it rests on
// a measurement rather than on an assumption or an old state; only where
// requests reach the gate (the local zone's, or one behind an open gate),
// at most one probe per 1/ProbeShare completed requests.
func (b *Balancer) armProbes(g *spillGate, to tierStats, reached bool) {
	rate := b.cfg.Spill.ProbeShare
	if to.unknown && rate > 0 {
		rate = max(rate, learnProbeShare)
	}
	if !g.active && reached && rate > 0 && (to.unknown || to.stale) {
		if n := int64(g.completed * rate); n >= 1 {
			g.probe.Store(n) // a budget: unused probes lapse at the next step
			g.completed -= float64(n) / rate
		}
	} else {
		g.probe.Store(0)
	}
}

// shareThreshold maps a share in [0, 1] to a threshold on a uniform uint64.
func shareThreshold(share float64) uint64 {
	switch {
	case share <= 0:
		return 0
	case share >= 1:
		return math.MaxUint64
	}
	v := share * (1 << 64)
	if v >= 1<<64 {
		return math.MaxUint64
	}
	return uint64(v)
}
