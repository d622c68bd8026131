package runner

import (
	"math"
	"testing"
	"time"
)

func TestComputePercentilesNearestRank(t *testing.T) {
	var samples []time.Duration
	// 1..1000 microseconds, shuffled order must not matter.
	for i := 1000; i >= 1; i-- {
		samples = append(samples, time.Duration(i)*time.Microsecond)
	}
	got := computePercentiles(samples)
	want := Percentiles{P50: 500 * time.Microsecond, P90: 900 * time.Microsecond, P99: 990 * time.Microsecond, P999: 999 * time.Microsecond}
	if got != want {
		t.Fatalf("percentiles = %+v, want %+v", got, want)
	}
}

func TestComputePercentilesSmallAndEmpty(t *testing.T) {
	if got := computePercentiles(nil); got != (Percentiles{}) {
		t.Fatalf("empty: %+v", got)
	}
	got := computePercentiles([]time.Duration{7, 3})
	if got.P50 != 3 || got.P999 != 7 {
		t.Fatalf("two samples: %+v, want p50=3 p99.9=7", got)
	}
}

func TestSummariseMedianMinMaxIgnoringNaN(t *testing.T) {
	got := summarise([]float64{5, math.NaN(), 1, 3})
	if got.Median != 3 || got.Min != 1 || got.Max != 5 || got.N != 3 {
		t.Fatalf("odd: %+v", got)
	}
	got = summarise([]float64{4, 1, 3, 2})
	if got.Median != 2.5 || got.N != 4 {
		t.Fatalf("even: %+v", got)
	}
	if got := summarise([]float64{math.NaN()}); !math.IsNaN(got.Median) || got.N != 0 {
		t.Fatalf("all NaN: %+v", got)
	}
}
