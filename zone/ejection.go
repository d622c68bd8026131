package zone

// Passive health: ejection of failing endpoints, backoff, probation, and
// one endpoint at a time probing a zone that is down.

import (
	"math"
	"time"
)

// shouldEjectLocked tells whether the failure just counted calls for an
// ejection attempt: at the threshold (1 on probation), then again every
// threshold failures in case an attempt was refused by the share cap.
func (st *endpointRecord) shouldEjectLocked() bool {
	limit := st.b.cfg.Ejection.ConsecutiveFailures
	if limit < 0 {
		return false
	}
	if st.probation {
		return true
	}
	return st.consecutive >= limit && (st.consecutive-limit)%limit == 0
}

// eject takes st out of rotation for its backoff, unless that would eject
// more than the configured share of the service.
func (b *Balancer) eject(st *endpointRecord, now int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if st.ejectedUntil.Load() != 0 {
		return // a concurrent failure got here first
	}
	if b.states[stateKey{st.ep.Addr, st.ep.Zone}] != st {
		return // removed from the set meanwhile
	}
	if limit := int(b.cfg.Ejection.MaxEjectedShare * float64(b.classSize)); b.ejected >= limit {
		b.log.Debug("zone: ejection refused, share cap reached",
			"addr", st.ep.Addr, "ejected", b.ejected, "cap", limit)
		return
	}

	st.ewma.mu.Lock()
	k := st.ejections
	st.ejections++
	st.totalEjections++
	st.consecutive = 0
	probe := st.probation
	st.probation = false
	est := st.ewma.currentLocked(now, b.decay)
	st.ewma.mu.Unlock()

	backoff := b.backoff(k)
	until := now + int64(backoff)
	if until == 0 {
		until = 1 // 0 means "not ejected"
	}
	st.ejectedUntil.Store(until)
	b.ejected++
	b.nextReturn = min(b.nextReturn, until)
	if probe && b.zoneProbation {
		// A failed probation is evidence against the endpoint's zone: the
		// others of the zone still ejected wait as long (returnEjected
		// lets a zone that is down return one endpoint at a time).
		for _, m := range b.members {
			if o := m.st; o != st && o.zone == st.zone {
				if u := o.ejectedUntil.Load(); u != 0 && u < until {
					o.ejectedUntil.Store(until)
				}
			}
		}
	}
	b.rebuild(now)
	b.log.Info("zone: endpoint ejected", "addr", st.ep.Addr, "zone", st.ep.Zone,
		"backoff", backoff, "ejections_in_a_row", k+1, "estimate", time.Duration(est))
}

// backoff is the k-th ejection's duration (k from 0): BaseBackoff x 2^k,
// capped at MaxBackoff, then spread by Jitter.
func (b *Balancer) backoff(k int) time.Duration {
	e := b.cfg.Ejection
	d := float64(e.MaxBackoff)
	if k < 62 {
		d = min(float64(e.BaseBackoff)*math.Ldexp(1, k), d)
	}
	if e.Jitter > 0 {
		u := float64(b.rnd.Uint64()>>11) / (1 << 53) // [0, 1)
		d *= 1 + e.Jitter*(2*u-1)
	}
	return time.Duration(d)
}

// returnEjected brings back endpoints whose backoff has ended: estimate
// reset to DefaultLatency, slow start from now, on probation. Called with
// b.mu held, from the control step.
//
// A zone whose usable endpoints are all ejected or on probation is down,
// and one endpoint at a time probes it: the others wait for its verdict (a
// success lets them return at the next step; a failure extends their
// backoff to the probe's new one, see eject). Without this, every
// endpoint of a dead zone would fail a request of its own at each return.
func (b *Balancer) returnEjected(now int64) {
	if now < b.nextReturn {
		return
	}
	type zoneHealth struct{ healthy, probing int }
	health := map[*zoneStats]*zoneHealth{}
	for _, m := range b.members {
		h := health[m.st.zone]
		if h == nil {
			h = &zoneHealth{}
			health[m.st.zone] = h
		}
		if !b.inClass(m) || m.st.ejectedUntil.Load() != 0 {
			continue
		}
		m.st.ewma.mu.Lock()
		probation := m.st.probation
		m.st.ewma.mu.Unlock()
		if probation {
			h.probing++
		} else {
			h.healthy++
		}
	}

	next := int64(math.MaxInt64)
	returned := 0
	for _, m := range b.members {
		st := m.st
		until := st.ejectedUntil.Load()
		if until == 0 {
			continue
		}
		if until > now {
			next = min(next, until)
			continue
		}
		h := health[st.zone]
		if b.zoneProbation && h.healthy == 0 && h.probing > 0 {
			hold := now + b.interval // the zone is down and being probed
			st.ejectedUntil.Store(hold)
			next = min(next, hold)
			continue
		}
		if h.healthy == 0 {
			h.probing++ // this one probes the zone
		}
		st.ewma.mu.Lock()
		st.ewma.resetLocked(b.defaultLat, now)
		st.measured.Store(false)
		st.probation = true
		st.consecutive = 0
		st.returnedAt = now
		st.probeGap.Store(b.firstProbeGap())
		st.ewma.mu.Unlock()
		st.rampStart.Store(now)
		st.ejectedUntil.Store(0)
		b.ejected--
		returned++
		b.log.Debug("zone: endpoint back from ejection", "addr", m.ep.Addr, "zone", m.ep.Zone)
	}
	b.nextReturn = next
	if returned > 0 {
		b.rebuild(now)
	}
}
