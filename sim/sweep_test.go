package sim

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// A baseline is "under the curve" exactly when some budget's median point
// is at least as good on both axes.
func TestSweepDominance(t *testing.T) {
	pt := func(p Policy, budget float64, cross, p99 float64) *sweepPoint {
		return &sweepPoint{Policy: p, Budget: budget, Runs: 1, crossRuns: []float64{cross}, p99Runs: []float64{p99},
			stepRuns: []float64{0}, stepDips: []float64{0}}
	}
	pts := []*sweepPoint{
		pt(Zonelb, 0.5, 0.2, 40),
		pt(Zonelb, 2, 0.1, 80),
		pt(HAZLLike, 0, 0.12, 85),      // right of and above the 200% point
		pt(EnvoyZoneAware, 0, 0.2, 39), // below every point
		pt(LeastRequest, 0, 0.66, 40),  // ties on p99 with 50%
	}
	summarise(pts)
	if got := pts[2].DominatedBy; !slices.Equal(got, []string{"200%"}) {
		t.Errorf("hazl-like dominated by %v, want [200%%]", got)
	}
	if got := pts[3].DominatedBy; len(got) != 0 {
		t.Errorf("envoy-zone-aware dominated by %v, want none", got)
	}
	if got := pts[4].DominatedBy; !slices.Equal(got, []string{"50%"}) {
		t.Errorf("p2c dominated by %v, want [50%%]", got)
	}
	if s := spreadOf([]float64{3, 1, 2, 10}); s.Median != 2.5 || s.Min != 1 || s.Max != 10 {
		t.Errorf("spread %+v", s)
	}
}

// The sweep's chart is well-formed SVG with zonelb's curve and every
// baseline named.
func TestSweepChart(t *testing.T) {
	sc, _ := findScenario("overload")
	var pts []*sweepPoint
	for i, b := range sweepBudgets {
		pts = append(pts, &sweepPoint{Policy: Zonelb, Budget: b, Cross: spread{0.1 + 0.01*float64(i), 0.1, 0.3}, P99: spread{40, 30, 50}})
	}
	for _, p := range sweepBaselines {
		pts = append(pts, &sweepPoint{Policy: p, Cross: spread{0.5, 0.4, 0.6}, P99: spread{1000, 900, 1000}})
	}
	path := filepath.Join(t.TempDir(), "c.svg")
	if err := sweepChart(path, sc, pts, 10); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	mustBeWellFormed(t, path, b)
	for _, want := range append([]string{"zonelb, by budget", "parity", "50%"}, joinPolicies(sweepBaselines)) {
		for _, w := range strings.Split(want, ", ") {
			if !strings.Contains(string(b), w) {
				t.Errorf("chart lacks %q", w)
			}
		}
	}
}
