// Command zonelb-bench-e2e is `make bench-e2e`: the e2e mini cluster (package
// internal/cluster) under load, zonelb against the kube-proxy baselines,
// in interleaved rounds, written as a Markdown report (by default
// docs/benchmarks-e2e.md).
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
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/zonelb/zonelb/internal/cluster"
	"github.com/zonelb/zonelb/zone"
)

func main() {
	cluster.RunHelpers() // the pods' processes are re-executions of this binary
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	bin            string
	out            string
	rounds         int
	rate           float64
	fixed          time.Duration
	sat            time.Duration
	satConcurrency int
	clients        int
	reqBytes       int
	respBytes      int
	discovery      string
	verbose        bool
	command        string
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench-e2e", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.bin, "zonelb", "bin/zonelb", "path to the zonelb binary")
	fs.StringVar(&o.out, "out", "docs/benchmarks-e2e.md", `report file ("-" for stdout)`)
	fs.IntVar(&o.rounds, "rounds", 3, "rounds (each runs every mode once)")
	fs.Float64Var(&o.rate, "rate", 1000, "offered calls per second in the fixed-rate run (all clients together)")
	fs.DurationVar(&o.fixed, "fixed", 10*time.Second, "length of the fixed-rate run")
	fs.DurationVar(&o.sat, "saturation", 6*time.Second, "length of the closed-loop run")
	fs.IntVar(&o.satConcurrency, "saturation-concurrency", 16, "calls in flight per client in the closed-loop run")
	fs.IntVar(&o.clients, "clients", 3, "client pods in zone-a (one gRPC connection each)")
	fs.IntVar(&o.reqBytes, "request-bytes", 1024, "payload bytes per request")
	fs.IntVar(&o.respBytes, "response-bytes", 4096, "payload bytes per response")
	fs.StringVar(&o.discovery, "discovery", "auto", "auto, kubernetes or file")
	fs.BoolVar(&o.verbose, "v", false, "log the harness's steps to stderr")
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
	zonelb   bool
}

var modes = []mode{
	{"kube-proxy (iptables, random per connection)", cluster.BaselineRandom, false},
	{"kube-proxy PreferSameZone", cluster.BaselinePreferSameZone, false},
	{"zonelb", cluster.BaselineRandom, true},
}

// sample is one mode's measurements in one round.
type sample struct {
	fixed, sat cluster.Phase
	idleCPU    time.Duration // daemon CPU per second with no traffic (zonelb)
}

func bench(ctx context.Context, o options, stdout, stderr io.Writer) error {
	started := time.Now()
	log := slog.New(slog.DiscardHandler)
	if o.verbose {
		log = slog.New(slog.NewTextHandler(stderr, nil))
	}
	say := func(format string, args ...any) { fmt.Fprintf(stderr, format+"\n", args...) }
	c, err := cluster.Up(ctx, cluster.Options{
		Logger: log, ZonelbBin: o.bin, ClientPods: o.clients, Discovery: o.discovery,
		Progress: func(s string) { say("... %s", s) },
	})
	if err != nil {
		return err
	}
	defer func() {
		say("... tearing down")
		if err := c.Close(); err != nil {
			say("teardown: %v", err)
		}
	}()

	perClient := o.rate / float64(o.clients)
	fixedW := cluster.Workload{Concurrency: 64, Rate: perClient, RequestBytes: o.reqBytes, ResponseBytes: o.respBytes}
	satW := cluster.Workload{Concurrency: o.satConcurrency, RequestBytes: o.reqBytes, ResponseBytes: o.respBytes}

	samples := make([][]sample, len(modes))
	for r := 1; r <= o.rounds; r++ {
		for i, m := range modes {
			if err := c.SetBaseline(m.baseline); err != nil {
				return err
			}
			var s sample
			if m.zonelb {
				d, err := c.StartDaemon(ctx)
				if err != nil {
					return err
				}
				// The balancer learns the other zones' latency by probing
				// them first; the runs measure the steady state after it.
				if _, err := c.WarmUp(ctx, fixedW, 0.995, 30*time.Second); err != nil {
					return err
				}
				// The daemon's own background work (discovery, metrics)
				// with no traffic.
				cpu0, _ := d.CPUTime()
				if err := cluster.SleepCtx(ctx, 3*time.Second); err != nil {
					return err
				}
				cpu1, _ := d.CPUTime()
				s.idleCPU = (cpu1 - cpu0) / 3
			}
			say("round %d/%d, %s: %.0f calls/s for %v", r, o.rounds, m.name, o.rate, o.fixed)
			if s.fixed, err = c.RunPhase(ctx, m.name, fixedW, o.fixed, time.Second, nil, nil); err != nil {
				return err
			}
			say("round %d/%d, %s: closed loop, %d in flight per client, for %v", r, o.rounds, m.name, o.satConcurrency, o.sat)
			if s.sat, err = c.RunPhase(ctx, m.name, satW, o.sat, time.Second, nil, nil); err != nil {
				return err
			}
			if m.zonelb {
				if err := c.Daemon().Stop(); err != nil {
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

// stat formats the median of vs with (min..max) when there are several.
func stat(vs []float64, format string) string {
	if len(vs) == 0 {
		return "-"
	}
	s := slices.Sorted(slices.Values(vs))
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
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
	fmt.Fprintf(w, "# End-to-end benchmark: zonelb against kube-proxy in the mini cluster\n\n")
	fmt.Fprintf(w, "Reproduce: `%s` (root; %s). Generated %s on %s (%d CPUs, kernel %s), %d rounds, %.0f s in all; load average at the end: %s.\n\n",
		o.command, "writes this file", time.Now().UTC().Format("2006-01-02 15:04 MST"), host, runtime.NumCPU(),
		strings.TrimSpace(string(kernel)), o.rounds, took.Seconds(), strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Fprintf(w, "## Setup\n\n")
	fmt.Fprintf(w, "- The mini cluster of docs/e2e.md: three zones, one node each (network namespaces on one bridge), %d gRPC backend pods (2 per zone, 1 ms service time), %d client pods in zone-a, each with ONE long-lived gRPC connection to the ClusterIP %s.\n", len(c.Backends), len(c.Clients), cluster.ServiceVIP)
	fmt.Fprintf(w, "- Calls: unary, %d B request payload, %d B response payload. A call that crosses zones gets +2 ms inside the backend (no netem here: emulated latency).\n", o.reqBytes, o.respBytes)
	fmt.Fprintf(w, "- Discovery: %s.\n", c.DiscoveryDetail)
	fmt.Fprintf(w, "- kube-proxy: iptables DNAT with the statistic match in node-a (a random endpoint per connection; PreferSameZone: zone-a's endpoints only). zonelb: the real daemon on node-a, eBPF connect redirection, the node proxy, measured after a warm-up (the clients' workload until two half-second windows in a row are >= 99.5 %% in zone: a fresh balancer first probes the other zones to learn their latency); kube-proxy's rules stay underneath (and carry traffic if zonelb is down). Between zonelb runs the daemon is stopped (SIGTERM) and its BPF state stays pinned, so kube-proxy runs carry the cgroup hooks too (a not-redirected connect costs ~0.1 us, docs/bpf.md).\n")
	fmt.Fprintf(w, "- Fixed rate: %.0f calls/s offered in all (open loop, %.0f per client), for %v. Saturation: closed loop, %d calls in flight per client, for %v.\n", o.rate, o.rate/float64(o.clients), o.fixed, o.satConcurrency, o.sat)
	fmt.Fprintf(w, "- Cross-zone bytes: bytes through node-a's uplink (received + sent, with TCP/IP headers). With one node per zone that is exactly the traffic that left or entered zone-a. Cost per day: that byte rate x 86400 s at $%.2f/GB on each side of the crossing.\n", zone.DefaultPricePerGB)
	fmt.Fprintf(w, "- Node proxy CPU: the zonelb daemon's utime+stime (/proc/PID/stat, 10 ms ticks) over the run / calls answered; it includes the daemon's background work, shown apart as idle CPU. kube-proxy's DNAT runs in the kernel's softirq and cannot be attributed to a process: shown as -.\n")
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
		if m.zonelb {
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
		if m.zonelb {
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
