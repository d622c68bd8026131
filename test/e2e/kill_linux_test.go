package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zonelb/zonelb/daemon"
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

// killRound is one death of the daemon under load.
type killRound struct {
	// before is just before the death was provoked; sent is the moment
	// from which no connect may be steered to the proxy (kill(2) has
	// returned: the hooks' mark is set inside it; the OOM killer's kill
	// has been seen; the panic began); reaped is when the process was
	// gone. A process can die (and reset its connections) before kill(2)
	// returns to the killer.
	before, sent, reaped time.Time
	kind                 string
	w                    cluster.Window
}

// crashKind is one way the daemon dies: die provokes it, waits until the
// process is gone and checks that it died that way.
type crashKind struct {
	name string
	n    int
	die  func(t *testing.T, d *cluster.Daemon) killRound
}

// sigkill: kill -9, as kubelet does after the grace period.
func sigkill(t *testing.T, d *cluster.Daemon) killRound {
	t.Helper()
	before := time.Now()
	if err := d.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r := killRound{before: before, sent: time.Now()}
	err := waitGone(t, d)
	if !netlab.KilledBySignal(err, syscall.SIGKILL) {
		t.Fatalf("daemon after SIGKILL: %v, want killed by it", err)
	}
	r.reaped = time.Now()
	return r
}

// oomKill moves the daemon into a memory cgroup of its own with a 64 MiB
// limit on what it allocates from then on, and has it allocate 1 GiB
// (/debug/fault/grow): the kernel's OOM killer SIGKILLs it. The request
// fails when the process dies (its sockets close after the kill), so its
// failure is a moment after the kill.
func oomKill(t *testing.T, d *cluster.Daemon) killRound {
	t.Helper()
	cg := newMemCgroup(t, d.Pid(), 64<<20)
	r := killRound{before: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := d.Post(ctx, "/debug/fault/grow?mib=1024"); err == nil {
		t.Fatalf("the daemon allocated 1 GiB inside a 64 MiB memory cgroup: %q", out)
	}
	r.sent = time.Now()
	err := waitGone(t, d)
	if !netlab.KilledBySignal(err, syscall.SIGKILL) {
		t.Fatalf("daemon after exceeding its memory cgroup: %v, want killed by SIGKILL", err)
	}
	r.reaped = time.Now()
	if n, err := cg.oomKills(); err != nil || n != 1 {
		t.Fatalf("memory cgroup OOM kills: %d (%v), want 1", n, err)
	}
	return r
}

// panicRound has the daemon panic (/debug/fault/panic): Go's crash path,
// a stack dump and exit status 2. The panic's message holds the moment it
// began (read back from the daemon's log), microseconds of the same
// goroutine before the runtime's crash path marks the owner exiting.
func panicRound(t *testing.T, d *cluster.Daemon) killRound {
	t.Helper()
	r := killRound{before: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The answer is written before the panic; the process may be gone
	// before it is read.
	d.Post(ctx, "/debug/fault/panic")
	err := waitGone(t, d)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("daemon after a panic: %v, want exit status 2", err)
	}
	r.reaped = time.Now()
	log, rerr := os.ReadFile(d.LogPath)
	m := panicRE.FindAllSubmatch(log, -1)
	if rerr != nil || len(m) == 0 {
		t.Fatalf("no %q in the daemon's log %s (%v)", daemon.PanicMarker, d.LogPath, rerr)
	}
	ns, _ := strconv.ParseInt(string(m[len(m)-1][1]), 10, 64)
	r.sent = time.Unix(0, ns)
	return r
}

var panicRE = regexp.MustCompile("panic: " + regexp.QuoteMeta(daemon.PanicMarker) + ` (\d+)`)

// waitGone waits until the daemon has exited and returns how.
func waitGone(t *testing.T, d *cluster.Daemon) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := d.Wait(ctx)
	if ctx.Err() != nil {
		t.Fatalf("daemon still running 30s after its death was provoked: %v", err)
	}
	return err
}

// death is the round as cluster.ProxyDeath: no successor runs while its
// clients do (the daemon is restarted after they stop).
func (r killRound) death() cluster.ProxyDeath {
	return cluster.ProxyDeath{Before: r.before, Sent: r.sent}
}

// steeredAfterKill lists connections the kernel sent to the proxy although
// they were dialled after the death began: what the hooks must never do.
func (r killRound) steeredAfterKill() []cluster.Conn { return r.w.SteeredAfter(r.death()) }

// inFlight: a failed call was lost with the killed proxy (see
// cluster.Window.LostWith). Only the client could retry those; the hooks'
// part is that no connection made after the death began reaches the dying
// proxy (steeredAfterKill), and every failure on such a connection counts
// as saveable.
func (r killRound) inFlight(f cluster.Failure) bool { return r.w.LostWith(f, r.death()) }

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

// TestDaemonKilledUnderLoad makes the zonelb daemon die under gRPC load in
// each way a node proxy dies, at seeded moments (ZONELB_E2E_SEED),
// restarting it each time: SIGKILL ZONELB_E2E_KILLS times (default 50), a
// real Go panic ZONELB_E2E_PANICS times (default 5) and a kernel OOM kill
// ZONELB_E2E_OOMS times (default 3). It joins the clients' failed calls
// with what the backends received: for each kind, no failed call may be
// saveable (never reached a backend, and not lost with a connection the
// proxy held when it died), and no connection dialled after the death
// began may reach the dying proxy. There is no time allowance after it.
func TestDaemonKilledUnderLoad(t *testing.T) {
	testenv.RequireRoot(t)
	kinds := []crashKind{
		{"SIGKILL", envInt(t, "ZONELB_E2E_KILLS", 50), sigkill},
		{"panic", envInt(t, "ZONELB_E2E_PANICS", 5), panicRound},
		{"OOM kill", envInt(t, "ZONELB_E2E_OOMS", 3), oomKill},
	}
	seed := envInt(t, "ZONELB_E2E_SEED", 1)
	rng := rand.New(rand.NewPCG(uint64(seed), 14))
	ctx := context.Background()
	c := cluster.UpForTest(t, cluster.Options{
		Logger:        testLogger(t),
		ZonelbBin:     cluster.ZonelbBin(t),
		Discovery:     cluster.DiscoveryFile, // the kill is the subject here, not discovery
		FaultTriggers: true,
	})
	d, err := c.StartDaemon(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var rounds []killRound
	for _, k := range kinds {
		for range k.n {
			// New connections now and then, so that connects race the death.
			cs, err := c.StartClients(ctx, cluster.Workload{Concurrency: 4, Rate: 300, RedialEvery: 10 + rng.IntN(40)})
			if err != nil {
				t.Fatal(err)
			}
			// The seeded moment, 100-600 ms into the load.
			time.Sleep(time.Duration(100+rng.IntN(500)) * time.Millisecond) // the schedule, not a synchronisation
			r := k.die(t, d)
			r.kind = k.name
			time.Sleep(time.Second) // load after the death, on the fail-open path
			if r.w, err = cs.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			if r.w.Failed > len(r.w.Failures) {
				t.Fatalf("%s %d: %d failures, only %d recorded: cannot tell which are saveable", k.name, len(rounds), r.w.Failed, len(r.w.Failures))
			}
			rounds = append(rounds, r)
			if d, err = c.StartDaemon(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	received, err := c.Received()
	if err != nil {
		t.Fatal(err)
	}
	type tally struct{ ok, failed, saveable int }
	byKind := map[string]*tally{}
	for _, k := range kinds {
		byKind[k.name] = &tally{}
	}
	for i, r := range rounds {
		n := byKind[r.kind]
		n.ok += r.w.OK
		n.failed += r.w.Failed
		for _, c := range r.steeredAfterKill() {
			t.Errorf("%s (round %d): connection %s dialled %+.3fms after the death began was steered to the dying proxy", r.kind, i, c.Local, float64(c.DialStart-r.sent.UnixNano())/1e6)
		}
		for _, f := range r.w.Failures {
			kind := "saveable"
			switch {
			case received[f.ID] != "":
				kind = "reached a backend"
			case r.inFlight(f):
				kind = "in flight on the killed proxy"
			default:
				n.saveable++
			}
			t.Logf("round %d (%s, began %+.3fms, reaped %+.3fms): %s: %s", i, r.kind, float64(r.before.Sub(r.sent).Microseconds())/1e3,
				float64(r.reaped.Sub(r.sent).Microseconds())/1e3, kind, r.describe(f))
		}
	}
	for _, k := range kinds {
		n := byKind[k.name]
		t.Logf("%d x %s: %d calls ok, %d failed, %d saveable", k.n, k.name, n.ok, n.failed, n.saveable)
		if n.saveable != 0 {
			t.Errorf("%s: %d saveable failed calls (never reached a backend, not in flight on the killed proxy)", k.name, n.saveable)
		}
	}
}

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
	c := cluster.UpForTest(t, cluster.Options{Logger: testLogger(t), ZonelbBin: cluster.ZonelbBin(t), Discovery: cluster.DiscoveryFile})
	if _, err := c.StartDaemon(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WarmUp(ctx, cluster.Workload{Concurrency: 4}, 0.99, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	local := c.BackendsIn(cluster.ClientZone)
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
			return f.OnKilledPod(gone)
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
