package bpf

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/zonelb/zonelb/internal/testenv"
)

func (c *child) waitReady(t testing.TB) {
	t.Helper()
	line := make(chan string, 1)
	go func() {
		s, _ := c.stdout.ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		if strings.TrimSpace(s) != "ready" {
			t.Fatalf("helper said %q, stderr: %s", s, c.stderr.String())
		}
	case <-time.After(30 * time.Second): // a proxy filling a ballast on a loaded machine
		t.Fatalf("helper not ready after 30s, stderr: %s", c.stderr.String())
	}
}

func TestFailOpenWhenProxyKilled(t *testing.T) {
	e := newTestEnv(t)
	r, svc := e.loadSelecting()
	cfg := e.cfg
	wantProxy := fmt.Sprintf("proxy %s %d false", svc, svcID4)

	startProxy := func() *child {
		p := startChild(t, "proxy", nil, e.node, helperArgs{Config: &cfg, Listen: proxy4.String()})
		p.waitReady(t)
		return p
	}
	expectAll := func(prefix string, n int) {
		t.Helper()
		for i, res := range e.runClient(e.pod1, helperArgs{Dst: svc.String(), Network: "tcp4", Count: n}) {
			if res.Err != "" || !strings.HasPrefix(res.Reply, prefix) {
				t.Fatalf("connection %d: reply %q err %q, want %q", i, res.Reply, res.Err, prefix)
			}
		}
	}

	p := startProxy()
	expectAll(wantProxy, 20)

	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil { // our own child, by pid
		t.Fatal(err)
	}
	killed := time.Now()
	p.cmd.Wait()

	// New connections must reach the original destination within a
	// second; the kernel dropped the SOCKMAP entry when the socket died.
	attempts := 0
	for {
		attempts++
		res := e.runClient(e.pod1, helperArgs{Dst: svc.String(), Network: "tcp4"})[0]
		if res.Err == "" && strings.HasPrefix(res.Reply, "backend ") {
			break
		}
		if time.Since(killed) > time.Second {
			t.Fatalf("still not reaching the backend %v after SIGKILL (last reply %q err %q)", time.Since(killed), res.Reply, res.Err)
		}
	}
	t.Logf("first connection after SIGKILL reached the backend on attempt %d, %v after the kill", attempts, time.Since(killed))
	if v4, _, err := r.ListenersUp(); err != nil || v4 {
		t.Errorf("listener still registered after the proxy died (up=%v err=%v)", v4, err)
	}
	expectAll("backend ", 20)
	if c, _ := r.Counters(); c.SkipProxyDown == 0 {
		t.Errorf("proxy_down counter did not move: %+v", c)
	}

	startProxy()
	expectAll(wantProxy, 20)
}

// TestKilledProxyIsNeverRedirectedTo SIGKILLs a proxy process while
// clients connect, and checks that no connect begun after the kill was
// sent fails: none is steered to the dying listener. The kernel keeps a
// killed process's listener in the SOCKMAP until the very end of its exit
// (its memory is freed first; the proxy holds a 1 GiB heap so that this
// takes a while), and closes its accepted connections before its
// listener. Two kinds of client meet that window: loop clients, which
// reconnect the instant their connection to the dying proxy is reset (as
// gRPC clients do), and a one-shot client started right after the kill,
// whose connects land while the process frees its memory. Without the
// owner's exit mark both are accepted by the dying listener, then reset.
func TestKilledProxyIsNeverRedirectedTo(t *testing.T) {
	e := newTestEnv(t)
	r, svc := e.loadSelecting()
	cfg := e.cfg
	p := startChild(t, "proxy", nil, e.node, helperArgs{Config: &cfg, Listen: proxy4.String(), Ballast: 1024})
	p.waitReady(t)
	if v4, _, err := r.ListenersUp(); err != nil || !v4 {
		t.Fatalf("listener not up after registration (up=%v err=%v)", v4, err)
	}
	var loops []*child
	for range 4 {
		loops = append(loops, startChild(t, "loop-client", e.cgFD, e.pod1, helperArgs{Dst: svc.String(), Network: "tcp4", Loop: 60 * time.Second}))
	}
	before := waitForRedirects(t, r, "connections through the proxy", 100)

	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil { // our own child, by pid
		t.Fatal(err)
	}
	sent := time.Now() // kill(2) has returned: the owner is marked
	oneShot := e.runClient(e.pod1, helperArgs{Dst: svc.String(), Network: "tcp4", Count: 10})
	_, err := os.Stat(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid))
	exitingAfterOneShot := err == nil // its files are not closed yet
	p.cmd.Wait()
	reaped := time.Since(sent)
	atKill, err := r.Counters()
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "connections failing open", func() bool {
		c, err := r.Counters()
		return err == nil && c.SkipProxyDown >= atKill.SkipProxyDown+100
	})
	failures := stopLoops(t, loops)
	c, err := r.Counters()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("reaped %v after the kill; proxy_exiting=%d proxy_exits=%d; one-shot client done while the proxy was still exiting: %v",
		reaped, c.SkipProxyExiting-before.SkipProxyExiting, c.ProxyExits-before.ProxyExits, exitingAfterOneShot)
	for _, f := range failures {
		at := time.Duration(f.Start - sent.UnixNano())
		if at >= 0 {
			t.Errorf("connection begun %v after the kill failed: %s", at, f.Err)
		} else {
			t.Logf("connection begun %v before the kill failed (in flight on the killed proxy): %s", -at, f.Err)
		}
	}
	for i, res := range oneShot {
		if res.Err != "" || !strings.HasPrefix(res.Reply, "backend ") {
			t.Errorf("connection %d begun after the kill: reply %q err %q, want the backend (failed open)", i, res.Reply, res.Err)
		}
	}
	if !exitingAfterOneShot {
		t.Errorf("the proxy had closed its files before the one-shot client finished: the exit window was not exercised (exit took %v)", reaped)
	}
	if c.ProxyExits != before.ProxyExits+1 {
		t.Errorf("proxy_exits moved by %d, want 1: the kill was not seen", c.ProxyExits-before.ProxyExits)
	}
	if v4, _, err := r.ListenersUp(); err != nil || v4 {
		t.Errorf("listener reported up after its process died (up=%v err=%v)", v4, err)
	}
	// A new proxy claims the slot again: redirection resumes.
	p2 := startChild(t, "proxy", nil, e.node, helperArgs{Config: &cfg, Listen: proxy4.String()})
	p2.waitReady(t)
	for i, res := range e.runClient(e.pod1, helperArgs{Dst: svc.String(), Network: "tcp4", Count: 20}) {
		if res.Err != "" || !strings.HasPrefix(res.Reply, "proxy ") {
			t.Fatalf("after the restart, connection %d: reply %q err %q, want the proxy", i, res.Reply, res.Err)
		}
	}
}

// pinnedIDs reads the ids of every pinned link and map in dir.
func pinnedIDs(t testing.TB, dir string) (links []link.ID, maps []ebpf.MapID) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read pins: %v", err)
	}
	for _, ent := range entries {
		path := filepath.Join(dir, ent.Name())
		if strings.HasPrefix(ent.Name(), "prog_") {
			continue
		}
		if slices.ContainsFunc(exitWatch, func(p string) bool { return ent.Name() == linkPinName(p) }) {
			continue // tracing links are replaced on every load (no in-place update)
		}
		if strings.HasPrefix(ent.Name(), "link_") {
			l, err := link.LoadPinnedLink(path, nil)
			if err != nil {
				t.Fatalf("open %s: %v", path, err)
			}
			info, err := l.Info()
			l.Close()
			if err != nil {
				t.Fatalf("info %s: %v", path, err)
			}
			links = append(links, info.ID)
			continue
		}
		m, err := ebpf.LoadPinnedMap(path, nil)
		if err != nil {
			t.Fatalf("open %s: %v", path, err)
		}
		info, err := m.Info()
		m.Close()
		if err != nil {
			t.Fatalf("info %s: %v", path, err)
		}
		id, _ := info.ID()
		maps = append(maps, id)
	}
	return links, maps
}

// changedPrograms makes every program differ from the shipped one (a
// leading "r0 = 0"), standing in for a new zonelb version.
func changedPrograms(spec *ebpf.CollectionSpec) error {
	for name, p := range spec.Programs {
		first := p.Instructions[0]
		if first.IsLoadFromMap() || first.IsFunctionCall() || first.Reference() != "" {
			return fmt.Errorf("program %s starts with a reference; cannot prepend", name)
		}
		nop := asm.Mov.Imm(asm.R0, 0).WithMetadata(first.Metadata)
		first = first.WithMetadata(asm.Metadata{})
		p.Instructions = append(asm.Instructions{nop, first}, p.Instructions[1:]...)
	}
	return nil
}

func progTag(t testing.TB, id ebpf.ProgramID) string {
	t.Helper()
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		t.Fatalf("program %d: %v", id, err)
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		t.Fatalf("program %d info: %v", id, err)
	}
	return info.Tag
}

// proxyHandle is the test proxy's handle on the pins, swapped as the
// agent restarts (in production the proxy owns its handle; here it shares
// the agent's). A swap waits for the lookups on the old handle to end, so
// that closing that handle right after cannot fail one: without it a
// connection whose lookup loaded r1 just before the swap read "bpf
// redirector is closed" (seen once in a clean-clone CI run).
type proxyHandle struct {
	mu sync.RWMutex
	r  *Redirector
}

func (h *proxyHandle) reply(c net.Conn) string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return proxyReply(h.r, c)
}

func (h *proxyHandle) swap(r *Redirector) {
	h.mu.Lock()
	h.r = r
	h.mu.Unlock()
}

func TestRestartUpgradeUninstall(t *testing.T) {
	e := newTestEnv(t)
	r1, svc := e.loadSelecting()
	current := &proxyHandle{r: r1}
	e.startProxyWith(r1, current.reply)
	links1, maps1 := pinnedIDs(t, e.cfg.PinDir)
	prog1 := r1.progIDs[zonelbProgZlbConnect4]

	loop := startChild(t, "loop-client", e.cgFD, e.pod1, helperArgs{Dst: svc.String(), Network: "tcp4", Loop: 60 * time.Second})
	waitForRedirects(t, r1, "connections before the restart", 50)

	// Restart: the agent goes away and comes back; pins are reused. The
	// proxy switches to its own handle on the pins first (in production it
	// owns one; here it shares the agent's).
	gap := mustOpen(t, e.cfg)
	current.swap(gap)
	if err := r1.Close(); err != nil {
		t.Fatal(err)
	}
	waitForRedirects(t, gap, "connections with no agent running", 50)
	r2, err := load(e.cfg, loadOptions{})
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	t.Cleanup(func() { r2.Close() })
	current.swap(r2)
	// Old handles are closed only after the loop: a proxy goroutine may
	// still be using the handle it loaded a moment ago (a real proxy owns
	// its handle; this swap exists only in the test).
	if got, err := r2.Services(); err != nil || got[svc] != svcID4 {
		t.Errorf("services after restart: %v (err %v), want %v -> %d kept from the pins", got, err, svc, svcID4)
	}
	links2, maps2 := pinnedIDs(t, e.cfg.PinDir)
	if fmt.Sprint(links1) != fmt.Sprint(links2) || fmt.Sprint(maps1) != fmt.Sprint(maps2) {
		t.Errorf("restart did not reuse pinned state: links %v -> %v, maps %v -> %v", links1, links2, maps1, maps2)
	}
	prog2 := r2.progIDs[zonelbProgZlbConnect4]
	if prog2 == prog1 {
		t.Errorf("restart kept program %d; want the new load behind the old link", prog1)
	}
	tag2 := progTag(t, prog2)
	waitForRedirects(t, r2, "connections after the restart", 50)

	// Upgrade: a changed program replaces the old one behind the same link.
	r3, err := load(e.cfg, loadOptions{specHook: changedPrograms})
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	t.Cleanup(func() { r3.Close() })
	current.swap(r3)
	links3, _ := pinnedIDs(t, e.cfg.PinDir)
	prog3 := r3.progIDs[zonelbProgZlbConnect4]
	if fmt.Sprint(links3) != fmt.Sprint(links1) {
		t.Errorf("upgrade replaced links %v with %v; want an in-place program update", links1, links3)
	}
	if tag3 := progTag(t, prog3); tag2 == tag3 {
		t.Errorf("upgraded program has the old tag %s", tag2)
	}
	waitForRedirects(t, r3, "connections after the upgrade", 50)

	expectLoopThroughProxy(t, loop)

	// Uninstall leaves nothing behind.
	gap.Close()
	r2.Close()
	r3.Close()
	if err := Uninstall(e.cfg); err != nil {
		t.Fatalf("uninstall: %v", err)
	}
	e.expectUninstalled(svc, links1, maps1, []ebpf.ProgramID{prog1, prog2, prog3})
}

// loadSelecting loads the programs, selects the IPv4 service, enrolls
// pod1 and starts the backends: the start of every lifecycle test.
func (e *testEnv) loadSelecting() (*Redirector, netip.AddrPort) {
	t := e.t
	t.Helper()
	r := e.load(loadOptions{})
	svc := netip.AddrPortFrom(vip4, servicePort)
	if err := r.SetService(svc, svcID4); err != nil {
		t.Fatal(err)
	}
	if err := r.EnrollNetns(e.cookie(e.pod1)); err != nil {
		t.Fatal(err)
	}
	e.startBackends()
	return r, svc
}

// waitForRedirects waits for n more redirected connections on r and
// returns the counters it started from.
func waitForRedirects(t *testing.T, r *Redirector, what string, n uint64) Counters {
	t.Helper()
	start, err := r.Counters()
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, what, func() bool {
		c, err := r.Counters()
		return err == nil && c.Redirected >= start.Redirected+n
	})
	return start
}

// stopLoops stops the loop clients and returns every failure they
// recorded.
func stopLoops(t *testing.T, loops []*child) []loopFailure {
	t.Helper()
	var failures []loopFailure
	for _, loop := range loops {
		if err := loop.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		var sum loopSummary
		if err := json.Unmarshal(loop.wait(t, 10*time.Second), &sum); err != nil {
			t.Fatalf("loop summary: %v", err)
		}
		t.Logf("loop client: ok=%d failed=%d replies=%v", sum.OK, sum.Failed, sum.Replies)
		if sum.Failed > len(sum.Failures) {
			t.Fatalf("%d failures, only %d recorded", sum.Failed, len(sum.Failures))
		}
		failures = append(failures, sum.Failures...)
	}
	return failures
}

// expectLoopThroughProxy stops the loop client and checks that every one
// of its connections succeeded through the proxy.
func expectLoopThroughProxy(t *testing.T, loop *child) {
	t.Helper()
	if err := loop.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var sum loopSummary
	if err := json.Unmarshal(loop.wait(t, 10*time.Second), &sum); err != nil {
		t.Fatalf("loop summary: %v", err)
	}
	t.Logf("loop client across restart and upgrade: %+v", sum)
	if sum.Failed != 0 || sum.Replies["proxy"] != sum.OK {
		t.Errorf("connections failed or missed the proxy across restart/upgrade: %+v", sum)
	}
}

// expectUninstalled checks that Uninstall left nothing behind: pins,
// links, programs, maps, cgroup attachments, the interface; and that
// connections to svc go straight to the backend.
func (e *testEnv) expectUninstalled(svc netip.AddrPort, links []link.ID, maps []ebpf.MapID, progIDs []ebpf.ProgramID) {
	t := e.t
	t.Helper()
	if _, err := os.Stat(e.cfg.PinDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin dir still there: %v", err)
	}
	for _, id := range links {
		if l, err := link.NewFromID(id); err == nil {
			l.Close()
			t.Errorf("link %d survived uninstall", id)
		}
	}
	testenv.WaitFor(t, 10*time.Second, "programs and maps to be freed", func() bool {
		for _, id := range progIDs {
			if p, err := ebpf.NewProgramFromID(id); err == nil {
				p.Close()
				return false
			}
		}
		for _, id := range maps {
			if m, err := ebpf.NewMapFromID(id); err == nil {
				m.Close()
				return false
			}
		}
		return true
	})
	cg, err := os.Open(e.cgroup)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	for _, hook := range cgroupHooks {
		q, err := link.QueryPrograms(link.QueryOptions{Target: int(cg.Fd()), Attach: hook.attach})
		if err != nil {
			t.Fatalf("query %s: %v", hook.prog, err)
		}
		if len(q.Programs) != 0 {
			t.Errorf("cgroup still has %d %s programs", len(q.Programs), hook.prog)
		}
	}
	if ok, err := nodeAddrExists(e.cfg); err != nil || ok {
		t.Errorf("interface %s still present (err %v)", e.cfg.Interface, err)
	}
	// And connections now go straight to their destination.
	res := e.runClient(e.pod1, helperArgs{Dst: svc.String(), Network: "tcp4"})[0]
	if !strings.HasPrefix(res.Reply, "backend ") {
		t.Errorf("after uninstall: reply %q err %q, want the backend", res.Reply, res.Err)
	}
}

func mustOpen(t testing.TB, cfg Config) *Redirector {
	t.Helper()
	r, err := Open(cfg)
	if err != nil {
		t.Fatalf("open pins: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestCrashingProxyIsNotRedirectedTo has a proxy process panic while the
// Go runtime cannot finish its crash report (its stderr is a full pipe):
// the process is alive, its listener open and registered, and it will
// never accept again. The owner must be marked exiting from the moment
// the runtime began to crash (the uprobe on runtime.startpanic_m), not
// only at its exit: connects fail open while it is stuck. Then the
// report drains and the process exits with the panic's status 2.
func TestCrashingProxyIsNotRedirectedTo(t *testing.T) {
	e := newTestEnv(t)
	r, svc := e.loadSelecting()
	cfg := e.cfg
	p := startChild(t, "proxy", nil, e.node, helperArgs{Config: &cfg, Listen: proxy4.String(), Crash: true})
	p.waitReady(t)
	if v4, _, err := r.ListenersUp(); err != nil || !v4 {
		t.Fatalf("listener not up after registration (up=%v err=%v)", v4, err)
	}
	before, err := r.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(p.stdin, "crash\n"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the crashing proxy's listener marked exiting", func() bool {
		v4, _, err := r.ListenersUp()
		return err == nil && !v4
	})
	if _, err := os.Stat(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid)); err != nil {
		t.Fatalf("the proxy exited before its crash report was read (%v): the crash window was not exercised", err)
	}
	for i, res := range e.runClient(e.pod1, helperArgs{Dst: svc.String(), Network: "tcp4", Count: 10}) {
		if res.Err != "" || !strings.HasPrefix(res.Reply, "backend ") {
			t.Errorf("connection %d while the proxy crashes: reply %q err %q, want the backend (failed open)", i, res.Reply, res.Err)
		}
	}
	c, err := r.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c.ProxyExits != before.ProxyExits+1 || c.SkipProxyExiting < before.SkipProxyExiting+10 {
		t.Errorf("proxy_exits +%d (want 1), proxy_exiting +%d (want >= 10)", c.ProxyExits-before.ProxyExits, c.SkipProxyExiting-before.SkipProxyExiting)
	}
	report := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(p.stderrUnread)
		report <- b
	}()
	err = p.cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Errorf("crashed proxy: %v, want exit status 2", err)
	}
	if b := <-report; !strings.Contains(string(b), "panic: proxy helper: crash requested") {
		t.Errorf("crash report lacks the panic: %q", b)
	}
}
