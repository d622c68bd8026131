package zone

import (
	"math"
	"sync"
	"sync/atomic"
)

// peakEWMA is a Peak-EWMA latency estimate, in nanoseconds.
//
// Writers (one per completed request) serialise on mu. The estimate and the
// time of its last update must change together: built from two separate
// atomics, two concurrent samples could each read the old pair and one
// update would be lost, or a peak overwritten by a stale decay. A CAS loop
// on one packed word would avoid the mutex, but a word small enough to CAS
// holds only a coarse timestamp, and at thousands of samples per second the
// decay weight of each sample (elapsed/Decay) needs the exact elapsed
// time. Requests to one endpoint finish far apart compared with an
// uncontended lock, so the mutex costs ~20ns and does not serialise Pick.
//
// Readers (Pick) never lock: every write publishes the estimate and a
// coarse timestamp (2^24 ns ~ 16.8 ms units, enough to project a decay of
// seconds) in one atomic word, so a reader sees a consistent pair.
type peakEWMA struct {
	mu  sync.Mutex
	est float64 // guarded by mu
	at  int64   // guarded by mu; ns on the balancer clock
	pub atomic.Uint64
}

// wordTimeShift sets the unit of the published timestamp: 2^24 ns. Ages are
// compared as signed 32-bit differences of it, so an endpoint without a
// sample for over 1.1 years would be projected from a wrapped age: a
// harmless misjudgement of one comparison, at an age no endpoint reaches.
const wordTimeShift = 24

func pack(est float64, at int64) uint64 {
	return uint64(math.Float32bits(float32(est)))<<32 | uint64(uint32(at>>wordTimeShift))
}

// resetLocked sets the estimate outright (new or returning endpoint).
func (p *peakEWMA) resetLocked(est float64, now int64) {
	p.est, p.at = est, now
	p.pub.Store(pack(est, now))
}

// currentLocked is the estimate as seen at now: the stored one faded
// toward zero by exp(-elapsed/decay), as Pick sees it.
func (p *peakEWMA) currentLocked(now int64, decay float64) float64 {
	elapsed := float64(now - p.at)
	if elapsed <= 0 {
		return p.est
	}
	return p.est * math.Exp(-elapsed/decay)
}

// observeLocked folds one latency sample in. The estimate as Pick would
// see it now (faded toward zero since the last sample) is the starting
// point: a sample above it replaces it (the "peak"), otherwise it moves
// toward the sample with weight 1-exp(-elapsed/decay). Starting from the
// stored value instead would let a sample raise an estimate that Pick had
// already seen fade below it. It reports whether the sample was below
// that starting point.
func (p *peakEWMA) observeLocked(sample float64, now int64, decay float64) (below bool) {
	if !(sample >= 0) { // also rejects NaN
		return false
	}
	w := 1.0 // exp(-elapsed/decay): both the fade and the sample's weight
	if elapsed := float64(now - p.at); elapsed > 0 {
		w = math.Exp(-elapsed / decay)
	}
	cur := p.est * w
	if sample > cur {
		p.est = sample
	} else {
		p.est = cur + (sample-cur)*(1-w)
	}
	if now > p.at {
		p.at = now
	}
	p.pub.Store(pack(p.est, p.at))
	return sample < cur
}

// raiseLocked applies a lower bound: the endpoint took at least lb to not
// answer, so the estimate is at least lb.
func (p *peakEWMA) raiseLocked(lb float64, now int64, decay float64) {
	if lb > p.currentLocked(now, decay) {
		p.est = lb
		if now > p.at {
			p.at = now
		}
		p.pub.Store(pack(p.est, p.at))
	}
}

// age is how long before now the estimate was last published, to the
// published timestamp's unit (rounded down), without locking; 0 when it
// was published at or after now.
func (p *peakEWMA) age(now int64) int64 {
	age := uint32(uint64(now)>>wordTimeShift) - uint32(p.pub.Load())
	if int32(age) < 0 {
		return 0
	}
	return int64(age) << wordTimeShift
}

// projected returns the estimate as seen at now, without locking: the
// published estimate faded toward zero by exp(-age/decay). The fade is
// what lets an endpoint that was slow once, and then got no traffic
// because of it, be tried again: unseen for long enough, it looks cheap.
func (p *peakEWMA) projected(now int64, invDecay float64) float64 {
	w := p.pub.Load()
	est := float64(math.Float32frombits(uint32(w >> 32)))
	age := uint32(uint64(now)>>wordTimeShift) - uint32(w)
	if age == 0 || int32(age) < 0 { // same unit, or published ahead of now
		return est
	}
	return est * math.Exp(-float64(uint64(age)<<wordTimeShift)*invDecay)
}
