package sim

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const usage = `Usage: zonelb sim [flags]

Runs a discrete-event simulation of request balancing across zones and
compares, on the same seeded workload, kube-proxy style per-connection random,
round robin per request, P2C least-request, zone-blind P2C Peak-EWMA,
PreferSameZone, and zonelb. zonelb and zone-blind Peak-EWMA are the real zone
package; each client node runs its own instance of each policy.

For each policy it reports the share of requests and bytes that crossed a
zone, the cross-zone cost per day at the measured rate, p50/p99/p99.9 latency
(a failed request counts as the timeout), success within the timeout, the
busiest and the mean endpoint utilisation, and where relevant: how long after
a zone failure its clients' requests moved (>= 99%% of them served by other
zones in every second from then on), the
failed requests in the failure window, p99 against the run without a stall,
and zonelb's spillover flips per node. Steady scenarios are measured after a
warm-up.

Scenarios:
%s
Flags:
`

// Main runs the simulator with command-line arguments args (without the
// program and subcommand names). It returns the process exit code: 0, 1 on
// a failed run, 2 on bad usage.
func Main(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("zonelb sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scenarios := fs.String("scenario", "all", "comma-separated scenarios to run, or all")
	policies := fs.String("policy", "all", "comma-separated policies to compare, or all ("+joinPolicies(Policies)+")")
	seed := fs.Uint64("seed", 1, "seed of the workload and of every policy's randomness")
	price := fs.Float64("price", 0.01, "USD per GB (10^9 bytes) crossing a zone, charged on each side")
	duration := fs.Duration("duration", 0, "override every scenario's duration (0: each scenario's own)")
	plots := fs.String("plots", "", "directory to write SVG plots into (none when empty)")
	format := fs.String("format", "text", "output: text or markdown")
	sweep := fs.Bool("sweep", false, "sweep zonelb's spill budget against the zone-aware baselines on "+strings.Join(sweepScenarios, ", ")+
		" over seeds 1..-seeds (medians, spread, which budgets are at least as good as each baseline; with -plots, one chart per scenario); -scenario and -budgets select a part of it; ignores -policy and -seed")
	seeds := fs.Int("seeds", 10, "with -sweep: how many seeds")
	byZone := fs.Bool("by-zone", false, "with -sweep: also print p99 and the share of the requests by client zone and endpoint zone")
	budgets := fs.String("budgets", "all", "with -sweep: comma-separated budgets (\"10%\", \"latency\", \"parity\"), or all (the grid)")
	serviceExtra := fs.Duration("service-extra", 0, "add this to every service time (calibration: cmd/zonelb-bench-spill's measured mean service time minus the nominal mean)")
	crossRTT := fs.Duration("cross-rtt", 0, "override every scenario's cross-zone round trip (calibration: the median of remote calls minus that of local ones in cmd/zonelb-bench-spill's zone-blind run); 0: each scenario's own")
	logEvents := fs.Bool("log", false, "log the zone package's events (spillover on/off, ejections) with simulated time on stderr")
	fs.Usage = func() { // the flag package calls it on errors too: to fs.Output()
		var b strings.Builder
		for _, s := range Scenarios() {
			fmt.Fprintf(&b, "  %-22s %s\n", s.Name, s.Description)
		}
		fmt.Fprintf(fs.Output(), usage, b.String())
		fs.PrintDefaults()
	}
	fs.SetOutput(io.Discard) // errors are reported on one line below
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fs.Usage()
			return 0
		}
		fmt.Fprintf(stderr, "zonelb sim: %v (see -h)\n", err)
		return 2
	}
	fs.SetOutput(stderr)
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "zonelb sim: unexpected argument %q (see -h)\n", fs.Arg(0))
		return 2
	}
	opts := options{seed: *seed, price: *price, duration: *duration, plots: *plots, markdown: *format == "markdown", byZone: *byZone}
	if *logEvents {
		opts.log = stderr
	}
	if *format != "text" && *format != "markdown" {
		fmt.Fprintf(stderr, "zonelb sim: -format %q, want text or markdown\n", *format)
		return 2
	}
	opts.serviceExtra, opts.crossRTT = *serviceExtra, *crossRTT
	if *price < 0 || *duration < 0 || *serviceExtra < 0 || *crossRTT < 0 {
		fmt.Fprintf(stderr, "zonelb sim: -price, -duration, -service-extra and -cross-rtt must not be negative\n")
		return 2
	}
	if *sweep {
		set, err := parseSweepSet(*scenarios, *budgets)
		if err != nil {
			fmt.Fprintf(stderr, "zonelb sim: %v\n", err)
			return 2
		}
		return mainSweep(opts, *seeds, set, stdout, stderr)
	}
	var err error
	if opts.policies, err = parsePolicies(*policies); err != nil {
		fmt.Fprintf(stderr, "zonelb sim: %v\n", err)
		return 2
	}
	if opts.scenarios, err = selectScenarios(*scenarios); err != nil {
		fmt.Fprintf(stderr, "zonelb sim: %v\n", err)
		return 2
	}
	if err := run(opts, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "zonelb sim: %v\n", err)
		return 1
	}
	return 0
}

type options struct {
	seed     uint64
	price    float64
	duration time.Duration
	// serviceExtra and crossRTT calibrate the scenarios on a real run
	// (0: as defined).
	serviceExtra, crossRTT time.Duration
	plots                  string
	markdown               bool
	byZone                 bool      // sweep: the table by client and endpoint zone too
	log                    io.Writer // zone package events, or nil
	policies               []Policy
	scenarios              []*Scenario
}

// selectScenarios resolves names; a scenario compared with a baseline
// brings its baseline along.
func selectScenarios(s string) ([]*Scenario, error) {
	if s == "" || s == "all" {
		return Scenarios(), nil
	}
	var out []*Scenario
	have := map[string]bool{}
	add := func(name string) error {
		if have[name] {
			return nil
		}
		sc, err := findScenario(name)
		if err != nil {
			return err
		}
		have[name] = true
		out = append(out, sc)
		return nil
	}
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		if err := add(name); err != nil {
			return nil, err
		}
		sc, _ := findScenario(name)
		if sc.Baseline != "" {
			if err := add(sc.Baseline); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

func run(o options, stdout, stderr io.Writer) error {
	results := map[string][]Result{}
	for _, sc := range o.scenarios {
		if o.duration > 0 {
			sc.Duration = o.duration
			sc.Warmup = min(sc.Warmup, o.duration/4)
		}
		sc.ServiceExtra = o.serviceExtra
		if o.crossRTT > 0 {
			sc.CrossRTT = o.crossRTT
		}
		start := time.Now() // wall time, reported only: the simulation never reads it
		for _, p := range o.policies {
			var log *slog.Logger
			var e *engine
			if o.log != nil {
				log = simLogger(o.log, &e, sc.Name)
			}
			e, err := newEngine(sc, p, o.seed, log)
			if err != nil {
				return fmt.Errorf("scenario %s, policy %s: %w", sc.Name, p, err)
			}
			e.run()
			results[sc.Name] = append(results[sc.Name], e.result(o.price))
		}
		fmt.Fprintf(stderr, "scenario %s: %d policies in %.1fs\n", sc.Name, len(o.policies), time.Since(start).Seconds())
	}
	for _, sc := range o.scenarios {
		if sc.Baseline == "" {
			continue
		}
		for i := range results[sc.Name] {
			r := &results[sc.Name][i]
			for _, b := range results[sc.Baseline] {
				if b.Policy == r.Policy && b.P99 > 0 {
					r.P99Ratio = float64(r.P99) / float64(b.P99)
				}
			}
		}
	}
	for _, sc := range o.scenarios {
		writeTable(stdout, sc, results[sc.Name], o)
	}
	if o.plots != "" {
		if err := os.MkdirAll(o.plots, 0o755); err != nil {
			return fmt.Errorf("plots: %w", err)
		}
		for _, sc := range o.scenarios {
			if err := writePlots(filepath.Join(o.plots, "sim-"+sc.Name), sc, results[sc.Name]); err != nil {
				return fmt.Errorf("plots for %s: %w", sc.Name, err)
			}
		}
	}
	return nil
}

// simLogger writes zone package events stamped with the simulated time of
// the engine *e (set once built) instead of the wall clock.
func simLogger(w io.Writer, e **engine, scenario string) *slog.Logger {
	h := slog.NewTextHandler(w, &slog.HandlerOptions{
		Level: slog.LevelInfo,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				var t time.Duration
				if *e != nil {
					t = time.Duration((*e).now)
				}
				return slog.String("sim_time", t.String())
			}
			return a
		},
	})
	return slog.New(h).With("scenario", scenario)
}

func mainSweep(o options, seeds int, set sweepSet, stdout, stderr io.Writer) int {
	if seeds < 1 {
		fmt.Fprintf(stderr, "zonelb sim: -seeds %d, want >= 1\n", seeds)
		return 2
	}
	start := time.Now() // wall time, reported only
	res, err := runSweep(seeds, set)
	if err == nil && o.plots != "" {
		err = os.MkdirAll(o.plots, 0o755)
	}
	if err == nil {
		err = writeSweep(stdout, res, seeds, o)
	}
	if err != nil {
		fmt.Fprintf(stderr, "zonelb sim: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "sweep: %d seeds in %.1fs\n", seeds, time.Since(start).Seconds())
	return 0
}
