package soak

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zonelb/zonelb/internal/cluster"
	"github.com/zonelb/zonelb/internal/netlab"
	"github.com/zonelb/zonelb/internal/testenv"
)

func TestMain(m *testing.M) { cluster.Main(m.Run) }

// Knobs (environment, so that `go test ./...` runs the short form):
// ZONELB_SOAK_DURATION (default 2m), ZONELB_SOAK_SEED (default 1),
// ZONELB_SOAK_OUT (write the report there, with an SVG plot beside it).
func knobs(t *testing.T) (time.Duration, uint64, string) {
	d := 2 * time.Minute
	if v := os.Getenv("ZONELB_SOAK_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil || d < time.Minute {
			t.Fatalf("ZONELB_SOAK_DURATION=%q: want a duration of at least 1m (%v)", v, err)
		}
	}
	var seed uint64 = 1
	if v := os.Getenv("ZONELB_SOAK_SEED"); v != "" {
		if _, err := fmt.Sscan(v, &seed); err != nil {
			t.Fatalf("ZONELB_SOAK_SEED=%q: %v", v, err)
		}
	}
	return d, seed, os.Getenv("ZONELB_SOAK_OUT")
}

// event is one fault on the schedule: do it, hold it, undo it.
type event struct {
	At   time.Duration // since the start of the load
	Kind string
	Hold time.Duration
	// Target names what it hit (a backend, a zone), filled in when done.
	Target string
	// Sent and Gone are when a kill was sent and its process reaped, by
	// the address the proxy names in its errors ("" for the daemon).
	Sent, Gone map[string]time.Time
	// Before is just before a daemon's kill(2) (it may die before the
	// call returns).
	Before time.Time
	// Restarted is when a killed daemon's successor was started: no
	// connection may reach a proxy between the kill and then.
	Restarted time.Time
	// Began is when the fault was done.
	Began time.Time
}

// The fault kinds. The daemon's own (kill, upgrade) come in the first
// fifth of the run, so that one daemon process lives through the rest:
// its memory and handles are what the leak bounds watch.
const (
	evScaleDown   = "scale down one endpoint (SIGTERM, not ready), then up"
	evPodKill     = "SIGKILL one pod (then not ready), then restart it"
	evCapacity    = "zone a's capacity drops (1 call at a time, 5ms), then returns"
	evZoneFail    = "a zone fails (every pod SIGKILLed, not ready), then returns"
	evReload      = "daemon configuration reloaded (balancer decay changed)"
	evDaemonKill  = "daemon SIGKILLed, then restarted"
	evUpgrade     = "daemon upgraded: SIGTERM, a new binary started, pins kept"
	holdMin, gapS = 5 * time.Second, 3
)

// schedule draws the seeded fault schedule for a run of length d.
func schedule(rng *rand.Rand, d time.Duration) []event {
	early := d / 5
	var evs []event
	// The daemon's faults: at a third and two thirds of the first fifth.
	evs = append(evs, event{At: early / 3, Kind: evDaemonKill}, event{At: 2 * early / 3, Kind: evUpgrade})
	kinds := []string{evScaleDown, evPodKill, evCapacity, evZoneFail, evReload}
	for at := early + 5*time.Second; at < d-20*time.Second; {
		k := kinds[rng.IntN(len(kinds))]
		hold := holdMin + time.Duration(rng.IntN(10))*time.Second
		if k == evReload {
			hold = 0
		}
		evs = append(evs, event{At: at, Kind: k, Hold: hold})
		at += hold + time.Duration(gapS+rng.IntN(8))*time.Second
	}
	return evs
}

// sample is one second of the run.
type sample struct {
	T      time.Duration
	W      cluster.Window
	D      cluster.DaemonSample
	Quiet  bool // no fault active, and none undone in the last 5 s
	DErr   string
	Active string
}

func TestSoak(t *testing.T) {
	testenv.RequireRoot(t)
	dur, seed, out := knobs(t)
	rng := rand.New(rand.NewPCG(seed, 14))
	ctx := context.Background()
	logf := func(format string, args ...any) { t.Logf(format, args...) }
	bin := cluster.ZonelbBin(t)
	c := cluster.UpForTest(t, cluster.Options{
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		ZonelbBin: bin,
	})
	d, err := c.StartDaemon(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WarmUp(ctx, cluster.Workload{Concurrency: 4}, 0.99, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	// Steady load; a new connection every 300 calls per client, so that
	// connections that failed open while the daemon was down come back.
	cs, stopClients := c.StartClientsForTest(t, ctx, cluster.Workload{Concurrency: 8, Rate: 300, RedialEvery: 300})

	evs := schedule(rng, dur)
	logf("soak: %v, seed %d, %d faults, discovery %s", dur, seed, len(evs), c.Discovery)
	start := time.Now()
	var samples []sample
	lastRestore := start
	active := ""
	tick := func() {
		w, err := cs.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s := sample{T: time.Since(start), W: w, Active: active}
		s.Quiet = active == "" && time.Since(lastRestore) > 5*time.Second
		if s.D, err = d.Sample(ctx); err != nil {
			s.DErr = err.Error()
		}
		samples = append(samples, s)
	}
	// waitUntil samples each second until the run's clock reaches at.
	waitUntil := func(at time.Duration) {
		for time.Since(start) < at {
			time.Sleep(min(time.Second, at-time.Since(start))) // the sampling clock
			tick()
		}
	}
	// In the work dir, which outlives the daemon until Close has run
	// `zonelb uninstall` with it.
	upgraded := filepath.Join(c.WorkDir(), "zonelb-next")
	reloads := 0
	for i := range evs {
		ev := &evs[i]
		waitUntil(ev.At)
		ev.Sent, ev.Gone = map[string]time.Time{}, map[string]time.Time{}
		ev.Began = time.Now()
		active = ev.Kind
		switch ev.Kind {
		case evDaemonKill:
			ev.Before = time.Now()
			if err := d.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			ev.Sent[""] = time.Now() // kill(2) has returned: the hooks' mark is set
			if err := d.Wait(ctx); err != nil && !netlab.KilledBySignal(err, syscall.SIGKILL) {
				t.Fatal(err)
			}
			ev.Gone[""] = time.Now()
			ev.Restarted = time.Now()
			if d, err = c.StartDaemon(ctx); err != nil {
				t.Fatal(err)
			}
		case evUpgrade:
			if err := copyFile(bin, upgraded); err != nil {
				t.Fatal(err)
			}
			if err := d.Stop(); err != nil {
				t.Fatal(err)
			}
			c.SetZonelbBin(upgraded)
			if d, err = c.StartDaemon(ctx); err != nil {
				t.Fatal(err)
			}
		case evReload:
			// Alternating, so that each reload changes something (the
			// daemon applies only a configuration that differs).
			reloads++
			decay := []string{"decay: 5s", "decay: 10s"}[reloads%2]
			if err := c.ReloadDaemon(ctx, decay); err != nil {
				t.Fatal(err)
			}
			ev.Target = decay
		case evScaleDown, evPodKill:
			b := c.Backends[rng.IntN(len(c.Backends))]
			ev.Target = b.Name
			if ev.Kind == evPodKill {
				ev.Sent[b.Addr.String()] = time.Now()
				b.Kill()
				ev.Gone[b.Addr.String()] = time.Now()
			} else if err := b.Terminate(); err != nil {
				t.Fatal(err)
			}
			if err := c.SetReady(ctx, false, b); err != nil {
				t.Fatal(err)
			}
			waitUntil(ev.At + ev.Hold)
			if err := b.Start(ctx); err != nil {
				t.Fatal(err)
			}
			if err := c.SetReady(ctx, true, b); err != nil {
				t.Fatal(err)
			}
		case evCapacity:
			zone := c.BackendsIn(cluster.ClientZone)
			ev.Target = cluster.ClientZone
			cluster.SetLoads(t, ctx, zone, cluster.BackendLoad{ServiceTime: cluster.Duration(5 * time.Millisecond), Capacity: 1})
			waitUntil(ev.At + ev.Hold)
			cluster.SetLoads(t, ctx, zone, cluster.BackendLoad{ServiceTime: cluster.Duration(time.Millisecond)})
		case evZoneFail:
			z := cluster.Zones[rng.IntN(len(cluster.Zones))]
			ev.Target = z
			zone := c.BackendsIn(z)
			for _, b := range zone {
				ev.Sent[b.Addr.String()] = time.Now()
				b.Kill()
				ev.Gone[b.Addr.String()] = time.Now()
			}
			if err := c.SetReady(ctx, false, zone...); err != nil {
				t.Fatal(err)
			}
			waitUntil(ev.At + ev.Hold)
			for _, b := range zone {
				if err := b.Start(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.SetReady(ctx, true, zone...); err != nil {
				t.Fatal(err)
			}
		}
		active = ""
		lastRestore = time.Now()
		logf("%6.1fs %s %s", ev.At.Seconds(), ev.Kind, ev.Target)
	}
	waitUntil(dur)
	last, err := stopClients()
	if err != nil {
		t.Fatal(err)
	}
	received, err := c.Received()
	if err != nil {
		t.Fatal(err)
	}
	r := report(t, dur, seed, evs, samples, last, received)
	t.Log("\n" + r.text)
	if out != "" {
		svg := strings.TrimSuffix(out, filepath.Ext(out)) + ".svg"
		doc := fmt.Sprintf(soakDoc, dur, seed, time.Now().UTC().Format("2006-01-02"), filepath.Base(svg), r.text)
		if err := os.WriteFile(out, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(svg, []byte(plot(samples)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range r.errs {
		// The resource bounds (level at minute 2, back to it when the
		// load is) need the full run: in the short form the last faults
		// end within the proxy's upstream idle timeout (90 s) of the end,
		// so the connections (and fds) opened for them are still pooled
		// when it stops (seen: upstream conns 2 -> 4 in a 2-minute run).
		// There it reports them; calls and saveable failures still fail.
		if dur < 10*time.Minute && strings.Contains(e, " went from ") {
			t.Logf("short form, not asserted: %s", e)
			continue
		}
		t.Error(e)
	}
}

// soakDoc is docs/soak.md: what the run is, then its real output.
const soakDoc = `# Soak: load and churn in the mini cluster

The real output of one run of ` + "`make soak`" + ` (SOAK_DURATION=%v SOAK_SEED=%d, %s, written by
the run itself; on this project's 2-vCPU machine, shared with other work). The test is
` + "`TestSoak`" + ` in test/soak; ` + "`make test`" + ` runs a 2-minute form.

What it does: the mini cluster (docs/e2e.md) with discovery from a real kube-apiserver, the zonelb
daemon on zone-a's node, and one client pod calling the Service at 300 calls/s (8 at a time, a new
connection every 300 calls, so that connections that failed open while the daemon was down come
back). On a seeded schedule, one fault at a time, held 5-15 s and undone: an endpoint scaled down
(SIGTERM, not ready) and up, a pod SIGKILLed (then not ready) and restarted, zone-a's capacity
dropping to one call at a time and returning, a whole zone failing (every pod SIGKILLed, not
ready) and returning, and daemon configuration reloads. The daemon's own faults, a SIGKILL and an
upgrade (SIGTERM, a new binary started on the pinned BPF state), come in the first fifth, so that
one daemon process lives through the rest: its memory and handles are what the leak bounds watch.

Every second it samples the calls (a window per second), the daemon's RSS, goroutines (its
/metrics), open fds, established upstream connections (its node's /proc/net/tcp) and the entries of
the pinned BPF maps that grow with traffic or churn. Every failed call is joined with the ids the
backends logged (docs/e2e.md, "Saveable failed calls"): a failure is saveable unless it reached a
backend, or was lost with a process a fault killed (on a connection the killed daemon held, one
its socket had accepted but not yet answered included: grpc-go then fails its channel's calls fast
for its reconnect backoff, about a second, which the 2-minute form's seed 1 meets at the daemon
kill in some runs; or sent by the proxy to a killed pod it names, before that pod was gone). Bounds: 0 saveable; RSS
grows at most 5 %% from the end of the first fifth to the end; goroutines, fds, upstream
connections and map entries, read at quiet moments (no fault active or undone in the last 5 s, the
same load), end within 5 %% of their level then (within one for counts under 20). Shaded in the
plot: a fault active.

![daemon RSS and in-zone share over the run](%s)

` + "```text\n%s```\n"

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}

// deaths are the daemon kills of the schedule as cluster.ProxyDeath, each
// bounded by the next daemon fault (whose own breaks are not its).
func deaths(evs []event) []cluster.ProxyDeath {
	var out []cluster.ProxyDeath
	for i, ev := range evs {
		sent, ok := ev.Sent[""]
		if !ok {
			continue
		}
		d := cluster.ProxyDeath{Before: ev.Before, Sent: sent, Restarted: ev.Restarted}
		for _, next := range evs[i+1:] {
			if next.Kind == evDaemonKill || next.Kind == evUpgrade {
				d.Next = next.Began
				break
			}
		}
		out = append(out, d)
	}
	return out
}

// inFlight tells whether a failed call was lost with a process a fault
// killed: with a killed daemon (cluster.Window.LostWith); or sent by the
// proxy to a killed pod it names, between that pod's kill and its end.
func inFlight(evs []event, w cluster.Window) func(cluster.Failure) bool {
	ds := deaths(evs)
	return func(f cluster.Failure) bool {
		for _, d := range ds {
			if w.LostWith(f, d) {
				return true
			}
		}
		for _, ev := range evs {
			if u := f.Upstream(); u != "" {
				if gone, ok := ev.Gone[u]; ok && f.Start < gone.UnixNano() && f.End >= ev.Sent[u].UnixNano() {
					return true
				}
			}
		}
		return false
	}
}

// steeredAfterKill lists connections sent to the proxy although dialled
// after a daemon kill and before its restart.
func steeredAfterKill(evs []event, w cluster.Window) []cluster.Conn {
	var out []cluster.Conn
	for _, d := range deaths(evs) {
		out = append(out, w.SteeredAfter(d)...)
	}
	return out
}

// result is the report and the bounds it broke.
type result struct {
	text string
	errs []string
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
