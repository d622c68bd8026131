package runner

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/zonelb/zonelb/bench/backend"
)

// Config says what to measure and how long.
type Config struct {
	Runs      int
	Warmup    time.Duration
	RatePhase time.Duration // each fixed-rate phase
	SatPhase  time.Duration // the closed-loop saturation phase
	Rates     []int         // offered rates, req/s
	Peers     []string
	Workloads []string
	Backends  int // backend instances behind each proxy
	// Connections is the number of client connections of every load run.
	Connections int
	// OpenLoopStreams caps requests in flight per connection at fixed rates;
	// it only needs to exceed rate x latency.
	OpenLoopStreams int
	// SatStreams is the requests in flight per connection at saturation.
	SatStreams int
	// ProxyCPUs and LoadCPUs are taskset CPU lists; empty disables pinning.
	ProxyCPUs string
	LoadCPUs  string
	// Nice is the niceness of the proxy, backends and load generators (0:
	// inherit). A negative value shields the measurement from other work on
	// a shared machine; the report says which was used.
	Nice int
	Bin  Binaries
	// WorkDir receives configs, logs and raw load generator output.
	WorkDir string
	// ProfileFor is how long zonelb is CPU-profiled per workload at the
	// highest rate after the runs; zero skips profiling.
	ProfileFor time.Duration
	Logger     *slog.Logger
	// Progress receives one human-readable line per measurement.
	Progress io.Writer
	// Now is the clock for the report's timestamps.
	Now func() time.Time
	// ProcRoot is where procfs is mounted ("/proc").
	ProcRoot string
}

// PhaseResult is one load generator run against one peer.
type PhaseResult struct {
	Name        string        `json:"name"`
	OfferedRPS  int           `json:"offered_rps"` // 0 at saturation
	Completed   int64         `json:"completed"`
	Failed      int64         `json:"failed"`
	Wall        time.Duration `json:"wall_ns"`
	AchievedRPS float64       `json:"achieved_rps"`
	Latency     Percentiles   `json:"latency_ns"`
	// ProxyCPU is the proxy's user+system CPU time over the run: from its
	// cgroup (microsecond resolution) when one was available, else from
	// /proc/PID/stat. ProxyCPUStat is always /proc/PID/stat (10 ms ticks).
	ProxyCPU     time.Duration `json:"proxy_cpu_ns"`
	ProxyCPUStat time.Duration `json:"proxy_cpu_stat_ns"`
	CPUSource    string        `json:"cpu_source"`
	// ProxyHWMKB is the proxy's peak resident set (VmHWM) at the phase's end.
	ProxyHWMKB int64 `json:"proxy_hwm_kb"`
	// LoadCPU is the CPU time of the backends and the load generator over
	// the phase (zero without cgroups).
	LoadCPU    time.Duration `json:"load_cpu_ns"`
	FirstError string        `json:"first_error,omitempty"`
}

// CPUPerRequest is proxy CPU microseconds per completed request (NaN when
// there is no proxy or no request completed).
func (p PhaseResult) CPUPerRequest() float64 {
	if p.Completed == 0 || p.CPUSource == "" {
		return math.NaN()
	}
	return float64(p.ProxyCPU.Microseconds()) / float64(p.Completed)
}

// ProxyBusy is the share of one CPU the proxy used over the phase.
func (p PhaseResult) ProxyBusy() float64 {
	if p.Wall <= 0 || p.CPUSource == "" {
		return math.NaN()
	}
	return float64(p.ProxyCPU) / float64(p.Wall)
}

// LoadBusy is the share of one CPU the backends and load generator used.
func (p PhaseResult) LoadBusy() float64 {
	if p.Wall <= 0 || p.LoadCPU <= 0 {
		return math.NaN()
	}
	return float64(p.LoadCPU) / float64(p.Wall)
}

// Sample is everything measured for one peer and workload in one run.
type Sample struct {
	Run      int           `json:"run"`
	Peer     string        `json:"peer"`
	Workload string        `json:"workload"`
	Phases   []PhaseResult `json:"phases"`
	// BackendShares is how many requests each backend instance answered
	// while this peer was measured: proof that the peer balanced.
	BackendShares []int64 `json:"backend_shares"`
	Err           string  `json:"error,omitempty"`
}

// Phase returns the phase of the given offered rate (0: saturation).
func (s Sample) Phase(rps int) (PhaseResult, bool) {
	for _, p := range s.Phases {
		if p.OfferedRPS == rps {
			return p, true
		}
	}
	return PhaseResult{}, false
}

// Profile is a CPU profile of zonelb under load.
type Profile struct {
	Workload string        `json:"workload"`
	RPS      int           `json:"rps"`
	Duration time.Duration `json:"duration_ns"`
	Path     string        `json:"path"`
	// AchievedRPS and ProxyBusy describe the load while profiling: a
	// profile of a proxy that was starved or stalled says little.
	AchievedRPS float64 `json:"achieved_rps"`
	ProxyBusy   float64 `json:"proxy_busy"`
	Top         string  `json:"top"`
	TopCum      string  `json:"top_cum"`
	Err         string  `json:"error,omitempty"`
}

// Results are a whole benchmark invocation.
type Results struct {
	Config   Config    `json:"-"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Samples  []Sample  `json:"samples"`
	Profiles []Profile `json:"profiles,omitempty"`
	// CPUSource says how proxy CPU was measured.
	CPUSource string `json:"cpu_source"`
}

type runner struct {
	cfg       Config
	log       *slog.Logger
	sup       *supervisor
	cgroupDir string // parent cgroup for proxies; empty: /proc/PID/stat only
	// loadCgroup holds the backends and every load generator run, so the
	// report can show whether the load side, not the proxy, was the limit.
	loadCgroup *cgroup
	backends   backend.Addresses
	protoset   string
	callData   string
}

// Run performs the benchmark. It returns what it measured so far together
// with an error when it fails or ctx ends; every process it started is
// stopped before it returns.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = "/proc"
	}
	if err := validate(cfg); err != nil {
		return nil, err
	}
	res := &Results{Config: cfg, Started: cfg.Now()}
	r := &runner{cfg: cfg, log: cfg.Logger, sup: newSupervisor(cfg.Logger, cfg.Bin.Taskset, cfg.Bin.Nice)}
	defer r.sup.stopAll(5 * time.Second)

	// Absolute, because proxies such as nginx resolve paths against their
	// own prefix, not the runner's working directory.
	workDir, err := filepath.Abs(cfg.WorkDir)
	if err != nil {
		return nil, fmt.Errorf("resolve work dir: %w", err)
	}
	cfg.WorkDir = workDir
	r.cfg.WorkDir = workDir
	res.Config.WorkDir = workDir
	if err := os.MkdirAll(cfg.WorkDir, 0o755); err != nil {
		return nil, fmt.Errorf("create work dir: %w", err)
	}
	r.protoset = filepath.Join(cfg.WorkDir, "grpc_testing.protoset")
	r.callData = filepath.Join(cfg.WorkDir, "unary_1k.json")
	if err := writeProtoset(r.protoset); err != nil {
		return nil, err
	}
	if err := writeCallData(r.callData); err != nil {
		return nil, err
	}

	res.CPUSource = "/proc/PID/stat utime+stime"
	if parent, err := r.makeCgroupParent(); err != nil {
		r.log.Warn("no cgroup for CPU accounting, falling back to /proc/PID/stat (10 ms resolution)", "err", err)
	} else {
		r.cgroupDir = parent
		res.CPUSource = "cgroup v2 cpu.stat usage_usec (user+system, all threads)"
		defer func() {
			if err := os.Remove(parent); err != nil {
				r.log.Warn("remove cgroup", "path", parent, "err", err)
			}
		}()
		if r.loadCgroup, err = newCgroup(parent, "load"); err != nil {
			return nil, err
		}
		// Removed after the backends stop (defers run last-in first-out).
		defer func() {
			if err := r.loadCgroup.remove(); err != nil {
				r.log.Warn("remove load cgroup", "err", err)
			}
		}()
	}

	stopBackends, err := r.startBackends(ctx)
	if err != nil {
		return nil, err
	}
	defer stopBackends()

	for run := 1; run <= cfg.Runs; run++ {
		for _, workload := range cfg.Workloads {
			for _, peer := range rotate(cfg.Peers, run-1) {
				if err := ctx.Err(); err != nil {
					res.Finished = cfg.Now()
					return res, fmt.Errorf("benchmark interrupted: %w", err)
				}
				s := r.measure(ctx, run, peer, workload)
				res.Samples = append(res.Samples, s)
				fmt.Fprintln(cfg.Progress, progressLine(cfg, s))
			}
		}
	}
	if cfg.ProfileFor > 0 && containsPeer(cfg.Peers, PeerZonelb) {
		for _, workload := range cfg.Workloads {
			if ctx.Err() != nil {
				break
			}
			p := r.profile(ctx, workload)
			if p.Err != "" {
				fmt.Fprintf(cfg.Progress, "profile %s: %s\n", workload, p.Err)
			} else {
				fmt.Fprintf(cfg.Progress, "profile %s: %s\n", workload, p.Path)
			}
			res.Profiles = append(res.Profiles, p)
		}
	}
	res.Finished = cfg.Now()
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("benchmark interrupted: %w", err)
	}
	return res, nil
}

func validate(cfg Config) error {
	switch {
	case cfg.Runs < 1:
		return fmt.Errorf("runs must be at least 1, got %d", cfg.Runs)
	case len(cfg.Rates) == 0:
		return errors.New("no offered rates")
	case len(cfg.Peers) == 0 || len(cfg.Workloads) == 0:
		return errors.New("no peers or no workloads")
	case cfg.Connections < 1 || cfg.OpenLoopStreams < 1 || cfg.SatStreams < 1:
		return errors.New("connections and streams must be positive")
	case cfg.RatePhase <= 0 || cfg.SatPhase <= 0 || cfg.Warmup <= 0:
		return errors.New("phase and warm-up durations must be positive")
	case cfg.Now == nil:
		return errors.New("no clock")
	}
	for _, p := range cfg.Peers {
		if !containsPeer(AllPeers(), p) {
			return fmt.Errorf("unknown peer %q (known: %v)", p, AllPeers())
		}
	}
	for _, w := range cfg.Workloads {
		if w != WorkloadGRPC && w != WorkloadHTTP {
			return fmt.Errorf("unknown workload %q", w)
		}
	}
	return nil
}

func containsPeer(peers []string, p string) bool {
	for _, x := range peers {
		if x == p {
			return true
		}
	}
	return false
}

func (r *runner) makeCgroupParent() (string, error) {
	mounts, err := os.Open(filepath.Join(r.cfg.ProcRoot, "mounts"))
	if err != nil {
		return "", fmt.Errorf("read mounts: %w", err)
	}
	defer mounts.Close()
	root, err := cgroupMount(mounts)
	if err != nil {
		return "", err
	}
	parent := filepath.Join(root, "zonelb-bench-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(parent, 0o755); err != nil {
		return "", fmt.Errorf("create cgroup %s: %w", parent, err)
	}
	return parent, nil
}

// startBackends runs the backend fleet on the load CPU and learns its
// addresses from the one JSON line it prints.
func (r *runner) startBackends(ctx context.Context) (stop func(), err error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("pipe for backend addresses: %w", err)
	}
	defer pr.Close()
	p, err := r.sup.start(procSpec{
		Name: "backends", Path: r.cfg.Bin.Backend, Args: []string{"-n", strconv.Itoa(r.cfg.Backends)},
		CPUs: r.cfg.LoadCPUs, Nice: r.cfg.Nice, Stdout: pw, LogPath: filepath.Join(r.cfg.WorkDir, "backends.log"), Cgroup: r.loadCgroup,
	})
	_ = pw.Close()
	if err != nil {
		return nil, err
	}
	stop = func() { r.sup.stop(p, 5*time.Second) }
	type announced struct {
		addrs backend.Addresses
		err   error
	}
	got := make(chan announced, 1)
	go func() {
		var a announced
		line, err := bufio.NewReader(pr).ReadBytes('\n')
		if err != nil {
			a.err = fmt.Errorf("read backend addresses: %w", err)
		} else if err := json.Unmarshal(line, &a.addrs); err != nil {
			a.err = fmt.Errorf("decode backend addresses %q: %w", line, err)
		}
		got <- a
	}()
	select {
	case a := <-got:
		if a.err == nil && (len(a.addrs.GRPC) != r.cfg.Backends || len(a.addrs.HTTP) != r.cfg.Backends) {
			a.err = fmt.Errorf("backends announced %+v, want %d of each", a.addrs, r.cfg.Backends)
		}
		if a.err != nil {
			stop()
			return nil, a.err
		}
		r.backends = a.addrs
	case <-time.After(30 * time.Second):
		stop()
		return nil, errors.New("backends did not announce their addresses within 30s")
	case <-ctx.Done():
		stop()
		return nil, ctx.Err()
	}
	return stop, nil
}

func (r *runner) upstreams(workload string) []string {
	if workload == WorkloadGRPC {
		return r.backends.GRPC
	}
	return r.backends.HTTP
}

// runningProxy is a started peer proxy with its accounting handles.
type runningProxy struct {
	proc   *proc
	cgroup *cgroup
	listen string
}

func (r *runner) startProxy(ctx context.Context, peer, workload, dir, admin string) (*runningProxy, error) {
	listen, err := freeLoopbackPort()
	if err != nil {
		return nil, err
	}
	spec, err := proxyCommand(peer, r.cfg.Bin, proxySetup{Listen: listen, Upstreams: r.upstreams(workload), Dir: dir, Workload: workload, Admin: admin})
	if err != nil {
		return nil, err
	}
	spec.CPUs, spec.Nice = r.cfg.ProxyCPUs, r.cfg.Nice
	rp := &runningProxy{listen: listen}
	if r.cgroupDir != "" {
		if rp.cgroup, err = newCgroup(r.cgroupDir, filepath.Base(dir)); err != nil {
			return nil, err
		}
		spec.Cgroup = rp.cgroup
	}
	if rp.proc, err = r.sup.start(spec); err != nil {
		r.stopProxy(rp)
		return nil, err
	}
	if err := waitListening(ctx, rp.proc, listen, 15*time.Second); err != nil {
		r.stopProxy(rp)
		return nil, err
	}
	return rp, nil
}

func (r *runner) stopProxy(rp *runningProxy) {
	if rp.proc != nil {
		r.sup.stop(rp.proc, 5*time.Second)
	}
	if rp.cgroup != nil {
		if err := rp.cgroup.remove(); err != nil {
			r.log.Warn("remove proxy cgroup", "err", err)
		}
	}
}

// measure runs the warm-up, every fixed rate and saturation against one peer.
func (r *runner) measure(ctx context.Context, run int, peer, workload string) Sample {
	s := Sample{Run: run, Peer: peer, Workload: workload}
	dir := filepath.Join(r.cfg.WorkDir, fmt.Sprintf("run%d-%s-%s", run, workload, peer))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		s.Err = fmt.Sprintf("create %s: %v", dir, err)
		return s
	}
	target := r.upstreams(workload)[0]
	var rp *runningProxy
	if peer != PeerDirect {
		var err error
		if rp, err = r.startProxy(ctx, peer, workload, dir, ""); err != nil {
			s.Err = err.Error()
			return s
		}
		defer r.stopProxy(rp)
		target = rp.listen
	}
	before, countErr := r.backendCounts(ctx)

	warm := loadSpec{Target: target, RPS: r.cfg.Rates[0], Duration: r.cfg.Warmup, Connections: r.cfg.Connections, StreamsPerConn: r.cfg.OpenLoopStreams, Threads: 1}
	w, err := r.load(ctx, dir, "warmup", workload, warm)
	if err == nil && w.Completed == 0 {
		err = fmt.Errorf("no request succeeded (first error: %s)", w.FirstError)
	}
	if err != nil {
		s.Err = "warm-up: " + err.Error()
		return s
	}
	phases := make([]loadSpec, 0, len(r.cfg.Rates)+1)
	for _, rate := range r.cfg.Rates {
		phases = append(phases, loadSpec{Target: target, RPS: rate, Duration: r.cfg.RatePhase, Connections: r.cfg.Connections, StreamsPerConn: r.cfg.OpenLoopStreams, Threads: 1})
	}
	phases = append(phases, loadSpec{Target: target, Duration: r.cfg.SatPhase, Connections: r.cfg.Connections, StreamsPerConn: r.cfg.SatStreams, Threads: 1})
	for _, spec := range phases {
		pr, err := r.phase(ctx, dir, workload, spec, rp)
		s.Phases = append(s.Phases, pr)
		if err != nil {
			s.Err = fmt.Sprintf("%s: %v", pr.Name, err)
			return s
		}
	}
	if after, err := r.backendCounts(ctx); err == nil && countErr == nil {
		counts := after.GRPC
		prev := before.GRPC
		if workload == WorkloadHTTP {
			counts, prev = after.HTTP, before.HTTP
		}
		for i := range counts {
			s.BackendShares = append(s.BackendShares, counts[i]-prev[i])
		}
	}
	return s
}

func phaseName(rps int) string {
	if rps == 0 {
		return "saturation"
	}
	return strconv.Itoa(rps) + " req/s"
}

// phase runs one load and reads the proxy's CPU time around it.
func (r *runner) phase(ctx context.Context, dir, workload string, spec loadSpec, rp *runningProxy) (PhaseResult, error) {
	pr := PhaseResult{Name: phaseName(spec.RPS), OfferedRPS: spec.RPS}
	var cgBefore, statBefore, loadBefore time.Duration
	if r.loadCgroup != nil {
		var err error
		if loadBefore, err = r.loadCgroup.usage(); err != nil {
			return pr, err
		}
	}
	if rp != nil {
		var err error
		if statBefore, err = procCPU(r.cfg.ProcRoot, rp.proc.Pid()); err != nil {
			return pr, err
		}
		if rp.cgroup != nil {
			if cgBefore, err = rp.cgroup.usage(); err != nil {
				return pr, err
			}
		}
	}
	res, err := r.load(ctx, dir, fmt.Sprintf("%s-%d", workload, spec.RPS), workload, spec)
	if err != nil {
		return pr, err
	}
	pr.Completed, pr.Failed, pr.Wall, pr.FirstError = res.Completed, res.Failed, res.Wall, res.FirstError
	if res.Wall > 0 {
		pr.AchievedRPS = float64(res.Completed) / res.Wall.Seconds()
	}
	pr.Latency = computePercentiles(res.Latencies)
	if r.loadCgroup != nil {
		loadAfter, err := r.loadCgroup.usage()
		if err != nil {
			return pr, err
		}
		pr.LoadCPU = loadAfter - loadBefore
	}
	if rp == nil {
		return pr, nil
	}
	statAfter, err := procCPU(r.cfg.ProcRoot, rp.proc.Pid())
	if err != nil {
		return pr, err
	}
	pr.ProxyCPUStat = statAfter - statBefore
	pr.ProxyCPU, pr.CPUSource = pr.ProxyCPUStat, "procstat"
	if rp.cgroup != nil {
		cgAfter, err := rp.cgroup.usage()
		if err != nil {
			return pr, err
		}
		pr.ProxyCPU, pr.CPUSource = cgAfter-cgBefore, "cgroup"
	}
	if pr.ProxyHWMKB, _, err = procMemory(r.cfg.ProcRoot, rp.proc.Pid()); err != nil {
		return pr, err
	}
	return pr, nil
}

// load runs the workload's load generator once on the load CPU.
func (r *runner) load(ctx context.Context, dir, name, workload string, spec loadSpec) (loadResult, error) {
	// Generous bound: the run itself plus start-up and draining.
	ctx, cancel := context.WithTimeout(ctx, spec.Duration+60*time.Second)
	defer cancel()
	logPath := filepath.Join(dir, name+".log")
	if workload == WorkloadGRPC {
		out := filepath.Join(dir, name+".ghz.json")
		args := ghzArgs(spec, r.protoset, r.callData, out)
		if err := r.sup.run(ctx, procSpec{Name: "ghz", Path: r.cfg.Bin.GHZ, Args: args, CPUs: r.cfg.LoadCPUs, Nice: r.cfg.Nice, LogPath: logPath, Cgroup: r.loadCgroup}); err != nil {
			return loadResult{}, err
		}
		f, err := os.Open(out)
		if err != nil {
			return loadResult{}, fmt.Errorf("open ghz report: %w", err)
		}
		defer f.Close()
		return parseGHZ(f)
	}
	reqLog := filepath.Join(dir, name+".h2load.tsv")
	if err := r.sup.run(ctx, procSpec{Name: "h2load", Path: r.cfg.Bin.H2load, Args: h2loadArgs(spec, reqLog), CPUs: r.cfg.LoadCPUs, Nice: r.cfg.Nice, LogPath: logPath, Cgroup: r.loadCgroup}); err != nil {
		return loadResult{}, err
	}
	out, err := os.ReadFile(logPath)
	if err != nil {
		return loadResult{}, fmt.Errorf("read h2load output: %w", err)
	}
	sum, err := parseH2loadSummary(string(out))
	if err != nil {
		return loadResult{}, fmt.Errorf("%w (see %s)", err, logPath)
	}
	f, err := os.Open(reqLog)
	if err != nil {
		return loadResult{}, fmt.Errorf("open h2load request log: %w", err)
	}
	defer f.Close()
	res, err := parseH2loadLog(f)
	if err != nil {
		return loadResult{}, err
	}
	res.Wall = sum.Wall
	res.Failed = max(res.Failed, sum.Failed)
	return res, nil
}

func (r *runner) backendCounts(ctx context.Context) (backend.Counts, error) {
	var c backend.Counts
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.backends.Admin+"/counts", nil)
	if err != nil {
		return c, fmt.Errorf("build counts request: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return c, fmt.Errorf("get backend counts: %w", err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		return c, fmt.Errorf("decode backend counts: %w", err)
	}
	return c, nil
}

func progressLine(cfg Config, s Sample) string {
	line := fmt.Sprintf("run %d/%d %-4s %-8s", s.Run, cfg.Runs, s.Workload, s.Peer)
	for _, p := range s.Phases {
		line += fmt.Sprintf(" | %s: %.0f req/s", p.Name, p.AchievedRPS)
		if p.OfferedRPS > 0 {
			line += fmt.Sprintf(" p50 %s p99 %s", fmtDur(p.Latency.P50), fmtDur(p.Latency.P99))
		}
		if cpu := p.CPUPerRequest(); !math.IsNaN(cpu) {
			line += fmt.Sprintf(" %.1f us/req", cpu)
		}
		if busy := p.LoadBusy(); p.OfferedRPS == 0 && !math.IsNaN(busy) {
			line += fmt.Sprintf(" load side %.0f%%", 100*busy)
		}
		if p.Failed > 0 {
			line += fmt.Sprintf(" (%d failed)", p.Failed)
		}
	}
	if s.Err != "" {
		line += " | ERROR: " + s.Err
	}
	return line
}

func fmtDur(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Microsecond), 'f', 0, 64) + "us"
}
