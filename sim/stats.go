package sim

import (
	"slices"
	"time"

	"github.com/zonelb/zonelb/zone"
)

// bucketLen is the resolution of time series.
const bucketLen = 100 * time.Millisecond

type bucket struct {
	attempts, cross int // first attempts (of the watched zone's clients, when watching)
	requests, ok    int // requests sent in the bucket, and those that succeeded
	// Requests of the watched zone's clients, and those that succeeded on
	// an endpoint in another zone.
	watched, movedOK int
}

// runStats collects one run's measurements.
type runStats struct {
	sc     *Scenario
	series []bucket

	lat []int64 // measured requests; failures count as the timeout
	// pairLat is the latency of measured requests served, by client zone
	// and endpoint zone (pairKey).
	pairLat      map[string][]int64
	stepLat      []int64 // requests sent in the first second after a capacity step
	requests, ok int
	served       int // measured requests served
	servedCross  int
	bytes        int64
	crossBytes   int64
}

func newRunStats(sc *Scenario) *runStats {
	return &runStats{sc: sc, series: make([]bucket, int(sc.Duration/bucketLen)+1), pairLat: map[string][]int64{}}
}

func (s *runStats) bucketAt(t int64) *bucket {
	i := min(max(int(t/int64(bucketLen)), 0), len(s.series)-1)
	return &s.series[i]
}

func (s *runStats) firstAttempt(e *engine, r *request, ep *endpoint) {
	if w := s.sc.Watch; w != nil && r.node.zone != w.Zone {
		return
	}
	b := s.bucketAt(e.now)
	b.attempts++
	if ep.zone != r.node.zone {
		b.cross++
	}
}

func (s *runStats) transfer(_ *engine, r *request, ep *endpoint) {
	if !r.stats {
		return
	}
	n := s.sc.RequestBytes + s.sc.ResponseBytes
	s.served++
	s.bytes += n
	if ep.zone != r.node.zone {
		s.servedCross++
		s.crossBytes += n
	}
}

func (s *runStats) finish(e *engine, r *request, ok bool, ep *endpoint) {
	b := s.bucketAt(r.sent)
	b.requests++
	if ok {
		b.ok++
	}
	if w := s.sc.Watch; w != nil && r.node.zone == w.Zone {
		b.watched++
		if ok && ep != nil && ep.zone != r.node.zone {
			b.movedOK++
		}
	}
	if st := s.sc.Step; st != nil && r.sent >= int64(st.From) && r.sent < int64(st.From+time.Second) {
		if ok {
			s.stepLat = append(s.stepLat, e.now-r.sent)
		} else {
			s.stepLat = append(s.stepLat, int64(s.sc.Timeout))
		}
	}
	if !r.stats {
		return
	}
	s.requests++
	if ok {
		s.ok++
		s.lat = append(s.lat, e.now-r.sent)
		if ep != nil {
			k := pairKey(r.node.zone, ep.zone)
			s.pairLat[k] = append(s.pairLat[k], e.now-r.sent)
		}
	} else {
		s.lat = append(s.lat, int64(s.sc.Timeout))
	}
}

// Result is one policy's figures in one scenario.
type Result struct {
	Scenario string
	Policy   Policy
	Requests int
	// CrossRequests and CrossBytes are the shares of served requests, and
	// of their bytes, that crossed a zone boundary.
	CrossRequests, CrossBytes float64
	// CostPerDay is the cross-zone cost of a day at the measured rate.
	CostPerDay     float64
	P50, P99, P999 time.Duration // failures count as the timeout
	// Success is the share of requests answered within the timeout.
	Success float64
	// UtilMax and UtilMean are the busiest and the mean endpoint
	// utilisation.
	UtilMax, UtilMean float64
	// Moved is, for scenarios with a failure window, how long after the
	// failure at least 99% of the watched zone's requests succeeded on
	// endpoints of other zones, in every 1s window (stepped by 100ms) from
	// then until the failure ends; -1 when that never held.
	Moved time.Duration
	// WindowFailed counts failed requests sent during the failure window.
	WindowFailed int
	// Flips is the mean number of spillover flips per node (zonelb).
	Flips float64
	// P99Ratio is P99 over the baseline scenario's P99 for the same policy.
	P99Ratio float64
	// For a capacity step: StepP99 is p99 of the requests sent in the
	// first second after it; StepSettled the local share of first
	// attempts over the last half of the phase; StepDip how far (share
	// points) the local share of the worst one-second window, from the
	// first second after the step on, fell below StepSettled.
	StepP99              time.Duration
	StepSettled, StepDip float64
	// ByPair is, by client zone and endpoint zone (pairKey: "c>a"), p99
	// of the measured requests served there and their share of all the
	// measured requests.
	ByPair map[string]PairFigures
	// Series is the share of first attempts sent to other zones and the
	// success share, per second (for plots).
	CrossSeries, SuccessSeries []float64
}

func (e *engine) result(pricePerGB float64) Result {
	s := e.stats.(*runStats)
	sc := e.sc
	res := Result{Scenario: sc.Name, Policy: e.policy, Requests: s.requests, Moved: -1}
	if s.served > 0 {
		res.CrossRequests = float64(s.servedCross) / float64(s.served)
	}
	if s.bytes > 0 {
		res.CrossBytes = float64(s.crossBytes) / float64(s.bytes)
	}
	measured := (sc.Duration - sc.Warmup).Seconds()
	perDay := float64(s.crossBytes) / measured * 86400
	res.CostPerDay = zone.CrossZoneCost(uint64(perDay), pricePerGB)
	if s.requests > 0 {
		res.Success = float64(s.ok) / float64(s.requests)
		slices.Sort(s.lat)
		q := func(p float64) time.Duration {
			return time.Duration(s.lat[min(len(s.lat)-1, int(p*float64(len(s.lat))))])
		}
		res.P50, res.P99, res.P999 = q(0.5), q(0.99), q(0.999)
	}
	var sum float64
	for _, ep := range e.eps {
		u := float64(ep.busyNs) / (float64(ep.workers) * float64(sc.Duration-sc.Warmup))
		sum += u
		res.UtilMax = max(res.UtilMax, u)
	}
	res.UtilMean = sum / float64(len(e.eps))

	res.watchFigures(sc, s)
	res.pairFigures(s)
	res.stepFigures(sc, s)

	var flips uint64
	zoned := 0
	for _, n := range e.nodes {
		if zp, ok := n.picker.(*zonePicker); ok {
			zoned++
			for _, sp := range zp.b.State().Spill {
				flips += sp.Flips
			}
		}
	}
	if zoned > 0 {
		res.Flips = float64(flips) / float64(zoned)
	}

	perSecond := int(time.Second / bucketLen)
	for i := 0; i+perSecond <= len(s.series); i += perSecond {
		var b bucket
		for _, x := range s.series[i : i+perSecond] {
			b.attempts += x.attempts
			b.cross += x.cross
			b.requests += x.requests
			b.ok += x.ok
		}
		res.CrossSeries = append(res.CrossSeries, ratio(b.cross, b.attempts))
		res.SuccessSeries = append(res.SuccessSeries, ratio(b.ok, b.requests))
	}
	return res
}

// PairFigures are the requests of one client zone served in one
// endpoint zone.
type PairFigures struct {
	P99   time.Duration
	Share float64 // of all measured requests
}

// pairKey names the requests of client zone from served in zone to.
func pairKey(from, to string) string { return from + ">" + to }

// pairFigures fills ByPair.
func (res *Result) pairFigures(s *runStats) {
	res.ByPair = map[string]PairFigures{}
	for k, l := range s.pairLat {
		slices.Sort(l)
		res.ByPair[k] = PairFigures{P99: time.Duration(l[min(len(l)-1, int(0.99*float64(len(l))))]),
			Share: ratio(len(l), s.requests)}
	}
}

func ratio(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// stepFigures fills the capacity step's figures.
func (res *Result) stepFigures(sc *Scenario, s *runStats) {
	st := sc.Step
	if st == nil {
		return
	}
	if n := len(s.stepLat); n > 0 {
		slices.Sort(s.stepLat)
		res.StepP99 = time.Duration(s.stepLat[min(n-1, int(0.99*float64(n)))])
	}
	win := int(time.Second / bucketLen)
	local := func(from, to int) float64 {
		var b bucket
		for _, x := range s.series[from:min(to, len(s.series))] {
			b.attempts += x.attempts
			b.cross += x.cross
		}
		return 1 - ratio(b.cross, b.attempts)
	}
	first, end := int((st.From+time.Second)/bucketLen), int(st.To/bucketLen)
	res.StepSettled = local((first+end)/2, end)
	for i := first; i+win <= end; i += win {
		res.StepDip = max(res.StepDip, res.StepSettled-local(i, i+win))
	}
}

// watchFigures fills the failure window's figures: when the watched
// zone's requests moved, and how many failed meanwhile.
func (res *Result) watchFigures(sc *Scenario, s *runStats) {
	w := sc.Watch
	if w == nil {
		return
	}
	from, to := int(w.From/bucketLen), min(int(w.To/bucketLen), len(s.series))
	win := int(time.Second / bucketLen)
	moved := -1
	for i := to - win; i >= from; i-- {
		var watched, ok int
		for _, b := range s.series[i : i+win] {
			watched += b.watched
			ok += b.movedOK
		}
		if watched > 0 && float64(ok) < 0.99*float64(watched) {
			break
		}
		moved = i
	}
	if moved >= 0 {
		res.Moved = time.Duration(moved-from) * bucketLen
	}
	for i := from; i < to; i++ {
		res.WindowFailed += s.series[i].requests - s.series[i].ok
	}
}
