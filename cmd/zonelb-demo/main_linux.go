// Command zonelb-demo is what `make demo` runs: a three-zone mini cluster in
// network namespaces on this machine (package internal/cluster), gRPC
// clients in zone-a calling a Service's ClusterIP, and side by side what
// kube-proxy, kube-proxy with PreferSameZone, and zonelb (the real daemon,
// eBPF redirection and node proxy) do with the calls: requests per backend
// pod, the share of requests and bytes that stayed in the zone, the
// estimated cross-zone cost per day at that rate, latency and errors. Then
// one live scenario: zone-a's pods overloaded, then killed, and how zonelb
// spills and fails over.
//
// It needs root (namespaces, cgroups, eBPF). Everything it creates is
// removed on exit, on Ctrl-C and on failure. --loopback runs the older
// loopback-only demo, which needs no root.
//
// It drives the lab (internal/cluster) and prints; it is never part of
// the product, and nothing imports it.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/zonelb/zonelb/internal/cluster"
	"github.com/zonelb/zonelb/zone"
)

func main() { cluster.Main(func() int { return run(os.Args[1:], os.Stdout, os.Stderr) }) }

// options are the demo's settings.
type options struct {
	cluster.CommandFlags
	duration   time.Duration
	rate       float64
	crossZone  time.Duration
	keep       bool
	pricePerGB float64
	reportDir  string
}

func run(args []string, stdout, stderr io.Writer) int {
	var o options
	fs := o.FlagSet("demo", stderr)
	fs.DurationVar(&o.duration, "duration", 8*time.Second, "how long each mode runs")
	fs.Float64Var(&o.rate, "rate", 200, "calls per second per client")
	fs.DurationVar(&o.crossZone, "cross-zone-delay", 2*time.Millisecond, "extra latency of a call that crosses zones, emulated inside the backends")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (configs and logs)")
	fs.Float64Var(&o.pricePerGB, "price-per-gb", zone.DefaultPricePerGB, "price of a cross-zone GB (10^9 bytes) in USD, charged on each side")
	fs.StringVar(&o.reportDir, "report-dir", "demo-report", "where the HTML report (report.html) and its results file (results.json) go")
	loopback := fs.Bool("loopback", false, "run the loopback-only demo instead (no root needed, no namespaces, no BPF)")
	lo := loopbackFlags(fs, &o.Bin, &o.crossZone)
	if err := fs.Parse(args); err != nil {
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *loopback {
		if err := runLoopback(ctx, lo); err != nil {
			fmt.Fprintln(stderr, "demo:", err)
			return 1
		}
		return 0
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, `make demo needs root: it builds a mini cluster out of network namespaces,
veth pairs, cgroups and eBPF programs (all removed when it ends). Run it as
root, e.g. "sudo make demo". Without root, "go run ./cmd/zonelb-demo --loopback"
shows per-request balancing on loopback only.`)
		return 1
	}
	if err := demo(ctx, o, stdout, stderr); err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintln(stderr, "\ndemo: interrupted; everything it created has been removed")
			return 130
		}
		fmt.Fprintln(stderr, "\ndemo:", err)
		return 1
	}
	return 0
}

// progress writes a one-line, self-overwriting status to a terminal, or
// occasional plain lines elsewhere.
type progress struct {
	w    io.Writer
	tty  bool
	last time.Time
}

func newProgress(w io.Writer) *progress {
	f, ok := w.(*os.File)
	return &progress{w: w, tty: ok && term.IsTerminal(int(f.Fd()))}
}

func (p *progress) show(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", msg)
		return
	}
	if time.Since(p.last) >= 3*time.Second {
		fmt.Fprintln(p.w, msg)
		p.last = time.Now()
	}
}

func (p *progress) step(msg string) {
	p.clear()
	fmt.Fprintln(p.w, "... "+msg)
}

func (p *progress) clear() {
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

func demo(ctx context.Context, o options, stdout, stderr io.Writer) error {
	started := time.Now()
	prog := newProgress(stderr)
	opts := o.Options(stderr, prog.step)
	opts.CrossZoneDelay, opts.KeepWorkDir = o.crossZone, o.keep
	c, err := cluster.Up(ctx, opts)
	if err != nil {
		return err
	}
	defer func() {
		prog.step("tearing down: daemon, zonelb uninstall, processes, namespaces, cgroups")
		if err := c.Close(); err != nil {
			fmt.Fprintln(stderr, "demo: teardown:", err)
		}
		if o.keep {
			fmt.Fprintln(stderr, "work directory kept:", c.WorkDir())
		}
	}()

	w := o.Workload(32, o.rate)
	printSetup(stdout, c, o)
	prom := startPrometheus(ctx, c, prog, stdout)
	fmt.Fprintln(stdout)

	phases, warm, steps, err := runComparison(ctx, c, w, o, prog)
	if err != nil {
		return err
	}
	prog.clear()
	printTable(stdout, c, phases, o)
	fmt.Fprintf(stdout, "zonelb's warm-up before its column: %d calls in %.1fs, %s of them in zone-a while its fresh balancer\n",
		warm.OK, warm.Duration().Seconds(), pct(warm.Share(cluster.ClientZone)))
	fmt.Fprintf(stdout, "learned zone-a's unloaded latency (the spill budget's yardstick); its column is the steady state after that.\n")

	live, err := liveScenario(ctx, c, w, prog, steps)
	if err != nil {
		return err
	}
	prog.clear()
	printLive(stdout, live, o.rate*float64(len(c.Clients)))
	if path, err := writeReport(ctx, o, c, phases, live, prom); err != nil {
		fmt.Fprintln(stderr, "demo: report:", err)
	} else {
		fmt.Fprintf(stdout, "\nReport (charts of the live scenario and the table, one self-contained page): %s\n", path)
	}
	printOwnAccount(ctx, stdout, c)
	fmt.Fprintf(stdout, "\ndemo finished in %.0fs\n", time.Since(started).Seconds())
	return nil
}

// printSetup describes the cluster and the workload the demo runs.
func printSetup(stdout io.Writer, c *cluster.Cluster, o options) {
	fmt.Fprintf(stdout, "\nzonelb demo: a three-zone mini cluster in network namespaces on this machine\n\n")
	fmt.Fprintf(stdout, "  nodes       node-a (zone-a), node-b (zone-b), node-c (zone-c): network namespaces on one bridge\n")
	fmt.Fprintf(stdout, "  backends    %d gRPC pods, 2 per zone (grpc.testing.TestService), 1ms service time\n", len(c.Backends))
	fmt.Fprintf(stdout, "  clients     %d pods in zone-a; each keeps ONE gRPC connection to the ClusterIP %s\n", len(c.Clients), cluster.ServiceVIP)
	fmt.Fprintf(stdout, "              and calls at %.0f/s (%d B requests, %d B responses)\n", o.rate, o.RequestBytes, o.ResponseBytes)
	fmt.Fprintf(stdout, "  cross-zone  +%v per call, emulated inside the backends (no netem here)\n", o.crossZone)
	fmt.Fprintf(stdout, "  discovery   %s\n", c.DiscoveryDetail)
	fmt.Fprintf(stdout, "  zonelb      %s daemon on node-a: eBPF connect4 redirection on node-a's pod cgroup, node proxy %s\n", o.Bin, cluster.ProxyAddr)
}

// runComparison runs one measured phase per mode (kube-proxy,
// PreferSameZone, then zonelb after its warm-up) and returns the phases,
// zonelb's warm-up window and the number of steps the demo shows in all
// (the modes and the live scenario).
func runComparison(ctx context.Context, c *cluster.Cluster, w cluster.Workload, o options, prog *progress) ([]cluster.Phase, cluster.Window, int, error) {
	type mode struct {
		name     string
		baseline cluster.Baseline
		zonelb   bool
	}
	modes := []mode{
		{"kube-proxy", cluster.BaselineRandom, false},
		{"PreferSameZone", cluster.BaselinePreferSameZone, false},
		{"zonelb", cluster.BaselineRandom, true},
	}
	var phases []cluster.Phase
	var warm cluster.Window
	for i, m := range modes {
		if err := c.SetBaseline(m.baseline); err != nil {
			return nil, cluster.Window{}, 0, err
		}
		if m.zonelb {
			prog.step("starting the zonelb daemon on node-a (kube-proxy's rules stay underneath, as in a real cluster)")
			if _, err := c.StartDaemon(ctx); err != nil {
				return nil, cluster.Window{}, 0, err
			}
			prog.step("zonelb warm-up: a fresh balancer learns zone-a's unloaded latency (not counted below)")
			ws, err := c.WarmUp(ctx, w, 0.995, 30*time.Second)
			if err != nil {
				return nil, cluster.Window{}, 0, err
			}
			warm = cluster.Merge(ws...)
		}
		label := fmt.Sprintf("[%d/%d] %s", i+1, len(modes)+1, m.name)
		ph, err := c.RunPhase(ctx, m.name, w, o.duration, 500*time.Millisecond, nil, func(el time.Duration, _ cluster.Window) {
			prog.show("%s: %4.1fs of %v", label, el.Seconds(), o.duration)
		})
		if err != nil {
			return nil, cluster.Window{}, 0, err
		}
		phases = append(phases, ph)
	}
	return phases, warm, len(modes) + 1, nil
}

// printOwnAccount prints the cross-zone bytes and cost the daemon itself
// counted (its /debug/state), when it runs.
func printOwnAccount(ctx context.Context, stdout io.Writer, c *cluster.Cluster) {
	if d := c.Daemon(); d != nil {
		if st, err := d.State(ctx); err == nil {
			var crossed uint64
			var cost float64
			for _, u := range st.CrossZone {
				if u.CrossZone {
					crossed += u.BytesSent + u.BytesReceived
					cost += u.CostUSD
				}
			}
			fmt.Fprintf(stdout, "\nzonelb's own account (/debug/state, whole run): %s crossed zones (gRPC frames, both ways), est. $%.6f\n", mb(float64(crossed)), cost)
		}
	}
}

func mb(b float64) string { return fmt.Sprintf("%.1f MB", b/1e6) }

func pct(x float64) string { return fmt.Sprintf("%.1f%%", 100*x) }

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

// printTable prints the modes side by side (sideBySide's table).
func printTable(w io.Writer, c *cluster.Cluster, phases []cluster.Phase, o options) {
	const lw, cw = 32, 18
	t := sideBySide(c, phases, o)
	fmt.Fprintf(w, "%-*s", lw, "")
	for _, col := range t.Columns {
		fmt.Fprintf(w, "%*s", cw, col)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, strings.Repeat("-", lw+cw*len(phases)))
	for _, r := range t.Rows {
		fmt.Fprintf(w, "%-*s", lw, r.Label)
		for _, cell := range r.Cells {
			fmt.Fprintf(w, "%*s", cw, cell)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "\nCost: bytes on node-a's uplink (the only way out of zone-a: one node per zone) x 86400 s,\n")
	fmt.Fprintf(w, "at $%.2f/GB charged on each side of the crossing, at this run's call rate.\n", o.pricePerGB)
	fmt.Fprintf(w, "kube-proxy picks one endpoint per connection: %d long-lived gRPC connections are a lottery over 6 pods\n", len(c.Clients))
	fmt.Fprintf(w, "(2 of them in zone-a: 1/3 in zone on average); every call follows its connection. PreferSameZone keeps\n")
	fmt.Fprintf(w, "connections in zone-a but still pins each to one pod. zonelb balances every call over the zone's pods.\n")
}

// liveScenario runs zonelb under the same workload while zone-a's pods are
// first overloaded, then killed.
func liveScenario(ctx context.Context, c *cluster.Cluster, w cluster.Workload, prog *progress, step int) (cluster.Phase, error) {
	local := zoneBackends(c, cluster.ClientZone)
	slow := cluster.BackendLoad{ServiceTime: cluster.Duration(5 * time.Millisecond)}
	overloaded := cluster.BackendLoad{ServiceTime: cluster.Duration(5 * time.Millisecond), Capacity: 1}
	for _, b := range c.Backends {
		if err := b.SetLoad(ctx, slow); err != nil {
			return cluster.Phase{}, err
		}
	}
	events := []cluster.PhaseEvent{
		{At: liveOverloadAt * time.Second, Name: "zone-a overloaded", Do: func(ctx context.Context) error {
			for _, b := range local {
				if err := b.SetLoad(ctx, overloaded); err != nil {
					return err
				}
			}
			return nil
		}},
		{At: liveKillAt * time.Second, Name: "zone-a's pods killed", Do: func(ctx context.Context) error {
			for _, b := range local {
				b.Kill()
			}
			return nil
		}},
	}
	label := fmt.Sprintf("[%d/%d] live: zone-a overloaded, then killed", step, step)
	return c.RunPhase(ctx, "live", w, liveLength*time.Second, time.Second, events, func(el time.Duration, _ cluster.Window) {
		prog.show("%s: %4.1fs of %ds", label, el.Seconds(), liveLength)
	})
}

func zoneBackends(c *cluster.Cluster, z string) []*cluster.Backend {
	var out []*cluster.Backend
	for _, b := range c.Backends {
		if b.Zone == z {
			out = append(out, b)
		}
	}
	return out
}

// The live scenario's timeline, in seconds: the overload phase is long
// enough (12 s) to see where the local share settles after the capacity
// step, and whether it first dipped below that.
const (
	liveOverloadAt = 3
	liveKillAt     = 15
	liveLength     = 18
)

// printLive prints the live scenario's timeline, one line per second.
func printLive(w io.Writer, ph cluster.Phase, offered float64) {
	fmt.Fprintf(w, "\nLive, zonelb only: every pod now takes 5 ms a call. At %ds zone-a's two pods drop to one call at a\n", liveOverloadAt)
	fmt.Fprintf(w, "time (400 calls/s together, less than the %.0f offered); at %ds they are killed (SIGKILL).\n\n", offered, liveKillAt)
	fmt.Fprintf(w, "%8s %8s %8s %8s %8s %10s %8s\n", "time", "calls/s", "zone-a", "zone-b", "zone-c", "p99", "errors")
	// The last window is the tail between the last snapshot and the
	// clients' stop: not a whole second, left out.
	for i, win := range ph.Windows[:max(len(ph.Windows)-1, 0)] {
		note := ""
		switch i {
		case liveOverloadAt:
			note = "  <- zone-a overloaded"
		case liveKillAt:
			note = "  <- zone-a's pods killed"
		}
		fmt.Fprintf(w, "%8s %8.0f %8s %8s %8s %10s %8d%s\n", fmt.Sprintf("%d-%ds", i, i+1), win.Rate(),
			pct(win.Share("zone-a")), pct(win.Share("zone-b")), pct(win.Share("zone-c")),
			ms(win.Percentile(99)), win.Failed, note)
	}
	var failed []string
	for _, f := range ph.Window.Failures {
		failed = append(failed, f.Code)
	}
	printStep(w, ph)
	fmt.Fprintf(w, "\nFailed calls: %d", ph.Window.Failed)
	if ph.Window.Failed > 0 {
		fmt.Fprintf(w, " (%s): calls that were in flight on the killed pods; a killed process takes its calls with it", strings.Join(uniq(failed), ", "))
	}
	fmt.Fprintln(w)
}

// printStep measures the capacity step (docs/zone-balancing.md): the
// local share over the last half of the overload, how far the worst
// one-second window from the first second after the step fell below it
// (the budget rule's bound: 15 points), and p99 in the step's first second
// against the second before.
func printStep(w io.Writer, ph cluster.Phase) {
	if len(ph.Windows) < liveKillAt+1 {
		return
	}
	over := ph.Windows[liveOverloadAt+1 : liveKillAt]
	var settled float64
	half := over[len(over)/2:]
	for _, win := range half {
		settled += win.Share("zone-a")
	}
	settled /= float64(len(half))
	worst, at := 0.0, 0
	for i, win := range over {
		if d := settled - win.Share("zone-a"); d > worst {
			worst, at = d, liveOverloadAt+1+i
		}
	}
	fmt.Fprintf(w, "\nCapacity step: zone-a settles at %s of the calls (last half of the overload); the worst second from\n", pct(settled))
	fmt.Fprintf(w, "1s after the step is %.1f points below it (%d-%ds; bound 15). p99 in the step's first second %s,\n",
		100*worst, at, at+1, ms(ph.Windows[liveOverloadAt].Percentile(99)))
	fmt.Fprintf(w, "the second before %s.\n", ms(ph.Windows[liveOverloadAt-1].Percentile(99)))
}

func uniq(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}
