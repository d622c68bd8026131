package zone

import (
	"math"
	"sync"
	"testing"
	"time"
)

const tau = float64(10 * time.Second)

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-6*math.Max(math.Abs(a), math.Abs(b)) }

// A sample above the estimate replaces it at once.
func TestPeakEWMAPeakReplaces(t *testing.T) {
	var p peakEWMA
	p.resetLocked(10e6, 0)
	p.observeLocked(50e6, 1, tau)
	if p.est != 50e6 {
		t.Errorf("estimate after a peak = %v, want 50e6", p.est)
	}
}

// A sample below the estimate moves it with weight 1-exp(-elapsed/decay),
// starting from the estimate faded toward zero over the same time.
func TestPeakEWMADecaysTowardSamples(t *testing.T) {
	var p peakEWMA
	p.resetLocked(100e6, 0)
	elapsed := int64(5 * time.Second)
	p.observeLocked(20e6, elapsed, tau)
	w := math.Exp(-0.5)
	cur := 100e6 * w
	want := cur + (20e6-cur)*(1-w)
	if !near(p.est, want) {
		t.Errorf("estimate = %v, want %v", p.est, want)
	}
	// No time elapsed: the sample has no weight.
	before := p.est
	p.observeLocked(1e6, elapsed, tau)
	if p.est != before {
		t.Errorf("estimate moved to %v with no time elapsed, want %v", p.est, before)
	}
	// A negative or NaN sample is ignored.
	p.observeLocked(-1, elapsed+1, tau)
	p.observeLocked(math.NaN(), elapsed+1, tau)
	if p.est != before {
		t.Errorf("bad samples moved the estimate to %v", p.est)
	}
}

// Readers see the estimate fade toward zero without samples, from a
// published word: the projection matches the locked computation to the
// published timestamp's resolution.
func TestPeakEWMAProjection(t *testing.T) {
	var p peakEWMA
	p.resetLocked(30e6, 0)
	for _, age := range []time.Duration{0, time.Millisecond, time.Second, 10 * time.Second, time.Minute} {
		now := int64(age)
		got := p.projected(now, 1/tau)
		want := p.currentLocked(now, tau)
		// 2^24 ns units: at most ~16.8ms of age error, 0.17% of 10s.
		if math.Abs(got-want) > want*0.002+1 {
			t.Errorf("projected at %v = %v, want %v", age, got, want)
		}
	}
	// A word published ahead of now (a sample stamped after this reader
	// took its time) is not decayed.
	p.resetLocked(30e6, int64(time.Second))
	if got := p.projected(0, 1/tau); got != float32Of(30e6) {
		t.Errorf("projected before the timestamp = %v, want 30e6", got)
	}
}

func float32Of(f float64) float64 { return float64(float32(f)) }

// Concurrent samples are not lost: when every writer observes a peak at
// the same instant, the result is the largest of them. Built from two
// independent atomics, a smaller peak could overwrite a larger one.
func TestPeakEWMAConcurrentPeaksNotLost(t *testing.T) {
	for round := range 50 {
		var p peakEWMA
		p.resetLocked(0, 0)
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() {
				p.mu.Lock()
				p.observeLocked(float64((i+1)*1000+round), 1, tau)
				p.mu.Unlock()
			})
		}
		wg.Wait()
		if want := float64(16*1000 + round); p.est != want {
			t.Fatalf("round %d: estimate %v after concurrent peaks, want the largest %v", round, p.est, want)
		}
	}
}
