package runner

import (
	"math"
	"slices"
	"time"
)

// Percentiles are latency quantiles of one measured phase.
type Percentiles struct {
	P50  time.Duration `json:"p50"`
	P90  time.Duration `json:"p90"`
	P99  time.Duration `json:"p99"`
	P999 time.Duration `json:"p999"`
}

// computePercentiles returns nearest-rank quantiles of samples (which it
// sorts in place). Nearest rank, not interpolation: every figure reported is a
// latency some request really had.
func computePercentiles(samples []time.Duration) Percentiles {
	if len(samples) == 0 {
		return Percentiles{}
	}
	slices.Sort(samples)
	return Percentiles{
		P50:  nearestRank(samples, 0.50),
		P90:  nearestRank(samples, 0.90),
		P99:  nearestRank(samples, 0.99),
		P999: nearestRank(samples, 0.999),
	}
}

// nearestRank is the smallest sample with at least q of all samples at or
// below it.
func nearestRank(sorted []time.Duration, q float64) time.Duration {
	rank := int(math.Ceil(q * float64(len(sorted))))
	rank = max(rank, 1)
	return sorted[rank-1]
}

// Spread summarises repeated measurements of one figure.
type Spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
}

// summarise returns the median, min and max of values, ignoring NaN (a run
// that produced no figure). With an even count the median is the mean of the
// two middle values.
func summarise(values []float64) Spread {
	var v []float64
	for _, x := range values {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return Spread{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	slices.Sort(v)
	mid := len(v) / 2
	median := v[mid]
	if len(v)%2 == 0 {
		median = (v[mid-1] + v[mid]) / 2
	}
	return Spread{Median: median, Min: v[0], Max: v[len(v)-1], N: len(v)}
}
