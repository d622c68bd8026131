package sim

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zonelb/zonelb/zone"
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

// -scenario and -budgets select a part of the sweep; all, or nothing
// given, is the whole grid.
func TestSweepSet(t *testing.T) {
	s, err := parseSweepSet("uneven, overload", "10%,latency,parity")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.scenarios, []string{"uneven", "overload"}) ||
		!slices.Equal(s.budgets, []float64{0.1, zone.LatencyBudget, zone.ParityBudget}) {
		t.Errorf("set %+v", s)
	}
	all, err := parseSweepSet("all", "")
	if err != nil {
		t.Fatal(err)
	}
	if all = all.orAll(); !slices.Equal(all.scenarios, sweepScenarios) || !slices.Equal(all.budgets, sweepBudgets) {
		t.Errorf("whole grid %+v", all)
	}
	for _, bad := range [][2]string{{"balanced", ""}, {"", "10"}, {"", "0%"}} {
		if _, err := parseSweepSet(bad[0], bad[1]); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// The figures by client and endpoint zone say where each zone's requests
// were served: under Envoy zone-aware routing in the uneven scenario,
// zones a and b (host shares not below their client shares) keep all
// theirs, and zone c sends the rest to a alone (by residual capacity: b
// has none). The shares add up to the requests served.
func TestFiguresByZonePair(t *testing.T) {
	r := runOne(t, "uneven", EnvoyZoneAware, 4*time.Second, 1)
	var keys []string
	var sum float64
	for k, f := range r.ByPair {
		keys = append(keys, k)
		sum += f.Share
		if f.P99 <= 0 {
			t.Errorf("%s: p99 %v", k, f.P99)
		}
	}
	slices.Sort(keys)
	if want := []string{"a>a", "b>b", "c>a", "c>c"}; !slices.Equal(keys, want) {
		t.Errorf("pairs %v, want %v", keys, want)
	}
	if math.Abs(sum-r.Success) > 1e-9 {
		t.Errorf("shares add up to %v, want the success share %v", sum, r.Success)
	}
	var out strings.Builder
	sc, _ := findScenario("uneven")
	pt := &sweepPoint{Policy: EnvoyZoneAware}
	pt.add(r)
	other := &sweepPoint{Policy: LeastRequest}
	other.add(Result{ByPair: map[string]PairFigures{"a>b": {P99: 30e6, Share: 0.25}}})
	writeSweepPairs(&out, sc, []*sweepPoint{pt, other}, 1, true)
	for _, want := range []string{"| policy | a>a | a>b | b>b | c>a | c>c |", "| p2c-least-request | - | 30.0 (25.0%) | - | - | - |"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}
