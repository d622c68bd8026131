package sim

import (
	"fmt"
	"io"
	"math"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/zonelb/zonelb/zone"
)

// The sweep: zonelb's spill budget against the zone-aware baselines, on
// the scenarios where zones must share load, over several seeds.
var (
	sweepBudgets   = []float64{zone.LatencyBudget, 0.02, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 2.5, 3, 3.5, 4, zone.ParityBudget}
	sweepBaselines = []Policy{LeastRequest, PeakEWMA, PreferSameZone, HAZLLike, EnvoyLoadAware, EnvoyZoneAware}
	sweepScenarios = []string{"overload", "uneven", "capacity-step"}
)

// sweepDuration caps each sweep run (warm-up included).
const sweepDuration = 30 * time.Second

// spread is a median with its min and max over seeds.
type spread struct{ Median, Min, Max float64 }

func spreadOf(v []float64) spread {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	m := s[n/2]
	if n%2 == 0 {
		m = (s[n/2-1] + s[n/2]) / 2
	}
	return spread{Median: m, Min: s[0], Max: s[n-1]}
}

// sweepPoint is one policy (zonelb at one budget, or a baseline) on one
// scenario, over the seeds.
type sweepPoint struct {
	Policy             Policy
	Budget             float64 // zonelb only
	Cross, P99         spread  // cross-zone bytes share; p99 in ms
	StepP99, StepDip   spread  // capacity step only: ms; share points
	Runs               int
	DominatedBy        []string // budgets with cross <= and p99 <= (medians); baselines only
	crossRuns, p99Runs []float64
	stepRuns, stepDips []float64
	// pairP99 and pairShare: each run's ByPair figures (p99 in ms,
	// share), by pairKey.
	pairP99, pairShare map[string][]float64
}

func (p *sweepPoint) label() string {
	if p.Policy == Zonelb {
		return "zonelb " + zone.FormatSpillBudget(p.Budget)
	}
	return string(p.Policy)
}

type sweepJob struct {
	sc    string
	point *sweepPoint
	seed  uint64
}

// sweepSet is what a sweep runs: scenarios (of sweepScenarios) and
// budgets (zonelb's points); the whole grid by default.
type sweepSet struct {
	scenarios []string
	budgets   []float64
}

func (s sweepSet) orAll() sweepSet {
	if len(s.scenarios) == 0 {
		s.scenarios = sweepScenarios
	}
	if len(s.budgets) == 0 {
		s.budgets = sweepBudgets
	}
	return s
}

// parseSweepSet reads -scenario and -budgets for a sweep: "all" or empty
// for the whole grid, else comma-separated sweep scenarios and budgets
// as zone.ParseSpillBudget reads them.
func parseSweepSet(scenarios, budgets string) (sweepSet, error) {
	var s sweepSet
	if scenarios != "" && scenarios != "all" {
		for _, name := range strings.Split(scenarios, ",") {
			name = strings.TrimSpace(name)
			if !slices.Contains(sweepScenarios, name) {
				return s, fmt.Errorf("-scenario %q: a sweep runs %s", name, strings.Join(sweepScenarios, ", "))
			}
			s.scenarios = append(s.scenarios, name)
		}
	}
	if budgets != "" && budgets != "all" {
		for _, t := range strings.Split(budgets, ",") {
			b, err := zone.ParseSpillBudget(t)
			if err != nil {
				return s, err
			}
			s.budgets = append(s.budgets, b)
		}
	}
	return s, nil
}

// runSweep runs every point of set's scenarios for seeds 1..seeds, on as
// many goroutines as the runtime has processors.
func runSweep(seeds int, set sweepSet) (map[string][]*sweepPoint, error) {
	set = set.orAll()
	out := map[string][]*sweepPoint{}
	var jobs []sweepJob
	for _, name := range set.scenarios {
		var pts []*sweepPoint
		for _, b := range set.budgets {
			pts = append(pts, &sweepPoint{Policy: Zonelb, Budget: b})
		}
		for _, p := range sweepBaselines {
			pts = append(pts, &sweepPoint{Policy: p})
		}
		out[name] = pts
		for _, pt := range pts {
			for seed := 1; seed <= seeds; seed++ {
				jobs = append(jobs, sweepJob{name, pt, uint64(seed)})
			}
		}
	}
	var mu sync.Mutex
	var firstErr error
	work := make(chan sweepJob)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				r, err := sweepRun(j)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				j.point.add(r)
				mu.Unlock()
			}
		}()
	}
	for _, j := range jobs {
		work <- j
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	for _, pts := range out {
		summarise(pts)
	}
	return out, nil
}

func sweepRun(j sweepJob) (Result, error) {
	sc, err := findScenario(j.sc)
	if err != nil {
		return Result{}, err
	}
	if sc.Duration > sweepDuration {
		sc.Duration = sweepDuration
	}
	e, err := newEngineBudget(sc, j.point.Policy, j.seed, nil, j.point.Budget)
	if err != nil {
		return Result{}, fmt.Errorf("sweep %s, %s, seed %d: %w", j.sc, j.point.label(), j.seed, err)
	}
	e.run()
	return e.result(0.01), nil
}

func (p *sweepPoint) add(r Result) {
	p.Runs++
	p.crossRuns = append(p.crossRuns, r.CrossBytes)
	p.p99Runs = append(p.p99Runs, float64(r.P99)/1e6)
	p.stepRuns = append(p.stepRuns, float64(r.StepP99)/1e6)
	p.stepDips = append(p.stepDips, r.StepDip)
	if p.pairP99 == nil {
		p.pairP99, p.pairShare = map[string][]float64{}, map[string][]float64{}
	}
	for k, f := range r.ByPair {
		p.pairP99[k] = append(p.pairP99[k], float64(f.P99)/1e6)
		p.pairShare[k] = append(p.pairShare[k], f.Share)
	}
}

// summarise computes the spreads and, for each baseline, the budgets
// whose median point is at least as good on both axes.
func summarise(pts []*sweepPoint) {
	for _, p := range pts {
		if p.Runs == 0 {
			continue
		}
		p.Cross, p.P99 = spreadOf(p.crossRuns), spreadOf(p.p99Runs)
		p.StepP99, p.StepDip = spreadOf(p.stepRuns), spreadOf(p.stepDips)
	}
	for _, base := range pts {
		if base.Policy == Zonelb {
			continue
		}
		for _, z := range pts {
			if z.Policy == Zonelb && z.Cross.Median <= base.Cross.Median && z.P99.Median <= base.P99.Median {
				base.DominatedBy = append(base.DominatedBy, zone.FormatSpillBudget(z.Budget))
			}
		}
	}
}

// writeSweep prints one table per scenario and, with a plots directory,
// one chart per scenario.
func writeSweep(w io.Writer, res map[string][]*sweepPoint, seeds int, o options) error {
	for _, name := range sweepScenarios {
		if res[name] == nil {
			continue
		}
		sc, _ := findScenario(name)
		writeSweepTable(w, sc, res[name], seeds, o.markdown)
		if o.byZone {
			writeSweepPairs(w, sc, res[name], seeds, o.markdown)
		}
		if o.plots != "" {
			path := filepath.Join(o.plots, "sim-sweep-"+name+".svg")
			if err := sweepChart(path, sc, res[name], seeds); err != nil {
				return err
			}
		}
	}
	return nil
}

func writeSweepTable(w io.Writer, sc *Scenario, pts []*sweepPoint, seeds int, markdown bool) {
	header := []string{"policy", "cross-zone bytes", "p99 (ms)"}
	if sc.Step != nil {
		header = append(header, "first-second p99 (ms)", "worst dip (pts)")
	}
	header = append(header, "under the curve: budgets at least as good on both")
	var rows [][]string
	for _, p := range pts {
		row := []string{p.label(), fmtSpread(p.Cross, 100, "%"), fmtSpread(p.P99, 1, "")}
		if sc.Step != nil {
			row = append(row, fmtSpread(p.StepP99, 1, ""), fmtSpread(p.StepDip, 100, ""))
		}
		switch {
		case p.Policy == Zonelb:
			row = append(row, "")
		case len(p.DominatedBy) == 0:
			row = append(row, "none")
		default:
			row = append(row, strings.Join(p.DominatedBy, ", "))
		}
		rows = append(rows, row)
	}
	title := fmt.Sprintf("sweep, %s: %s (seeds 1..%d: median [min-max], runs of %v)",
		sc.Name, sc.Description, seeds, min(sc.Duration, sweepDuration))
	printRows(w, title, header, rows, markdown)
}

func fmtSpread(s spread, scale float64, unit string) string {
	f := func(v float64) string {
		v *= scale
		if math.Abs(v) >= 100 {
			return fmt.Sprintf("%.0f", v)
		}
		return fmt.Sprintf("%.3g", v)
	}
	return fmt.Sprintf("%s%s [%s-%s]", f(s.Median), unit, f(s.Min), f(s.Max))
}

// writeSweepPairs prints, for each point, p99 and the share of the
// requests by client zone and endpoint zone (medians over the seeds; "-"
// where some run served none there): where each zone's requests were
// served, and how fast.
func writeSweepPairs(w io.Writer, sc *Scenario, pts []*sweepPoint, seeds int, markdown bool) {
	var keys []string
	for _, p := range pts {
		for k := range p.pairP99 {
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	slices.Sort(keys)
	header := append([]string{"policy"}, keys...)
	var rows [][]string
	for _, p := range pts {
		row := []string{p.label()}
		for _, k := range keys {
			if len(p.pairP99[k]) < p.Runs {
				row = append(row, "-")
				continue
			}
			row = append(row, fmt.Sprintf("%.1f (%.1f%%)", spreadOf(p.pairP99[k]).Median, 100*spreadOf(p.pairShare[k]).Median))
		}
		rows = append(rows, row)
	}
	title := fmt.Sprintf("sweep, %s, by client zone > endpoint zone: p99 (ms) of the requests served there and (their share of all requests); medians over seeds 1..%d",
		sc.Name, seeds)
	printRows(w, title, header, rows, markdown)
}
