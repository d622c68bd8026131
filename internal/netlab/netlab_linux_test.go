package netlab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zonelb/zonelb/internal/testenv"

	"github.com/zonelb/zonelb/bpf"
)

func TestMain(m *testing.M) {
	RunHelpers(Helpers{
		"echo":   helperEcho,
		"dial":   helperDial,
		"whoami": helperWhoami,
		"owner":  helperOwner,
	})
	os.Exit(m.Run())
}

// helperEcho answers every connection on :7000 with the peer address it
// sees, then closes it.
func helperEcho(ctx context.Context, _ []byte) error {
	l, err := net.Listen("tcp4", ":7000")
	if err != nil {
		return err
	}
	fmt.Println("ready")
	go func() { <-ctx.Done(); l.Close() }()
	for {
		c, err := l.Accept()
		if err != nil {
			return nil
		}
		fmt.Fprintln(c, c.RemoteAddr().(*net.TCPAddr).IP)
		c.Close()
	}
}

type dialResult struct {
	Reply string
	Err   string
}

// helperDial connects to the address in args and prints what it got.
func helperDial(_ context.Context, args []byte) error {
	var addr string
	if err := json.Unmarshal(args, &addr); err != nil {
		return err
	}
	var res dialResult
	c, err := net.DialTimeout("tcp4", addr, 3*time.Second)
	if err != nil {
		res.Err = err.Error()
	} else {
		c.SetDeadline(time.Now().Add(3 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		res.Reply = strings.TrimSpace(line)
		if err != nil && err != io.EOF {
			res.Err = err.Error()
		}
		c.Close()
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

type whoami struct {
	Cgroup string
	Netns  uint64
	Pgid   int
	Pid    int
}

func helperWhoami(_ context.Context, _ []byte) error {
	cg, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return err
	}
	var w whoami
	for _, line := range strings.Split(string(cg), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			w.Cgroup = p
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/net", &st); err != nil {
		return err
	}
	w.Netns = st.Ino
	w.Pid = os.Getpid()
	w.Pgid, _ = syscall.Getpgid(0)
	return json.NewEncoder(os.Stdout).Encode(w)
}

type ownerReport struct {
	Cgroup   string
	PausePid int
	PinDir   string
}

// helperOwner builds a lab with a running pod and a pin directory, reports
// them, and waits: for SIGINT (then it closes the lab, as a demo's Ctrl-C
// does) or for SIGKILL (then Sweep must clean up after it).
func helperOwner(ctx context.Context, _ []byte) error {
	lab, err := New(Config{})
	if err != nil {
		return err
	}
	defer lab.Close()
	node, err := lab.AddNode("n1")
	if err != nil {
		return err
	}
	pod, err := node.AddPod("p1")
	if err != nil {
		return err
	}
	cmd, err := HelperCommand(PauseRole, nil)
	if err != nil {
		return err
	}
	pause, err := pod.Start("pause", cmd)
	if err != nil {
		return err
	}
	pins := lab.PinDir("n1")
	if err := os.Mkdir(pins, 0o700); err != nil {
		return err
	}
	if err := json.NewEncoder(os.Stdout).Encode(ownerReport{Cgroup: lab.Cgroup(), PausePid: pause.Pid(), PinDir: pins}); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

func newLab(t *testing.T) *Lab {
	t.Helper()
	testenv.RequireRoot(t)
	lab, err := New(Config{StopGrace: 2 * time.Second})
	if err != nil {
		t.Fatalf("new lab: %v", err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	return lab
}

func mustNode(t *testing.T, lab *Lab, name string) *Node {
	t.Helper()
	n, err := lab.AddNode(name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mustPod(t *testing.T, n *Node, name string) *Pod {
	t.Helper()
	p, err := n.AddPod(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// runIn starts a helper in pod and returns its stdout once it exits.
func runIn(t *testing.T, p *Pod, role string, args any) []byte {
	t.Helper()
	cmd, err := HelperCommand(role, args)
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	proc, err := p.Start(role, cmd)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := proc.Wait(ctx); err != nil {
		proc.Kill()
		t.Fatalf("%s in %s: %v\nstderr: %s", role, p.Name, err, errOut.String())
	}
	return []byte(out.String())
}

// startServer starts the echo helper in pod and waits until it listens.
func startServer(t *testing.T, p *Pod) *Process {
	t.Helper()
	cmd, err := HelperCommand("echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = w
	proc, err := p.Start("echo", cmd)
	w.Close()
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { proc.Stop(2 * time.Second); r.Close() })
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(r).ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		if strings.TrimSpace(s) != "ready" {
			t.Fatalf("echo server in %s: %q", p.Name, s)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("echo server in %s did not start", p.Name)
	}
	return proc
}

func dial(t *testing.T, from *Pod, addr string) dialResult {
	t.Helper()
	var res dialResult
	if err := json.Unmarshal(runIn(t, from, "dial", addr), &res); err != nil {
		t.Fatal(err)
	}
	return res
}

// TestPodsReachEachOtherRoutedWithoutNAT: pods on one node and across
// nodes connect to each other, and the server sees the client's own pod
// address (routed, not masqueraded).
func TestPodsReachEachOtherRoutedWithoutNAT(t *testing.T) {
	lab := newLab(t)
	n1, n2 := mustNode(t, lab, "n1"), mustNode(t, lab, "n2")
	a, b := mustPod(t, n1, "a"), mustPod(t, n1, "b")
	c := mustPod(t, n2, "c")
	if a.IP.String() != "10.244.1.10" || b.IP.String() != "10.244.1.11" || c.IP.String() != "10.244.2.10" {
		t.Fatalf("addresses: a=%v b=%v c=%v", a.IP, b.IP, c.IP)
	}
	if n2.Address.String() != "198.18.0.2" {
		t.Fatalf("node address %v", n2.Address)
	}
	startServer(t, b)
	startServer(t, c)
	for _, tc := range []struct {
		from, to *Pod
	}{{a, b}, {a, c}, {c, b}} {
		res := dial(t, tc.from, tc.to.IP.String()+":7000")
		if res.Err != "" || res.Reply != tc.from.IP.String() {
			t.Errorf("%s -> %s: reply %q err %q, want the client's address %v", tc.from.Name, tc.to.Name, res.Reply, res.Err, tc.from.IP)
		}
	}
	// The node itself reaches its pods, from its own namespace.
	conn, err := n1.DialContext(context.Background(), "tcp4", b.IP.String()+":7000")
	if err != nil {
		t.Fatalf("node n1 -> pod b: %v", err)
	}
	line, _ := bufio.NewReader(conn).ReadString('\n')
	conn.Close()
	if got := strings.TrimSpace(line); got != n1.Gateway.String() {
		t.Errorf("node n1 -> pod b: server saw %q, want the node's gateway address %v", got, n1.Gateway)
	}
}

// TestNoRouteOut: an address the lab does not define is unreachable from a
// pod (the node drops it), so nothing can leave the lab.
func TestNoRouteOut(t *testing.T) {
	lab := newLab(t)
	n1 := mustNode(t, lab, "n1")
	a := mustPod(t, n1, "a")
	// 192.0.2.1 is TEST-NET-1: documentation only. Inside the lab it has
	// no route, so the attempt ends at the node.
	res := dial(t, a, "192.0.2.1:80")
	if res.Err == "" {
		t.Fatalf("connect to 192.0.2.1 from a pod succeeded: %+v", res)
	}
	if !strings.Contains(res.Err, "unreachable") && !strings.Contains(res.Err, "timeout") {
		t.Errorf("connect to 192.0.2.1: %s, want network unreachable", res.Err)
	}
	routes, err := n1.Netlink().RouteList(nil, 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			t.Errorf("node has a default route: %+v", r)
		}
	}
}

// TestProcessPlacement: a process started in a pod runs in the pod's
// network namespace and cgroup, in its own process group.
func TestProcessPlacement(t *testing.T) {
	lab := newLab(t)
	n1 := mustNode(t, lab, "n1")
	a := mustPod(t, n1, "a")
	var w whoami
	if err := json.Unmarshal(runIn(t, a, "whoami", nil), &w); err != nil {
		t.Fatal(err)
	}
	ino, err := a.Inode()
	if err != nil {
		t.Fatal(err)
	}
	if w.Netns != ino {
		t.Errorf("netns inode %d, want the pod's %d", w.Netns, ino)
	}
	root, _ := bpf.CgroupV2Root()
	if want := strings.TrimPrefix(a.Cgroup, root); w.Cgroup != want {
		t.Errorf("cgroup %q, want %q", w.Cgroup, want)
	}
	if w.Pgid != w.Pid {
		t.Errorf("process group %d, want its own (%d)", w.Pgid, w.Pid)
	}
	if !strings.HasPrefix(a.Cgroup, n1.PodsCgroup+"/") {
		t.Errorf("pod cgroup %s is not under the node's pods cgroup %s", a.Cgroup, n1.PodsCgroup)
	}
}

// TestCloseRemovesEverything: after Close no process, cgroup, pin
// directory or namespace descriptor of the lab is left.
func TestCloseRemovesEverything(t *testing.T) {
	testenv.RequireRoot(t)
	lab, err := New(Config{StopGrace: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	n1, err := lab.AddNode("n1")
	if err != nil {
		lab.Close()
		t.Fatal(err)
	}
	a, err := n1.AddPod("a")
	if err != nil {
		lab.Close()
		t.Fatal(err)
	}
	cmd, _ := HelperCommand(PauseRole, nil)
	pause, err := a.Start("pause", cmd)
	if err != nil {
		lab.Close()
		t.Fatal(err)
	}
	pins := lab.PinDir("n1")
	if err := os.Mkdir(pins, 0o700); err != nil {
		lab.Close()
		t.Fatal(err)
	}
	deferred := false
	lab.Defer(func() error {
		deferred = pause.Exited() // Defer runs after processes stopped
		return nil
	})
	nsPath := a.Path()
	if err := lab.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if !pause.Exited() {
		t.Error("pause process still running after Close")
	}
	if !deferred {
		t.Error("Defer ran before the processes stopped (or not at all)")
	}
	if err := pause.Err(); err != nil && !KilledBySignal(err, syscall.SIGTERM) {
		t.Errorf("pause exit: %v", err)
	}
	for _, p := range []string{lab.Cgroup(), pins} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after Close (%v)", p, err)
		}
	}
	if _, err := os.Stat(nsPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace descriptor %s still open after Close", nsPath)
	}
	if _, err := n1.AddPod("late"); err == nil {
		t.Error("AddPod after Close succeeded")
	}
	if err := lab.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// startOwner runs helperOwner as a child of the test (in the test's own
// namespaces) and returns its report.
func startOwner(t *testing.T) (*exec.Cmd, ownerReport) {
	t.Helper()
	cmd, err := HelperCommand("owner", nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill() // our own child, by pid
			cmd.Wait()
		}
	})
	var rep ownerReport
	done := make(chan error, 1)
	go func() { done <- json.NewDecoder(out).Decode(&rep) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("owner report: %v\nstderr: %s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("owner did not report\nstderr: %s", stderr.String())
	}
	return cmd, rep
}

// waitGone waits for a process exit and its cgroup release to settle in
// the kernel.
func waitGone(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, 10*time.Second, what+" to be gone", cond)
}

// TestInterruptTearsDown: the owner gets SIGINT (a Ctrl-C) and removes its
// lab before exiting.
func TestInterruptTearsDown(t *testing.T) {
	testenv.RequireRoot(t)
	cmd, rep := startOwner(t)
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("owner: %v", err)
	}
	if processExists(rep.PausePid) {
		t.Errorf("pause process %d survived its owner's Ctrl-C", rep.PausePid)
	}
	for _, p := range []string{rep.Cgroup, rep.PinDir} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after Ctrl-C (%v)", p, err)
		}
	}
}

// TestSweepAfterOwnerKilled: a SIGKILLed owner cannot clean up; its
// children die with it (Pdeathsig) and Sweep removes its cgroup and pins,
// while a live lab's are left alone.
func TestSweepAfterOwnerKilled(t *testing.T) {
	live := newLab(t)
	liveNode := mustNode(t, live, "n1")
	cmd, rep := startOwner(t)
	cmd.Process.Kill()
	cmd.Wait()
	waitGone(t, "pause process "+strconv.Itoa(rep.PausePid), func() bool { return !processExists(rep.PausePid) })
	for _, p := range []string{rep.Cgroup, rep.PinDir} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s should be left by a killed owner: %v", p, err)
		}
	}
	if err := Sweep(nil); err != nil {
		t.Fatalf("sweep: %v", err)
	}
	for _, p := range []string{rep.Cgroup, rep.PinDir} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after Sweep (%v)", p, err)
		}
	}
	if _, err := os.Stat(liveNode.PodsCgroup); err != nil {
		t.Errorf("Sweep removed a live lab's cgroup: %v", err)
	}
}

func TestOwnerPid(t *testing.T) {
	for name, want := range map[string]int{
		Prefix + "123-abcdef":       123,
		Prefix + "123-abcdef-node1": 123,
		Prefix + "x-abcdef":         0,
		Prefix + "123":              0,
		"zonelb-test-123-abc":       0,
	} {
		got, ok := ownerPid(name)
		if ok != (want != 0) || got != want {
			t.Errorf("ownerPid(%q) = %d, %v; want %d", name, got, ok, want)
		}
	}
}
