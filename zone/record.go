package zone

import (
	"math"
	"sync/atomic"
)

// endpointRecord is what the balancer knows of one endpoint across requests
// and set updates. Its atomics are read by Pick without locking; everything
// a completed request changes together is guarded by ewma.mu. It must not
// be copied.
type endpointRecord struct {
	b    *Balancer
	zone *zoneStats   // immutable: the zone is part of the state's key
	pair *PairCounter // (local zone, this zone) byte counters
	ep   *Endpoint    // latest description; guarded by b.mu

	inflight atomic.Int64
	// probeGap (ns): once this long has passed since the estimate was last
	// published (an answer), while nothing is in flight, P2C sends the
	// endpoint the request it would have given a cheaper rival: a probe.
	// Balancer.probeAfter, doubled per slow probe; math.MaxInt64 when
	// probes are off. Written under ewma.mu, and only when it changes:
	// Done pays no atomic store for it.
	probeGap     atomic.Int64
	rampStart    atomic.Int64 // ns; slow start runs from here
	ejectedUntil atomic.Int64 // ns; 0 when not ejected
	ewma         peakEWMA
	// measured turns true with the first latency sample; until then Pick
	// prices the endpoint at its zone's typical estimate.
	measured atomic.Bool

	// Guarded by ewma.mu.
	consecutive    int   // failures in a row
	probation      bool  // back from ejection, no success yet
	ejections      int   // ejections in a row: the backoff exponent
	returnedAt     int64 // ns; last return from ejection
	totalEjections uint64
}

// done folds one completed request into the endpoint's state; responded
// says the in-flight slot was already released (Picked.Responded), load
// how many other requests of this balancer were in flight on the endpoint
// when it was picked (Picked.load: 0, it had the endpoint to itself),
// probe that it was a probe (Picked.probe).
func (st *endpointRecord) done(start int64, r Result, responded bool, load int32, probe bool) {
	b := st.b
	if !responded {
		st.inflight.Add(-1)
		st.zone.live.Add(-1)
	}
	st.pair.Record(r.BytesSent, r.BytesReceived)
	ttfb := float64(r.TTFB)
	now := sampleTime(b, start, r)

	zoneSample, lowerBound := -1.0, -1.0
	eject := false
	st.ewma.mu.Lock()
	// Until its first sample an endpoint is priced at its peers' level
	// (see cost); the first real measurement then replaces that
	// placeholder outright instead of being averaged into it.
	first := !st.measured.Load()
	// well: the answer shows no slowness to back probes off for.
	well := false
	sample := func(x float64) { well = st.sampleLocked(x, now, first, probe) }
	switch r.Outcome {
	case Success:
		sample(ttfb)
		zoneSample = ttfb
		st.zone.ok.Add(1)
		if load == 0 {
			st.zone.idleAcc.Add(packSample(ttfb))
		}
		st.zone.byLoad[min(int(load), loadBuckets-1)].Add(packSample(ttfb))
		st.healthyLocked(now)
	case Overloaded:
		// Load, not ill health: the endpoint answered.
		x := max(ttfb, st.ewma.currentLocked(now, b.decay)) + float64(b.cfg.OverloadPenalty)
		sample(x)
		zoneSample = x
		st.healthyLocked(now)
	case Failure, NotReached:
		x := max(ttfb, st.ewma.currentLocked(now, b.decay)) + float64(b.cfg.FailurePenalty)
		st.ewma.observeLocked(x, now, b.decay)
		zoneSample = x
		st.consecutive++
		eject = st.shouldEjectLocked()
	default: // Canceled: says nothing of health
		if r.TTFB > 0 {
			sample(ttfb)
			zoneSample = ttfb
		} else if elapsed := float64(now - start); elapsed > 0 {
			// No answer yet when the caller gave up: the endpoint took
			// at least this long. Only ever raises the estimate, so a
			// caller cancelling early teaches nothing wrong.
			st.ewma.raiseLocked(elapsed, now, b.decay)
			lowerBound = elapsed
		}
	}
	if zoneSample >= 0 {
		st.measured.Store(true)
		st.zone.typical.Store(math.Float64bits(st.ewma.est))
		b.typical.Store(math.Float64bits(st.ewma.est))
	}
	st.nextProbeLocked(well, probe)
	st.ewma.mu.Unlock()

	if zoneSample >= 0 {
		st.zone.add(zoneSample)
	} else if lowerBound > st.zone.levelNs() {
		st.zone.add(lowerBound)
	}
	if eject {
		b.eject(st, now)
	}
}

// sampleLocked folds the latency sample x into the estimate and reports
// whether the answer shows no slowness to back probes off for. A first
// sample replaces the placeholder the endpoint was priced at; so does a
// probe's answer well below the estimate: the endpoint changed (a stall
// ended), the probe's answer is the only news of it since the estimate
// that kept it unpicked, and averaged in, a 1ms answer would barely move
// a 1s peak. An answer near the estimate confirms it instead, and is
// folded in as usual. Call with st.ewma.mu held.
func (st *endpointRecord) sampleLocked(x float64, now int64, first, probe bool) bool {
	if first || probe && x < st.ewma.currentLocked(now, st.b.decay)/2 {
		st.ewma.resetLocked(x, now)
		return true
	}
	below := st.ewma.observeLocked(x, now, st.b.decay)
	return below && !probe
}

// nextProbeLocked sets the gap the next probe waits from this answer (the
// estimate's timestamp): doubled by every probe that did not find the
// endpoint changed (a truly slow one), back to ProbeAfter after an answer
// below the estimate outside probes, or a changed one. Call with
// st.ewma.mu held.
func (st *endpointRecord) nextProbeLocked(well, probe bool) {
	b := st.b
	if b.probeAfter <= 0 {
		return
	}
	gap := st.probeGap.Load()
	switch {
	case well:
		gap = b.probeAfter
	case probe:
		gap = min(2*gap, b.maxProbeGap)
	}
	if gap != st.probeGap.Load() {
		st.probeGap.Store(gap)
	}
}

// sampleTime is when r's sample is stamped. A response's latency was
// measured when its first byte came: stamp the sample then. It is the
// right time for the decay, and it spares a clock read (tens of ns on some
// machines) on most requests.
func sampleTime(b *Balancer, start int64, r Result) int64 {
	if r.TTFB > 0 && (r.Outcome == Success || r.Outcome == Overloaded || r.Outcome == Canceled) {
		return start + int64(r.TTFB)
	}
	return b.clock()
}

// healthyLocked records a sign of life.
func (st *endpointRecord) healthyLocked(now int64) {
	st.consecutive = 0
	st.probation = false
	// An endpoint that stays well for the longest backoff starts its next
	// ejection from the base backoff again.
	if st.ejections > 0 && now-st.returnedAt >= int64(st.b.cfg.Ejection.MaxBackoff) {
		st.ejections = 0
	}
}
