package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zonelb/zonelb/internal/cluster"
	"github.com/zonelb/zonelb/internal/netlab"
	"github.com/zonelb/zonelb/internal/testenv"
)

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return n
}

// killRound is one SIGKILL of the daemon under load.
type killRound struct {
	// before is just before kill(2), sent when it had returned (the
	// hooks' mark is set inside it), reaped when the process was gone. A
	// process can die (and reset its connections) before kill(2) returns
	// to the killer.
	before, sent, reaped time.Time
	sig                  syscall.Signal
	w                    cluster.Window
}

// kill sends the daemon sig (SIGKILL; or SIGQUIT, on which the Go runtime
// takes its fatal-error path, as for an unrecovered panic: it prints every
// goroutine and exits with status 2) and waits for it to be gone.
func kill(t *testing.T, d *cluster.Daemon, sig syscall.Signal) killRound {
	t.Helper()
	before := time.Now()
	if err := d.Signal(sig); err != nil {
		t.Fatal(err)
	}
	r := killRound{before: before, sent: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := d.Wait(ctx)
	var ee *exec.ExitError
	if err == nil || (!netlab.KilledBySignal(err, syscall.SIGKILL) && !errors.As(err, &ee)) {
		t.Fatalf("daemon after %v: %v, want it dead", sig, err)
	}
	r.reaped = time.Now()
	return r
}

// steeredAfterKill lists connections the kernel sent to the proxy although
// they were dialled after the kill: what the hooks must never do.
func (r killRound) steeredAfterKill() []cluster.Conn {
	var out []cluster.Conn
	for _, c := range r.w.Conns {
		if mayBeProxied(c) && c.DialStart >= r.sent.UnixNano() {
			out = append(out, c)
		}
	}
	return out
}

// inFlight: a failed call is lost with the killed proxy when it went out
// on, or failed with, a connection that a connect begun before the kill
// steered to the proxy, and that broke with it. That covers the calls in
// flight on the proxy, a connection still being set up on it (the proxy
// had not yet answered its HTTP/2 preface: grpc-go then fails calls fast
// until its backoff ends or the channel is replaced), and calls the client
// put on the proxy's connection in the instant between the reset's arrival
// and grpc-go closing the transport. Only the client could retry those;
// the hooks' part is that no connection made after the kill reaches the
// dying proxy (steeredAfterKill), and every failure on such a connection
// counts as saveable.
func (r killRound) inFlight(f cluster.Failure) bool {
	c, ok := r.w.ConnOf(f)
	return ok && mayBeProxied(c) && c.DialStart < r.sent.UnixNano() && c.Broken >= r.before.UnixNano()
}

// mayBeProxied: the connection went to the proxy, or its destination is
// unknown because it was reset before the client could read it from
// /proc/net/tcp (a reset socket leaves the table), which only the dying
// proxy does here: the backends live.
func mayBeProxied(c cluster.Conn) bool { return c.Redirected() || c.Remote == "" }

func (r killRound) describe(f cluster.Failure) string {
	ms := func(ns int64) string {
		if ns == 0 {
			return "-"
		}
		return fmt.Sprintf("%+.3fms", float64(ns-r.sent.UnixNano())/1e6)
	}
	s := fmt.Sprintf("call %s start=%s end=%s code=%s msg=%q", f.ID, ms(f.Start), ms(f.End), f.Code, f.Msg)
	if c, ok := r.w.ConnOf(f); ok {
		s += fmt.Sprintf(" conn %s->%s dialed=%s established=%s broken=%s err=%q", c.Local, c.Remote, ms(c.DialStart), ms(c.Established), ms(c.Broken), c.Err)
	} else {
		s += " (no connection)"
	}
	return s
}

// TestDaemonKilledUnderLoad SIGKILLs the zonelb daemon under gRPC load
// ZONELB_E2E_KILLS times (default 50), then crashes it
// ZONELB_E2E_CRASHES times (default 5) with SIGQUIT (the Go runtime's
// fatal path, as a panic takes), at seeded moments (ZONELB_E2E_SEED),
// restarting it each time, and joins the clients' failed calls with what
// the backends received: no failed call may be saveable (never reached a
// backend, and not lost with a connection the proxy held when it died),
// and no connection dialled after the signal may reach the dying proxy.
// There is no time allowance after the kill.
func TestDaemonKilledUnderLoad(t *testing.T) {
	testenv.RequireRoot(t)
	kills := envInt(t, "ZONELB_E2E_KILLS", 50)
	crashes := envInt(t, "ZONELB_E2E_CRASHES", 5)
	seed := envInt(t, "ZONELB_E2E_SEED", 1)
	rng := rand.New(rand.NewPCG(uint64(seed), 14))
	ctx := context.Background()
	c, err := cluster.Up(ctx, cluster.Options{
		Logger:    testLogger(t),
		ZonelbBin: zonelbBin(t),
		Discovery: cluster.DiscoveryFile, // the kill is the subject here, not discovery
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon log:\n%s", cluster.Tail(filepath.Join(c.WorkDir(), "zonelb-node-a.log"), 40))
		}
		if err := c.Close(); err != nil {
			t.Errorf("tear down: %v", err)
		}
	})
	d, err := c.StartDaemon(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var rounds []killRound
	totalOK, totalFailed := 0, 0
	for i := range kills + crashes {
		sig := syscall.SIGKILL
		if i >= kills {
			sig = syscall.SIGQUIT
		}
		// New connections now and then, so that connects race the kill.
		cs, err := c.StartClients(ctx, cluster.Workload{Concurrency: 4, Rate: 300, RedialEvery: 10 + rng.IntN(40)})
		if err != nil {
			t.Fatal(err)
		}
		// The seeded moment of the kill, 100-600 ms into the load.
		time.Sleep(time.Duration(100+rng.IntN(500)) * time.Millisecond) // the schedule, not a synchronisation
		r := kill(t, d, sig)
		r.sig = sig
		time.Sleep(time.Second) // load after the kill, on the fail-open path
		r.w, err = cs.Stop(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rounds = append(rounds, r)
		totalOK += r.w.OK
		totalFailed += r.w.Failed
		if r.w.Failed > len(r.w.Failures) {
			t.Fatalf("kill %d: %d failures, only %d recorded: cannot tell which are saveable", i, r.w.Failed, len(r.w.Failures))
		}
		if d, err = c.StartDaemon(ctx); err != nil {
			t.Fatal(err)
		}
	}
	received, err := c.Received()
	if err != nil {
		t.Fatal(err)
	}
	saveable := 0
	for i, r := range rounds {
		for _, c := range r.steeredAfterKill() {
			t.Errorf("kill %d: connection %s dialled %+.3fms after the kill was steered to the dying proxy", i, c.Local, float64(c.DialStart-r.sent.UnixNano())/1e6)
		}
		for _, f := range r.w.Failures {
			_, got := received[f.ID]
			kind := "saveable"
			switch {
			case got:
				kind = "reached a backend"
			case r.inFlight(f):
				kind = "in flight on the killed proxy"
			default:
				saveable++
			}
			t.Logf("kill %d (%v, reaped %+.3fms): %s: %s", i, r.sig, float64(r.reaped.Sub(r.sent).Microseconds())/1e3, kind, r.describe(f))
		}
	}
	t.Logf("%d SIGKILLs and %d SIGQUITs: %d calls ok, %d failed, %d saveable", kills, crashes, totalOK, totalFailed, saveable)
	if saveable != 0 {
		t.Errorf("%d saveable failed calls (never reached a backend, not in flight on the killed proxy)", saveable)
	}
}

// upstreamRE finds the endpoint the node proxy names in a failure.
var upstreamRE = regexp.MustCompile(`upstream (\d+\.\d+\.\d+\.\d+:\d+)`)

// TestBackendsKilledUnderLoad SIGKILLs zone a's two backend pods under load
// through zonelb, ZONELB_E2E_POD_KILLS times (default 5), and joins the
// failed calls with what the backends received. A failed call is in flight
// on a killed pod when the proxy names that pod's address in the error and
// the call started before the pod's process was gone (reaped): a killed
// process takes milliseconds to die, and until its sockets close it still
// takes in what is sent to it, as it would from a client without zonelb.
// Every other failed call that no backend received is saveable, and there
// must be none.
func TestBackendsKilledUnderLoad(t *testing.T) {
	testenv.RequireRoot(t)
	rounds := envInt(t, "ZONELB_E2E_POD_KILLS", 5)
	seed := envInt(t, "ZONELB_E2E_SEED", 1)
	rng := rand.New(rand.NewPCG(uint64(seed), 15))
	ctx := context.Background()
	c, err := cluster.Up(ctx, cluster.Options{Logger: testLogger(t), ZonelbBin: zonelbBin(t), Discovery: cluster.DiscoveryFile})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("tear down: %v", err)
		}
	})
	if _, err := c.StartDaemon(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WarmUp(ctx, cluster.Workload{Concurrency: 4}, 0.99, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	local := zoneBackends(c, cluster.ClientZone)
	saveable, failed, ok := 0, 0, 0
	for i := range rounds {
		cs, err := c.StartClients(ctx, cluster.Workload{Concurrency: 8, Rate: 400})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(300+rng.IntN(500)) * time.Millisecond) // the schedule, not a synchronisation
		killed := map[string]time.Time{}                                // backend address -> kill sent
		gone := map[string]time.Time{}                                  // backend address -> reaped
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, b := range local {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sent := time.Now()
				b.Kill()
				mu.Lock()
				killed[b.Addr.String()], gone[b.Addr.String()] = sent, time.Now()
				mu.Unlock()
			}()
		}
		wg.Wait()
		time.Sleep(1500 * time.Millisecond) // load after the kill
		w, err := cs.Stop(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if w.Failed > len(w.Failures) {
			t.Fatalf("round %d: %d failures, %d recorded", i, w.Failed, len(w.Failures))
		}
		received, err := c.Received()
		if err != nil {
			t.Fatal(err)
		}
		first := time.Now()
		for _, at := range killed {
			if at.Before(first) {
				first = at
			}
		}
		inFlight := func(f cluster.Failure) bool {
			m := upstreamRE.FindStringSubmatch(f.Msg)
			if m == nil {
				return false
			}
			at, ok := gone[m[1]]
			return ok && f.Start < at.UnixNano()
		}
		for _, f := range w.Failures {
			kind := "saveable"
			switch {
			case received[f.ID] != "":
				kind = "reached " + received[f.ID]
			case inFlight(f):
				kind = "in flight on a killed pod"
			default:
				saveable++
			}
			t.Logf("round %d: %s: call %s start=%+.3fms end=%+.3fms %s %q", i, kind, f.ID,
				float64(f.Start-first.UnixNano())/1e6, float64(f.End-first.UnixNano())/1e6, f.Code, f.Msg)
		}
		failed += w.Failed
		ok += w.OK
		for _, b := range local {
			if err := b.Start(ctx); err != nil {
				t.Fatal(err)
			}
		}
		// Back in zone a before the next round (ejection backoff).
		if _, err := c.WarmUp(ctx, cluster.Workload{Concurrency: 4}, 0.95, 60*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d rounds: %d calls ok, %d failed, %d saveable", rounds, ok, failed, saveable)
	if saveable != 0 {
		t.Errorf("%d saveable failed calls", saveable)
	}
}
