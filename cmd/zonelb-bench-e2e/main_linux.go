// Command zonelb-bench-e2e is `make bench-e2e`: the e2e mini cluster (package
// internal/cluster) under load, zonelb against the kube-proxy baselines and
// against HAProxy as the node proxy (same eBPF redirection), in interleaved
// rounds, written as a Markdown report (by default docs/benchmarks-e2e.md).
//
// Per round and mode it runs the same workload twice: at a fixed offered
// rate (open loop: latency percentiles, cross-zone bytes, the node proxy's
// CPU per call), then closed loop (saturation throughput). Modes take turns
// within each round so that the machine's background load hits them alike;
// cells are the median over rounds with (min..max).
//
// It needs root, like the demo, and removes everything it creates. It
// drives the lab (internal/cluster); it is never part of the product.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/zonelb/zonelb/internal/cluster"
	"github.com/zonelb/zonelb/zone"
)

func main() { cluster.Main(func() int { return run(os.Args[1:], os.Stdout, os.Stderr) }) }

type options struct {
	cluster.CommandFlags
	out            string
	rounds         int
	rate           float64
	fixed          time.Duration
	sat            time.Duration
	satConcurrency int
	command        string
}

func run(args []string, stdout, stderr io.Writer) int {
	var o options
	fs := o.FlagSet("bench-e2e", stderr)
	fs.StringVar(&o.out, "out", "docs/benchmarks-e2e.md", `report file ("-" for stdout)`)
	// Five: tails are compared as the median of the rounds' p99s.
	fs.IntVar(&o.rounds, "rounds", 5, "rounds (each runs every mode once)")
	fs.Float64Var(&o.rate, "rate", 1000, "offered calls per second in the fixed-rate run (all clients together)")
	fs.DurationVar(&o.fixed, "fixed", 10*time.Second, "length of the fixed-rate run")
	fs.DurationVar(&o.sat, "saturation", 6*time.Second, "length of the closed-loop run")
	fs.IntVar(&o.satConcurrency, "saturation-concurrency", 16, "calls in flight per client in the closed-loop run")
	fs.StringVar(&o.command, "command", "sudo make bench-e2e", "the command to print in the report as the way to reproduce it")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "bench-e2e needs root: it builds the mini cluster out of network namespaces, cgroups and eBPF programs. Run it as root (sudo make bench-e2e).")
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench(ctx, o, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "bench-e2e:", err)
		if errors.Is(err, context.Canceled) {
			return 130
		}
		return 1
	}
	return 0
}

// mode is one way of serving the Service.
type mode struct {
	name     string
	baseline cluster.Baseline
	proxy    nodeProxy
}

// nodeProxy is the process in node-a that the eBPF hooks steer to, if any.
type nodeProxy int

const (
	noProxy nodeProxy = iota
	zonelbProxy
	haproxyProxy
)

// Mode indexes, for the ratios.
const (
	modeKubeProxy = iota
	modePreferSameZone
	modeZonelb
	modeHAProxy
)

var modes = []mode{
	modeKubeProxy:      {"kube-proxy (iptables, random per connection)", cluster.BaselineRandom, noProxy},
	modePreferSameZone: {"kube-proxy PreferSameZone", cluster.BaselinePreferSameZone, noProxy},
	modeZonelb:         {"zonelb", cluster.BaselineRandom, zonelbProxy},
	modeHAProxy:        {"HAProxy as node proxy (round robin)", cluster.BaselineRandom, haproxyProxy},
}

// sample is one mode's measurements in one round.
type sample struct {
	fixed, sat cluster.Phase
	idleCPU    time.Duration // daemon CPU per second with no traffic (zonelb)
}

// startNodeProxy starts mode m's node proxy in node-a, if it has one (the
// zonelb daemon warmed up with w, or HAProxy), and measures the proxy's
// own CPU per second with no traffic; stop is nil for no proxy.
func startNodeProxy(ctx context.Context, c *cluster.Cluster, m mode, w cluster.Workload) (stop func() error, idleCPU time.Duration, err error) {
	var cpuTime func() (time.Duration, error)
	switch m.proxy {
	case zonelbProxy:
		d, err := c.StartDaemon(ctx)
		if err != nil {
			return nil, 0, err
		}
		stop, cpuTime = d.Stop, d.CPUTime
		// The balancer learns the other zones' latency by probing
		// them first; the runs measure the steady state after it.
		if _, err := c.WarmUp(ctx, w, 0.995, 30*time.Second); err != nil {
			return nil, 0, err
		}
	case haproxyProxy:
		h, err := c.StartHAProxy(ctx)
		if err != nil {
			return nil, 0, err
		}
		stop, cpuTime = h.Stop, h.CPUTime
	default:
		return nil, 0, nil
	}
	// The proxy's own background work with no traffic (the daemon's
	// discovery and metrics; HAProxy runs no health checks here).
	cpu0, _ := cpuTime()
	if err := cluster.SleepCtx(ctx, 3*time.Second); err != nil {
		return nil, 0, err
	}
	cpu1, _ := cpuTime()
	return stop, (cpu1 - cpu0) / 3, nil
}

func bench(ctx context.Context, o options, stdout, stderr io.Writer) error {
	started := time.Now()
	say := func(format string, args ...any) { fmt.Fprintf(stderr, format+"\n", args...) }
	c, err := cluster.Up(ctx, o.Options(stderr, func(s string) { say("... %s", s) }))
	if err != nil {
		return err
	}
	defer func() {
		say("... tearing down")
		if err := c.Close(); err != nil {
			say("teardown: %v", err)
		}
	}()

	perClient := o.rate / float64(o.Clients)
	fixedW := o.Workload(64, perClient)
	satW := o.Workload(o.satConcurrency, 0)

	samples := make([][]sample, len(modes))
	for r := 1; r <= o.rounds; r++ {
		for i, m := range modes {
			if err := c.SetBaseline(m.baseline); err != nil {
				return err
			}
			var s sample
			stop, idleCPU, err := startNodeProxy(ctx, c, m, fixedW)
			if err != nil {
				return err
			}
			s.idleCPU = idleCPU
			say("round %d/%d, %s: %.0f calls/s for %v", r, o.rounds, m.name, o.rate, o.fixed)
			if s.fixed, err = c.RunPhase(ctx, m.name, fixedW, o.fixed, time.Second, nil, nil); err != nil {
				return err
			}
			say("round %d/%d, %s: closed loop, %d in flight per client, for %v", r, o.rounds, m.name, o.satConcurrency, o.sat)
			if s.sat, err = c.RunPhase(ctx, m.name, satW, o.sat, time.Second, nil, nil); err != nil {
				return err
			}
			if stop != nil {
				if err := stop(); err != nil {
					return err
				}
			}
			samples[i] = append(samples[i], s)
		}
	}

	var sb strings.Builder
	report(&sb, c, o, samples, time.Since(started))
	if o.out == "-" {
		_, err = io.WriteString(stdout, sb.String())
		return err
	}
	if err := os.WriteFile(o.out, []byte(sb.String()), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	say("report written to %s (%.0fs)", o.out, time.Since(started).Seconds())
	return nil
}

// median is the median of vs (0 for none).
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(vs))
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

// stat formats the median of vs with (min..max) when there are several.
func stat(vs []float64, format string) string {
	if len(vs) == 0 {
		return "-"
	}
	s := slices.Sorted(slices.Values(vs))
	med := median(s)
	if len(s) == 1 || s[0] == s[len(s)-1] {
		return fmt.Sprintf(format, med)
	}
	return fmt.Sprintf(format+" ("+format+".."+format+")", med, s[0], s[len(s)-1])
}

func collect(ss []sample, f func(sample) (float64, bool)) []float64 {
	var out []float64
	for _, s := range ss {
		if v, ok := f(s); ok {
			out = append(out, v)
		}
	}
	return out
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }

func report(w io.Writer, c *cluster.Cluster, o options, samples [][]sample, took time.Duration) {
	host, _ := os.Hostname()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(w, "# End-to-end benchmark: zonelb against kube-proxy and HAProxy in the mini cluster\n\n")
	fmt.Fprintf(w, "Reproduce: `%s` (root; %s). Generated %s on %s (%d CPUs, kernel %s), %d rounds, %.0f s in all; load average at the end: %s.\n\n",
		o.command, "writes this file", time.Now().UTC().Format("2006-01-02 15:04 MST"), host, runtime.NumCPU(),
		strings.TrimSpace(string(kernel)), o.rounds, took.Seconds(), strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Fprintf(w, "## Setup\n\n")
	fmt.Fprintf(w, "- The mini cluster of docs/e2e.md: three zones, one node each (network namespaces on one bridge), %d gRPC backend pods (2 per zone, 1 ms service time), %d client pods in zone-a, each with ONE long-lived gRPC connection to the ClusterIP %s.\n", len(c.Backends), len(c.Clients), cluster.ServiceVIP)
	fmt.Fprintf(w, "- Calls: unary, %d B request payload, %d B response payload. A call that crosses zones gets +2 ms inside the backend (no netem here: emulated latency).\n", o.RequestBytes, o.ResponseBytes)
	fmt.Fprintf(w, "- Discovery: %s.\n", c.DiscoveryDetail)
	fmt.Fprintf(w, "- kube-proxy: iptables DNAT with the statistic match in node-a (a random endpoint per connection; PreferSameZone: zone-a's endpoints only). zonelb: the real daemon on node-a, eBPF connect redirection, the node proxy, measured after a warm-up (the clients' workload until two half-second windows in a row are >= 99.5 %% in zone: a fresh balancer first probes the other zones to learn their latency); kube-proxy's rules stay underneath (and carry traffic if zonelb is down). Between zonelb runs the daemon is stopped (SIGTERM) and its BPF state stays pinned, so kube-proxy runs carry the cgroup hooks too (a not-redirected connect costs ~0.1 us, docs/bpf.md).\n")
	fmt.Fprintf(w, "- HAProxy as node proxy: %s in node-a in place of zonelb's proxy, behind the same eBPF redirection: a helper process opens the daemon's pinned maps, listens on the node proxy's address %s, registers that listener with the hooks (as zonelb's proxy does) and execs HAProxy in place, which inherits the socket (`bind \"fd@${...}\" proto h2`) and becomes the listener's registered owner (same pid). HAProxy cannot read where a steered connection was going (the hooks' tuple map), so its one frontend serves the lab's one Service: `balance roundrobin` over all the Service's ready endpoints, every zone (zone-blind, as HAProxy is), `server ... proto h2` (h2c) to each, rendered from the same endpoint data as the kube-proxy rules into `make bench`'s HAProxy template (bench/configs) with `nbthread %d` (the machine's CPUs, as the daemon's GOMAXPROCS), default connection reuse, no logging. With several Services, such a proxy would need one listener per Service port and the hooks one proxy address per Service; zonelb's proxy reads the original destination per connection and needs one.\n", haproxyVersion(), cluster.ProxyAddr, runtime.NumCPU())
	fmt.Fprintf(w, "- Fixed rate: %.0f calls/s offered in all (open loop, %.0f per client), for %v. Saturation: closed loop, %d calls in flight per client, for %v.\n", o.rate, o.rate/float64(o.Clients), o.fixed, o.satConcurrency, o.sat)
	fmt.Fprintf(w, "- Cross-zone bytes: bytes through node-a's uplink (received + sent, with TCP/IP headers). With one node per zone that is exactly the traffic that left or entered zone-a. Cost per day: that byte rate x 86400 s at $%.2f/GB on each side of the crossing.\n", zone.DefaultPricePerGB)
	fmt.Fprintf(w, "- Node proxy CPU: the node proxy process's utime+stime (the zonelb daemon, or HAProxy with all its threads; /proc/PID/stat, 10 ms ticks) over the run / calls answered; it includes the process's background work, shown apart as idle CPU (3 s with no traffic before the runs). kube-proxy's DNAT runs in the kernel's softirq and cannot be attributed to a process: shown as -.\n")
	fmt.Fprintf(w, "- Everything (clients, backends, proxy, the API server) shares the machine's %d CPUs, with other jobs running: ratios within one run mean more than absolute figures.\n\n", runtime.NumCPU())

	fmt.Fprintf(w, "## At %.0f calls/s offered\n\n", o.rate)
	fmt.Fprintf(w, "| mode | achieved calls/s | p50 ms | p90 ms | p99 ms | p99.9 ms | failed | in-zone calls | cross-zone bytes per call | cross-zone MB/s | est. cost per day | proxy CPU us/call | proxy idle CPU ms/s |\n")
	fmt.Fprintf(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for i, m := range modes {
		ss := samples[i]
		pctl := func(p float64) string {
			return stat(collect(ss, func(s sample) (float64, bool) { return us(s.fixed.Window.Percentile(p)) / 1000, true }), "%.2f")
		}
		cpu, idle := "-", "-"
		if m.proxy != noProxy {
			cpu = stat(collect(ss, func(s sample) (float64, bool) { return us(s.fixed.CPUPerRequest()), true }), "%.0f")
			idle = stat(collect(ss, func(s sample) (float64, bool) { return float64(s.idleCPU.Microseconds()) / 1000, true }), "%.1f")
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", m.name,
			stat(collect(ss, func(s sample) (float64, bool) { return s.fixed.Window.Rate(), true }), "%.0f"),
			pctl(50), pctl(90), pctl(99), pctl(99.9),
			stat(collect(ss, func(s sample) (float64, bool) { return float64(s.fixed.Window.Failed), true }), "%.0f"),
			stat(collect(ss, func(s sample) (float64, bool) { return 100 * s.fixed.Window.Share(cluster.ClientZone), true }), "%.1f %%"),
			stat(collect(ss, func(s sample) (float64, bool) {
				return float64(s.fixed.UplinkBytes) / float64(max(s.fixed.Window.OK, 1)), true
			}), "%.0f B"),
			stat(collect(ss, func(s sample) (float64, bool) { return s.fixed.CrossZoneBytesPerSecond() / 1e6, true }), "%.2f"),
			stat(collect(ss, func(s sample) (float64, bool) { return s.fixed.CostPerDay(zone.DefaultPricePerGB), true }), "$%.2f"),
			cpu, idle)
	}
	fmt.Fprintf(w, "\n## Saturation (closed loop)\n\n")
	fmt.Fprintf(w, "| mode | calls/s | p50 ms | p99 ms | failed | in-zone calls | proxy CPU us/call |\n")
	fmt.Fprintf(w, "|---|---|---|---|---|---|---|\n")
	for i, m := range modes {
		ss := samples[i]
		cpu := "-"
		if m.proxy != noProxy {
			cpu = stat(collect(ss, func(s sample) (float64, bool) { return us(s.sat.CPUPerRequest()), true }), "%.0f")
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", m.name,
			stat(collect(ss, func(s sample) (float64, bool) { return s.sat.Window.Rate(), true }), "%.0f"),
			stat(collect(ss, func(s sample) (float64, bool) { return us(s.sat.Window.Percentile(50)) / 1000, true }), "%.2f"),
			stat(collect(ss, func(s sample) (float64, bool) { return us(s.sat.Window.Percentile(99)) / 1000, true }), "%.2f"),
			stat(collect(ss, func(s sample) (float64, bool) { return float64(s.sat.Window.Failed), true }), "%.0f"),
			stat(collect(ss, func(s sample) (float64, bool) { return 100 * s.sat.Window.Share(cluster.ClientZone), true }), "%.1f %%"),
			cpu)
	}
	ratios(w, o, samples)
	fmt.Fprintf(w, "\n## Per round (fixed rate): where each client's connection went\n\n")
	fmt.Fprintf(w, "kube-proxy's figures swing from round to round because each of the %d long-lived connections lands on one random pod for its whole life; the table shows the calls per pod in each round.\n\n", len(c.Clients))
	fmt.Fprintf(w, "| mode | round | calls per pod |\n|---|---|---|\n")
	for i, m := range modes {
		for r, s := range samples[i] {
			var parts []string
			for _, b := range c.Backends {
				if n := s.fixed.Window.ByBackend[b.Name]; n > 0 {
					parts = append(parts, fmt.Sprintf("%s %d", b.Name, n))
				}
			}
			fmt.Fprintf(w, "| %s | %d | %s |\n", m.name, r+1, strings.Join(parts, ", "))
		}
	}
}

// ratios writes zonelb's medians against HAProxy's (the same place, a
// userspace proxy) and PreferSameZone's (the kernel, in zone).
func ratios(w io.Writer, o options, samples [][]sample) {
	med := func(mode int, f func(sample) float64) float64 {
		return median(collect(samples[mode], func(s sample) (float64, bool) { return f(s), true }))
	}
	sat := func(s sample) float64 { return s.sat.Window.Rate() }
	cpuFixed := func(s sample) float64 { return us(s.fixed.CPUPerRequest()) }
	cpuSat := func(s sample) float64 { return us(s.sat.CPUPerRequest()) }
	p50 := func(s sample) float64 { return us(s.fixed.Window.Percentile(50)) / 1000 }
	p99 := func(s sample) float64 { return us(s.fixed.Window.Percentile(99)) / 1000 }
	div := func(a, b float64) string {
		if b == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2fx", a/b)
	}
	z, h, psz := modeZonelb, modeHAProxy, modePreferSameZone
	fmt.Fprintf(w, "\n## zonelb against HAProxy as node proxy and against PreferSameZone\n\n")
	fmt.Fprintf(w, "Medians over the %d rounds of the tables above.\n\n", len(samples[z]))
	fmt.Fprintf(w, "| figure | zonelb | other | zonelb / other |\n|---|---|---|---|\n")
	fmt.Fprintf(w, "| saturation calls/s, vs HAProxy | %.0f | %.0f | %s |\n", med(z, sat), med(h, sat), div(med(z, sat), med(h, sat)))
	fmt.Fprintf(w, "| node proxy CPU us/call at %.0f calls/s, vs HAProxy | %.0f | %.0f | %s |\n", o.rate, med(z, cpuFixed), med(h, cpuFixed), div(med(z, cpuFixed), med(h, cpuFixed)))
	fmt.Fprintf(w, "| node proxy CPU us/call at saturation, vs HAProxy | %.0f | %.0f | %s |\n", med(z, cpuSat), med(h, cpuSat), div(med(z, cpuSat), med(h, cpuSat)))
	fmt.Fprintf(w, "| p50 ms at %.0f calls/s, vs HAProxy | %.2f | %.2f | %s |\n", o.rate, med(z, p50), med(h, p50), div(med(z, p50), med(h, p50)))
	fmt.Fprintf(w, "| p99 ms at %.0f calls/s, vs HAProxy | %.2f | %.2f | %s |\n", o.rate, med(z, p99), med(h, p99), div(med(z, p99), med(h, p99)))
	fmt.Fprintf(w, "| p50 ms at %.0f calls/s, vs PreferSameZone | %.2f | %.2f | %+.2f ms |\n", o.rate, med(z, p50), med(psz, p50), med(z, p50)-med(psz, p50))
	fmt.Fprintf(w, "| p99 ms at %.0f calls/s, vs PreferSameZone | %.2f | %.2f | %s |\n", o.rate, med(z, p99), med(psz, p99), div(med(z, p99), med(psz, p99)))
}

// haproxyVersion is HAProxy's version line, for the report.
func haproxyVersion() string {
	out, err := exec.Command("haproxy", "-v").Output()
	if err != nil {
		return "HAProxy"
	}
	first, _, _ := strings.Cut(string(out), "\n")
	if f := strings.Fields(first); len(f) >= 3 {
		return "HAProxy " + f[2]
	}
	return "HAProxy"
}
