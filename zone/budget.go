package zone

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ParityBudget is the Budget value that selects the parity rule: keep
// requests local until the local latency level matches the remote zones'.
const ParityBudget = -1

// LatencyBudget is the Budget value that selects the curve's far end, the
// latency rule: the local zone gets no preference beyond its measured
// latency. Each request goes to the cheaper, by Peak-EWMA cost, of P2C's
// choice in the local zone and P2C's choice in the nearest other zones.
const LatencyBudget = -2

// latencyRule tells whether budget selects the latency rule.
func latencyRule(budget float64) bool { return budget == LatencyBudget }

// MaxSpillBudget bounds Budget: a local level 100x its unloaded one is no
// longer a latency budget but an overload.
const MaxSpillBudget = 100.0

// ParseSpillBudget reads a budget as configuration and annotations write
// it: a percentage of the local zone's unloaded latency level ("50%": the
// level may rise to 1.5x), "parity" for the parity rule, or "latency"
// for the latency rule. It returns the SpillConfig.Budget value.
func ParseSpillBudget(s string) (float64, error) {
	t := strings.TrimSpace(s)
	if strings.EqualFold(t, "parity") {
		return ParityBudget, nil
	}
	if strings.EqualFold(t, "latency") {
		return LatencyBudget, nil
	}
	num, ok := strings.CutSuffix(t, "%")
	if !ok {
		return 0, fmt.Errorf("spill budget %q: want a percentage such as \"50%%\", \"parity\" or \"latency\"", s)
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("spill budget %q: want a percentage such as \"50%%\", \"parity\" or \"latency\"", s)
	}
	if v <= 0 || v/100 > MaxSpillBudget {
		return 0, fmt.Errorf("spill budget %q: want a percentage above 0%% and at most %.0f%%", s, MaxSpillBudget*100)
	}
	return v / 100, nil
}

// FormatSpillBudget writes a Budget value the way ParseSpillBudget reads it.
func FormatSpillBudget(b float64) string {
	if latencyRule(b) {
		return "latency"
	}
	if b < 0 {
		return "parity"
	}
	return strconv.FormatFloat(b*100, 'f', -1, 64) + "%"
}

// SetSpillBudget changes the balancer's spill budget (a SpillConfig.Budget
// value: 0 for the default, negative for the parity rule) without losing
// what it has learnt: the next control step uses it.
func (b *Balancer) SetSpillBudget(budget float64) error {
	if budget == 0 {
		budget = DefaultSpillBudget
	}
	if math.IsNaN(budget) || math.IsInf(budget, 0) || budget > MaxSpillBudget {
		return fmt.Errorf("spill budget %v: want <= %v, or negative for the parity rule", budget, MaxSpillBudget)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cfg.Spill.Budget = budget
	b.latency.Store(latencyRule(budget))
	return nil
}

// SpillBudget returns the balancer's spill budget (negative: parity rule).
func (b *Balancer) SpillBudget() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cfg.Spill.Budget
}

// The unloaded level of the tier before a gate is learnt from its slow
// level: it follows a lower level within unloadedFall and a higher one
// only over unloadedRise, and not at all while the gate spills or while
// the level is over the half of the budget (a loaded zone). So a zone
// that is never idle keeps the lowest level it showed recently, and a
// service that got slower for good (a new release) is relearnt within
// minutes, while a sustained overload never raises its own yardstick.
const (
	unloadedFall = 10 * time.Second
	unloadedRise = 10 * time.Minute
)

// throughputFloor: while spilling, the tier before a gate keeps at least
// this share of the requests it completed successfully in the last step.
// A queue drains one queueing delay after the spill that relieves it, so
// latency still reads high when the spill is already enough; without the
// floor the integral action overshoots (measured: the local share dipped
// to 5% for 2 s on a capacity step that settles at 60%). With it the
// share can fall at most 1-throughputFloor (15 points) below what the
// local zone demonstrably serves, and its backlog drains at that rate.
const throughputFloor = 0.85

// minBudgetedRise is the least rise a budget allows, whatever its
// percentage: for a service answering in 1.5 ms, 50% is 0.75 ms, below
// the scheduling noise of a busy node (measured in make demo's mini
// cluster on this 2-core machine: 1% of a healthy zone's calls spilled on
// such noise).
const minBudgetedRise = float64(time.Millisecond)

// The in-flight limit of the tier before a gate (budget rule) rests on
// Little's law at the budgeted level: m = completions/s x budgeted level,
// the requests this node has in flight there when the tier runs at its
// budget. While the tier is unloaded (gate closed, fast level under half
// the budget or no queue behind it) the limit is inFlightHeadroom x m +
// inFlightSlack: twice what the budget allows, so that ordinary
// fluctuations of the in-flight count never spill (at 30% load, Poisson
// counts of mean 3 pass 13 once in 10^5), while a capacity step cannot
// queue more than that before the share reacts. Once the tier is loaded
// (the gate open, or the fast level past half the budget with a queue
// behind it) the limit is m + sqrt(m), rounded up: a request that would
// queue beyond what the budget allows, give or take one deviation of a
// Poisson count, crosses at once, whatever the share. The share follows the mean
// level; this cuts the queue's tail, which shows in p99 before the mean
// moves (measured, medians over seeds 1..10 of the sweep: capacity-step
// at the 2% budget 60.1% cross-zone bytes at p99 29.7 ms -> 49.0% at
// 19.6 ms; TestDefaultBudgetTarget's shape 58.6% local at p99 48.5 ms ->
// 63.8% at 41.1 ms, zone-blind P2C 44.0 ms). A slack of 1 above that
// was worse on both axes in every sweep scenario. okRateSmoothing is the weight of the newest control step in
// the completion rate.
const (
	inFlightHeadroom = 2.0
	inFlightSlack    = 4
	okRateSmoothing  = 0.5
)

// overLimit tells whether a request that finds live requests of this
// balancer in flight in the tier before g crosses g by the in-flight
// limit: the limit is reached, and the last stall the balancer noticed
// (see below) ended at least g.hold ago.
//
// The in-flight count reads a capacity step at once, and it reads a burst
// the same way: a node that stalls (the CPU taken away from the proxy and
// every zone's backends for tens of milliseconds) hands the proxy the
// requests of the whole stall at one instant, all in flight together
// although the zone serves them at its unloaded level. What tells the
// two apart is the balancer's own clock: a stall stops the picks with
// everything else, so a burst follows a gap between picks far longer than
// the tier's usual one (g.gap), while a tier that lost capacity keeps
// being picked at its usual pace as its count climbs. So after such a gap
// the limit waits hold (the budgeted level: the burst, served at once,
// drains within about the unloaded level, and a request queued that long
// has used its budget anyway); at any other time it applies at once, and
// a capacity step spills with no queue before the spill.
//
// Only after a gap that the tier ends under its limit (the first pick
// after the gap comes before the burst), or that began while the last
// one's wait was on (a stall before the previous burst drained): a tier
// over its limit otherwise, hung or queued, stays over it whatever the
// stall, and each stall would hand it another hold's worth of requests
// (measured with the wait after any gap: up to 112 of 1197 calls in 2 s
// went to a hung zone in TestHungZoneSpillsOnStallingNode, 14-15 with no
// wait; with this rule 14-46, all in the first second: the most when a
// stall comes in the first tens of milliseconds of the hang, before the
// count reached the limit, and its burst lands there).
//
// Measured on the queue model (TestNodeStallIsNotOverload: a healthy
// zone, 5 ms calls at 600/s, the node pausing 10-100 ms three times a
// second): with the limit applied at once 4.5-9.3% of the calls crossed
// on such bursts, none ever through the share, and the worst 2 s window
// kept 79.5-92.5% local; with the wait 0-0.42% and 98.1-100% (what still
// crossed did so after the long stalls, whose skewed latencies read as a
// queue and tightened the limit: see controlBudget; with that fixed,
// 0-0.32% and 98.4-100% over seeds 1..30).
// Waiting hold after every first pick over the limit, gap or not, kept
// them local too, but queued each capacity step for hold:
// TestCapacityStepNoOvershoot's first-second p99 went from 31.1 ms to
// 40.9 ms (unchanged at 31.1 ms with this rule).
//
// seen is refreshed every gap/8 at most, so that the picks of a busy
// balancer do not all write one cache line.
func (g *spillGate) overLimit(live, now int64) bool {
	l, gap := g.limit.Load(), g.gap.Load()
	if last := g.seen.Load(); now-last > gap/8 {
		if now-last > gap && last != 0 && (live < l || last-g.blind.Load() < g.hold.Load()) {
			g.blind.Store(now) // a stall: the balancer saw nothing since last
		}
		if now-last > overLimitStallGaps*gap && last != 0 && gap > 0 {
			g.stall.Store(now) // a long one: see controlBudget
		}
		g.seen.Store(now)
	}
	if l <= 0 || live < l {
		return false
	}
	return now-g.blind.Load() >= g.hold.Load()
}

// setLimit sets the in-flight limit of the tier before g for the budgeted
// level set (ns), loaded or not (inFlightLimit), and the wait after a
// stall (overLimit). Behind an open gate the tier's latency already shows
// its queue: no wait, a burst onto a loaded tier spills at once.
func (g *spillGate) setLimit(set float64, loaded bool) {
	g.limit.Store(inFlightLimit(g.okRate*set/1e9, loaded))
	hold := int64(set)
	if g.spilling() {
		hold = 0
	}
	g.hold.Store(hold)
	g.gap.Store(int64(max(set, overLimitGaps*1e9/max(g.okRate, 1))))
}

// loadedForm tells whether the in-flight limit takes its loaded form at
// the control step at now, dt after the last one: the gate is open, or
// queue (the fast level past half the budget, with a queue behind it)
// holds, unless a long stall of the balancer (no pick for
// overLimitStallGaps gaps: one that held this step back, or one that
// ended in this step or the last) came with it.
//
// Such a stall skews the levels of the steps that read the answers held
// across it: each request in flight then waited it out, tens of ms on top
// of a few, and with only a handful of them idle or not, the fast level
// passes half the budget above the idle level on that alone, reading as a
// queue. So that step does not move the limit to its loaded form (it
// keeps it there if it was). Measured, TestNodeStallIsNotOverload's shape
// over seeds 1..30: in seeds 18 and 24 a stall's skewed levels read as a
// queue, the limit took its tight form (6, with 3 calls in flight on
// average) for one step, 47 and 59 calls crossed and a 2 s window kept
// 96.1% and 96.3% local; with this rule every window kept 98.4% or more.
// A capacity step that comes with such a stall gets the tight limit a
// step or two late, the loose one until then.
func (g *spillGate) loadedForm(queue bool, now, dt, interval int64) bool {
	stalled := dt-interval > overLimitStallGaps*g.gap.Load() || g.stall.Load() > now-dt-interval
	g.loaded = g.spilling() || (queue && (g.loaded || !stalled))
	return g.loaded
}

// overLimitGaps is how many of a tier's mean intervals between
// completions may pass between picks before the balancer counts the gap
// as a stall (see overLimit): a Poisson gap is longer once in e^4 = 55
// picks, and the stall must also be longer than the budgeted level.
const overLimitGaps = 4

// overLimitStallGaps: a gap between picks this many times g.gap (at
// 600 calls/s on 5 ms calls, 30 ms; never in a Poisson stream: e^-16) is
// a stall long enough to skew a control step's latency levels (see
// controlBudget).
const overLimitStallGaps = 4

// inFlightLimit is the in-flight limit (see inFlightHeadroom) for m
// requests in flight at the budgeted level, in a loaded tier or not.
func inFlightLimit(m float64, loaded bool) int64 {
	if loaded {
		return int64(math.Ceil(m + math.Sqrt(m)))
	}
	return int64(math.Ceil(inFlightHeadroom*m)) + inFlightSlack
}

// learnUnloaded moves g's unloaded level of the tier before it toward its
// levels (see unloadedFall): it starts at the fast level of the tier's
// first learnSamples requests (the slow level starts from a handful of
// samples, 25% low on the queue model, and a balancer started into an
// overload sees the queue build within seconds), then follows the slow
// level.
//
// It also rises at once to the tier's idle level (requests that had their
// endpoint to themselves: the service's own latency, no queue of ours in
// it) while the gate is closed: a service that became slower for all its
// requests, queued or not (a new release, heavier calls), moves its
// yardstick with it instead of spilling for minutes, while a queue (the
// idle requests stay as fast as they were) still does. Measured before
// this: the mini cluster's backends going from 1 ms to 5 ms a call with
// no queue spilled 14-21% of the calls. The idle level lags a bigger
// slowdown by seconds (see recentIdle): so it rises as well to the mean
// of the last batch of idle requests (recent; 0 for none) when the tier's
// fast level stands within half the budget of it (the queue of ours is
// small: the slowdown is the service's). Without that test a batch
// raised the level during a capacity step too:
// TestCapacityStepNoOvershoot's first-second p99 went from 31.1 ms to
// 32.4 ms (with it, that test's figures are unchanged).
func (g *spillGate) learnUnloaded(from tierStats, recent float64, dt int64) {
	idle := 0.0
	if from.idleKnown {
		idle = from.idle
	}
	if recent > 0 && from.fast-recent <= (g.setpoint-g.unloaded)/2 {
		idle = max(idle, recent)
	}
	if !g.spilling() && g.unloaded > 0 && idle > g.unloaded {
		g.unloaded = min(idle, max(from.fast, from.slow))
	}
	switch slow := from.slow; {
	case g.unloaded == 0:
		g.unloaded = from.fast
	case slow < g.unloaded:
		g.unloaded += (slow - g.unloaded) * (1 - math.Exp(-float64(dt)/float64(unloadedFall)))
	case !g.spilling() && slow < (g.unloaded+g.setpoint)/2:
		g.unloaded += (slow - g.unloaded) * (1 - math.Exp(-float64(dt)/float64(unloadedRise)))
	}
}

// recentIdle returns the mean latency of the last batch of idleSamples
// idle requests of the tier before g (zoneStats.idle: each one the
// service's own latency, without a queue of ours), gathered over the
// control steps of at most window (a step with idleSamples of its own is
// a batch alone), while that batch is at most window old; 0 when there is
// none.
//
// The tier's idle level averages its idle requests over many steps, and
// its idle requests get rare as the service slows down: with calls 20x
// slower, the same rate puts 20x as many in flight, and few requests
// still find their endpoint free of ours (on two endpoints at 600
// calls/s, 1 ms -> 20 ms calls: 1-5 a step at first, then none). So the
// idle level lags the slowdown by seconds, the slower requests read as
// a queue, the in-flight limit (set from the old level) sends the excess
// across, and its tight form keeps it there. Measured on the queue model
// before batches (TestSlowerServiceIsNotOverload's shape, first 2 s
// after the slowdown): 1 -> 10 ms kept 1,133 of 1,222 calls local,
// 1 -> 20 ms 730 (and 90% over the 10 s after), 1 -> 50 ms 252; a
// batch of idleSamples gathered over a few steps tells the slowdown
// within about 0.3 s.
func (g *spillGate) recentIdle(from tierStats, now, dt, window int64) float64 {
	if g.idleN == 0 || from.idleNowN >= idleSamples || now-g.idleFrom > window {
		g.idleSum, g.idleN, g.idleFrom = 0, 0, now-dt
	}
	g.idleSum += from.idleNow * from.idleNowN
	g.idleN += from.idleNowN
	if g.idleN >= idleSamples {
		g.idleBatch, g.idleAt, g.idleN = g.idleSum/g.idleN, now, 0
	}
	if g.idleBatch == 0 || now-g.idleAt > window {
		return 0
	}
	return g.idleBatch
}

// controlBudget is the budget rule for gate g (see control): the share
// spilled is the one that keeps the tier before the gate at its budgeted
// level, set = unloaded x (1 + Budget), and never sends requests to a
// tier slower than the one they leave.
//
//   - The gate opens when from's slow level exceeds set; not into a tier
//     known to be slower.
//   - A request that finds this node's in-flight count in from at the
//     in-flight limit (inFlightLimit) crosses the gate, whatever the share,
//     open or closed: this, not the gate, is what reacts at once to a
//     capacity step. (An opening by Little's law on the in-flight count,
//     meant for the step, never fired: it compared seconds with ns. With
//     the units fixed it changed no median of the sweep's capacity step
//     (first-second p99 38.1 ms either way at the 50% budget), and it read
//     the first step of a 1 -> 5 ms slowdown as a capacity step:
//     TestNodeStallIsNotOverload's seed 25 kept 97.4% of a 2 s window
//     instead of 98.5%. So it is gone.)
//   - While open, the share moves by integral action on the error
//     min(from/set, from/to) - 1, by proportional action on from's
//     backlog growth (as the parity rule), and is capped so that from
//     keeps throughputFloor of the requests it completed (no overshoot).
//   - It closes when the share has decayed below MinShare while from's
//     slow level is back under set.
func (b *Balancer) controlBudget(g *spillGate, from, to tierStats, measured [2]float64, reach float64, dt int64) {
	cfg := b.cfg.Spill
	if !from.known {
		return
	}
	recent := g.recentIdle(from, b.lastTick, dt, int64(cfg.LevelTime))
	g.learnUnloaded(from, recent, dt)
	if to.known && g.unloaded > 0 {
		// A tier that serves the same service at a level below the one
		// learnt as unloaded here shows that level was not unloaded (a
		// balancer started into an overload, or requests alone on their
		// endpoints behind other nodes' queues).
		g.unloaded = min(g.unloaded, measured[0])
	}
	set := g.unloaded + max(g.unloaded*cfg.Budget, float64(minBudgetedRise))
	g.setpoint = set
	secs := min(float64(dt)/1e9, 1) // a long gap is not a long push
	g.noteRate(from.ok, secs)
	// A queue shows as requests slower than the ones that had their
	// endpoint to themselves; a service that became slower as a whole
	// does not, and is no capacity step.
	// The idle level lags a sudden slowdown: the last batch of idle
	// requests, as slow as the rest, says it is one (recentIdle).
	slowedDown := recent > 0 && from.fast-recent <= (set-g.unloaded)/2
	queued := !slowedDown && (!from.idleKnown || from.fast-from.idle > (set-g.unloaded)/2)
	halfway := from.fast > (g.unloaded+set)/2 // half the budget used
	// In-flight requests show a capacity step at once, latency one
	// queueing delay late: cap them by Little's law at the budgeted level
	// and the rate the tier serves (loosely while the tier is unloaded,
	// tightly once it is loaded: inFlightHeadroom).
	// Not before the rate rests on a LevelTime of completions: from the
	// first steps' few completions a cold start would spill on its own
	// bursts (measured: 1.3% of make demo's warm-up).
	g.known += dt
	if g.known >= int64(cfg.LevelTime) {
		g.setLimit(set, g.loadedForm(halfway && queued, b.lastTick, dt, b.interval))
		remote := 0.0
		if to.known {
			remote = measured[1]
		}
		if !b.noQueueLimit {
			g.setQueueLimit(from, set, remote, reach, cfg.MinShare)
		}
	}
	if !g.active {
		slower := to.known && to.slow >= from.slow
		if from.slow > set && !slower {
			g.active, g.share = true, cfg.InitialShare
			b.log.Info("zone: spillover on", "local_zone", b.cfg.LocalZone, "to_distance", g.distance,
				"level", time.Duration(from.slow), "budgeted_level", time.Duration(set))
		}
		return
	}
	share := g.openShare(cfg, from, to, measured, set, reach, secs)
	if share < cfg.MinShare {
		if from.slow >= set {
			share = cfg.MinShare
		} else {
			g.active, share = false, 0
			b.log.Info("zone: spillover off", "local_zone", b.cfg.LocalZone, "to_distance", g.distance,
				"level", time.Duration(from.slow), "budgeted_level", time.Duration(set))
		}
	}
	g.share = share
}

// noteRate folds the tier before g's successful completions over the
// last secs into okRate, the rate the in-flight limit is set from.
func (g *spillGate) noteRate(ok, secs float64) {
	if secs <= 0 {
		return
	}
	w := okRateSmoothing
	if g.okRate == 0 {
		w = 1 // the first rate measured, not a fraction of it
	}
	g.okRate += (ok/secs - g.okRate) * w
}

// openShare is the share an open gate spills from the next step on (see
// controlBudget): integral action on the error against the budgeted level
// set, proportional action on the backlog growth, capped so that from
// keeps throughputFloor of what it completed.
func (g *spillGate) openShare(cfg SpillConfig, from, to tierStats, measured [2]float64, set, reach, secs float64) float64 {
	e := from.fast/set - 1
	if to.known {
		// Not into a slower tier, as measured: the pessimistic bound
		// guards the opening; here it would stop a spill the remote
		// tier can take. (Sweeping the budget with a guard at 2x the
		// local level instead spilled more for the same p99.)
		e = min(e, from.fast/measured[1]-1)
	}
	e = min(max(e, -1), 1)
	share := g.share * math.Exp(cfg.Gain*e*secs)
	if reach > 0 {
		share += from.growth / reach
		share = min(share, 1-throughputFloor*from.ok/reach)
	}
	share = min(share, cfg.MaxShare)
	if !to.known {
		// Over budget with the level across not measured yet: measure
		// it now, once (it stays known). A balancer started into an
		// overload learnt the overload as its unloaded level, and only a
		// remote level shows that level was not unloaded (the bound on
		// the unloaded level in controlBudget). Measured without this:
		// TestColdStartIntoOverloadLearnsTheRemoteLevel.
		share = max(share, learnProbeShare)
	}
	return share
}

// spilling tells whether the tier before g spills: its gate is open, or
// its queue limit is in force. Either way its requests are no sample of
// an unloaded level (learnUnloaded), and it is loaded (loadedForm).
func (g *spillGate) spilling() bool { return g.active || g.queueOn }

// queueProbeGap: past the queue limit, one request per gap is let
// through all the same, so that the level at the limit stays measured
// and the limit rises again when the endpoints serve more at once.
const queueProbeGap = 100 * time.Millisecond

// setQueueLimit sets the queue limit of the tier before g: the least
// count j >= 1 of this balancer's requests in flight on an endpoint at
// which the requests that found j others there have been answered over
// the budgeted level set, and over the level of the tier behind the gate
// (remote, as measured; 0 when not known): such a request would wait
// longer than the budget allows and than the trip across takes. The
// limit comes into force when the gate opens and stays while some count
// is over, the gate open or not: it keeps the level under budget, so the
// gate closes behind it. It goes off as the gate closes, when it sent
// less than minShare across lately while the slow level is under budget;
// 0 for none. Coming into force when the in-flight limit takes its
// loaded form instead, one step or two sooner, moved no figure of the
// capacity step and kept it on in a healthy zone on a stalling node
// (TestNodeStallIsNotOverload, seed 14: 1.47% crossed).
//
// This is what bounds each endpoint's queue, where the share and the
// in-flight limit hold the tier's mean level: with a small budget it keeps
// each endpoint at what it serves without queueing (on single-call
// endpoints, one of ours at a time), and sends the rest across; with a
// large one it lets each queue grow to what the budget allows, not
// further. A request on its way to an endpoint below the limit is not
// held back by it.
func (g *spillGate) setQueueLimit(from tierStats, set, remote, reach, minShare float64) {
	crossed := float64(g.queued.Swap(0))
	if reach > 0 {
		g.queueShare += (min(crossed/reach, 1) - g.queueShare) * okRateSmoothing
	}
	over := max(set, remote)
	// The least count over, below the limit in force: the levels above
	// it get no samples (their requests cross) and tell nothing new.
	cur := int(g.queue.Load())
	top := loadBuckets
	if cur > 0 {
		top = cur
	}
	// Levels are taken at face value. Judged one standard error lower
	// (as remote levels are judged higher, for a deviation up to the
	// mean), a count of one on single-call endpoints read as within a 50%
	// budget: on TestCapacityStepNoOvershoot's step the limit allowed a
	// queue of one: 59.0% local, p99 17.5-21.1 ms a second from 1 s after
	// the step, against 48.3% at 12.8-17.2 ms.
	isOver := func(j int) bool { return from.byLoad[j] > over }
	limit := 0
	for j := 1; j < top; j++ {
		if isOver(j) {
			limit = j
			break
		}
	}
	if cur > 0 && limit == 0 {
		// None below: the requests let past the limit say whether it
		// still holds; if they came back within it, one more of ours
		// per endpoint stays local, and its requests measure the next
		// count afresh (controlBudget forgets its old level).
		limit = cur
		if from.byLoad[cur] > 0 && !isOver(cur) {
			limit = cur + 1
			g.raised = true
		}
		if limit >= loadBuckets {
			limit = 0
		}
	}
	switch {
	case limit == 0:
		g.queueOn = false
	case g.active:
		g.queueOn = true
	case g.queueShare < minShare && from.slow < set:
		// Off as the gate closes: it sends next to nothing across, and
		// the level is within the budget.
		g.queueOn = false
	}
	if !g.queueOn {
		limit = 0
	}
	g.queue.Store(int64(limit))
}

// overQueue tells whether a request whose endpoint in the tier before g
// has load of this balancer's requests in flight crosses g by the queue
// limit (setQueueLimit): not after a stall, for the same wait as the
// in-flight limit (overLimit), and not once per queueProbeGap.
func (g *spillGate) overQueue(load, now int64) bool {
	l := g.queue.Load()
	if l <= 0 || load < l || now-g.blind.Load() < g.hold.Load() {
		return false
	}
	if last := g.queueProbe.Load(); now-last >= int64(queueProbeGap) && g.queueProbe.CompareAndSwap(last, now) {
		return false
	}
	g.queued.Add(1)
	return true
}
