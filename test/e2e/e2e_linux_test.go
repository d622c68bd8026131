package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zonelb/zonelb/internal/cluster"
	"github.com/zonelb/zonelb/internal/testenv"
)

func TestMain(m *testing.M) { cluster.Main(m.Run) }

// testLogger writes the harness's log to the test log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// collect runs until the clients have made at least calls calls (or limit
// passes), then stops them and returns everything they saw.
func collect(t *testing.T, ctx context.Context, cs cluster.Clients, calls int, limit time.Duration) cluster.Window {
	t.Helper()
	var ws []cluster.Window
	deadline := time.Now().Add(limit)
	total := 0
	for total < calls && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond) // polling client processes, bounded by limit
		w, err := cs.Snapshot(ctx)
		if err != nil {
			t.Fatalf("snapshot: %v", err)
		}
		ws = append(ws, w)
		total += w.OK + w.Failed
	}
	last, err := cs.Stop(ctx)
	if err != nil {
		t.Fatalf("stop clients: %v", err)
	}
	all := cluster.Merge(append(ws, last)...)
	if all.OK+all.Failed < calls {
		t.Fatalf("only %d calls within %v (wanted %d)", all.OK+all.Failed, limit, calls)
	}
	return all
}

func describe(w cluster.Window) string {
	return fmt.Sprintf("ok=%d failed=%d dials=%d via-proxy=%d by-backend=%v by-zone=%v p50=%v p99=%v failures=%v",
		w.OK, w.Failed, w.Dials, w.ViaProxy, w.ByBackend, w.ByZone, w.Percentile(50), w.Percentile(99), firstFailures(w, 3))
}

func firstFailures(w cluster.Window, n int) []cluster.Failure {
	return w.Failures[:min(n, len(w.Failures))]
}

func run(t *testing.T, ctx context.Context, c *cluster.Cluster, w cluster.Workload, calls int) cluster.Window {
	t.Helper()
	cs, err := c.StartClients(ctx, w)
	if err != nil {
		t.Fatal(err)
	}
	res := collect(t, ctx, cs, calls, 60*time.Second)
	t.Logf("%s", describe(res))
	return res
}

// TestMiniCluster runs zonelb's end-to-end behaviour on one cluster, in
// order: the kube-proxy baselines, zonelb's per-request balancing and
// zone preference, spillover, failover, fail-open and a restart; then
// HAProxy in the node proxy's place (make bench-e2e's fourth mode).
func TestMiniCluster(t *testing.T) {
	testenv.RequireRoot(t)
	// ZONELB_E2E_DISCOVERY picks the source (auto, kubernetes, file); CI
	// builds the API server, so there it must be used.
	disc := os.Getenv("ZONELB_E2E_DISCOVERY")
	if disc == "" {
		disc = "auto"
		if testenv.InCI() {
			disc = cluster.DiscoveryKubernetes
		}
	}
	ctx := context.Background()
	c := cluster.UpForTest(t, cluster.Options{
		Logger:    testLogger(t),
		ZonelbBin: cluster.ZonelbBin(t),
		Discovery: disc,
	})
	t.Logf("discovery: %s", c.DiscoveryDetail)
	// A real Prometheus scrapes the daemon from here on (dashboard_linux_test.go,
	// alerts_linux_test.go).
	prom, promErr := c.StartPrometheus(ctx, cluster.PrometheusOptions{RuleFiles: []string{e2eRuleFile(t)}})
	if promErr != nil {
		if testenv.InCI() {
			t.Fatal(promErr)
		}
		t.Logf("no Prometheus: %v", promErr)
	}
	failedOpenDials := 0 // the clients' dials after the daemon was killed
	needProm := func(t *testing.T) {
		if promErr != nil {
			testenv.SkipOrFail(t, promErr.Error())
		}
	}

	t.Run("baseline/one connection goes to one endpoint", func(t *testing.T) {
		w := run(t, ctx, c, cluster.Workload{Concurrency: 4}, 200)
		if w.Failed != 0 || w.Dials != 1 || len(w.ByBackend) != 1 || w.ViaProxy != 0 {
			t.Errorf("want 1 connection, 1 backend, no failure, no proxy: %s", describe(w))
		}
	})
	t.Run("baseline/random endpoint per connection: about a third in zone", func(t *testing.T) {
		w := run(t, ctx, c, cluster.Workload{Concurrency: 2, RedialEvery: 1}, 300)
		share := w.Share(cluster.ClientZone)
		// 2 of 6 endpoints in zone: 1/3 expected; +-5 standard deviations
		// of a binomial over 300 connections.
		if w.Failed != 0 || share < 0.2 || share > 0.47 {
			t.Errorf("in-zone share %.2f, want about 1/3: %s", share, describe(w))
		}
	})
	t.Run("baseline/PreferSameZone keeps connections in zone", func(t *testing.T) {
		if err := c.SetBaseline(cluster.BaselinePreferSameZone); err != nil {
			t.Fatal(err)
		}
		defer c.SetBaseline(cluster.BaselineRandom)
		w := run(t, ctx, c, cluster.Workload{Concurrency: 2, RedialEvery: 1}, 200)
		if w.Failed != 0 || w.Share(cluster.ClientZone) != 1 {
			t.Errorf("want every call in zone: %s", describe(w))
		}
	})

	d, err := c.StartDaemon(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A fresh balancer probes the other zones to learn their latency
	// (up to one call in ten until it knows them); what zonelb promises
	// is the steady state after that.
	warm, err := c.WarmUp(ctx, cluster.Workload{Concurrency: 4}, 0.995, 30*time.Second)
	t.Logf("warm-up: %d windows, %s", len(warm), describe(cluster.Merge(warm...)))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("zonelb/one connection spreads per request and stays in zone", func(t *testing.T) {
		w := run(t, ctx, c, cluster.Workload{Concurrency: 4}, 600)
		if w.Failed != 0 || w.Dials != 1 || w.ViaProxy != w.OK {
			t.Errorf("want 1 connection, every call through the proxy, no failure: %s", describe(w))
		}
		if share := w.Share(cluster.ClientZone); share < 0.99 {
			t.Errorf("in-zone share %.3f, want >= 0.99: %s", share, describe(w))
		}
		for _, b := range c.Backends {
			if b.Zone == cluster.ClientZone && w.ByBackend[b.Name] < w.OK/5 {
				t.Errorf("backend %s got %d of %d calls over one connection: not spread: %s", b.Name, w.ByBackend[b.Name], w.OK, describe(w))
			}
		}
	})
	t.Run("zonelb/new connections stay in zone", func(t *testing.T) {
		w := run(t, ctx, c, cluster.Workload{Concurrency: 2, RedialEvery: 1}, 600)
		if w.Failed != 0 || w.ViaProxy != w.OK || w.Share(cluster.ClientZone) < 0.99 {
			t.Errorf("want every connection redirected and >= 99%% in zone: %s", describe(w))
		}
	})
	t.Run("zonelb/spills when zone a is overloaded", func(t *testing.T) {
		// Every backend takes 5ms a call; zone a's two pods then drop to
		// one call at a time (400 calls/s together) under 600 calls/s.
		cluster.SetLoads(t, ctx, c.Backends, cluster.BackendLoad{ServiceTime: cluster.Duration(5 * time.Millisecond)})
		defer cluster.SetLoads(t, ctx, c.Backends, cluster.BackendLoad{ServiceTime: cluster.Duration(time.Millisecond)})
		cs, err := c.StartClients(ctx, cluster.Workload{Concurrency: 64, Rate: 600})
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Stop(ctx)
		calm := cluster.Merge(timeline(t, ctx, cs, 2*time.Second)...)
		if calm.Failed != 0 || calm.Share(cluster.ClientZone) < 0.97 {
			t.Errorf("before the overload: want no failure and (almost) every call in zone: %s", describe(calm))
		}
		cluster.SetLoads(t, ctx, c.BackendsIn(cluster.ClientZone), cluster.BackendLoad{ServiceTime: cluster.Duration(5 * time.Millisecond), Capacity: 1})
		hot := cluster.Merge(timeline(t, ctx, cs, 5*time.Second)...)
		if hot.Failed != 0 {
			t.Errorf("calls failed under overload: %s", describe(hot))
		}
		if share := hot.Share(cluster.ClientZone); share > 0.8 || hot.ByZone[cluster.ClientZone] == 0 {
			t.Errorf("in-zone share %.2f under overload: want spillover to other zones while zone a keeps a share: %s", share, describe(hot))
		}
		st, err := d.State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Services) != 1 || len(st.Services[0].Balancer.Spill) == 0 || st.Services[0].Balancer.Spill[0].Flips == 0 {
			t.Errorf("the daemon's state shows no spillover: %+v", st.Services)
		}
	})
	t.Run("zonelb/dashboard: every panel on a real Prometheus shows what the clients saw", func(t *testing.T) {
		needProm(t)
		checkDashboard(t, ctx, c, prom)
	})
	t.Run("zonelb/fails over without a failed call when zone a's pods are deleted", func(t *testing.T) {
		cs, err := c.StartClients(ctx, cluster.Workload{Concurrency: 8, Rate: 400})
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Stop(ctx)
		before := timeline(t, ctx, cs, time.Second)
		// As Kubernetes deletes a pod: SIGTERM (the server sends GOAWAY,
		// finishes its calls, refuses new connections), and the endpoint
		// turns not-ready and terminating only afterwards, so the proxy
		// meets refused connections before discovery tells it.
		local := c.BackendsIn(cluster.ClientZone)
		var wg sync.WaitGroup
		for _, b := range local {
			wg.Add(1)
			go func() { defer wg.Done(); b.Terminate() }()
		}
		wg.Wait()
		if err := c.SetReady(ctx, false, local...); err != nil {
			t.Fatal(err)
		}
		after := timeline(t, ctx, cs, 2*time.Second)
		all := cluster.Merge(append(before, after...)...)
		if all.Failed != 0 {
			t.Errorf("calls failed while zone a's pods went away: %s", describe(all))
		}
		if gone := cluster.Merge(after[1:]...); gone.ByZone[cluster.ClientZone] != 0 || gone.OK == 0 {
			t.Errorf("calls still answered in zone a after its pods went: %s", describe(gone))
		}
		restoreZone(t, ctx, c, cs, local)
	})
	t.Run("zonelb/fails over when zone a's pods are killed: only calls in flight fail", func(t *testing.T) {
		cs, err := c.StartClients(ctx, cluster.Workload{Concurrency: 8, Rate: 400})
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Stop(ctx)
		before := timeline(t, ctx, cs, time.Second)
		local := c.BackendsIn(cluster.ClientZone)
		gone := map[string]time.Time{} // backend address -> its process reaped
		for _, b := range local {
			b.Kill()
			gone[b.Addr.String()] = time.Now()
		}
		killed := time.Now()
		after := timeline(t, ctx, cs, 2*time.Second)
		all := cluster.Merge(append(before, after...)...)
		// Not "at most the 8 calls in flight at the kill": a killed
		// process takes milliseconds to die and the two die one after the
		// other, while the client's 8 slots turn over and the proxy still
		// sends calls to a pod whose sockets are open (it cannot know; nor
		// could a client without zonelb). TestBackendsKilledUnderLoad
		// measured 12 such failures with 8 slots, all in flight. So: every
		// failed call reached a backend, or was sent to a killed pod that
		// the proxy names before that pod was gone; none after.
		received, err := c.Received()
		if err != nil {
			t.Fatal(err)
		}
		inFlight := func(f cluster.Failure) bool {
			return f.OnKilledPod(gone)
		}
		if all.Failed > len(all.Failures) || all.FailedSince(killed) != 0 {
			t.Errorf("want failures only among calls in flight at the kill; killed at %d: %s", killed.UnixNano(), describe(all))
		}
		for _, f := range cluster.Saveable(all.Failures, received, inFlight) {
			t.Errorf("saveable failed call (no backend received it, not in flight on a killed pod): %+v", f)
		}
		if gone := cluster.Merge(after[1:]...); gone.ByZone[cluster.ClientZone] != 0 || gone.Failed != 0 || gone.OK == 0 {
			t.Errorf("after the kill: want every call answered outside zone a: %s", describe(gone))
		}
		if err := c.SetReady(ctx, false, local...); err != nil {
			t.Fatal(err)
		}
		restoreZone(t, ctx, c, cs, local)
	})
	t.Run("zonelb/fail-open: daemon killed, no saveable failed call", func(t *testing.T) {
		cs, stopClients := c.StartClientsForTest(t, ctx, cluster.Workload{Concurrency: 4, Rate: 300})
		if promErr == nil {
			checkFailOpenQuiet(t, ctx, prom)
		}
		before := timeline(t, ctx, cs, time.Second)
		r := sigkill(t, d)
		after := timeline(t, ctx, cs, 3*time.Second)
		failedOpenDials = cluster.Merge(after...).Dials
		last, err := stopClients()
		if err != nil {
			t.Fatal(err)
		}
		r.w = cluster.Merge(append(append(before, after...), last)...)
		// The calls in flight on the proxy's connection die with it; the
		// client reconnects at once, and the connection goes to the
		// ClusterIP through kube-proxy's rules: the hooks stopped steering
		// to the proxy when the SIGKILL was delivered (docs/bpf.md,
		// "Fail-open"). No time allowance: every failed call must have
		// reached a backend or been in flight on the proxy.
		received, err := c.Received()
		if err != nil {
			t.Fatal(err)
		}
		if r.w.Failed > len(r.w.Failures) {
			t.Fatalf("%d failures, %d recorded: cannot classify them", r.w.Failed, len(r.w.Failures))
		}
		for _, f := range cluster.Saveable(r.w.Failures, received, r.inFlight) {
			t.Errorf("saveable failed call: %s", r.describe(f))
		}
		for _, c := range r.steeredAfterKill() {
			t.Errorf("connection %s dialled %+.3fms after the kill was steered to the dying proxy", c.Local, float64(c.DialStart-r.sent.UnixNano())/1e6)
		}
		if direct := cluster.Merge(after[4:]...); direct.OK == 0 || direct.ViaProxy != 0 || direct.Failed != 0 {
			t.Errorf("from 2s after the kill: want every call answered straight from the pod (the baseline path): %s", describe(direct))
		}
	})
	t.Run("zonelb/fail-open alert: fires once the killed daemon is back, ends after its hold", func(t *testing.T) {
		needProm(t)
		if _, err := c.StartDaemon(ctx); err != nil {
			t.Fatal(err)
		}
		checkFailOpenAfterRestart(t, ctx, prom, failedOpenDials)
	})
	t.Run("zonelb/restart without a failed call", func(t *testing.T) {
		d2 := c.Daemon()
		if d2 == nil || d2.Exited() {
			var err error
			if d2, err = c.StartDaemon(ctx); err != nil {
				t.Fatal(err)
			}
		}
		// New connections every 50 calls, so traffic returns to the
		// restarted proxy.
		cs, err := c.StartClients(ctx, cluster.Workload{Concurrency: 4, Rate: 300, RedialEvery: 50})
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Stop(ctx)
		ws := timeline(t, ctx, cs, time.Second)
		if err := d2.Stop(); err != nil {
			t.Fatal(err)
		}
		ws = append(ws, timeline(t, ctx, cs, time.Second)...)
		if _, err := c.StartDaemon(ctx); err != nil {
			t.Fatal(err)
		}
		after := timeline(t, ctx, cs, 1500*time.Millisecond)
		all := cluster.Merge(append(ws, after...)...)
		if all.Failed != 0 {
			t.Errorf("calls failed across the restart: %s", describe(all))
		}
		if last := after[len(after)-1]; last.ViaProxy != last.OK || last.OK == 0 {
			t.Errorf("after the restart: want calls through the new proxy: %s", describe(last))
		}
	})
	// make bench-e2e's fourth mode: HAProxy in zonelb's place behind the
	// same eBPF hooks.
	t.Run("haproxy/node proxy behind the same hooks: round robin over every endpoint, fails open when stopped", func(t *testing.T) {
		if _, err := exec.LookPath("haproxy"); err != nil {
			testenv.SkipOrFail(t, "haproxy not installed (make test-deps and make bench-e2e install it)")
		}
		if d := c.Daemon(); d != nil && !d.Exited() {
			if err := d.Stop(); err != nil {
				t.Fatal(err)
			}
		}
		h, err := c.StartHAProxy(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Stop()
		ph, err := c.RunPhase(ctx, "haproxy", cluster.Workload{Concurrency: 4, Rate: 300}, 2*time.Second, 500*time.Millisecond, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		w := ph.Window
		t.Logf("%s; HAProxy CPU %v", describe(w), ph.ProxyCPU)
		if w.OK < 60 || w.Failed != 0 || w.Dials != 1 || w.ViaProxy != w.OK {
			t.Errorf("want 1 connection, every call through HAProxy, no failure: %s", describe(w))
		}
		for _, b := range c.Backends {
			if w.ByBackend[b.Name] < w.OK/12 {
				t.Errorf("backend %s got %d of %d calls: round robin spreads over every endpoint of every zone: %s", b.Name, w.ByBackend[b.Name], w.OK, describe(w))
			}
		}
		if ph.ProxyCPU <= 0 {
			t.Errorf("HAProxy's CPU over the phase: %v, want > 0 (read from its pid)", ph.ProxyCPU)
		}
		if err := h.Stop(); err != nil {
			t.Fatal(err)
		}
		// Its listener closed with it: new connections go to the ClusterIP
		// as if no node proxy were there (kube-proxy's rules).
		w = run(t, ctx, c, cluster.Workload{Concurrency: 2, RedialEvery: 1}, 100)
		if w.Failed != 0 || w.ViaProxy != 0 {
			t.Errorf("after HAProxy stopped: want every call straight to a pod, none failed: %s", describe(w))
		}
		// zonelb takes the node proxy's place again.
		if _, err := c.StartDaemon(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// restoreZone restarts zone a's backends, marks them ready and waits until
// the clients' calls are back in zone a (slow start and ejection backoff
// take a while).
func restoreZone(t *testing.T, ctx context.Context, c *cluster.Cluster, cs cluster.Clients, local []*cluster.Backend) {
	t.Helper()
	for _, b := range local {
		if err := b.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.SetReady(ctx, true, local...); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		w := cluster.Merge(timeline(t, ctx, cs, time.Second)...)
		if w.Share(cluster.ClientZone) >= 0.9 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("calls did not come back to zone a within 30s: %s", describe(w))
		}
	}
}

// timeline snapshots the clients every half second for d and logs each
// window.
func timeline(t *testing.T, ctx context.Context, cs cluster.Clients, d time.Duration) []cluster.Window {
	t.Helper()
	var ws []cluster.Window
	for end := time.Now().Add(d); time.Now().Before(end); {
		time.Sleep(500 * time.Millisecond) // sampling a running workload
		w, err := cs.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("window: rate=%.0f/s in-zone=%.2f %s", w.Rate(), w.Share(cluster.ClientZone), describe(w))
		ws = append(ws, w)
	}
	return ws
}
