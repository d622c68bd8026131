// Command benchrun is `make bench`: it measures zonelb side by side with
// HAProxy, nginx, Caddy and no proxy at all on loopback (package
// bench/runner), prints the tables and writes them into docs/benchmarks.md
// between the generated-block markers, keeping the hand-written text.
//
// It only ever sends traffic to loopback and stops every process it started,
// also on Ctrl-C. It asserts nothing about speed: it reports.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/zonelb/zonelb/bench/runner"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// envDefault returns the environment's value for key, else def.
func envDefault(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("benchrun", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := envDefault(getenv, "BENCH_QUICK", "") != "" && getenv("BENCH_QUICK") != "0"
	def := struct {
		runs               string
		warmup, phase, sat string
		profile            string
	}{"3", "1s", "4s", "3s", "6s"}
	if quick {
		def.runs, def.warmup, def.phase, def.sat, def.profile = "1", "500ms", "2s", "2s", "3s"
	}
	var (
		runs       = fs.Int("runs", atoiOr(envDefault(getenv, "BENCH_RUNS", def.runs), 3), "rounds over all peers (env BENCH_RUNS)")
		warmup     = fs.Duration("warmup", mustDuration(envDefault(getenv, "BENCH_WARMUP", def.warmup)), "warm-up per peer and workload (env BENCH_WARMUP)")
		ratePhase  = fs.Duration("rate-phase", mustDuration(envDefault(getenv, "BENCH_PHASE", def.phase)), "duration of each fixed-rate phase (env BENCH_PHASE)")
		satPhase   = fs.Duration("sat-phase", mustDuration(envDefault(getenv, "BENCH_SAT_PHASE", def.sat)), "duration of the saturation phase (env BENCH_SAT_PHASE)")
		profileFor = fs.Duration("profile", mustDuration(envDefault(getenv, "BENCH_PROFILE", def.profile)), "CPU-profile zonelb this long per workload after the runs; 0 skips (env BENCH_PROFILE)")
		rates      = fs.String("rates", envDefault(getenv, "BENCH_RATES", "200,1000,5000"), "offered rates, req/s (env BENCH_RATES)")
		peers      = fs.String("peers", envDefault(getenv, "BENCH_PEERS", strings.Join(runner.AllPeers(), ",")), "peers to measure (env BENCH_PEERS)")
		workloads  = fs.String("workloads", envDefault(getenv, "BENCH_WORKLOADS", strings.Join(runner.AllWorkloads(), ",")), "workloads: grpc, http (env BENCH_WORKLOADS)")
		backends   = fs.Int("backends", 3, "backend instances behind every proxy")
		conns      = fs.Int("connections", 4, "client connections per load run")
		olStreams  = fs.Int("open-loop-streams", 100, "max requests in flight per connection at fixed rates")
		satStreams = fs.Int("sat-streams", 32, "requests in flight per connection at saturation")
		proxyCPUs  = fs.String("proxy-cpus", "0", "CPU list the proxy is pinned to (empty: no pinning)")
		loadCPUs   = fs.String("load-cpus", "1", "CPU list for backends and load generators (empty: no pinning)")
		nice       = fs.Int("nice", atoiOr(envDefault(getenv, "BENCH_NICE", "0"), 0), "niceness of proxy, backends and load generators; negative shields them from other work (env BENCH_NICE)")
		workDir    = fs.String("workdir", "", "directory for configs, logs and raw output (default .cache/bench/<time>)")
		doc        = fs.String("doc", "docs/benchmarks.md", "markdown file whose generated block receives the tables (empty: do not write)")
		command    = fs.String("command", "", "the command line to record in the report (default: this one)")
		ghzVersion = fs.String("ghz-version", "", "ghz version, for the report (ghz built by go install prints none)")
	)
	var bin runner.Binaries
	fs.StringVar(&bin.GHZ, "ghz", ".cache/bin/ghz", "ghz binary")
	fs.StringVar(&bin.H2load, "h2load", "h2load", "h2load binary")
	fs.StringVar(&bin.HAProxy, "haproxy", "haproxy", "haproxy binary")
	fs.StringVar(&bin.Nginx, "nginx", "nginx", "nginx binary")
	fs.StringVar(&bin.Caddy, "caddy", "caddy", "caddy binary")
	fs.StringVar(&bin.Zonelb, "zonelb", "bin/zonelb-proxy", "the standalone proxy binary (zonelb-proxy)")
	fs.StringVar(&bin.Backend, "backend", ".cache/bench/benchbackend", "benchbackend binary")
	fs.StringVar(&bin.Taskset, "taskset", "taskset", "taskset binary")
	fs.StringVar(&bin.Nice, "nice-bin", "nice", "nice binary")
	fs.StringVar(&bin.Go, "go", "go", "go tool (for pprof)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	now := time.Now

	rateList, err := parseRates(*rates)
	if err != nil {
		fmt.Fprintln(stderr, "benchrun: --rates:", err)
		return 2
	}
	if *workDir == "" {
		*workDir = filepath.Join(".cache", "bench", now().UTC().Format("20060102-150405"))
	}
	if *command == "" {
		*command = strings.Join(append([]string{"benchrun"}, args...), " ")
	}
	if (*proxyCPUs != "" || *loadCPUs != "") && onlineCPUs() < 2 {
		logger.Warn("fewer than 2 CPUs online: not pinning proxy and load to separate CPUs")
		*proxyCPUs, *loadCPUs = "", ""
	}
	peerList, err := availablePeers(splitList(*peers), bin, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "benchrun:", err)
		return 2
	}
	for name, path := range map[string]string{"ghz": bin.GHZ, "h2load": bin.H2load, "benchbackend": bin.Backend, "taskset": bin.Taskset} {
		if _, err := exec.LookPath(path); err != nil {
			fmt.Fprintf(stderr, "benchrun: %s not found at %q (make bench installs it): %v\n", name, path, err)
			return 2
		}
	}

	cfg := runner.Config{
		Runs: *runs, Warmup: *warmup, RatePhase: *ratePhase, SatPhase: *satPhase, Rates: rateList,
		Peers: peerList, Workloads: splitList(*workloads), Backends: *backends, Connections: *conns,
		OpenLoopStreams: *olStreams, SatStreams: *satStreams, ProxyCPUs: *proxyCPUs, LoadCPUs: *loadCPUs, Nice: *nice,
		Bin: bin, WorkDir: *workDir, ProfileFor: *profileFor, Logger: logger, Progress: stderr, Now: now,
	}
	meta := runner.Meta{Command: *command, Machine: machine(), LoadBefore: loadAvg()}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(stderr, "benchrun: %d run(s) of %v x %v; raw output in %s\n", cfg.Runs, cfg.Peers, cfg.Workloads, cfg.WorkDir)
	res, runErr := runner.Run(ctx, cfg)
	if res == nil {
		fmt.Fprintln(stderr, "benchrun:", runErr)
		return 1
	}
	meta.LoadAfter = loadAvg()
	meta.Versions = versions(bin, *ghzVersion, cfg.Peers)

	if err := writeJSON(filepath.Join(cfg.WorkDir, "results.json"), res); err != nil {
		logger.Warn("write raw results", "err", err)
	}
	md := runner.Markdown(res, meta)
	fmt.Fprintln(stdout, md)
	if runErr != nil {
		// Partial results are printed but never replace the published ones.
		fmt.Fprintln(stderr, "benchrun:", runErr)
		return 1
	}
	if *doc != "" {
		old, err := os.ReadFile(*doc)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			fmt.Fprintln(stderr, "benchrun: read", *doc+":", err)
			return 1
		}
		if err := os.WriteFile(*doc, []byte(runner.Splice(string(old), md)), 0o644); err != nil {
			fmt.Fprintln(stderr, "benchrun: write", *doc+":", err)
			return 1
		}
		fmt.Fprintf(stderr, "benchrun: tables written to %s\n", *doc)
	}
	return 0
}

func atoiOr(s string, def int) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return def
	}
	return n
}

func mustDuration(s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		// A bad environment value falls back to zero, which Run rejects
		// with a message naming the setting.
		return 0
	}
	return d
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

func parseRates(s string) ([]int, error) {
	var out []int
	for _, part := range splitList(s) {
		n, err := strconv.Atoi(part)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("rate %q is not a positive integer", part)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("no rates")
	}
	return out, nil
}

// availablePeers drops peers whose program is missing, saying so, so that a
// partial install still measures what it can.
func availablePeers(peers []string, bin runner.Binaries, stderr io.Writer) ([]string, error) {
	path := map[string]string{runner.PeerZonelb: bin.Zonelb, runner.PeerHAProxy: bin.HAProxy, runner.PeerNginx: bin.Nginx, runner.PeerCaddy: bin.Caddy}
	var out []string
	for _, p := range peers {
		if p == runner.PeerDirect {
			out = append(out, p)
			continue
		}
		bin, known := path[p]
		if !known {
			return nil, fmt.Errorf("unknown peer %q (known: %s)", p, strings.Join(runner.AllPeers(), ", "))
		}
		if _, err := exec.LookPath(bin); err != nil {
			fmt.Fprintf(stderr, "benchrun: skipping %s: %v\n", p, err)
			continue
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, errors.New("no peer left to measure")
	}
	return out, nil
}

// onlineCPUs counts the machine's online CPUs (not this process's affinity).
func onlineCPUs() int {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return runtime.NumCPU()
	}
	n := 0
	for _, part := range strings.Split(strings.TrimSpace(string(b)), ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, errA := strconv.Atoi(lo)
		if !isRange {
			if errA == nil {
				n++
			}
			continue
		}
		b, errB := strconv.Atoi(hi)
		if errA == nil && errB == nil && b >= a {
			n += b - a + 1
		}
	}
	return n
}

func machine() string {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("Linux %s, %d x %s, %s/%s", strings.TrimSpace(string(kernel)), onlineCPUs(), model, runtime.GOOS, runtime.GOARCH)
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// versions asks each program for its version, first line only.
func versions(bin runner.Binaries, ghzVersion string, peers []string) []string {
	type probe struct {
		name string
		args []string
	}
	probes := []probe{{bin.H2load, []string{"--version"}}}
	for _, p := range peers {
		switch p {
		case runner.PeerZonelb:
			probes = append(probes, probe{bin.Zonelb, []string{"version"}})
		case runner.PeerHAProxy:
			probes = append(probes, probe{bin.HAProxy, []string{"-v"}})
		case runner.PeerNginx:
			probes = append(probes, probe{bin.Nginx, []string{"-v"}})
		case runner.PeerCaddy:
			probes = append(probes, probe{bin.Caddy, []string{"version"}})
		}
	}
	var out []string
	// The tree the zonelb binary was built from (make bench builds it just
	// before running), since a binary's own version may be a placeholder.
	if b, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		out = append(out, "source tree "+strings.TrimSpace(string(b)))
	}
	if ghzVersion != "" {
		out = append(out, "ghz "+ghzVersion)
	}
	for _, p := range probes {
		b, err := exec.Command(p.name, p.args...).CombinedOutput()
		line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
		name := filepath.Base(p.name)
		if err != nil || line == "" {
			line = name + " (version unknown)"
		} else if !strings.Contains(strings.ToLower(line), name) {
			line = name + " " + line
		}
		out = append(out, line)
	}
	return out
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
